"""ModelTrainer: the per-artist setlist models (scikit-learn, exported to numpy for serving).

* EventBridge Scheduler, nightly: retrains every artist whose model does not cover its newest
  setlist with the current weights (the others are skipped), while the time lasts; a run that
  leaves artists untrained or failed fails, and the next one picks them up.
* The catalogue's stream (filtered to actual setlists; ReportBatchItemFailures): scores the
  stored prediction of each show whose setlist arrived, then retrains each touched artist once.
* Asynchronous ``{"retrain": "all", "reason": ...}`` from ``PATCH /api/ml/predictions``: the
  weights changed, so no model is current and every artist is retrained. Operators may name
  artists instead: ``{"retrain": "<artist_id>"}`` or a list of them.
* Operators: ``{"score": ["<show_id>", ...]}`` scores those shows' stored predictions again from
  their recorded setlists (after records ended in the dead-letter queue); idempotent, no
  training. Shows without a stored prediction or a setlist are reported, not failed.

Metrics: ModelsTrained, PredictionsScored, ModelTrainingFailed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.aws import service_client
from mysetlist.observability import entrypoint, logger, metrics
from mysetlist.predictions.service import all_artist_ids, build_pipeline, process_setlist_batch
from mysetlist.quarantine import SqsQuarantine
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("catalog_table", "predictions_table", "model_bucket", "dead_letter_queue_url")
predictor, trainer = build_pipeline(settings)
quarantine = SqsQuarantine(
    service_client("sqs", settings), settings.dead_letter_queue_url, source="ModelTrainer"
)


class BadEvent(ValueError):
    """An operator's event this function does not understand (logged, not retried)."""


def score_shows(show_ids: Any) -> dict[str, Any]:
    """Score the stored predictions of ``show_ids`` against their recorded actual setlists."""
    if not isinstance(show_ids, list) or not show_ids or not all(isinstance(s, str) and s for s in show_ids):
        raise BadEvent('"score" takes a non-empty list of show ids: {"score": ["<show_id>", ...]}')
    outcome: dict[str, str] = {}
    for show_id in dict.fromkeys(show_ids):
        found = predictor.catalog.get_show_and_setlist(show_id)
        if found is None or found[1] is None:
            outcome[show_id] = "no_setlist"
            continue
        setlist = found[1]
        played = list(dict.fromkeys(setlist.song_ids))
        score = predictor.score_show(show_id, played, arrived_at=setlist.recorded_at)
        outcome[show_id] = "scored" if score is not None else "no_prediction"
    scored = sum(1 for v in outcome.values() if v == "scored")
    metrics.add_metric(name="PredictionsScored", unit=MetricUnit.Count, value=scored)
    logger.info("stored predictions scored on request", extra={"outcome": outcome})
    return {"scored": scored, "shows": outcome}


class TrainingFailed(RuntimeError):
    """Some artists could not be trained (the error alarm fires; the next run tries again)."""


@entrypoint()
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "Records" in event:
        batch = process_setlist_batch(event["Records"], predictor, trainer, quarantine)
        metrics.add_metric(name="PredictionsScored", unit=MetricUnit.Count, value=batch.scored)
        metrics.add_metric(
            name="ModelsTrained",
            unit=MetricUnit.Count,
            value=sum(1 for o in batch.trained if o.status == "trained"),
        )
        logger.info("actual setlists processed", extra={"report": batch.summary()})
        return batch.response()
    if "score" in event:
        return score_shows(event["score"])
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    wanted = event.get("retrain", "all")
    if wanted == "all":
        artists: Iterable[str] = all_artist_ids(predictor.catalog)
    else:
        artists = [wanted] if isinstance(wanted, str) else [str(a) for a in wanted]
    report = trainer.train_all(
        artists, time_left=(lambda: remaining() / 1000) if remaining else (lambda: float("inf"))
    )
    summary = report.summary()
    metrics.add_metric(name="ModelsTrained", unit=MetricUnit.Count, value=report.trained)
    metrics.add_metric(name="ModelTrainingFailed", unit=MetricUnit.Count, value=len(report.failed))
    logger.info(
        "models trained",
        extra={
            "report": summary,
            "reason": event.get("reason"),
            "scheduled_time": event.get("scheduled_time"),
        },
    )
    if report.failed or report.not_reached:
        raise TrainingFailed(f"training left artists undone: {summary}")
    return summary
