"""Per-candidate features for a show, computed only from the shows before it.

:class:`FeatureState` walks an artist's history forward: :meth:`FeatureState.features` describes
every song played before (the candidates) as of *now*, and :meth:`FeatureState.absorb` then adds
the show that was played. Nothing after the current position is ever read, so a feature row can
not see the future by construction (the unit tests check it by perturbing later shows).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mysetlist.predictions.history import ROLE_ENCORE, ROLE_MAIN, ROLE_OPENER, ArtistHistory, Show

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

WINDOWS = (5, 10, 20, 50)
HALF_LIVES = (5, 20)
# Buckets of "shows since last played": 1, 2, 3, 4-6, 7-15, 16-49, 50+.
GAP_EDGES = np.array([1, 2, 3, 4, 7, 16, 50])
REPEAT_WINDOW = 20
# Pseudo-count pulling a set's repeat rate towards the artist's overall one until it has data.
SLOT_PRIOR = 2.0

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
    "slot_repeat",
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
    """Plays per song at one venue, city or tour (an array as long as the largest song id
    played there, not the whole repertoire)."""

    shows: int = 0
    counts: FloatArray = field(default_factory=lambda: np.zeros(0))

    def add(self, ids: IntArray) -> None:
        """Add one show's (distinct) songs."""
        self.shows += 1
        if len(ids):
            top = int(ids.max()) + 1
            if top > len(self.counts):
                self.counts = np.concatenate(
                    [self.counts, np.zeros(max(top, 2 * len(self.counts)) - len(self.counts))]
                )
            self.counts[ids] += 1

    def rates(self, ids: IntArray) -> FloatArray:
        inside = ids < len(self.counts)
        out = np.zeros(len(ids))
        out[inside] = self.counts[ids[inside]] / self.shows
        return out


# The gap bucket of each gap below the last edge (index = gap).
_BUCKET_OF_GAP = np.searchsorted(GAP_EDGES, np.arange(GAP_EDGES[-1]), side="right") - 1
_PER_SONG = ("count", "first", "last", "last_day", "pos_sum", "encore", "opener", "last_slot")


@dataclass(frozen=True)
class SongFacts:
    """Plain counts about one candidate song as of a show, for the reasons (each sentence is
    built from these, so it is literally true of the history)."""

    shows: int  # the artist's shows so far
    plays: int  # this song's
    last_ago: int  # shows since its last play: 1 = the previous show
    first_ago: int  # shows since its first play
    window_plays: dict[int, int]  # plays in the last w shows (w = 3 and WINDOWS), at most t
    gap_label: str  # its gap bucket, as words ("4 to 6 shows ago")
    gap_back: tuple[int, int]  # songs the artist brought back at that gap: (hits, chances)
    slot: str  # the set (or role) it was last played in
    slot_back: tuple[int, int]  # songs last placed there that came back the next show
    venue: tuple[int, int] | None  # (plays, shows) at this show's venue
    city: tuple[int, int] | None
    tour: tuple[int, int] | None
    encore_plays: int
    opener_plays: int
    mean_position: float  # 0 = first song of the show, 1 = last
    usual_gap: float | None  # mean shows between its plays (None under two plays)


def _gap_label(bucket: int) -> str:
    lo = int(GAP_EDGES[bucket])
    if bucket == len(GAP_EDGES) - 1:
        return f"{lo} or more shows ago"
    hi = int(GAP_EDGES[bucket + 1]) - 1
    if lo == hi:
        return "in the previous show" if lo == 1 else f"{lo} shows ago"
    return f"{lo} to {hi} shows ago"


