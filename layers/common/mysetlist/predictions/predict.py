"""The prediction for one upcoming show: top N songs with calibrated probabilities, their likely
position and set, and short reasons derived from the features that moved the score."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mysetlist.predictions.backtest import order_key, rank
from mysetlist.predictions.features import FEATURE_NAMES, F, FeatureState, FloatArray
from mysetlist.predictions.history import ROLE_ENCORE, ROLE_MAIN, ROLE_OPENER, ArtistHistory, Show
from mysetlist.predictions.model import ModelConfig, Scorer

DEFAULT_LENGTH = 20
MIN_LENGTH = 5
MAX_LENGTH = 50
MAX_REASONS = 3
RANKING_LENGTH = 50


@dataclass
class SongPrediction:
    song_id: str  # the history's song key (the catalogue's song id when served)
    song: str  # the display title
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
    # The top RANKING_LENGTH song keys by score with their calibrated probability: what a
    # stored prediction is scored on once the actual setlist arrives (backtest.score_prediction).
    ranking: list[tuple[str, float]] = field(default_factory=list)

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


def state_after(history: ArtistHistory) -> FeatureState:
    """The feature state after every show of ``history`` (cache it to predict several shows of
    the same history: see :func:`predict_show`'s ``state``)."""
    return FeatureState.after(history.shows)


def fallback_scores(X: FloatArray) -> FloatArray:
    """The score without a model: the song's recency-weighted share of the artist's shows."""
    return np.clip(X[:, F["decay_h20"]], 0.0, 1.0)


def predict_show(
    history: ArtistHistory,
    show: Show,
    *,
    setlist_length: int = DEFAULT_LENGTH,
    votes: Mapping[str, float] | None = None,
    config: ModelConfig | None = None,
    model: Scorer | None = None,
    titles: Mapping[str, str] | None = None,
    state: FeatureState | None = None,
) -> Prediction:
    """The prediction for ``show`` from ``history`` (which must hold only shows before it).

    Never trains: ``model`` is a trained or light model (see ``model.train_history`` and
    ``light.export``); without one the songs are ranked by their recency-weighted frequency
    (:func:`fallback_scores`), uncalibrated. ``votes`` maps song keys to the show's net fan
    votes; ``titles`` maps song keys to display titles (the key itself otherwise); ``state`` is
    the feature state after every show of ``history`` when the caller keeps one
    (:func:`state_after`), saving the walk through the history. Raises ValueError on a length
    outside 5..50 or a state that does not match the history.
    """
    if not MIN_LENGTH <= setlist_length <= MAX_LENGTH:
        raise ValueError(f"setlist_length must be {MIN_LENGTH}..{MAX_LENGTH}")
    config = config or (model.config if model else ModelConfig())
    if state is None:
        state = state_after(history)
    elif state.t != len(history.shows):
        raise ValueError(f"the feature state covers {state.t} shows, the history {len(history.shows)}")
    f = state.features(show, votes, config.vote_strength)
    trained_on = model.trained_on if model else 0
    if not len(f.song_ids):
        return Prediction(show.show_id, history.artist, [], 0.0, f.shows_before, trained_on)
    if model is None:
        raw = fallback_scores(f.X)
        prob = raw
        contributions = np.zeros_like(f.X)
    else:
        raw = model.raw(f.X)
        prob = model.probability(raw)
        contributions = model.contributions(f.X)
    ranked = rank(raw, f.X)
    top = ranked[:setlist_length]
    order = top[np.argsort(order_key(f.X[top]), kind="stable")]
    has_encores = bool((f.X[:, F["encore_share"]] > 0).any())
    titles = titles or {}
    songs: list[SongPrediction] = []
    for position, i in enumerate(order, start=1):
        x = f.X[i]
        sid = int(f.song_ids[i])
        key = history.titles[sid]
        role = ROLE_OPENER if position == 1 else ROLE_MAIN
        if has_encores and x[F["encore_share"]] >= 0.5:
            role = ROLE_ENCORE
        votes_value = float(x[F["votes"]]) / config.vote_strength if config.vote_strength else 0.0
        songs.append(
            SongPrediction(
                song_id=key,
                song=titles.get(key, key),
                probability=round(float(prob[i]), 4),
                position=position,
                set=role,
                historical_frequency=round(float(x[F["rate_all"]]), 4),
                trending_score=round(votes_value, 4),
                reasons=reasons_for(x, contributions[i], f.shows_before, f.vote_rank.get(sid)),
            )
        )
    ranking = [
        (history.titles[int(f.song_ids[i])], round(float(prob[i]), 6)) for i in ranked[:RANKING_LENGTH]
    ]
    expected = round(float(prob[top].sum()), 3)
    return Prediction(show.show_id, history.artist, songs, expected, f.shows_before, trained_on, ranking)
