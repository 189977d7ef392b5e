"""Fans: which artists a signed-in user follows, for A/B targeting (``Targeting.artist_followers``).

The platform has no follow button. Its one signal of fandom is a vote, so "follows" is defined
as: **a signed-in user follows an artist from the first time they cast a vote (a new vote, or
one switched to the other type) on a song of one of that artist's shows.** Removing a vote
does not unfollow (the user did vote: the relation says "has voted for this artist's shows",
not "has a vote standing now"), and a vote the API refused (closed show, unknown song) does not
count. Anonymous callers cannot vote, so they never follow anyone.

Items, in the UsersTable next to the profile (``mysetlist.profiles``)::

    PK = USER#<sub>   SK = FAN#<artist_id>   artist_id   since (ISO time of the first vote)

Costs, and why the code is shaped the way it is:

* **Recording** runs on every vote, so it must be nearly free: it writes at most once per user
  and artist per hour (``RECORD_TTL_SECONDS``), in the container and across containers. The
  conditional PutItem (``attribute_not_exists``, so the first ``since`` is kept; a
  ConditionalCheckFailed means "already a fan", a success) is the loader of the shared cache's
  key ``fan:<user>:<artist>``: the cache's single flight (in the container) and its Valkey lock
  (across containers) let one caller write while the others wait for its answer, and the marker
  is remembered for the hour once the write has succeeded. A failed write remembers nothing, so
  the next vote tries again rather than trusting a relation that was never stored. A
  container-local memo backs the marker up: without Valkey the shared cache trusts its L1 copies
  for ``cache_l1_ttl_seconds`` only (that bounds unseen invalidations, which a "this was
  recorded" fact never has), and the hour must hold then too. The bound lasts as long as the
  marker is kept: a Valkey that trims it early (``cache_l2_max_entries``) costs one more
  conditional write, never a wrong ``since``.
* **Reading** (``artists_of``) runs on every A/B content request of a signed-in caller: one
  strongly consistent Query per user per ``FOLLOWS_TTL_SECONDS`` through the shared cache.
  Recording a relation drops that cached set everywhere (the cache's key invalidation), so a new
  fan is targeted on their next request, not five minutes later. Strongly consistent, because
  the read that follows an invalidation must see the write that caused it. At most
  ``MAX_ARTISTS`` artists are read (the first by artist id, the sort key's order): targeting
  lists are short, and a user who voted on more artists' shows than that is still matched on
  those 500.

Faults never fail the caller (a vote, a content request): a failed write or read is logged and
counted (metrics ``FanRecordFailed`` / ``FanReadFailed``), and ``artists_of`` then answers an
empty set, which only means "not targeted as a follower this time". (A read that fails after
the set's TTL is answered by the shared cache with the last set it read, within its stale
window, before it comes to that: the cache logs and counts that itself.)
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from mysetlist.cache import Priority
from mysetlist.dynamo import error_code, from_item, to_item
from mysetlist.observability import logger, metrics
from mysetlist.profiles import user_pk

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from mysetlist.cache import Cache

FAN_PREFIX = "FAN#"
# A recorded relation is not written again for this long (per user and artist).
RECORD_TTL_SECONDS = 3600.0
# How long a user's set of followed artists is served from the cache.
FOLLOWS_TTL_SECONDS = 300.0
# The most artists read for one user (see the module docstring).
MAX_ARTISTS = 500
# The container-local memo of recent records holds this many (user, artist) pairs: about 1 MB.
MEMO_ENTRIES = 10_000

Metric = Callable[[str, float], None]


def _count(name: str, value: float) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


class Recorded(StrEnum):
    """What ``FanStore.record`` did."""

    CREATED = "created"  # this call stored the relation
    KNOWN = "known"  # it was stored already (found by the conditional write, or recorded within the hour)
    FAILED = "failed"  # the write failed: logged and counted, the next vote tries again


def fan_sk(artist_id: str) -> str:
    return f"{FAN_PREFIX}{artist_id}"


def record_key(user_id: str, artist_id: str) -> str:
    """The shared cache's marker of a recorded relation."""
    return f"fan:{user_id}:{artist_id}"


def follows_key(user_id: str) -> str:
    """The shared cache's key of a user's followed artists."""
    return f"fans:{user_id}"


