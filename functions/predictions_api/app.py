"""PredictionsApi: setlist predictions on request, the stored ones, how they did, and the weights.

``POST /api/ml/predictions`` predicts a show (or returns its stored prediction while that is
current); ``GET /api/ml/predictions?show_id=`` reads the stored prediction; ``GET
?timeframe=day|week|month`` reports how the predictions of the shows scored in that window did
(mysetlist/predictions/metrics.py); ``PATCH`` (admins) changes the ensemble's named weights
(mysetlist/predictions/weights.py). Every route is behind the gateway's JWT authorizer and
charged to one budget, ``predictions.request`` (10 a minute per user).

The model is served in its light numpy form: this module must not import scikit-learn or SciPy
(a unit test checks it in a fresh process), which keeps the cold start near the other functions'.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Body, Depends, Query

from mysetlist.api import create_app, current_caller, errors, lambda_handler, rate_limited, require_roles
from mysetlist.auth import Caller, Role
from mysetlist.aws import service_client
from mysetlist.errors import InvalidRequest, NotFound
from mysetlist.models import Id
from mysetlist.predictions.api_models import (
    PredictedSong,
    PredictionOut,
    PredictionRequest,
    PredictionSource,
    Timeframe,
    TimeframeMetrics,
    WeightsOut,
    WeightsPatch,
)
from mysetlist.predictions.metrics import timeframe_metrics, window
from mysetlist.predictions.service import PredictionView, build_predictor
from mysetlist.predictions.weights import TrainerTrigger, change_weights
from mysetlist.ratelimit import PREDICTIONS_REQUEST
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("predictions_table", "catalog_table", "tallies_table", "model_bucket")
predictor = build_predictor(settings)
store = predictor.store
# An asynchronous invoke is answered at once: short timeouts, one retry.
trainer = TrainerTrigger(
    lambda: service_client("lambda", settings, connect_timeout=1.0, read_timeout=3.0, attempts=2),
    settings.trainer_function,
)

app = create_app(
    "MySetlist predictions API",
    "Setlist predictions with calibrated probabilities, their accuracy, and the ensemble's weights "
    "(docs/predictions.md).",
)

# One budget for the three routes, charged to the caller after authentication (and, on PATCH,
# after the role check): a 401 or 403 costs nothing.
admins = require_roles(Role.ADMIN)
signed_in = [Depends(rate_limited(PREDICTIONS_REQUEST, current_caller))]
admin_only = [Depends(rate_limited(PREDICTIONS_REQUEST, admins))]

EXACTLY_ONE = (
    "give exactly one of show_id (a show's stored prediction) or timeframe (day, week or month: "
    "how the predictions did)"
)


def prediction_out(view: PredictionView) -> PredictionOut:
    """The response for a stored (or just made) prediction."""
    p = view.prediction
    return PredictionOut(
        show_id=p.show_id,
        artist_id=p.artist_id,
        show_date=p.show_date,
        songs=[
            PredictedSong(
                song_id=s["song_id"],
                title=s["title"],
                probability=s["probability"],
                position=s["position"],
                set=s["set"],
                historical_frequency=s["historical_frequency"],
                trending_score=s["trending_score"],
                reasons=list(s.get("reasons") or []),
            )
            for s in p.songs
        ],
        expected_correct=p.expected_correct,
        setlist_length=p.setlist_length,
        model_version=p.model_version,
        weights_version=p.weights_version,
        generated_at=p.generated_at,
        source=PredictionSource(p.source),
        stale=view.stale,
        shows_before=p.shows_before,
    )


@app.post(
    "/api/ml/predictions",
    response_model=PredictionOut,
    responses=errors(401, 404, 429),
    dependencies=signed_in,
)
async def request_prediction(
    body: Annotated[PredictionRequest, Body()],
    _caller: Annotated[Caller, Depends(current_caller)],
) -> PredictionOut:
    """The show's prediction: the stored one while it is current (same model and weights, same
    length, made within the hour), else a new one, stored. 404 for an unknown show; 422
    (``show_too_old``) for a show more than 30 days past."""
    view = predictor.predict(
        body.show_id, setlist_length=body.setlist_length, force_refresh=body.force_refresh
    )
    return prediction_out(view)


@app.get(
    "/api/ml/predictions",
    response_model=PredictionOut | TimeframeMetrics,
    responses=errors(400, 401, 404, 429),
    dependencies=signed_in,
)
async def read_predictions(
    _caller: Annotated[Caller, Depends(current_caller)],
    show_id: Annotated[Id | None, Query(description="A show: its stored prediction")] = None,
    timeframe: Annotated[
        Timeframe | None,
        Query(description="day, week or month: how the predictions of the shows scored in it did"),
    ] = None,
) -> PredictionOut | TimeframeMetrics:
    """Either a show's stored prediction (``stale`` when its model or weights changed since) or
    the metrics of a timeframe; 400 unless exactly one of the two is given."""
    if show_id is not None and timeframe is None:
        view = predictor.stored(show_id)
        if view is None:
            raise NotFound(
                f"no stored prediction for show {show_id!r}: POST /api/ml/predictions makes one",
                details={"show_id": show_id},
            )
        return prediction_out(view)
    if timeframe is not None and show_id is None:
        start, end = window(timeframe, dt.datetime.now(dt.UTC))
        return timeframe_metrics(
            store.scores_between(start, end),
            timeframe=timeframe,
            start=start,
            end=end,
            current_weights_version=store.current_weights().version,
        )
    raise InvalidRequest(EXACTLY_ONE, details={"parameters": ["show_id", "timeframe"]})


@app.patch(
    "/api/ml/predictions",
    response_model=WeightsOut,
    responses=errors(401, 403, 409, 429),
    dependencies=admin_only,
)
async def change_ensemble_weights(
    body: Annotated[WeightsPatch, Body()],
    caller: Annotated[Caller, Depends(admins)],
) -> WeightsOut:
    """Write the next version of the six named weights (all six, each 0 to 1, not all zero).
    Stored predictions made with an older version read as stale from now on, and every artist
    is retrained with the new weights (asynchronously). 409 when ``expected_version`` is not
    the current version."""
    return change_weights(store, trainer, body, caller, dt.datetime.now(dt.UTC))


handler: Any = lambda_handler(app)
