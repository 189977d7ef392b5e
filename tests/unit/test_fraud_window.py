"""The recent-vote window in memory, the Valkey layout's encoding and key names, and how the
Valkey window degrades (no network: a client that fails)."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest

from mysetlist.breaker import BreakerState, CircuitOpenError
from mysetlist.fraud.config import FraudConfig
from mysetlist.fraud.window import (
    InMemoryRecentVotes,
    Span,
    ValkeyRecentVotes,
    WindowKey,
    WindowUnavailable,
    decode_member,
    encode_member,
    redis_key,
)
from mysetlist.signals import QUARANTINED, RELEASED
from tests.unit.test_fraud_detectors import NOW, vote

CONFIG = FraudConfig()


def store() -> InMemoryRecentVotes:
    return InMemoryRecentVotes.for_config(CONFIG)


def test_votes_are_kept_under_each_index_in_time_order() -> None:
    recent = store()
    votes = [
        vote("u1", song="s1", at=30, net="198.51.100.0/24", device="d1"),
        vote("u1", song="s2", at=10, show="show-2", net=None),
        vote("u2", song="s1", at=20, net="198.51.100.0/24", kind="down"),
    ]
    recent.add(votes, NOW + 60)
    assert [v.song_id for v in recent.user_window("u1", NOW)] == ["s2", "s1"]
    assert [v.user_id for v in recent.show_window("show-1", NOW)] == ["u2", "u1"]
    assert [v.user_id for v in recent.net_window("show-1", "198.51.100.0/24", NOW)] == ["u2", "u1"]
    assert [v.user_id for v in recent.device_window("show-1", "d1", NOW)] == ["u1"]
    up, down = recent.votes(
        [Span(WindowKey.song("show-1", "s1", "up"), NOW), Span(WindowKey.song("show-1", "s1", "down"), NOW)]
    )
    assert [v.user_id for v in up] == ["u1"]
    assert [v.user_id for v in down] == ["u2"]
    assert recent.counts(
        [Span(WindowKey.show("show-1"), NOW + 25), Span(WindowKey.show("show-1"), NOW, NOW + 25)]
    ) == [1, 1]


def test_minute_counts_cover_each_minute_asked() -> None:
    recent = store()
    start = NOW - NOW % 60
    recent.add([vote(f"u{i}", at=start - NOW + 7.0 * i) for i in range(20)], start + 200)
    counts = recent.minute_counts("show-1", int(start // 60) - 1, int(start // 60) + 3)
    assert sum(counts.values()) == 20
    assert counts[int(start // 60) - 1] == 0
    assert counts[int(start // 60)] == 9  # 0, 7, ... 56 s


def test_a_changed_vote_replaces_its_earlier_state_and_a_retry_changes_nothing() -> None:
    recent = store()
    first = vote("u1", song="s1", at=10)
    recent.add([first], NOW + 20)
    recent.add([first], NOW + 21)  # a retried batch
    switched = vote("u1", song="s1", at=40, kind="down")
    recent.add([switched], NOW + 50)
    recent.add([first], NOW + 51)  # an older state arriving late is ignored
    assert recent.show_window("show-1", NOW) == [switched]
    up = recent.counts([Span(WindowKey.song("show-1", "s1", "up"), NOW)])
    assert up == [0]
    recent.remove([switched])
    assert recent.show_window("show-1", NOW) == []


def test_votes_older_than_the_retention_are_trimmed() -> None:
    recent = InMemoryRecentVotes(show_retention=600, key_retention=120)
    recent.add([vote("u1", at=0, net="n1")], NOW)
    recent.add([vote("u2", at=500, net="n1")], NOW + 500)
    assert [v.user_id for v in recent.net_window("show-1", "n1", 0)] == ["u2"]  # 120 s for networks
    assert [v.user_id for v in recent.show_window("show-1", 0)] == ["u1", "u2"]  # 600 s for the show
    recent.add([vote("u3", at=700)], NOW + 700)
    assert [v.user_id for v in recent.show_window("show-1", 0)] == ["u2", "u3"]


def test_moderated_and_flagged_votes_are_remembered_per_show() -> None:
    recent = store()
    held = vote("u1", song="s1", moderation=QUARANTINED)
    cleared = vote("u2", song="s1", moderation=RELEASED)
    fresh = vote("u3", song="s1")
    recent.add([held, cleared, fresh], NOW + 1)
    # Windows hand out signals without their moderation state: flagged() answers it.
    assert all(v.moderation is None for v in recent.show_window("show-1", 0))
    asked = {"show-1": [held.vote_id, cleared.vote_id, fresh.vote_id]}
    assert recent.flagged(asked) == {held.vote_id, cleared.vote_id}
    recent.mark_flagged({"show-1": [fresh.vote_id]})
    assert recent.flagged(asked) == {held.vote_id, cleared.vote_id, fresh.vote_id}
    assert recent.flagged({"show-2": [fresh.vote_id]}) == set()


def test_a_claim_is_granted_once_per_period() -> None:
    recent = store()
    assert recent.claim("network_cluster|net:x", 60, NOW)
    assert not recent.claim("network_cluster|net:x", 60, NOW + 59)
    assert recent.claim("network_cluster|net:y", 60, NOW + 59)
    assert recent.claim("network_cluster|net:x", 60, NOW + 61)


# ------------------------------------------------------------------------------- Valkey layout


def test_members_round_trip_without_the_time_or_moderation() -> None:
    signal = vote("user-1", song="song-9", device="dev", moderation=QUARANTINED)
    member = encode_member(signal)
    assert str(NOW) not in member
    back = decode_member(member.encode(), signal.at)
    assert back is not None
    assert back == signal.__class__(**{**_fields(signal), "moderation": None})
    bare = vote("user-2", net=None, ua=None, age_days=None)
    assert decode_member(encode_member(bare), bare.at) == bare
    assert decode_member(b"2\x1fsomething-else", NOW) is None


def _fields(signal: Any) -> dict[str, Any]:
    return {name: getattr(signal, name) for name in signal.__slots__}


def test_a_shows_keys_share_one_hash_slot_and_users_have_their_own() -> None:
    show_keys = [
        redis_key(WindowKey.show("show-1")),
        redis_key(WindowKey.net("show-1", "198.51.100.0/24")),
        redis_key(WindowKey.device("show-1", "abc")),
        redis_key(WindowKey.song("show-1", "song-1", "down")),
    ]
    assert all(k.startswith("msl:{fw:show-1}:") for k in show_keys)
    assert len(set(show_keys)) == len(show_keys)
    assert redis_key(WindowKey.user("user-1")) == "msl:{fu:user-1}:v"


class FailingPipeline:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self

    def execute(self) -> NoReturn:
        raise ConnectionError("connection refused")


class FailingClient:
    def pipeline(self, transaction: bool = True) -> FailingPipeline:
        return FailingPipeline()

    def set(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TimeoutError("timed out")


def test_a_valkey_fault_is_a_window_unavailable() -> None:
    recent = ValkeyRecentVotes.for_config(FailingClient(), CONFIG)  # type: ignore[arg-type]
    with pytest.raises(WindowUnavailable, match="connection refused"):
        recent.add([vote("u1")], NOW)
    with pytest.raises(WindowUnavailable):
        recent.show_window("show-1", NOW)
    with pytest.raises(WindowUnavailable, match="timed out"):
        recent.claim("x", 60, NOW)


def test_an_open_circuit_is_a_window_unavailable() -> None:
    def open_circuit(operation: Any) -> NoReturn:
        raise CircuitOpenError("valkey", 3.0, BreakerState.OPEN)

    recent = ValkeyRecentVotes.for_config(FailingClient(), CONFIG, guard=open_circuit)  # type: ignore[arg-type]
    with pytest.raises(WindowUnavailable, match="CircuitOpenError"):
        recent.counts([Span(WindowKey.show("show-1"), NOW)])


def test_without_an_endpoint_the_valkey_window_is_unavailable() -> None:
    recent = ValkeyRecentVotes(lambda: None, show_retention=60, key_retention=60)
    with pytest.raises(WindowUnavailable, match="CACHE_URL"):
        recent.user_window("u1", NOW)
