"""The prediction for one upcoming show: top N songs with calibrated probabilities, their likely
position and set, and short reasons derived from the features that moved the score."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mysetlist.predictions.backtest import order_key, rank
from mysetlist.predictions.features import FEATURE_NAMES, F, FeatureState, FloatArray, ShowFeatures, labels
from mysetlist.predictions.history import ROLE_ENCORE, ROLE_MAIN, ROLE_OPENER, ArtistHistory, Show
from mysetlist.predictions.model import ModelConfig, TrainedModel, train

DEFAULT_LENGTH = 20
MIN_LENGTH = 5
MAX_LENGTH = 50
MAX_REASONS = 3


@dataclass
class SongPrediction:
    song: str
    probability: float
    position: int
    set: str
    historical_frequency: float
    trending_score: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class Prediction:
    show_id: str
    artist: str
    songs: list[SongPrediction]
    expected_correct: float
    shows_before: int
    trained_on_shows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(rate: float, window: int, t: int) -> int:
    return round(rate * min(window, t))


def _sentence(name: str, x: FloatArray, t: int, vote_rank: int | None) -> str | None:  # noqa: PLR0911, PLR0912
    """A plain sentence for one feature of one song, or None when it says nothing useful."""
    v = float(x[F[name]])
    gap = round(math.expm1(float(x[F["log_gap"]])))
    if name.startswith("rate_") and name != "rate_all":
        w = int(name.split("_")[1])
        return f"Played in {_count(v, w, t)} of the last {min(w, t)} shows"
    if name == "rate_all":
        return f"Played in {round(v * t)} of {t} shows ({v:.0%})"
    if name in {"log_gap", "in_prev1", "log_days_since_played", "decay_h5", "decay_h20"}:
        if gap <= 1:
            return "Played in the previous show"
        return "Not played in the previous show" if gap == 2 else f"Not played in the last {gap - 1} shows"
    if name == "in_prev3":
        return f"Played in {_count(v, 3, t)} of the last {min(3, t)} shows"
    if name == "overdue" and v >= 1.5:
        return f"Due: {gap - 1} shows since it was last played, {v:.1f} times its usual gap"
    if name == "gap_rate":
        shows = "show" if gap == 1 else "shows"
        return f"After a gap of {gap} {shows} this artist brings a song back {v:.0%} of the time"
    if name == "tour_rate" and v > 0:
        return f"Played in {v:.0%} of this tour's shows so far"
    if name == "venue_rate" and v > 0:
        return f"Played in {v:.0%} of the artist's shows at this venue"
    if name == "city_rate" and v > 0:
        return f"Played in {v:.0%} of the artist's shows in this city"
    if name == "encore_share" and v >= 0.5:
        return "Usually played in the encore"
    if name == "opener_share" and v >= 0.3:
        return "Often opens the show"
    if name == "log_since_debut":
        return f"Debuted {round(math.expm1(v))} shows ago"
    if name == "votes" and vote_rank:
        return f"Fans voted it #{vote_rank} for this show"
    return None


def reasons_for(x: FloatArray, contributions: FloatArray, t: int, vote_rank: int | None = None) -> list[str]:
    """Up to three sentences for the features with the largest effect on this song's score."""
    out: list[str] = []
    if vote_rank:
        out.append(f"Fans voted it #{vote_rank} for this show")
    for i in np.argsort(-np.abs(contributions), kind="stable"):
        if len(out) >= MAX_REASONS:
            break
        sentence = _sentence(FEATURE_NAMES[int(i)], x, t, vote_rank)
        if sentence and sentence not in out:
            out.append(sentence)
    return out


def features_before(
    history: ArtistHistory, show: Show, votes: Mapping[str, float] | None, config: ModelConfig
) -> tuple[ShowFeatures, list[tuple[FloatArray, FloatArray]]]:
    """Features for ``show`` played after every show of ``history``, and the training rows."""
    state = FeatureState(history)
    rows: list[tuple[FloatArray, FloatArray]] = []
    for i, earlier in enumerate(history.shows):
        f = state.features(earlier)
        if len(earlier.songs) >= config.min_songs:
            rows.append((f.X, labels(history, i, f.song_ids)))
        state.absorb(earlier)
    return state.features(show, votes, config.vote_strength), rows


def predict_show(
    history: ArtistHistory,
    show: Show,
    *,
    setlist_length: int = DEFAULT_LENGTH,
    votes: Mapping[str, float] | None = None,
    config: ModelConfig | None = None,
    model: TrainedModel | None = None,
) -> Prediction:
    """The prediction for ``show`` from ``history`` (which must hold only shows before it)."""
    if not MIN_LENGTH <= setlist_length <= MAX_LENGTH:
        raise ValueError(f"setlist_length must be {MIN_LENGTH}..{MAX_LENGTH}")
    config = config or (model.config if model else ModelConfig())
    f, rows = features_before(history, show, votes, config)
    if model is None:
        model = train(config, rows)
    if not len(f.song_ids):
        return Prediction(show.show_id, history.artist, [], 0.0, f.shows_before, 0)
    if model is None:
        raw = f.X[:, F["decay_h20"]]
        prob = np.clip(raw, 0.0, 1.0)
        contributions = np.zeros_like(f.X)
    else:
        raw = model.raw(f.X)
        prob = model.probability(raw)
        contributions = model.contributions(f.X)
    top = rank(raw, f.X)[:setlist_length]
    order = top[np.argsort(order_key(f.X[top]), kind="stable")]
    has_encores = bool((f.X[:, F["encore_share"]] > 0).any())
    songs: list[SongPrediction] = []
    for position, i in enumerate(order, start=1):
        x = f.X[i]
        sid = int(f.song_ids[i])
        role = ROLE_OPENER if position == 1 else ROLE_MAIN
        if has_encores and x[F["encore_share"]] >= 0.5:
            role = ROLE_ENCORE
        votes_value = float(x[F["votes"]]) / config.vote_strength if config.vote_strength else 0.0
        songs.append(
            SongPrediction(
                song=history.titles[sid],
                probability=round(float(prob[i]), 4),
                position=position,
                set=role,
                historical_frequency=round(float(x[F["rate_all"]]), 4),
                trending_score=round(votes_value, 4),
                reasons=reasons_for(x, contributions[i], f.shows_before, f.vote_rank.get(sid)),
            )
        )
    expected = round(float(prob[top].sum()), 3)
    return Prediction(
        show.show_id, history.artist, songs, expected, f.shows_before, model.trained_on if model else 0
    )
