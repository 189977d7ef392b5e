"""The prediction for one upcoming show: top N songs with calibrated probabilities, their likely
position and set, and short reasons derived from the features that moved the score (see
:mod:`mysetlist.predictions.reasons`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mysetlist.predictions.backtest import order_key, rank
from mysetlist.predictions.features import F, FeatureState, FloatArray
from mysetlist.predictions.history import ROLE_ENCORE, ROLE_MAIN, ROLE_OPENER, ArtistHistory, Show
from mysetlist.predictions.model import ModelConfig, Scorer
from mysetlist.predictions.reasons import family_effects, reasons_for

DEFAULT_LENGTH = 20
MIN_LENGTH = 5
MAX_LENGTH = 50
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
    score = fallback_scores if model is None else model.raw
    raw = score(f.X)
    prob = raw if model is None else model.probability(raw)
    ranked = rank(raw, f.X)
    top = ranked[:setlist_length]
    order = top[np.argsort(order_key(f.X[top]), kind="stable")]
    has_encores = bool((f.X[:, F["encore_share"]] > 0).any())
    effects = family_effects(score, f.X, f.X[order])
    facts = state.facts(show, f.song_ids[order])
    titles = titles or {}
    songs: list[SongPrediction] = []
    for position, (i, song_effects, song_facts) in enumerate(
        zip(order, effects, facts, strict=True), start=1
    ):
        x = f.X[i]
        sid = int(f.song_ids[i])
        key = state.keys[sid]
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
                reasons=reasons_for(song_effects, song_facts, f.vote_rank.get(sid)),
            )
        )
    ranking = [(state.keys[int(f.song_ids[i])], round(float(prob[i]), 6)) for i in ranked[:RANKING_LENGTH]]
    expected = round(float(prob[top].sum()), 3)
    return Prediction(show.show_id, history.artist, songs, expected, f.shows_before, trained_on, ranking)
