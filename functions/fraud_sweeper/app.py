"""FraudSweeper (EventBridge Scheduler, every 5 minutes): runs the fraud detectors over the active
shows with their longer look-back, quarantines what they flag, raises the alerts, and resolves
fraud alerts that have gone quiet (mysetlist/fraud_observer.py).

The detectors read the Valkey window the VoteProcessor keeps; when Valkey is away, or fraud
detection recorded a gap within the look-back, they read the recent vote items from the votes
table's ByShow index instead. A run that leaves work undone (detection could not run, votes
could not be flagged, alerts could not be raised) fails, so the error alarm counts it; the next
run does the work again (everything it does is idempotent).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.alerts import PlatformStore
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import client_for
from mysetlist.fraud import FraudConfig, FraudEngine, ValkeyRecentVotes
from mysetlist.fraud_observer import FraudSweep, ShowVotesReader, TallyActivity
from mysetlist.moderation import ModerationStore
from mysetlist.observability import entrypoint, logger, metrics
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("catalog_table", "votes_table", "tallies_table", "platform_table")
_db = client_for(settings)
config = FraudConfig.from_overrides(settings.fraud_thresholds)
sweep = FraudSweep(
    FraudEngine(config, ValkeyRecentVotes.from_settings(settings, config)),
    ModerationStore(_db, settings.votes_table),
    PlatformStore(_db, settings.platform_table),
    CatalogStore(_db, settings.catalog_table),
    ShowVotesReader(_db, settings.votes_table),
    window_configured=bool(settings.cache_url),
    last_change=TallyActivity(_db, settings.tallies_table).last_change,
    # The detectors' baselines (velocity, brigades) need this much of a show's history.
    lookback=dt.timedelta(seconds=config.show_retention_seconds),
)


class SweepFailed(RuntimeError):
    """The run left work undone (the error alarm fires; the next run does it again)."""


@entrypoint()
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    report = sweep.run(
        dt.datetime.now(dt.UTC),
        time_left=(lambda: remaining() / 1000) if remaining else (lambda: float("inf")),
    )
    summary = report.summary()
    metrics.add_metric(name="FraudSweepShows", unit=MetricUnit.Count, value=report.shows)
    metrics.add_metric(name="FraudSweepVotesRead", unit=MetricUnit.Count, value=report.votes_read)
    if report.source == "votes_table":
        metrics.add_metric(name="FraudSweepFallback", unit=MetricUnit.Count, value=1)
    logger.info("fraud sweep", extra={"report": summary, "scheduled_time": event.get("scheduled_time")})
    if report.failed:
        raise SweepFailed(f"the fraud sweep left work undone: {summary}")
    return summary
