"""Who sees which variant: deterministic, salted hashing with independent draws.

Every decision is a hash of the subject under its own key, so it needs no storage to be the
same on every request, in every container:

* **inclusion**: ``unit_hash("<salt>:<seed>:include", subject) < allocation / 100`` for an
  experiment without a layer; in a layer, ``layer_bucket(layer, subject)`` (the same for every
  experiment of the layer) must fall in the experiment's slice ``[lo, hi)`` of the layer's
  10,000 buckets, and slices never overlap, so a user is in at most one experiment of a layer;
* **variant**: ``unit_hash("<salt>:<seed>:variant", subject)`` against the cumulative
  normalised weights.

The two draws are independent (different keys), so every variant gets its share of the included
users at any allocation; the original used one bucket for both, and at 50% allocation every
included user got variant A. The variant draw does not depend on the allocation, so ramping a
test up keeps each user who was in it on the same variant. The salt (random per experiment)
makes experiments independent of each other; ``seed`` is the phase whose randomisation the
current phase uses (``Phase.seed_phase``).

The hash is SHA-256 of ``key`` and ``subject`` joined by U+001F, its first 8 bytes read as a
big-endian unsigned integer: the same in any language, unlike Python's ``hash()`` (salted per
process). ``unit_hash`` keeps the top 53 bits of it (``/ 2**53``) so that the float is exact and
always below 1.

Once the API has stored a user's assignment for a phase, it serves the stored one: this module
decides only the first time.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mysetlist.errors import InvalidRequest
from mysetlist.experiments.definitions import (
    ISO_COUNTRIES,
    LAYER_BUCKETS,
    Device,
    Experiment,
    Targeting,
    TargetRole,
    UserType,
    normalise,
)
from mysetlist.signals import DEVICE_ID_HEADER, DEVICE_ID_PATTERN

# Counter items of an experiment are spread over this many partitions (by subject).
COUNTER_SHARDS = 8
# A signed-in account younger than this is a "new" user.
NEW_USER_DAYS = 30
UNKNOWN = "unknown"
USER_PREFIX = "u:"
DEVICE_PREFIX = "d:"
_SEPARATOR = "\x1f"
_TOP_53_BITS = 11  # shift of a 64-bit integer to 53 bits
_TWO_53 = float(2**53)

# Highest first: a signed-in caller's targeting role is its highest one.
_ROLE_ORDER = (TargetRole.ADMIN, TargetRole.CONTENT_MANAGER, TargetRole.MODERATOR, TargetRole.USER)


# ---------------------------------------------------------------------------------- hashing


def _u64(key: str, subject: str) -> int:
    digest = hashlib.sha256(f"{key}{_SEPARATOR}{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def unit_hash(key: str, subject: str) -> float:
    """A uniform draw in [0, 1) fixed by ``key`` and ``subject``."""
    return (_u64(key, subject) >> _TOP_53_BITS) / _TWO_53


def layer_bucket(layer: str, subject: str) -> int:
    """The subject's bucket (0 to 9,999) in ``layer``: the same for every experiment of it."""
    return (_u64(f"layer:{layer}", subject) * LAYER_BUCKETS) >> 64


