"""TallyReconciler (EventBridge Scheduler, every 15 minutes): recounts the active shows' tallies
from their vote items, repairs drift by the rule in mysetlist/reconcile.py, and publishes the
drift it found (it should be zero). Trending sums are checked and repaired with the counts, and
each show's trending sorted sets in Valkey are rebuilt from its tally items."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.activity import ActivityConfig
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import client_for
from mysetlist.observability import entrypoint, logger, metrics
from mysetlist.reconcile import ReconcileStore, reconcile
from mysetlist.settings import load_settings
from mysetlist.tallies import TallyStore
from mysetlist.trending import TrendingBoard
from mysetlist.valkey import valkey_client
from mysetlist.votes_store import VotesStore

settings = load_settings()
settings.require("catalog_table", "votes_table", "tallies_table")
_db = client_for(settings)
catalog = CatalogStore(_db, settings.catalog_table)
votes = VotesStore(_db, settings.votes_table)
activity = ActivityConfig.from_settings(settings)
store = ReconcileStore(
    _db,
    settings.tallies_table,
    TallyStore(
        _db, settings.tallies_table, marker_ttl_seconds=settings.stream_marker_ttl_seconds, activity=activity
    ),
)
trending = TrendingBoard(lambda: valkey_client(settings), activity) if settings.cache_url else None


class ReconcileFailed(RuntimeError):
    """Some shows could not be reconciled (the error alarm fires; the next run tries again)."""


@entrypoint()
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    report = reconcile(
        catalog,
        votes,
        store,
        now,
        log=logger.warning,
        log_error=logger.exception,
        time_left=(lambda: remaining() / 1000) if remaining else (lambda: float("inf")),
        trending=trending,
    )
    metrics.add_metric(
        name="ShowsReconciled", unit=MetricUnit.Count, value=len(report.shows) - len(report.failed)
    )
    metrics.add_metric(name="TallyDriftVotes", unit=MetricUnit.Count, value=report.drift_votes)
    metrics.add_metric(name="TallyDriftSongs", unit=MetricUnit.Count, value=report.drift_songs)
    metrics.add_metric(name="TallyRepairs", unit=MetricUnit.Count, value=report.repairs)
    metrics.add_metric(name="TrendingDriftSongs", unit=MetricUnit.Count, value=report.trend_drift_songs)
    summary = {
        "shows": len(report.shows),
        "drift_votes": report.drift_votes,
        "drift_songs": report.drift_songs,
        "repairs": report.repairs,
        "trending_drift_songs": report.trend_drift_songs,
        "observed": [r.show_id for r in report.shows if r.outcome == "observed"],
        "raced": [r.show_id for r in report.shows if r.outcome == "raced"],
        "failed": report.failed,
        "truncated": report.truncated,
    }
    logger.info(
        "tallies reconciled", extra={"report": summary, "scheduled_time": event.get("scheduled_time")}
    )
    if report.failed:
        raise ReconcileFailed(f"{len(report.failed)} shows could not be reconciled: {report.failed[:10]}")
    return summary
