"""The bodies of ``/api/ml/predictions``: requests validated at the edge, responses as documented.

Requests forbid unknown fields (a misspelt weight is a 422, never silently ignored); responses
describe every field, since the OpenAPI document is generated from them (docs/openapi).
"""

from __future__ import annotations

import datetime as dt
import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from mysetlist.models import Id, Model

MIN_SETLIST_LENGTH = 5
MAX_SETLIST_LENGTH = 50
DEFAULT_SETLIST_LENGTH = 20
# A prediction may be asked for up to this many days after its show (then it can still be scored).
MAX_DAYS_PAST = 30
# The timeframe metrics list at most this many scored shows (the aggregates cover all of them).
MAX_DATA_POINTS = 500
CALIBRATION_BINS = 10

# The original design's six named weights, in its order (docs/predictions.md).
WEIGHT_NAMES: tuple[str, ...] = ("artist", "venue", "genre", "popularity", "historical", "recentTrends")


class Timeframe(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class PredictionSource(StrEnum):
    PRECOMPUTE = "precompute"
    ON_DEMAND = "on_demand"


# ---- requests


class PredictionRequest(Model):
    """Body of POST /api/ml/predictions."""

    show_id: Id = Field(description="The show to predict (an id of GET /api/shows)")
    setlist_length: int = Field(
        default=DEFAULT_SETLIST_LENGTH,
        ge=MIN_SETLIST_LENGTH,
        le=MAX_SETLIST_LENGTH,
        description=f"How many songs to predict ({MIN_SETLIST_LENGTH} to {MAX_SETLIST_LENGTH})",
    )
    force_refresh: bool = Field(
        default=False,
        description="Predict again even when a current stored prediction exists (it is replaced)",
    )


Weight = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class Weights(Model):
    """The original design's six named weights: each 0 to 1, not all zero. All six are required,
    so a client never changes one weight by leaving it out."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # What each weight scores is the model's business (model.family_scores, docs/predictions.md).
    artist: Weight = Field(description="The artist's current rotation (recency-weighted plays)")
    venue: Weight = Field(description="Songs played at this venue and in this city before")
    genre: Weight = Field(description="The artist's style: how it replays a song after this many shows")
    popularity: Weight = Field(description="Fan votes for this show (recent plays when there are none)")
    historical: Weight = Field(description="The song's share of all the artist's shows")
    recentTrends: Weight = Field(  # the original API's name
        description="The last few shows"
    )

    @model_validator(mode="after")
    def _not_all_zero(self) -> Weights:
        if not math.fsum(self.as_dict().values()) > 0:
            raise ValueError("at least one weight must be above 0")
        return self

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in WEIGHT_NAMES}


Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class WeightsPatch(Model):
    """Body of PATCH /api/ml/predictions (admins)."""

    weights: Weights
    expected_version: int | None = Field(
        default=None,
        ge=0,
        description="The version this change is based on (current_weights_version of the metrics, "
        "weights_version of a prediction); 409 when another change came first. Leave it out to "
        "overwrite whatever is current.",
    )
    note: Note | None = Field(default=None, description="Why the weights changed (kept with the version)")


# ---- responses


class PredictedSong(Model):
    song_id: str = Field(description="The catalogue song id")
    title: str
    probability: float = Field(ge=0, le=1, description="Calibrated probability that the song is played")
    position: int = Field(ge=1, description="Predicted position in the show, 1-based")
    set: Literal["opener", "main", "encore"] = Field(description="Where in the show the song is expected")
    historical_frequency: float = Field(
        ge=0, le=1, description="Share of the artist's earlier shows that had the song"
    )
    trending_score: float = Field(
        description="Fan votes for the song at this show (net up-votes) relative to the most voted "
        "song: 1 for the most voted, 0 without votes, negative for net down-votes"
    )
    reasons: list[str] = Field(description="Short sentences naming what moved the song's score")


class PredictionOut(Model):
    """A show's prediction: the top ``setlist_length`` songs in predicted order."""

    show_id: str
    artist_id: str
    show_date: dt.date = Field(description="The show's date")
    songs: list[PredictedSong] = Field(
        description="Empty when the artist has no earlier setlist to learn from (not enough history)"
    )
    expected_correct: float = Field(
        ge=0, description="Expected number of the predicted songs that will be played (sum of probabilities)"
    )
    setlist_length: int
    model_version: str | None = Field(
        description="The artist's model that predicted it; 'baseline' for the frequency fallback "
        "(no model trained yet); null when there was no history at all"
    )
    weights_version: int = Field(
        ge=0, description="The version of the weights it was made with (0: defaults)"
    )
    generated_at: dt.datetime
    source: PredictionSource = Field(
        description="precompute: the hourly job; on_demand: a POST of this route"
    )
    stale: bool = Field(
        description="True when a new prediction of the show would use another model or weights version "
        "(the artist's model was retrained, or the weights changed): the next POST predicts it again. "
        "After a weights change predictions stay stale until the artist's model is retrained with them."
    )
    shows_before: int = Field(ge=0, description="The artist's earlier shows with a setlist it learnt from")


class CalibrationBin(Model):
    p_low: float = Field(description="Lower bound of the predicted probabilities in the bin (inclusive)")
    p_high: float = Field(description="Upper bound (exclusive, except 1.0 in the last bin)")
    n: int = Field(ge=0, description="Predicted songs whose probability fell in the bin")
    mean_probability: float | None = Field(description="Their mean predicted probability; null when n is 0")
    hit_rate: float | None = Field(description="Share of them that were played; null when n is 0")


class DataPoint(Model):
    show_id: str
    artist_id: str
    show_date: dt.date
    scored_at: dt.datetime = Field(description="When the show's actual setlist arrived and it was scored")
    k: int = Field(ge=0, description="The show's number of distinct songs actually played")
    hits: int = Field(ge=0, description="Of the top k predicted songs, how many were played")
    p_at_k: float = Field(ge=0, le=1, description="hits / k")
    model_version: str | None


class TimeframeMetrics(Model):
    """How the stored predictions did, over the shows scored in the window."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    timeframe: Timeframe
    from_: dt.datetime = Field(alias="from", description="Start of the window (scored_at >= from)")
    to: dt.datetime = Field(description="End of the window (scored_at < to): the time of the request")
    shows_scored: int = Field(ge=0)
    p_at_k: float | None = Field(description="Mean precision at k over the shows; null when none was scored")
    hits: int = Field(ge=0, description="Songs played among the top k predictions, summed over the shows")
    expected_hits: float = Field(
        ge=0, description="What the model expected of those: its probabilities of the top k songs, summed"
    )
    ranked_songs: int = Field(ge=0, description="Songs of the stored rankings (up to 50 per show) scored")
    ranked_hits: int = Field(ge=0, description="Of the ranked songs, how many were played")
    ranked_expected_hits: float = Field(ge=0, description="Sum of the ranked songs' probabilities")
    brier: float | None = Field(description="Mean squared error of the ranked songs' probabilities")
    ece: float | None = Field(description="Expected calibration error over the 10 bins below")
    calibration: list[CalibrationBin] = Field(description="10 equal-width probability bins")
    data_points: list[DataPoint] = Field(
        description=f"The scored shows, newest first (at most {MAX_DATA_POINTS})"
    )
    model_versions: dict[str, int] = Field(description="Shows scored per model version ('none': no model)")
    current_weights_version: int = Field(ge=0)


class WeightsOut(Model):
    version: int = Field(ge=1, description="The new version of the weights")
    weights: Weights
    changed_by: str = Field(description="The user id of the admin who changed them")
    changed_at: dt.datetime
    previous_version: int = Field(ge=0, description="The version it replaced (0: the defaults)")
    note: str | None = None
    retrain_requested: bool = Field(
        description="Whether the model trainer was asked to retrain now; when false the nightly run does"
    )
