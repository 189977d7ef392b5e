"""Fakes of our own ports, with the semantics that matter for exactness, and fault injection."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.breaker import CircuitOpenError
from mysetlist.tallies import Marker, TallyDelta

# A fault decides, per commit, what goes wrong: None (nothing), "throttle" (refused before
# anything is written), "circuit_open" (DynamoDB's circuit breaker refuses the call before it is
# sent) or "lost_response" (written, then the caller sees a timeout).
Fault = Callable[[], str | None]


class LostResponse(Exception):
    """The transaction committed but its response never arrived (an ambiguous outcome)."""


def throttled() -> ClientError:
    return ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "TransactWriteItems"
    )


@dataclass
class FakeTallyStore:
    """TallyStore in memory: tallies by (show, song, lane), markers by key; commits atomic."""

    fault: Fault = lambda: None
    tallies: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    markers: dict[str, Marker] = field(default_factory=dict)
    commits: int = 0
    tally_writes: int = 0

    def marker(self, stream_arn: str, first_sequence: str) -> Marker | None:
        found = self.markers.get(keys.stream_marker_pk(stream_arn, first_sequence))
        return Marker(found.key, list(found.sequences), found.version) if found else None

    def commit(
        self,
        *,
        stream_arn: str,
        first_sequence: str,
        marker: Marker | None,
        sequences: Sequence[str],
        deltas: Sequence[TallyDelta],
        lane: int,
        now: dt.datetime,
    ) -> Marker:
        fault = self.fault()
        if fault == "throttle":
            raise throttled()
        if fault == "circuit_open":
            raise CircuitOpenError("dynamodb", 3.0)
        key = keys.stream_marker_pk(stream_arn, first_sequence)
        stored = self.markers.get(key)
        if (stored.version if stored else 0) != (marker.version if marker else 0):
            reasons = [{"Code": "None"}] * len(deltas) + [{"Code": "ConditionalCheckFailed"}]
            response: Any = {
                "Error": {"Code": "TransactionCanceledException"},
                "CancellationReasons": reasons,
            }
            raise ClientError(response, "TransactWriteItems")
        for d in deltas:
            total = self.tallies.setdefault((d.show_id, d.song_id, lane), [0, 0])
            total[0] += d.up
            total[1] += d.down
        new = Marker(
            key, [*(marker.sequences if marker else []), *sequences], (marker.version if marker else 0) + 1
        )
        self.markers[key] = new
        self.commits += 1
        self.tally_writes += len(deltas)
        if fault == "lost_response":
            raise LostResponse("read timeout after the commit")
        return Marker(new.key, list(new.sequences), new.version)

    def forward(self, *, stream_arn: str, sequences: Sequence[str], now: dt.datetime) -> None:
        key = keys.stream_marker_pk(stream_arn, sequences[0])
        self.markers.setdefault(key, Marker(key, list(sequences), 1))

    def totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        out: dict[tuple[str, str], list[int]] = {}
        for (show, song, _lane), (up, down) in self.tallies.items():
            total = out.setdefault((show, song), [0, 0])
            total[0] += up
            total[1] += down
        return {k: (u, d) for k, (u, d) in out.items() if u or d}


@dataclass
class FakeQuarantine:
    """Collects quarantined records; ``broken`` makes every send fail (the queue is down)."""

    broken: bool = False
    records: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    def send(self, record: Any, reason: str) -> None:
        if self.broken:
            raise ConnectionError("queue unreachable")
        self.records.append((dict(record), reason))


@dataclass
class VoteTableModel:
    """The votes table as its stream sees it: toggles become INSERT/MODIFY/REMOVE records."""

    stream_arn: str = "arn:aws:dynamodb:us-east-1:123456789012:table/votes/stream/2030-01-01T00:00:00.000"
    votes: dict[tuple[str, str, str], str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    _sequence: int = 10**20

    def toggle(self, show: str, user: str, song: str, vote_type: str) -> None:
        key = (show, user, song)
        old = self.votes.get(key)
        if old == vote_type:
            del self.votes[key]
            self._emit("REMOVE", key, old, None)
        elif old is None:
            self.votes[key] = vote_type
            self._emit("INSERT", key, None, vote_type)
        else:
            self.votes[key] = vote_type
            self._emit("MODIFY", key, old, vote_type)

    def recount(self) -> dict[tuple[str, str], tuple[int, int]]:
        out: dict[tuple[str, str], list[int]] = {}
        for (show, _user, song), vote in self.votes.items():
            total = out.setdefault((show, song), [0, 0])
            total[0 if vote == "up" else 1] += 1
        return {k: (u, d) for k, (u, d) in out.items() if u or d}

    def _emit(self, name: str, key: tuple[str, str, str], old: str | None, new: str | None) -> None:
        show, user, song = key
        self._sequence += 1 + len(self.records) % 7  # increasing, not contiguous, as in DynamoDB

        def image(vote: str | None) -> dict[str, Any] | None:
            if vote is None:
                return None
            return {
                "PK": {"S": keys.vote_pk(show, user)},
                "SK": {"S": song},
                "show_id": {"S": show},
                "song_id": {"S": song},
                "user_id": {"S": user},
                "vote_type": {"S": vote},
            }

        body: dict[str, Any] = {
            "Keys": {"PK": {"S": keys.vote_pk(show, user)}, "SK": {"S": song}},
            "SequenceNumber": str(self._sequence),
            "SizeBytes": 100,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "ApproximateCreationDateTime": 1_900_000_000,
        }
        if old is not None:
            body["OldImage"] = image(old)
        if new is not None:
            body["NewImage"] = image(new)
        self.records.append(
            {
                "eventID": f"e{self._sequence}",
                "eventName": name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": body,
                "eventSourceARN": self.stream_arn,
            }
        )
