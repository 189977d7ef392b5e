"""HealthCheck: every minute (EventBridge Scheduler), check each dependency, record the minute,
raise, de-duplicate and resolve alerts, and publish critical ones to the operators' topic.

The run's time is the schedule's ``scheduled_time`` (a retried delivery records the same
minute); without one (a manual invoke) it is now. The checks run in parallel with a timeout
that leaves the run time to record and notify before the function's own timeout.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mysetlist.alerts import PlatformStore
from mysetlist.dynamo import client_for
from mysetlist.health import CHECK_TIMEOUT_SECONDS, Monitor, SnsNotifier, aws_client, default_checks
from mysetlist.observability import entrypoint
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("platform_table")
monitor = Monitor(
    store=PlatformStore(client_for(settings), settings.platform_table),
    checks=default_checks(settings),
    notifier=(
        SnsNotifier(lambda: aws_client("sns", settings), settings.alert_topic_arn, settings.environment)
        if settings.alert_topic_arn
        else None
    ),
)
# Time kept back from the function's timeout for recording and notifying after the checks.
_RESERVE_MS = 10_000


def run_time(event: dict[str, Any]) -> dt.datetime:
    """The scheduled time of this run (``scheduled_time`` from Scheduler, ``time`` from an
    EventBridge rule), or now when the event has none that parses."""
    for name in ("scheduled_time", "time"):
        value = event.get(name)
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                continue
            if parsed.tzinfo is not None:
                return parsed.astimezone(dt.UTC)
    return dt.datetime.now(dt.UTC)


@entrypoint()
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    remaining_ms = int(context.get_remaining_time_in_millis())
    monitor.timeout_seconds = max(1.0, min(CHECK_TIMEOUT_SECONDS, (remaining_ms - _RESERVE_MS) / 1000))
    report = monitor.run(run_time(event))
    return report.model_dump(mode="json", include={"status", "observed_at", "raised", "resolved", "notified"})