class FeatureState:
    """The state of an artist's history after the first ``t`` shows.

    Absorbing a show costs in proportion to the show's songs, not to the artist's repertoire
    (recency decays are applied lazily, windows counted when read, venue counts kept sparse), so
    walking 2,000 shows is cheap, and a state can be kept and carried forward show by show: it
    keeps its own song index (the history's ids, as songs get ids by first appearance).
    """

    def __init__(self, history: ArtistHistory | None = None) -> None:
        capacity = max(len(history.titles) if history is not None else 0, 64)
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.t = 0
        self.count = np.zeros(capacity)
        self.first = np.full(capacity, -1, dtype=np.int64)
        self.last = np.full(capacity, -1, dtype=np.int64)
        self.last_day = np.zeros(capacity, dtype=np.int64)
        self.pos_sum = np.zeros(capacity)
        self.encore = np.zeros(capacity)
        self.opener = np.zeros(capacity)
        self.last_slot = np.full(capacity, -1, dtype=np.int64)
        # Recency-weighted plays, stored as of the song's last play (``decay_at``) and decayed
        # to now when read: value * d ** (t - 1 - decay_at).
        self.decay = {h: np.zeros(capacity) for h in HALF_LIVES}
        self.decay_at = np.zeros(capacity, dtype=np.int64)
        self.decay_norm = dict.fromkeys(HALF_LIVES, 0.0)
        self.recent: deque[IntArray] = deque(maxlen=max(WINDOWS))
        # Songs by the show they were last played in (index = show), for the gap statistics.
        self.last_hist = np.zeros(256)
        self.gap_opp = np.zeros(len(GAP_EDGES))
        self.gap_hit = np.zeros(len(GAP_EDGES))
        self.repeats: deque[float] = deque(maxlen=REPEAT_WINDOW)
        self.venues: dict[str, _Group] = {}
        self.cities: dict[str, _Group] = {}
        self.tours: dict[str, _Group] = {}
        self.prev_day: int | None = None
        # Where each song was last placed (its set) and how often songs placed there came back
        # in the very next show.
        self.slot_index: dict[str, int] = {}
        self.slot_opp = np.zeros(0)
        self.slot_hit = np.zeros(0)
        self.prev_slots = np.zeros(0, dtype=np.int64)

    @classmethod
    def after(cls, shows: Sequence[Show]) -> FeatureState:
        """The state after ``shows`` (oldest first), computed for all of them at once: the
        same state as absorbing them one by one (the unit tests compare the two), several times
        faster, for serving a prediction from a long history."""
        state = cls()
        if shows:
            _Batch(state, shows).fill()
        return state

    @property
    def seen(self) -> int:
        """How many distinct songs have been played."""
        return len(self.keys)

    def copy(self) -> FeatureState:
        """An independent copy (to carry a cached state forward without changing it)."""
        return copy.deepcopy(self)

    # ---- reading
    def _gap_bucket(self, gap: IntArray) -> IntArray:
        return np.searchsorted(GAP_EDGES, gap, side="right") - 1

    def features(
        self, show: Show, votes: Mapping[str, float] | None = None, vote_strength: float = 1.0
    ) -> ShowFeatures:
        """Features of every song played before, for ``show`` played next (after ``t`` shows)."""
        t = self.t
        ids = np.arange(self.seen, dtype=np.int64)
        X = np.zeros((len(ids), len(FEATURE_NAMES)))
        if not len(ids):
            return ShowFeatures(ids, X, t)
        count = self.count[ids]
        last = self.last[ids]
        first = self.first[ids]
        X[:, F["rate_all"]] = count / t
        recent = list(self.recent)
        for w in WINDOWS:
            X[:, F[f"rate_{w}"]] = self._window(recent, w, len(ids)) / min(w, t)
        for h in HALF_LIVES:
            d = 0.5 ** (1.0 / h)
            decayed = self.decay[h][ids] * d ** (t - 1 - self.decay_at[ids])
            X[:, F[f"decay_h{h}"]] = decayed / max(self.decay_norm[h], 1e-9)
        gap = t - last
        X[:, F["log_gap"]] = np.log1p(gap)
        X[:, F["in_prev1"]] = gap == 1
        X[:, F["in_prev3"]] = self._window(recent, 3, len(ids)) / min(3, t)
        span = np.maximum(last - first, 1)
        mean_gap = np.where(count >= 2, span / np.maximum(count - 1, 1), t - first)
        X[:, F["overdue"]] = np.minimum(gap / np.maximum(mean_gap, 1), 20.0)
        rate = (self.gap_hit + 1.0) / (self.gap_opp + 2.0)
        X[:, F["gap_rate"]] = rate[self._gap_bucket(gap)]
        X[:, F["artist_repeat"]] = float(np.mean(self.repeats)) if self.repeats else 0.5
        X[:, F["slot_repeat"]] = self._slot_repeat(ids)
        for key, groups, rate_name, shows_name in (
            (show.tour, self.tours, "tour_rate", "tour_shows"),
            (show.venue, self.venues, "venue_rate", "venue_shows"),
            (show.city, self.cities, "city_rate", None),
        ):
            group = groups.get(key) if key else None
            if group is not None and group.shows:
                X[:, F[rate_name]] = group.rates(ids)
                if shows_name:
                    X[:, F[shows_name]] = math.log1p(group.shows)
        X[:, F["mean_pos"]] = self.pos_sum[ids] / count
        X[:, F["encore_share"]] = self.encore[ids] / count
        X[:, F["opener_share"]] = self.opener[ids] / count
        X[:, F["log_since_debut"]] = np.log1p(t - first)
        if self.prev_day is not None:
            X[:, F["log_days_since_show"]] = math.log1p(max(show.ordinal - self.prev_day, 0))
        X[:, F["log_days_since_played"]] = np.log1p(np.maximum(show.ordinal - self.last_day[ids], 0))
        vote_rank: dict[int, int] = {}
        if votes and vote_strength:
            top = max(votes.values()) or 1.0
            by_id = {self.index[s]: v for s, v in votes.items() if s in self.index}
            # The fans' rank among every song voted up for the show, played before or not.
            ranked = sorted((v, key) for key, v in votes.items() if v > 0)
            rank_of = {key: len(ranked) - r for r, (_, key) in enumerate(ranked)}
            vote_rank = {self.index[key]: r for key, r in rank_of.items() if key in self.index}
            for sid, v in by_id.items():
                X[sid, F["votes"]] = vote_strength * v / top
        return ShowFeatures(ids, X, t, vote_rank)

    def facts(self, show: Show, ids: IntArray) -> list[SongFacts]:
        """The counts behind each of ``ids``' features for ``show`` played next."""
        t = self.t
        recent = list(self.recent)
        windows = {w: self._window(recent, w, self.seen) for w in (3, *WINDOWS)}
        groups = {
            "venue": self.venues.get(show.venue) if show.venue else None,
            "city": self.cities.get(show.city) if show.city else None,
            "tour": self.tours.get(show.tour) if show.tour else None,
        }
        slot_names = list(self.slot_index)
        out = []
        for sid in ids.tolist():
            plays = int(self.count[sid])
            gap = t - int(self.last[sid])
            bucket = int(self._gap_bucket(np.array([gap]))[0])
            slot = int(self.last_slot[sid])
            at: dict[str, tuple[int, int] | None] = {}
            for name, group in groups.items():
                inside = group is not None and sid < len(group.counts)
                at[name] = (int(group.counts[sid]) if inside else 0, group.shows) if group else None
            span = int(self.last[sid] - self.first[sid])
            out.append(
                SongFacts(
                    shows=t,
                    plays=plays,
                    last_ago=gap,
                    first_ago=t - int(self.first[sid]),
                    window_plays={w: int(c[sid]) for w, c in windows.items()},
                    gap_label=_gap_label(bucket),
                    gap_back=(int(self.gap_hit[bucket]), int(self.gap_opp[bucket])),
                    slot=slot_names[slot],
                    slot_back=(int(self.slot_hit[slot]), int(self.slot_opp[slot])),
                    venue=at["venue"],
                    city=at["city"],
                    tour=at["tour"],
                    encore_plays=int(self.encore[sid]),
                    opener_plays=int(self.opener[sid]),
                    mean_position=float(self.pos_sum[sid] / plays),
                    usual_gap=span / (plays - 1) if plays >= 2 else None,
                )
            )
        return out

    @staticmethod
    def _window(recent: list[IntArray], w: int, size: int) -> FloatArray:
        """Plays of each song in the last ``w`` shows."""
        played = recent[-w:]
        if not played:
            return np.zeros(size)
        return np.bincount(np.concatenate(played), minlength=size)[:size].astype(np.float64)

    def _slot_repeat(self, ids: IntArray) -> FloatArray:
        """The share of songs placed in each candidate's last set that were played again in the
        next show, smoothed towards the share over all sets."""
        opp, hit = self.slot_opp.sum(), self.slot_hit.sum()
        prior = (hit + 1.0) / (opp + 2.0)
        slots = self.last_slot[ids]
        return np.asarray(
            (self.slot_hit[slots] + SLOT_PRIOR * prior) / (self.slot_opp[slots] + SLOT_PRIOR),
            dtype=np.float64,
        )

    # ---- writing
    def _ids_of(self, show: Show) -> IntArray:
        out = np.empty(len(show.songs), dtype=np.int64)
        for i, key in enumerate(show.songs):
            sid = self.index.get(key)
            if sid is None:
                sid = self.index[key] = len(self.keys)
                self.keys.append(key)
            out[i] = sid
        if self.seen > len(self.count):
            self._grow(2 * self.seen)
        return out

    def _grow(self, capacity: int) -> None:
        def grown(a: npt.NDArray[Any], fill: float) -> npt.NDArray[Any]:
            out = np.full(capacity, fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        for name in _PER_SONG:
            array = getattr(self, name)
            setattr(self, name, grown(array, -1 if name in {"first", "last", "last_slot"} else 0))
        self.decay = {h: grown(a, 0) for h, a in self.decay.items()}
        self.decay_at = grown(self.decay_at, 0)

    def _slot_id(self, name: str) -> int:
        index = self.slot_index.get(name)
        if index is None:
            index = self.slot_index[name] = len(self.slot_index)
            self.slot_opp = np.append(self.slot_opp, 0.0)
            self.slot_hit = np.append(self.slot_hit, 0.0)
        return index

    def _slots_of(self, show: Show) -> IntArray:
        return np.fromiter((self._slot_id(name) for name in _slot_names(show)), np.int64, len(show.songs))

    def _count_gaps(self, gaps: IntArray, seen_before: int) -> None:
        """Add show ``t``'s opportunities (every song seen before, by gap bucket) and hits (the
        songs played again, ``gaps`` shows after their last play)."""
        t = self.t
        lo = max(0, t - len(_BUCKET_OF_GAP) + 1)
        opp = np.bincount(
            _BUCKET_OF_GAP[t - np.arange(lo, t)], weights=self.last_hist[lo:t], minlength=len(GAP_EDGES)
        )
        opp[-1] = seen_before - opp[:-1].sum()
        self.gap_opp += opp
        if len(gaps):
            self.gap_hit += np.bincount(self._gap_bucket(gaps), minlength=len(GAP_EDGES))

    def absorb(self, show: Show) -> None:
        """Add the show played next (the one just described by :meth:`features`)."""
        t = self.t
        seen_before = self.seen
        ids = self._ids_of(show)
        n = len(ids)
        known = ids < seen_before
        before = self.last[ids[known]]
        if t >= len(self.last_hist):
            self.last_hist = np.concatenate([self.last_hist, np.zeros(len(self.last_hist))])
        if t > 0:
            self._count_gaps(t - before, seen_before)
        np.subtract.at(self.last_hist, before, 1.0)
        self.last_hist[t] += n
        for h in HALF_LIVES:
            d = 0.5 ** (1.0 / h)
            self.decay[h][ids] = self.decay[h][ids] * d ** (t - self.decay_at[ids]) + 1
            self.decay_norm[h] = self.decay_norm[h] * d + 1
        self.decay_at[ids] = t
        self.last[ids] = t
        prev = self.recent[-1] if self.recent else None
        if prev is not None and len(prev):
            again = self.last[prev] == t
            self.repeats.append(float(again.mean()))
            self.slot_opp += np.bincount(self.prev_slots, minlength=len(self.slot_opp))
            self.slot_hit += np.bincount(self.prev_slots, weights=again, minlength=len(self.slot_hit))
        self.recent.append(ids)
        slots = self._slots_of(show)
        self.last_slot[ids] = slots
        self.prev_slots = slots
        self.first[ids[~known]] = t
        self.count[ids] += 1
        self.last_day[ids] = show.ordinal
        self.pos_sum[ids] += np.arange(n) / (n - 1) if n > 1 else 0.5
        for i, role in enumerate(_padded_roles(show)):
            if role == ROLE_ENCORE:
                self.encore[ids[i]] += 1
            elif role == ROLE_OPENER:
                self.opener[ids[i]] += 1
        for key, groups in ((show.tour, self.tours), (show.venue, self.venues), (show.city, self.cities)):
            if key:
                group = groups.get(key)
                if group is None:
                    group = groups[key] = _Group()
                group.add(ids)
        self.prev_day = show.ordinal
        self.t += 1


class _Batch:
    """:meth:`FeatureState.after`: every show's plays as flat arrays (one row per play, in show
    order), from which each part of the state is computed without walking the shows."""

    def __init__(self, state: FeatureState, shows: Sequence[Show]) -> None:
        self.state = state
        self.shows = shows
        self.n = len(shows)
        keys = [key for show in shows for key in show.songs]
        for key in dict.fromkeys(keys):
            if key not in state.index:
                state.index[key] = len(state.keys)
                state.keys.append(key)
        if state.seen > len(state.count):
            state._grow(state.seen)
        index = state.index
        self.song = np.fromiter((index[key] for key in keys), np.int64, len(keys))
        self.sizes = np.fromiter((len(show.songs) for show in shows), np.int64, self.n)
        self.where = np.repeat(np.arange(self.n, dtype=np.int64), self.sizes)
        names = [name for show in shows for name in _slot_names(show)]
        for name in dict.fromkeys(names):
            state._slot_id(name)
        self.slot = np.fromiter((state.slot_index[name] for name in names), np.int64, len(names))
        # Each song's plays, oldest first.
        self.order = np.argsort(self.song, kind="stable")  # plays are in show order already
        self.s_song = self.song[self.order]
        self.s_where = self.where[self.order]
        same = self.s_song[1:] == self.s_song[:-1]
        self.starts = np.flatnonzero(np.r_[True, ~same])
        self.ends = np.r_[self.starts[1:], len(self.order)] - 1
        self.next_play = np.full(len(self.order), -1, dtype=np.int64)
        self.next_play[self.order[:-1]] = np.where(same, self.s_where[1:], -1)

    def fill(self) -> None:
        state, v = self.state, self.state.seen
        song, where = self.song, self.where
        state.count[:v] = np.bincount(song, minlength=v)
        state.first[:v] = self.s_where[self.starts]
        last = self.s_where[self.ends]
        state.last[:v] = last
        ordinals = np.fromiter((show.ordinal for show in self.shows), np.int64, self.n)
        state.last_day[:v] = ordinals[last]
        state.last_slot[:v] = self.slot[self.order[self.ends]]
        offset = np.repeat(np.cumsum(self.sizes) - self.sizes, self.sizes)
        width = np.repeat(self.sizes - 1, self.sizes)
        rel = np.where(width > 0, (np.arange(len(song)) - offset) / np.maximum(width, 1), 0.5)
        state.pos_sum[:v] = np.bincount(song, weights=rel, minlength=v)
        roles = [role for show in self.shows for role in _padded_roles(show)]
        state.encore[:v] = np.bincount(song, weights=[r == ROLE_ENCORE for r in roles], minlength=v)
        state.opener[:v] = np.bincount(song, weights=[r == ROLE_OPENER for r in roles], minlength=v)
        for h in HALF_LIVES:
            # Each play decayed to the song's last play; the norm by the recurrence of absorb.
            d = 0.5 ** (1.0 / h)
            state.decay[h][:v] = np.bincount(song, weights=d ** (state.last[song] - where), minlength=v)
            norm = 0.0
            for _ in range(self.n):
                norm = norm * d + 1
            state.decay_norm[h] = norm
        state.decay_at[:v] = last
        self._gaps(last)
        self._repeats()
        self._groups()
        state.recent.extend(
            np.split(song, np.cumsum(self.sizes)[:-1])[-max(WINDOWS) :] if self.n > 1 else [song]
        )
        state.prev_day = self.shows[-1].ordinal
        state.t = self.n

    def _gaps(self, last: IntArray) -> None:
        """Each play after an earlier one is a hit at its gap; every show between two plays (or
        after the last, up to the newest show) was an opportunity at its gap."""
        state = self.state
        again = np.ones(len(self.order), dtype=bool)
        again[self.starts] = False
        gaps = (self.s_where - np.r_[-1, self.s_where[:-1]])[again]
        state.gap_hit = np.bincount(state._gap_bucket(gaps), minlength=len(GAP_EDGES)).astype(np.float64)
        spans = np.concatenate([gaps, (self.n - 1) - last])
        hi = np.r_[GAP_EDGES[1:], self.n + 1]
        covered = np.minimum(spans[:, None], hi - 1) - GAP_EDGES + 1
        state.gap_opp = np.clip(covered, 0, None).sum(axis=0).astype(np.float64)
        state.last_hist = np.zeros(max(256, 2 * self.n))
        state.last_hist[: self.n] = np.bincount(last, minlength=self.n)

    def _repeats(self) -> None:
        """Next-show repeats: by set over every pair of consecutive shows, overall for the last
        ones."""
        state = self.state
        pairs = self.where < self.n - 1
        hit = (self.next_play == self.where + 1)[pairs]
        slots = self.slot[pairs]
        n_slots = len(state.slot_index)
        state.slot_opp = np.bincount(slots, minlength=n_slots).astype(np.float64)
        state.slot_hit = np.bincount(slots, weights=hit, minlength=n_slots).astype(np.float64)
        per_show = np.bincount(self.where[pairs], weights=hit, minlength=self.n)
        for u in range(max(1, self.n - 2 * REPEAT_WINDOW), self.n):
            if self.sizes[u - 1]:
                state.repeats.append(float(per_show[u - 1] / self.sizes[u - 1]))
        state.prev_slots = self.slot[self.where == self.n - 1]

    def _groups(self) -> None:
        """Plays per song at each venue, city and tour."""
        state, v = self.state, self.state.seen
        for attr, groups in (("tour", state.tours), ("venue", state.venues), ("city", state.cities)):
            names: dict[str, int] = {}
            group_of = np.fromiter(
                (
                    names.setdefault(key, len(names)) if (key := getattr(show, attr)) else -1
                    for show in self.shows
                ),
                np.int64,
                self.n,
            )
            if not names:
                continue
            shows = np.bincount(group_of[group_of >= 0], minlength=len(names))
            occ = group_of[self.where]
            inside = occ >= 0
            codes, counts = np.unique(occ[inside] * v + self.song[inside], return_counts=True)
            group, sid = codes // v, codes % v
            bounds = np.searchsorted(group, np.arange(len(names) + 1))
            for key, g in names.items():
                lo, hi = bounds[g], bounds[g + 1]
                dense = np.zeros(int(sid[hi - 1]) + 1 if hi > lo else 0)
                dense[sid[lo:hi]] = counts[lo:hi]
                groups[key] = _Group(int(shows[g]), dense)


def _slot_names(show: Show) -> tuple[str, ...]:
    """Where each song was placed: its set's name, else its role."""
    return show.slots if len(show.slots) == len(show.songs) else _padded_roles(show)


def _padded_roles(show: Show) -> tuple[str, ...]:
    n = len(show.songs)
    return (show.roles + (ROLE_MAIN,) * n)[:n]


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
