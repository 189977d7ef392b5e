"""PredictionPrecompute (EventBridge Scheduler, every hour): a fresh prediction (20 songs) for
every upcoming show in the next 30 days, stored with a TTL 30 days after the show
(mysetlist/predictions/service.py). Shows are grouped by artist, so each artist's model and
history are loaded once. A run that leaves shows unpredicted fails (the error alarm counts it);
the next run predicts them again."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.observability import entrypoint, logger, metrics
from mysetlist.predictions.service import build_predictor
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("catalog_table", "predictions_table", "model_bucket")
predictor = build_predictor(settings)


class PrecomputeFailed(RuntimeError):
    """Some shows could not be predicted (the error alarm fires; the next run tries again)."""


@entrypoint()
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    report = predictor.precompute(
        time_left=(lambda: remaining() / 1000) if remaining else (lambda: float("inf")),
    )
    summary = report.summary()
    metrics.add_metric(name="PredictionsPrecomputed", unit=MetricUnit.Count, value=len(report.stored_ids))
    metrics.add_metric(
        name="PredictionsPrecomputeFailed",
        unit=MetricUnit.Count,
        value=len(report.failed) + len(report.not_reached),
    )
    logger.info(
        "predictions precomputed", extra={"report": summary, "scheduled_time": event.get("scheduled_time")}
    )
    if report.failed or report.not_reached:
        raise PrecomputeFailed(f"the precompute left shows unpredicted: {summary}")
    return summary
