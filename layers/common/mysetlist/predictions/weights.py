"""PATCH /api/ml/predictions: an admin changes the ensemble's named weights.

The change is validated at the edge (:class:`~mysetlist.predictions.api_models.WeightsPatch`:
all six weights, each finite and 0 to 1, not all zero, no unknown key), checked against the
model's own rules, then written as version N+1 by the store (a history item and CURRENT in one
transaction, conditional on CURRENT still being version N). Nothing is written when any check
fails.

Invalidation needs no write of its own: every stored prediction carries the weights version it
was made with, and one made with an older version reads as stale from then on (and is predicted
again on the next POST). The model trainer is then asked, asynchronously, to retrain every
artist with the new weights; if that request fails the change still stands (it is logged and
counted, and the nightly training run catches up): a successful write is never answered with an
error.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mysetlist.auth import Caller
from mysetlist.errors import Unprocessable
from mysetlist.observability import logger
from mysetlist.predictions.api_models import Weights, WeightsOut, WeightsPatch
from mysetlist.predictions.model import EnsembleWeights
from mysetlist.predictions.store import WeightsVersion
from mysetlist.ratelimit import emit_metric

# The metric counted when the trainer could not be asked to retrain (the nightly run catches up).
RETRAIN_REQUEST_FAILED = "RetrainRequestFailed"


class WeightsWriter(Protocol):
    """The store's versioned write (:meth:`PredictionsStore.put_weights`)."""

    def put_weights(
        self,
        weights: Mapping[str, float],
        *,
        changed_by: str,
        note: str | None = None,
        expected_version: int | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[WeightsVersion, int]:
        """Write the next version if ``expected_version`` (when given) is current and no other
        change wins the race; :class:`~mysetlist.errors.Conflict` otherwise (nothing written).
        Returns the new version and the previous version's number."""
        ...


class TrainerTrigger:
    """Asks the ModelTrainer function to retrain every artist, without waiting for it.

    ``client`` returns the container's Lambda client (created on first use). ``function_name``
    empty: no trainer is configured (the local stack without one); the
    request is then not sent and reported as not made.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        function_name: str,
        *,
        emit: Callable[[str, Mapping[str, str]], None] = emit_metric,
    ) -> None:
        self._client = client
        self.function_name = function_name
        self._emit = emit

    def retrain_all(self, reason: str) -> bool:
        """Send ``{"retrain": "all", "reason": reason}`` as an asynchronous (``Event``)
        invocation; True when Lambda accepted it. Never raises: a failure is logged and counted
        (``RetrainRequestFailed``)."""
        if not self.function_name:
            logger.warning("no TRAINER_FUNCTION: the weights change waits for the nightly training run")
            return False
        payload = json.dumps({"retrain": "all", "reason": reason}).encode()
        try:
            response = self._client().invoke(
                FunctionName=self.function_name, InvocationType="Event", Payload=payload
            )
            status = int(response.get("StatusCode", 0))
            if status != 202:  # an Event invocation is accepted with 202 and nothing else
                raise RuntimeError(f"Lambda answered {status} to an asynchronous invocation")
        except Exception as exc:  # the weights are written: the nightly run retrains anyway
            logger.warning(
                "could not ask the model trainer to retrain; the nightly run will",
                extra={
                    "trainer": self.function_name,
                    "error_type": type(exc).__name__,
                    "error": str(exc)[:300],
                },
            )
            self._emit(RETRAIN_REQUEST_FAILED, {"reason": "invoke"})
            return False
        return True


def check_model_accepts(weights: Weights) -> EnsembleWeights:
    """The model's own form of ``weights``; :class:`Unprocessable` if it refuses them (the edge
    already enforces the same rules, so this guards against the two drifting apart)."""
    try:
        return EnsembleWeights(**weights.as_dict())
    except (TypeError, ValueError) as exc:
        raise Unprocessable(
            f"the model cannot use these weights: {exc}", details={"field": "weights"}
        ) from exc


def change_weights(
    store: WeightsWriter,
    trainer: TrainerTrigger,
    patch: WeightsPatch,
    caller: Caller,
    now: dt.datetime,
) -> WeightsOut:
    """Write ``patch`` as the next version of the weights, then ask for a retrain.

    Raises :class:`~mysetlist.errors.Conflict` (409) when ``patch.expected_version`` is given
    and is not the current version, or when another change is written at the same time; and
    :class:`~mysetlist.errors.Unavailable` (503) when the table cannot be read or written. In
    every such case nothing was written and the trainer was not asked.
    """
    check_model_accepts(patch.weights)
    new, previous = store.put_weights(
        patch.weights.as_dict(),
        changed_by=caller.user_id,
        note=patch.note,
        expected_version=patch.expected_version,
        now=now,
    )
    logger.info(
        "weights changed",
        extra={"version": new.version, "previous_version": previous, "changed_by": caller.user_id},
    )
    requested = trainer.retrain_all(f"weights v{new.version}")
    return WeightsOut(
        version=new.version,
        weights=Weights.model_validate(new.weights),
        changed_by=caller.user_id,
        changed_at=now,
        previous_version=previous,
        note=new.note,
        retrain_requested=requested,
    )