class RecentKeys:
    """Keys added within the last ``seconds``, at most ``capacity`` of them (the least recently
    added go first). Thread-safe. The container's own memory of recent records: see the module
    docstring for why the shared cache's L1 is not enough."""

    def __init__(self, seconds: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 0 or capacity < 1:
            raise ValueError("seconds must be positive and capacity at least 1")
        self._seconds = seconds
        self._capacity = capacity
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def fresh(self, key: str) -> bool:
        """Whether ``key`` was added within the last ``seconds``."""
        with self._lock:
            until = self._until.get(key)
            if until is None:
                return False
            if self._clock() < until:
                return True
            del self._until[key]
            return False

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)

    def add(self, key: str) -> None:
        with self._lock:
            self._until[key] = self._clock() + self._seconds
            self._until.move_to_end(key)
            while len(self._until) > self._capacity:
                self._until.popitem(last=False)


class FanStore:
    """The fan relation in the UsersTable, read and recorded through the shared cache (see the
    module docstring). ``metric`` counts failures (the invocation's metrics by default)."""

    def __init__(
        self,
        client: DynamoDBClient,
        users_table: str,
        cache: Cache,
        *,
        metric: Metric = _count,
        clock: Callable[[], float] = time.monotonic,
        memo_entries: int = MEMO_ENTRIES,
    ) -> None:
        self._db = client
        self._table = users_table
        self._cache = cache
        self._metric = metric
        self._recent = RecentKeys(RECORD_TTL_SECONDS, memo_entries, clock)

    # -- recording -----------------------------------------------------------------------------

    def record(self, user_id: str, artist_id: str, now: dt.datetime) -> Recorded:
        """Record that ``user_id`` follows ``artist_id`` since ``now`` (the time of a vote on one
        of the artist's shows), unless it is recorded already. Never raises."""
        key = record_key(user_id, artist_id)
        if self._recent.fresh(key):
            return Recorded.KNOWN
        written: list[Recorded] = []

        def write() -> str:
            outcome = self._put_if_absent(user_id, artist_id, now)
            # Stored: every container's cached set of this user's artists is out of date.
            self._cache.delete(follows_key(user_id))
            written.append(outcome)
            return outcome.value

        try:
            self._cache.get(key, write, ttl=RECORD_TTL_SECONDS, priority=Priority.LOW, refresh_ahead=False)
        except Exception as exc:  # a signal for targeting: never the vote's failure
            logger.warning(
                "could not record that a voter follows the artist",
                extra={"artist_id": artist_id, "error": repr(exc)[:300]},
            )
            self._metric("FanRecordFailed", 1)
            return Recorded.FAILED
        self._recent.add(key)
        if written and written[0] is Recorded.CREATED:
            self._metric("FansRecorded", 1)
        return written[0] if written else Recorded.KNOWN

    def _put_if_absent(self, user_id: str, artist_id: str, now: dt.datetime) -> Recorded:
        item = {
            "PK": user_pk(user_id),
            "SK": fan_sk(artist_id),
            "artist_id": artist_id,
            "since": now.isoformat(),
        }
        try:
            self._db.put_item(
                TableName=self._table, Item=to_item(item), ConditionExpression="attribute_not_exists(PK)"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return Recorded.KNOWN  # a fan already: the first vote's time stays
            raise
        return Recorded.CREATED

    # -- reading -------------------------------------------------------------------------------

    def artists_of(self, user_id: str) -> frozenset[str]:
        """The artists ``user_id`` follows (at most ``MAX_ARTISTS``); empty when they cannot be
        read now and no earlier answer is cached (logged and counted, never raised)."""
        try:
            found = self._cache.get(
                follows_key(user_id), lambda: self._query(user_id), ttl=FOLLOWS_TTL_SECONDS
            )
        except Exception as exc:  # a signal for targeting: never the request's failure
            logger.warning("could not read the artists a caller follows", extra={"error": repr(exc)[:300]})
            self._metric("FanReadFailed", 1)
            return frozenset()
        return frozenset(str(artist) for artist in found)

    def _query(self, user_id: str) -> list[str]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :fan)",
            "ExpressionAttributeValues": to_item({":pk": user_pk(user_id), ":fan": FAN_PREFIX}),
            "ProjectionExpression": "artist_id",
            "ConsistentRead": True,
        }
        artists: list[str] = []
        while len(artists) < MAX_ARTISTS:
            response = self._db.query(**kwargs, Limit=MAX_ARTISTS - len(artists))
            artists.extend(
                str(item["artist_id"])
                for item in (from_item(raw) for raw in response.get("Items", []))
                if item.get("artist_id")
            )
            if "LastEvaluatedKey" not in response:
                return artists
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        logger.info("a user may follow more artists than are read", extra={"read": len(artists)})
        return artists
