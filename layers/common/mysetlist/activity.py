"""Vote activity: velocity (votes per minute over a sliding window) and trending scores.

Both are kept on the tally items, by the same transactional updates as the counts, so they are
exactly-once with the tallies and cost no extra write (``mysetlist.tallies``).

**Velocity.** Each counted vote adds 1 to the bucket of the minute of its current state
(``updated_at``) and removing, switching or quarantining it takes that 1 back: a bucket holds
the votes *currently standing* that were cast in that minute. Only minutes inside the window
are written; older buckets are removed by later updates. A song's velocity at ``now`` is the
sum over the last ``window`` minutes (the oldest one weighted by how much of it is still
inside the window) divided by ``window``: votes per minute.

**Trending.** ``score(now) = sum over standing votes of w(vote) * 2 ** -((now - t_vote) / H)``
with the half-life ``H`` a setting and ``w`` 1 for an up vote and ``down_weight`` for a down
vote. It is kept with *forward decay*: a vote adds the constant ``w * 2 ** ((t_vote - T_e) / H)``
to the sum of its era ``e`` (eras are ``32 H`` long and start at ``T_e``), which never changes
afterwards; the score at ``now`` is ``sum_e S_e * 2 ** ((T_e - now) / H)``. Contributions are
integers in billionths of a vote (an era's grow at most 2**32-fold: under 10**19 each, sums far
inside DynamoDB's 38 digits), summed by ``ADD``, so the sums are exact: removing a vote
subtracts exactly what it added, and recomputing them from the vote items (a rebuild) gives
the same numbers, hence the same ranking. Attribute names carry ``H`` so that changing the
half-life starts new sums instead of misreading old ones: the TallyReconciler finds the whole
difference as drift and fills them (at once for settled shows, after 10 stable minutes for open
ones; see mysetlist.reconcile).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mysetlist.settings import Settings

ERA_HALF_LIVES = 32  # an era's contributions grow at most 2**32-fold
SCALE = 10**9  # trending sums are integers: billionths of a vote
_MINUTE_PREFIX = "vm_"


@dataclass(frozen=True, slots=True)
class ActivityConfig:
    """Settings of velocity and trending (``VELOCITY_WINDOW_MINUTES``, ``TRENDING_*``)."""

    half_life_seconds: float = 6 * 3600.0
    down_weight: float = 0.25
    velocity_window_minutes: int = 5
    # Buckets older than the window are removed this many minutes back by every update.
    sweep_minutes: int = 5
    keep_activity: bool = True

    def __post_init__(self) -> None:
        if not (60 <= self.half_life_seconds <= 90 * 86400):
            raise ValueError("the trending half-life must be between 60 seconds and 90 days")
        if not (-1.0 <= self.down_weight <= 1.0):
            raise ValueError("the down-vote weight must be between -1 and 1")
        if not (1 <= self.velocity_window_minutes <= 60):
            raise ValueError("the velocity window must be between 1 and 60 minutes")

    @property
    def era_seconds(self) -> float:
        return ERA_HALF_LIVES * self.half_life_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> ActivityConfig:
        return cls(
            half_life_seconds=settings.trending_half_life_hours * 3600,
            down_weight=settings.trending_down_weight,
            velocity_window_minutes=settings.velocity_window_minutes,
        )


@dataclass(frozen=True, slots=True)
class VoteState:
    """A counted vote: its type and the time (epoch seconds) of its current state."""

    vote_type: str
    at: float


def minute_attribute(minute: int) -> str:
    return f"{_MINUTE_PREFIX}{minute}"


def trend_attribute(era: int, config: ActivityConfig) -> str:
    return f"{_trend_prefix(config)}{era}"


def _trend_prefix(config: ActivityConfig) -> str:
    return f"tr{round(config.half_life_seconds)}_"


def is_trend_attribute(name: str) -> bool:
    return name.startswith("tr") and "_" in name and name[2 : name.index("_")].isdigit()


def era_of(at: float, config: ActivityConfig) -> int:
    return math.floor(at / config.era_seconds)


def contribution(state: VoteState, config: ActivityConfig) -> tuple[int, int]:
    """The era of a vote and the constant it adds to that era's trending sum (in billionths)."""
    weight = 1.0 if state.vote_type == "up" else config.down_weight
    era = era_of(state.at, config)
    growth = 2.0 ** ((state.at - era * config.era_seconds) / config.half_life_seconds)
    return era, round(weight * growth * SCALE)


