"""VoteProcessor: the votes table's stream -> exact tallies (one write per song per batch), with
each song's velocity and trending sums in the same writes (mysetlist.activity).

Event source mapping (template.yaml): ReportBatchItemFailures, bisection on function error,
bounded retries and record age, an on-failure queue with an alarm. With EVENT_BUS_NAME set, each
batch's counted vote changes are published to the votes bus (mysetlist.domain_events). Then the
batch's observers update the derived views: live pushes to the show's WebSocket subscribers
(first, so their latency waits for nothing else), the trending sorted sets in Valkey, and
suspicious-activity detection (flagged votes are quarantined, incidents raise alerts).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response

from mysetlist.activity import ActivityConfig
from mysetlist.alerts import PlatformStore
from mysetlist.aws import service_client
from mysetlist.domain_events import SqsEventDeadLetters, VoteEventPublisher
from mysetlist.dynamo import client_for
from mysetlist.fraud import FraudConfig, FraudEngine, ValkeyRecentVotes
from mysetlist.fraud_observer import FraudObserver
from mysetlist.live import live_observer
from mysetlist.moderation import ModerationStore
from mysetlist.observability import entrypoint, logger
from mysetlist.quarantine import SqsQuarantine
from mysetlist.settings import load_settings
from mysetlist.stream_batch import BatchObserver, TallyBatchProcessor, record_handler
from mysetlist.tallies import TallyStore
from mysetlist.trending import TrendingBoard, TrendingObserver
from mysetlist.valkey import valkey_client

settings = load_settings()
settings.require("tallies_table", "votes_table", "platform_table", "dead_letter_queue_url")
_db = client_for(settings)
sqs = service_client("sqs", settings)
publisher: VoteEventPublisher | None = None
if settings.event_bus_name:
    publisher = VoteEventPublisher(
        service_client("events", settings),
        settings.event_bus_name,
        SqsEventDeadLetters(
            sqs,
            settings.dead_letter_queue_url,
            source="VoteProcessor",
            event_bus_name=settings.event_bus_name,
        ),
    )
else:
    logger.warning("EVENT_BUS_NAME is not set: vote events are not published")
activity = ActivityConfig.from_settings(settings)
store = TallyStore(
    _db,
    settings.tallies_table,
    marker_ttl_seconds=settings.stream_marker_ttl_seconds,
    activity=activity,
)
fraud_config = FraudConfig.from_overrides(settings.fraud_thresholds)
observers: list[BatchObserver] = []
if settings.cache_url:
    observers += [
        TrendingObserver(TrendingBoard(lambda: valkey_client(settings), activity)),
        FraudObserver(
            FraudEngine(fraud_config, ValkeyRecentVotes.from_settings(settings, fraud_config)),
            ModerationStore(_db, settings.votes_table),
            PlatformStore(_db, settings.platform_table),
        ),
    ]
else:
    # Without Valkey (a stack deployed without a VPC) there are no trending sets, and the
    # detectors run only in the FraudSweeper, over the vote items, every 5 minutes.
    logger.warning("CACHE_URL is not set: no trending sets, fraud detection by the sweeper only")
live = live_observer(settings, store, _db)  # None (logged) when live pushes are not configured
if live is not None:
    observers.insert(0, live)
processor = TallyBatchProcessor(
    store,
    SqsQuarantine(sqs, settings.dead_letter_queue_url, source="VoteProcessor"),
    publisher=publisher,
    observers=observers,
    activity=activity,
)


@entrypoint()
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(  # type: ignore[return-value]
        event=event, record_handler=record_handler, processor=processor, context=context
    )
