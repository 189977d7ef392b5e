"""VoteProcessor: the votes table's stream -> exact tallies (one write per song per batch), with
each song's velocity and trending sums in the same writes (mysetlist.activity).

Event source mapping (template.yaml): ReportBatchItemFailures, bisection on function error,
bounded retries and record age, an on-failure queue with an alarm. With EVENT_BUS_NAME set, each
batch's counted vote changes are published to the votes bus (mysetlist.domain_events). Then the
batch's observers update the derived views: the trending sorted sets in Valkey.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response

from mysetlist.activity import ActivityConfig
from mysetlist.aws import service_client
from mysetlist.domain_events import SqsEventDeadLetters, VoteEventPublisher
from mysetlist.dynamo import client_for
from mysetlist.observability import entrypoint, logger
from mysetlist.quarantine import SqsQuarantine
from mysetlist.settings import load_settings
from mysetlist.stream_batch import BatchObserver, TallyBatchProcessor, record_handler
from mysetlist.tallies import TallyStore
from mysetlist.trending import TrendingBoard, TrendingObserver
from mysetlist.valkey import valkey_client

settings = load_settings()
settings.require("tallies_table", "dead_letter_queue_url")
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
    client_for(settings),
    settings.tallies_table,
    marker_ttl_seconds=settings.stream_marker_ttl_seconds,
    activity=activity,
)
observers: list[BatchObserver] = [TrendingObserver(TrendingBoard(lambda: valkey_client(settings), activity))]
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
