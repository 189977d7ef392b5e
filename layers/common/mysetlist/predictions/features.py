"""Per-candidate features for a show, computed only from the shows before it.

:class:`FeatureState` walks an artist's history forward: :meth:`FeatureState.features` describes
every song played before (the candidates) as of *now*, and :meth:`FeatureState.absorb` then adds
the show that was played. Nothing after the current position is ever read, so a feature row can
not see the future by construction (the unit tests check it by perturbing later shows).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mysetlist.predictions.history import ROLE_ENCORE, ROLE_OPENER, ArtistHistory, Show

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

WINDOWS = (5, 10, 20, 50)
HALF_LIVES = (5, 20)
# Buckets of "shows since last played": 1, 2, 3, 4-6, 7-15, 16-49, 50+.
GAP_EDGES = np.array([1, 2, 3, 4, 7, 16, 50])
REPEAT_WINDOW = 20

FEATURE_NAMES: tuple[str, ...] = (
    "rate_all",
    *(f"rate_{w}" for w in WINDOWS),
    *(f"decay_h{h}" for h in HALF_LIVES),
    "log_gap",
    "in_prev1",
    "in_prev3",
    "overdue",
    "gap_rate",
    "artist_repeat",
    "tour_rate",
    "tour_shows",
    "venue_rate",
    "venue_shows",
    "city_rate",
    "mean_pos",
    "encore_share",
    "opener_share",
    "log_since_debut",
    "log_days_since_show",
    "log_days_since_played",
    "votes",
)
F = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass
class ShowFeatures:
    """Features of the candidate songs (ids into ``ArtistHistory.titles``) for one show."""

    song_ids: IntArray
    X: FloatArray
    shows_before: int
    vote_rank: dict[int, int] = field(default_factory=dict)


@dataclass
class _Group:
    shows: int
    counts: FloatArray


class FeatureState:
    """The state of an artist's history after the first ``t`` shows."""

    def __init__(self, history: ArtistHistory) -> None:
        self.history = history
        v = len(history.titles)
        self.t = 0
        self.count = np.zeros(v)
        self.first = np.full(v, -1, dtype=np.int64)
        self.last = np.full(v, -1, dtype=np.int64)
        self.last_day = np.zeros(v, dtype=np.int64)
        self.decay = {h: np.zeros(v) for h in HALF_LIVES}
        self.decay_norm = dict.fromkeys(HALF_LIVES, 0.0)
        self.window = {w: np.zeros(v) for w in WINDOWS}
        self.recent: deque[IntArray] = deque(maxlen=max(WINDOWS))
        self.pos_sum = np.zeros(v)
        self.encore = np.zeros(v)
        self.opener = np.zeros(v)
        self.gap_opp = np.zeros(len(GAP_EDGES))
        self.gap_hit = np.zeros(len(GAP_EDGES))
        self.repeats: deque[float] = deque(maxlen=REPEAT_WINDOW)
        self.venues: dict[str, _Group] = {}
        self.cities: dict[str, _Group] = {}
        self.tours: dict[str, _Group] = {}
        self.prev_day: int | None = None

    # ---- reading
    def _gap_bucket(self, gap: IntArray) -> IntArray:
        return np.searchsorted(GAP_EDGES, gap, side="right") - 1

    def features(
        self, show: Show, votes: Mapping[str, float] | None = None, vote_strength: float = 1.0
    ) -> ShowFeatures:
        """Features of every song played before, for ``show`` played next (after ``t`` shows)."""
        t = self.t
        ids = np.nonzero(self.count > 0)[0].astype(np.int64)
        X = np.zeros((len(ids), len(FEATURE_NAMES)))
        if not len(ids):
            return ShowFeatures(ids, X, t)
        count = self.count[ids]
        X[:, F["rate_all"]] = count / t
        for w in WINDOWS:
            X[:, F[f"rate_{w}"]] = self.window[w][ids] / min(w, t)
        for h in HALF_LIVES:
            X[:, F[f"decay_h{h}"]] = self.decay[h][ids] / max(self.decay_norm[h], 1e-9)
        gap = t - self.last[ids]
        X[:, F["log_gap"]] = np.log1p(gap)
        X[:, F["in_prev1"]] = gap == 1
        X[:, F["in_prev3"]] = self.window_count(ids, 3) / min(3, t)
        span = np.maximum(self.last[ids] - self.first[ids], 1)
        mean_gap = np.where(count >= 2, span / np.maximum(count - 1, 1), t - self.first[ids])
        X[:, F["overdue"]] = np.minimum(gap / np.maximum(mean_gap, 1), 20.0)
        rate = (self.gap_hit + 1.0) / (self.gap_opp + 2.0)
        X[:, F["gap_rate"]] = rate[self._gap_bucket(gap)]
        X[:, F["artist_repeat"]] = float(np.mean(self.repeats)) if self.repeats else 0.5
        for key, groups, rate_name, shows_name in (
            (show.tour, self.tours, "tour_rate", "tour_shows"),
            (show.venue, self.venues, "venue_rate", "venue_shows"),
            (show.city, self.cities, "city_rate", None),
        ):
            group = groups.get(key) if key else None
            if group is not None and group.shows:
                X[:, F[rate_name]] = group.counts[ids] / group.shows
                if shows_name:
                    X[:, F[shows_name]] = math.log1p(group.shows)
        X[:, F["mean_pos"]] = self.pos_sum[ids] / count
        X[:, F["encore_share"]] = self.encore[ids] / count
        X[:, F["opener_share"]] = self.opener[ids] / count
        X[:, F["log_since_debut"]] = np.log1p(t - self.first[ids])
        if self.prev_day is not None:
            X[:, F["log_days_since_show"]] = math.log1p(max(show.ordinal - self.prev_day, 0))
        X[:, F["log_days_since_played"]] = np.log1p(np.maximum(show.ordinal - self.last_day[ids], 0))
        vote_rank: dict[int, int] = {}
        if votes and vote_strength:
            top = max(votes.values()) or 1.0
            by_id = {self.history.song_ids[s]: v for s, v in votes.items() if s in self.history.song_ids}
            ranked = sorted(by_id.items(), key=lambda kv: -kv[1])
            vote_rank = {sid: r + 1 for r, (sid, v) in enumerate(ranked) if v > 0}
            where = {int(sid): i for i, sid in enumerate(ids)}
            for sid, v in by_id.items():
                if sid in where:
                    X[where[sid], F["votes"]] = vote_strength * v / top
        return ShowFeatures(ids, X, t, vote_rank)

    def window_count(self, ids: IntArray, w: int) -> FloatArray:
        out = np.zeros(len(ids))
        members = np.zeros(len(self.count))
        for played in list(self.recent)[-w:]:
            members[played] += 1
        out[:] = members[ids]
        return out

    # ---- writing
    def absorb(self, show: Show) -> None:
        """Add the show played next (the one just described by :meth:`features`)."""
        t = self.t
        ids = np.array([self.history.song_ids[s] for s in show.songs], dtype=np.int64)
        if t > 0:
            seen = np.nonzero(self.count > 0)[0]
            played = np.zeros(len(self.count))
            played[ids] = 1
            buckets = self._gap_bucket(t - self.last[seen])
            self.gap_opp += np.bincount(buckets, minlength=len(GAP_EDGES))
            self.gap_hit += np.bincount(buckets, weights=played[seen], minlength=len(GAP_EDGES))
            prev = self.recent[-1] if self.recent else np.zeros(0, dtype=np.int64)
            if len(prev):
                self.repeats.append(float(np.isin(prev, ids).mean()))
        for w in WINDOWS:
            if len(self.recent) >= w:
                self.window[w][self.recent[-w]] -= 1
            self.window[w][ids] += 1
        for h in HALF_LIVES:
            d = 0.5 ** (1.0 / h)
            self.decay[h] *= d
            self.decay[h][ids] += 1
            self.decay_norm[h] = self.decay_norm[h] * d + 1
        self.recent.append(ids)
        new = self.first[ids] < 0
        self.first[ids[new]] = t
        self.count[ids] += 1
        self.last[ids] = t
        self.last_day[ids] = show.ordinal
        n = len(ids)
        self.pos_sum[ids] += np.arange(n) / (n - 1) if n > 1 else 0.5
        roles = np.array(show.roles)
        self.encore[ids[roles == ROLE_ENCORE]] += 1
        self.opener[ids[roles == ROLE_OPENER]] += 1
        for key, groups in ((show.tour, self.tours), (show.venue, self.venues), (show.city, self.cities)):
            if key:
                group = groups.setdefault(key, _Group(0, np.zeros(len(self.count))))
                group.shows += 1
                group.counts[ids] += 1
        self.prev_day = show.ordinal
        self.t += 1


def all_show_features(history: ArtistHistory, upto: int | None = None, start: int = 0) -> list[ShowFeatures]:
    """Features of shows ``start``..``upto`` (all by default), each as of just before it."""
    state = FeatureState(history)
    out: list[ShowFeatures] = []
    for i, show in enumerate(history.shows[: len(history.shows) if upto is None else upto]):
        if i >= start:
            out.append(state.features(show))
        state.absorb(show)
    return out


def labels(history: ArtistHistory, index: int, song_ids: IntArray) -> FloatArray:
    """1 for each candidate played in show ``index``, else 0."""
    played = {history.song_ids[s] for s in history.shows[index].songs}
    return np.array([1.0 if int(s) in played else 0.0 for s in song_ids])