def shard_of(subject: str, shards: int = COUNTER_SHARDS) -> int:
    """The counter shard of a subject (stored on its assignment, so its counts add up in one
    place whatever the shard count later becomes)."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    digest = hashlib.sha256(subject.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def include_key(salt: str, seed: int) -> str:
    return f"{salt}:{seed}:include"


def variant_key(salt: str, seed: int) -> str:
    return f"{salt}:{seed}:variant"


# ---------------------------------------------------------------------------------- bucketing


@dataclass(frozen=True, slots=True)
class Bucketing:
    """One phase's assignment rule, reduced to plain values (the serving path and the
    simulations call it per user, so no model is touched per call)."""

    salt: str
    seed: int
    variant_ids: tuple[str, ...]
    boundaries: tuple[float, ...]  # upper end of each variant's share; the last is 1.0
    allocation: float  # percent, for experiments without a layer
    layer: str | None = None
    layer_range: tuple[int, int] | None = None
    _include: bytes = field(init=False, repr=False)
    _variant: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include", f"{include_key(self.salt, self.seed)}{_SEPARATOR}".encode())
        object.__setattr__(self, "_variant", f"{variant_key(self.salt, self.seed)}{_SEPARATOR}".encode())

    @classmethod
    def build(
        cls,
        salt: str,
        seed: int,
        weights: Mapping[str, float],
        allocation: float,
        *,
        layer: str | None = None,
        layer_range: tuple[int, int] | None = None,
    ) -> Bucketing:
        """From the variants' weights (any positive scale) in their order."""
        return cls(
            salt=salt,
            seed=seed,
            variant_ids=tuple(weights),
            boundaries=cumulative(list(weights.values())),
            allocation=allocation,
            layer=layer,
            layer_range=layer_range,
        )

    @classmethod
    def of(cls, experiment: Experiment, phase: int | None = None) -> Bucketing:
        """The rule of ``experiment``'s phase (default: the current one)."""
        chosen = experiment.phase_of(phase)
        return cls.build(
            experiment.salt,
            chosen.seed_phase,
            chosen.normalised_weights,
            chosen.traffic_allocation,
            layer=experiment.layer,
            layer_range=experiment.layer_range,
        )

    def inclusion_draw(self, subject: str) -> float:
        digest = hashlib.sha256(self._include + subject.encode()).digest()
        return (int.from_bytes(digest[:8], "big") >> _TOP_53_BITS) / _TWO_53

    def variant_draw(self, subject: str) -> float:
        digest = hashlib.sha256(self._variant + subject.encode()).digest()
        return (int.from_bytes(digest[:8], "big") >> _TOP_53_BITS) / _TWO_53

    def included(self, subject: str) -> bool:
        """In the experiment's traffic (targeting aside): its layer slice, or the allocation."""
        if self.layer is not None:
            if self.layer_range is None:
                return False
            lo, hi = self.layer_range
            return lo <= layer_bucket(self.layer, subject) < hi
        # Every draw is below 1: at 100% the inclusion hash is not needed (the serving path's
        # common case costs one hash).
        return self.allocation >= 100 or self.inclusion_draw(subject) < self.allocation / 100

    def variant_of(self, subject: str) -> str:
        """The variant the subject gets if included (whatever the allocation)."""
        return self.variant_ids[pick(self.variant_draw(subject), self.boundaries)]

    def variant_for(self, subject: str) -> str | None:
        """The subject's variant id, or None when it is not included."""
        return self.variant_of(subject) if self.included(subject) else None


def cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    """Upper ends of the variants' slices of [0, 1), the last exactly 1.0 (rounding never
    leaves a draw without a variant)."""
    shares = normalise(weights)
    ends = [math.fsum(shares[: i + 1]) for i in range(len(shares))]
    ends[-1] = 1.0
    return tuple(ends)


def pick(draw: float, boundaries: Sequence[float]) -> int:
    """Index of the slice that holds ``draw`` (slices are [previous end, end))."""
    return min(bisect.bisect_right(boundaries, draw), len(boundaries) - 1)


# ---------------------------------------------------------------------------------- layers


def _ranges(ranges: Mapping[str, Sequence[int]]) -> list[tuple[int, int]]:
    taken = []
    for test_id, (lo, hi) in ranges.items():
        if not 0 <= int(lo) < int(hi) <= LAYER_BUCKETS:
            raise ValueError(
                f"range of {test_id} must be [lo, hi) within 0..{LAYER_BUCKETS}, got [{lo}, {hi})"
            )
        taken.append((int(lo), int(hi)))
    return sorted(taken)


def _check_width(width: int) -> None:
    if not 1 <= width <= LAYER_BUCKETS:
        raise ValueError(f"width must be 1 to {LAYER_BUCKETS} buckets, got {width}")


def reserve_range(ranges: Mapping[str, Sequence[int]], width: int) -> tuple[int, int] | None:
    """The first free slice of ``width`` buckets in a layer whose experiments hold ``ranges``
    (test_id -> [lo, hi)); None when no gap is wide enough (the layer is full)."""
    _check_width(width)
    start = 0
    for lo, hi in _ranges(ranges):
        if lo - start >= width:
            return start, start + width
        start = max(start, hi)
    return (start, start + width) if LAYER_BUCKETS - start >= width else None


def resize_range(ranges: Mapping[str, Sequence[int]], test_id: str, width: int) -> tuple[int, int] | None:
    """A slice of ``width`` for ``test_id`` that keeps as much of its current one as possible.

    Shrinking keeps the start; growing extends into the free buckets around the current slice
    (so every user who was in stays in: a ramp keeps its users). Only when the gap around it is
    too narrow does it move to the first free slice elsewhere; None when there is none."""
    _check_width(width)
    current = ranges.get(test_id)
    others = {k: v for k, v in ranges.items() if k != test_id}
    if current is None:
        return reserve_range(others, width)
    lo, hi = int(current[0]), int(current[1])
    gap_lo = max((h for _, h in _ranges(others) if h <= lo), default=0)
    gap_hi = min((low for low, _ in _ranges(others) if low >= hi), default=LAYER_BUCKETS)
    if gap_hi - gap_lo >= width:
        start = max(gap_lo, min(lo, gap_hi - width))
        return start, start + width
    return reserve_range(others, width)


# ---------------------------------------------------------------------------------- callers


