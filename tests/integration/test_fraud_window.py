"""The recent-vote window in a real Valkey (ValkeyRecentVotes), and the fraud engine on it.

Each test uses shows and users of its own: the session's Valkey is shared by every test of a
worker. The outage test stops a private server of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mysetlist.fraud.config import FraudConfig
from mysetlist.fraud.engine import FraudEngine
from mysetlist.fraud.window import (
    InMemoryRecentVotes,
    Span,
    ValkeyRecentVotes,
    WindowKey,
    WindowUnavailable,
    flagged_key,
    redis_key,
)
from mysetlist.signals import QUARANTINED, VoteSignal, vote_id
from tests.bench.fraud_eval import run_seed
from tests.support.valkey import LocalValkey, running_valkey

pytestmark = pytest.mark.integration

NOW = 1_780_000_000.0
CONFIG = FraudConfig()


@pytest.fixture
def client(valkey: LocalValkey) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(valkey.url)
    yield connection
    connection.close()


@pytest.fixture
def show() -> str:
    return f"show-{uuid.uuid4().hex[:10]}"


def vote(
    show: str,
    user: str,
    song: str,
    at: float,
    *,
    kind: str = "up",
    net: str | None = "203.0.113.0/24",
    ua: str | None = "agent-1",
    device: str | None = None,
    age_days: float = 400.0,
    moderation: str | None = None,
) -> VoteSignal:
    return VoteSignal(
        vote_id=vote_id(show, user, song),
        show_id=show,
        song_id=song,
        user_id=user,
        vote_type=kind,
        at=NOW + at,
        artist_id="artist-1",
        net=net,
        ip_hash="ip-1",
        ua_hash=ua,
        device_hash=device,
        account_created_at=NOW - age_days * 86400,
        moderation=moderation,
    )


def test_votes_are_indexed_counted_and_read_back(client: redis.Redis, show: str) -> None:
    recent = ValkeyRecentVotes.for_config(client, CONFIG)
    user = f"user-{uuid.uuid4().hex[:8]}"
    votes = [
        vote(show, user, "s1", 30, device="dev-1"),
        vote(show, f"{user}-b", "s1", 20, kind="down", net="198.51.100.0/24"),
        vote(show, f"{user}-c", "s2", 75),
    ]
    recent.add(votes, NOW + 80)
    assert recent.show_window(show, NOW) == sorted(votes, key=lambda v: v.at)
    assert recent.user_window(user, NOW) == [votes[0]]
    assert recent.net_window(show, "203.0.113.0/24", NOW) == [votes[0], votes[2]]
    assert recent.device_window(show, "dev-1", NOW) == [votes[0]]
    counts = recent.counts(
        [
            Span(WindowKey.song(show, "s1", "up"), NOW),
            Span(WindowKey.song(show, "s1", "down"), NOW),
            Span(WindowKey.show(show), NOW, NOW + 30),  # the end is exclusive
        ]
    )
    assert counts == [1, 1, 1]
    first = int((NOW + 0) // 60)
    minutes = recent.minute_counts(show, first, first + 2)
    assert sum(minutes.values()) == 3


def test_keys_expire_and_old_votes_are_trimmed(client: redis.Redis, show: str) -> None:
    recent = ValkeyRecentVotes(client, show_retention=600, key_retention=120)
    recent.add([vote(show, "u1", "s1", 0)], NOW)
    recent.add([vote(show, "u2", "s1", 500)], NOW + 500)
    assert [v.user_id for v in recent.net_window(show, "203.0.113.0/24", 0)] == ["u2"]
    assert [v.user_id for v in recent.show_window(show, 0)] == ["u1", "u2"]
    for key in (WindowKey.show(show), WindowKey.net(show, "203.0.113.0/24"), WindowKey.user("u2")):
        ttl = client.ttl(redis_key(key))
        assert isinstance(ttl, int)
        assert 0 < ttl <= (600 if key.index == "show" else 120) + 60


def test_a_switched_vote_leaves_one_state(client: redis.Redis, show: str) -> None:
    recent = ValkeyRecentVotes.for_config(client, CONFIG)
    up = vote(show, "u1", "s1", 10)
    down = vote(show, "u1", "s1", 40, kind="down")
    recent.add([up], NOW + 20)
    recent.add([up], NOW + 21)  # a retried batch: same member, same score
    recent.add([down], NOW + 50)
    assert recent.show_window(show, NOW) == [down]
    assert client.zcard(redis_key(WindowKey.show(show))) == 1
    assert client.zcard(redis_key(WindowKey.song(show, "s1", "up"))) == 0
    recent.remove([down])
    assert recent.show_window(show, NOW) == []


def test_flagged_votes_and_claims_are_shared(client: redis.Redis, valkey: LocalValkey, show: str) -> None:
    one = ValkeyRecentVotes.for_config(client, CONFIG)
    other = ValkeyRecentVotes.for_config(redis.Redis.from_url(valkey.url), CONFIG)  # another container
    held = vote(show, "u1", "s1", 0, moderation=QUARANTINED)
    fresh = vote(show, "u2", "s1", 0)
    one.add([held, fresh], NOW + 1)
    assert other.flagged({show: [held.vote_id, fresh.vote_id]}) == {held.vote_id}
    one.mark_flagged({show: [fresh.vote_id]})
    assert other.flagged({show: [held.vote_id, fresh.vote_id]}) == {held.vote_id, fresh.vote_id}
    assert client.hget(flagged_key(show), held.vote_id) == QUARANTINED.encode()
    name = f"network_cluster|net:{show}"
    assert one.claim(name, 60, NOW)
    assert not other.claim(name, 60, NOW)


def bot_farm(show: str, accounts: int) -> list[VoteSignal]:
    tag = uuid.uuid4().hex[:6]
    votes = []
    for index in range(accounts):
        at = 5.0 * index
        for song in ("s7", "s9"):
            votes.append(vote(show, f"bot-{tag}-{index}", song, at, ua="bot-agent", age_days=1.0))
            at += 1.5
    return votes


def test_two_containers_never_return_a_vote_twice(client: redis.Redis, show: str) -> None:
    farm = bot_farm(show, 20)
    first = FraudEngine(CONFIG, ValkeyRecentVotes.for_config(client, CONFIG))
    second = FraudEngine(CONFIG, ValkeyRecentVotes.for_config(client, CONFIG))
    found = first.observe(farm[:20], farm[19].at) + second.observe(farm[20:], farm[-1].at)
    returned = [v for incident in found for v in incident.vote_ids]
    assert sorted(returned) == sorted(v.vote_id for v in farm)
    # A retry of the last batch in the first container: nothing new.
    assert first.observe(farm[20:], farm[-1].at + 1) == []


def test_the_engine_flags_the_same_votes_on_valkey_as_in_memory(tmp_path: Path) -> None:
    """A whole simulated seed through both windows: the same votes flagged. (A private server:
    the seed's show ids are fixed.)"""
    with running_valkey(tmp_path / "valkey") as own:
        connection = redis.Redis.from_url(own.url)

        def valkey_store(config: FraudConfig) -> ValkeyRecentVotes:
            return ValkeyRecentVotes.for_config(connection, config)

        on_valkey = run_seed(5, users=400, store=valkey_store)
        connection.close()
    in_memory = run_seed(5, users=400, store=InMemoryRecentVotes.for_config)
    assert on_valkey["injected_flagged"] > 0
    for field in ("injected_flagged", "organic_flagged", "recall", "organic_fp", "organic_flagged_by"):
        assert on_valkey[field] == in_memory[field], field


def test_a_stopped_valkey_is_a_window_unavailable(tmp_path: Path) -> None:
    with running_valkey(tmp_path / "valkey") as own:
        connection = redis.Redis.from_url(own.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        recent = ValkeyRecentVotes.for_config(connection, CONFIG)
        engine = FraudEngine(CONFIG, recent)
        farm = bot_farm("show-outage", 20)
        engine.observe(farm[:2], farm[1].at)
        own.stop()
        with pytest.raises(WindowUnavailable):
            engine.observe(farm[2:], farm[-1].at)
        with pytest.raises(WindowUnavailable):
            engine.sweep(["show-outage"], farm[-1].at)
        # The sweeper's fallback needs no window at all.
        found = engine.detect(farm, farm[-1].at)
        assert {v for incident in found for v in incident.vote_ids} == {v.vote_id for v in farm}
        connection.close()