def trend_sums(votes: Iterable[VoteState], config: ActivityConfig) -> dict[int, int]:
    """Per-era trending sums of standing votes: what the stream keeps, recomputed (a rebuild)."""
    sums: dict[int, int] = {}
    for vote in votes:
        era, amount = contribution(vote, config)
        if amount:
            sums[era] = sums.get(era, 0) + amount
    return {era: total for era, total in sums.items() if total}


def score_at(sums: Mapping[int, int], at: float, config: ActivityConfig) -> float:
    """The trending score at ``at`` of per-era sums."""
    total = 0.0
    for era, amount in sums.items():
        # An era after ``at`` (a writer's clock far ahead of the reader's) is read as if it
        # had just begun: the exponent stays bounded, never overflowing.
        exponent = min((era * config.era_seconds - at) / config.half_life_seconds, 0.0)
        total += amount / SCALE * 2.0**exponent
    return total


def activity_of(
    old: VoteState | None,
    new: VoteState | None,
    now: float,
    config: ActivityConfig,
    minutes: MutableMapping[int, int],
    trend: MutableMapping[int, int],
) -> None:
    """Add one record's change (``old`` -> ``new`` counted states) to per-minute counts inside
    the window at ``now`` and to per-era trending sums."""
    current = math.floor(now / 60)
    oldest = current - config.velocity_window_minutes
    for state, sign in ((old, -1), (new, 1)):
        if state is None:
            continue
        minute = math.floor(state.at / 60)
        if oldest <= minute <= current + 1:  # +1: the writer's clock may be a little ahead
            minutes[minute] = minutes.get(minute, 0) + sign
        era, amount = contribution(state, config)
        if amount:
            trend[era] = trend.get(era, 0) + sign * amount


def stale_minutes(now: float, config: ActivityConfig) -> list[int]:
    """The bucket minutes an update removes: those that have left the window, a sweep back."""
    current = math.floor(now / 60)
    oldest = current - config.velocity_window_minutes
    return list(range(oldest - config.sweep_minutes, oldest))


def velocity(buckets: Mapping[int, int], now: float, config: ActivityConfig) -> float:
    """Votes per minute over the sliding window ending at ``now``."""
    current = math.floor(now / 60)
    window = config.velocity_window_minutes
    elapsed = (now - current * 60) / 60
    total = 0.0
    for minute, count in buckets.items():
        if current - window < minute <= current + 1:
            total += count
        elif minute == current - window:
            total += count * (1.0 - elapsed)
    return max(0.0, total / window)


def song_activity(
    lanes: Iterable[Mapping[str, object]], at: float, config: ActivityConfig
) -> tuple[float, dict[int, int], float]:
    """A song's velocity, per-era trending sums and score at ``at``, from its tally items."""
    buckets: dict[int, int] = {}
    sums: dict[int, int] = {}
    prefix = _trend_prefix(config)
    for lane in lanes:
        for name, value in lane.items():
            if name.startswith(_MINUTE_PREFIX):
                minute = int(name[len(_MINUTE_PREFIX) :])
                buckets[minute] = buckets.get(minute, 0) + int(str(value))
            elif name.startswith(prefix):
                era = int(name[len(prefix) :])
                sums[era] = sums.get(era, 0) + int(str(value))
    sums = {era: total for era, total in sums.items() if total}
    return velocity(buckets, at, config), sums, score_at(sums, at, config)