@dataclass(frozen=True, slots=True)
class AssignmentContext:
    """What targeting and the segment counters know of the caller.

    Values outside the known sets become ``"unknown"`` (device, region, user_type) or
    ``"anonymous"`` (role), so that a header can never create a new segment value (each value is
    a counter item) nor match a targeting rule by accident."""

    subject: str
    device: str = UNKNOWN
    region: str = UNKNOWN
    role: str = TargetRole.ANONYMOUS.value
    user_type: str = UNKNOWN
    follows: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        device = str(self.device or "").strip().lower()
        region = str(self.region or "").strip().upper()
        role, user_type = str(self.role or ""), str(self.user_type or "")
        object.__setattr__(self, "device", device if device in _DEVICES else UNKNOWN)
        object.__setattr__(self, "region", region if region in ISO_COUNTRIES else UNKNOWN)
        object.__setattr__(self, "role", role if role in _ROLES else TargetRole.ANONYMOUS.value)
        object.__setattr__(self, "user_type", user_type if user_type in _USER_TYPES else UNKNOWN)
        object.__setattr__(self, "follows", frozenset(self.follows))

    @property
    def anonymous(self) -> bool:
        return self.role == TargetRole.ANONYMOUS.value

    def segment(self) -> dict[str, str]:
        """The dimensions stored with the assignment (segment counters and analysis)."""
        return {"device": self.device, "region": self.region, "role": self.role, "user_type": self.user_type}


_DEVICES = frozenset(d.value for d in Device)
_ROLES = frozenset(r.value for r in TargetRole)
_USER_TYPES = frozenset(u.value for u in UserType)


def subject_for(user_id: str | None, device_id: str | None) -> str | None:
    """Who is assigned: ``u:<user id>`` for a signed-in caller (the token's subject), else
    ``d:`` and a SHA-256 digest of the anonymous device id (the raw id is never stored, as for
    votes), else None (nothing to keep an assignment sticky to: serve the default content).
    400 for a device id that breaks the header's rule."""
    if user_id:
        return f"{USER_PREFIX}{user_id}"
    if not device_id:
        return None
    # The votes' rule for the same header; it also keeps '#' (the key separator) out.
    if not DEVICE_ID_PATTERN.match(device_id):
        raise InvalidRequest(
            f"the {DEVICE_ID_HEADER} header must be 8 to 128 letters, digits, '.', '_', ':' or '-' "
            "(a random id the client keeps for the device)",
            details={"header": DEVICE_ID_HEADER},
        )
    digest = hashlib.sha256(f"device:{device_id}".encode()).hexdigest()[:32]
    return f"{DEVICE_PREFIX}{digest}"


def segment_role(roles: Iterable[str] | None) -> str:
    """A caller's targeting role: ``anonymous`` without a token, else its highest role
    (``user`` when its token carries no group)."""
    if roles is None:
        return TargetRole.ANONYMOUS.value
    held = {str(r) for r in roles}
    return next((r.value for r in _ROLE_ORDER if r.value in held), TargetRole.USER.value)


def user_type_for(account_created_at: dt.datetime | None, now: dt.datetime) -> str:
    """``new`` for an account younger than NEW_USER_DAYS, ``returning`` for an older one,
    ``unknown`` when there is no account (anonymous) or its age is not known."""
    if account_created_at is None:
        return UNKNOWN
    age = now - account_created_at
    return UserType.NEW.value if age < dt.timedelta(days=NEW_USER_DAYS) else UserType.RETURNING.value


# ---------------------------------------------------------------------------------- decisions


def targeting_matches(targeting: Targeting, context: AssignmentContext) -> bool:
    """Every given rule matches (AND), any value within a rule (OR). Unknown values never match
    a rule; anonymous callers never match user_type nor artist_followers."""
    if targeting.devices is not None and context.device not in {d.value for d in targeting.devices}:
        return False
    if targeting.regions is not None and context.region not in targeting.regions:
        return False
    if targeting.roles is not None and context.role not in {r.value for r in targeting.roles}:
        return False
    if targeting.user_type is not None and (
        context.anonymous or context.user_type != targeting.user_type.value
    ):
        return False
    return targeting.artist_followers is None or (
        not context.anonymous and not context.follows.isdisjoint(targeting.artist_followers)
    )


def assign(experiment: Experiment, context: AssignmentContext, phase: int | None = None) -> str | None:
    """The variant id the caller gets in ``experiment`` (its current phase by default), or None
    when the targeting excludes it or it falls outside the allocation (or its layer slice).

    Whether the experiment is live (status, dates) is the caller's check
    (:meth:`Experiment.is_live`); this is the pure decision. A layered experiment is decided on
    its current layer slice, whatever the phase."""
    if not targeting_matches(experiment.targeting, context):
        return None
    return Bucketing.of(experiment, phase).variant_for(context.subject)
