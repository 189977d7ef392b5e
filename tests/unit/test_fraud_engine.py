"""The fraud engine over the in-memory window: the processor's path (observe per batch), the
sweeper's (sweep), the pure fallback (detect), and de-duplication."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from mysetlist.fraud.config import FraudConfig
from mysetlist.fraud.detectors import (
    ACCOUNT_BURST,
    DEVICE_CLUSTER,
    DOWNVOTE_BRIGADE,
    NETWORK_CLUSTER,
    VELOCITY_SPIKE,
)
from mysetlist.fraud.engine import FraudEngine
from mysetlist.fraud.window import InMemoryRecentVotes
from mysetlist.signals import QUARANTINED, Incident, VoteSignal
from tests.unit.test_fraud_detectors import NOW, bot_farm, new_user, vote

CONFIG = FraudConfig()


def engine(config: FraudConfig = CONFIG) -> FraudEngine:
    return FraudEngine(config, InMemoryRecentVotes.for_config(config))


def ids(incidents: list[Incident], kind: str | None = None) -> set[str]:
    return {v for i in incidents if kind is None or i.kind == kind for v in i.vote_ids}


def observe_in_batches(fraud: FraudEngine, votes: list[VoteSignal], size: int) -> list[Incident]:
    ordered = sorted(votes, key=lambda v: v.at)
    found: list[Incident] = []
    for start in range(0, len(ordered), size):
        batch = ordered[start : start + size]
        found += fraud.observe(batch, batch[-1].at)
    return found


def test_a_cluster_found_later_brings_its_earlier_votes() -> None:
    fraud = engine()
    farm = bot_farm(12)
    # The first three accounts alone are too few to say anything ...
    assert fraud.observe(farm[:6], farm[5].at) == []
    # ... the rest makes a cluster, and the early votes come with it.
    found = fraud.observe(farm[6:], farm[-1].at)
    assert ids(found, NETWORK_CLUSTER) == {v.vote_id for v in farm}


def test_a_vote_is_returned_once_and_incidents_of_one_entity_merge() -> None:
    fraud = engine()
    farm = bot_farm(30)
    found = observe_in_batches(fraud, farm, size=10)
    returned = [v for i in found for v in i.vote_ids]
    assert len(returned) == len(set(returned))
    assert set(returned) == {v.vote_id for v in farm}
    # The same batch again (a retried delivery) returns nothing new.
    assert fraud.observe(farm[-10:], farm[-1].at + 1) == []


def test_a_removed_flagged_vote_cast_again_is_judged_again() -> None:
    fraud = engine()
    farm = bot_farm(12)
    assert ids(fraud.observe(farm, farm[-1].at)) == {v.vote_id for v in farm}
    # A bot removes its quarantined vote (the stream's REMOVE record) and casts it again.
    gone = farm[0]
    fraud.forget([gone])
    again = dataclasses.replace(gone, at=farm[-1].at + 5)
    assert ids(fraud.observe([again], again.at)) == {gone.vote_id}


def test_an_incident_without_new_votes_is_reported_again_after_the_realert_period() -> None:
    config = FraudConfig.from_overrides(json.dumps({"realert_seconds": 120}))
    fraud = engine(config)
    farm = bot_farm(12)
    first = fraud.observe(farm, farm[-1].at)
    assert first
    assert fraud.observe(farm[-2:], farm[-1].at + 5) == []
    later = fraud.observe(farm[-2:], farm[-1].at + config.realert_seconds + 1)
    assert [i.kind for i in later] == [NETWORK_CLUSTER]
    assert later[0].vote_ids == ()


def test_votes_already_moderated_are_never_returned() -> None:
    fraud = engine()
    farm = bot_farm(12)
    moderated = [
        vote(
            v.user_id,
            song=v.song_id,
            at=v.at - NOW,
            net=v.net,
            ua=v.ua_hash,
            age_days=1.0,
            moderation=QUARANTINED,
        )
        for v in farm[:4]
    ]
    found = fraud.observe(moderated + farm[4:], farm[-1].at)
    assert ids(found) == {v.vote_id for v in farm[4:]}


def test_observe_finds_a_burst_across_shows_and_takes_a_datetime() -> None:
    fraud = engine()
    user = new_user("script")
    votes = [
        vote(user, show=f"show-{i % 2}", song=f"song-{i}", at=2.0 * i, net=None, ua=None) for i in range(24)
    ]
    when = dt.datetime.fromtimestamp(NOW + 60, tz=dt.UTC)
    found = fraud.observe(votes, when)
    assert [i.kind for i in found] == [ACCOUNT_BURST]
    assert ids(found) == {v.vote_id for v in votes}


def test_observe_finds_a_device_cluster() -> None:
    fraud = engine()
    votes = [
        vote(
            new_user("puppet"),
            song="song-2",
            at=30.0 * i,
            device="device-z",
            ua="phone-z",
            age_days=2,
            net=None,
        )
        for i in range(4)
    ]
    found = fraud.observe(votes, votes[-1].at)
    assert [i.kind for i in found] == [DEVICE_CLUSTER]


def test_observe_and_sweep_find_a_brigade_with_its_stragglers() -> None:
    fraud = engine()
    # An hour of ordinary votes on the song: 5 % down, from fans' phones everywhere.
    organic = [
        vote(
            new_user("fan"),
            song="song-1",
            kind="down" if i % 20 == 0 else "up",
            at=-3600 + 18.0 * i,
            net=f"73.0.{i}.0/24",
            ua=f"agent-{i}",
        )
        for i in range(200)
    ]
    fraud.observe(organic, NOW)
    # Ordinary accounts answering a call to arms, from their homes.
    rush = [rival(i, at=10.0 * i) for i in range(15)]
    found = fraud.observe(rush, rush[-1].at)
    # (A drive-by down vote cast just before the rush is in its window: nothing tells it apart.)
    before = {
        v.vote_id
        for v in organic
        if v.vote_type == "down" and v.at >= rush[-1].at - CONFIG.brigade_window_seconds
    }
    held = ids(found, DOWNVOTE_BRIGADE)
    assert {v.vote_id for v in rush} <= held <= {v.vote_id for v in rush} | before
    # Stragglers 15-20 minutes later: too few for a brigade of their own ...
    late = [rival(100 + i, at=900.0 + 60.0 * i) for i in range(4)]
    assert ids(fraud.observe(late, late[-1].at)) == set()
    # ... the sweep sees them with the brigade they belong to.
    swept = fraud.sweep(["show-1"], late[-1].at + 10)
    assert {v.vote_id for v in late} <= ids(swept, DOWNVOTE_BRIGADE) <= {v.vote_id for v in late} | before


def rival(index: int, *, at: float) -> VoteSignal:
    return vote(
        new_user("rival"), song="song-1", kind="down", at=at, net=f"24.{index}.0.0/24", ua=f"browser-{index}"
    )


def test_a_spike_of_new_accounts_is_flagged_and_an_organic_one_is_an_alert() -> None:
    fraud = engine()
    base = [vote(new_user("fan"), song=f"song-{i % 9}", at=-3000 + 12.0 * i) for i in range(240)]
    fraud.observe(base, NOW)
    flood = [
        vote(new_user("new"), song=f"song-{i % 9}", at=1.0 * i, age_days=0.2, net=None) for i in range(200)
    ]
    found = fraud.observe(flood, flood[-1].at)
    spike = [i for i in found if i.kind == VELOCITY_SPIKE]
    assert len(spike) == 1
    assert set(spike[0].vote_ids) == {v.vote_id for v in flood}

    calm = engine()
    calm.observe(base, NOW)
    surge = [vote(new_user("fan"), song=f"song-{i % 9}", at=1.0 * i, net=None) for i in range(200)]
    (alert,) = [i for i in calm.observe(surge, surge[-1].at) if i.kind == VELOCITY_SPIKE]
    assert alert.vote_ids == ()


def test_the_sweep_follows_one_persons_accounts_across_networks() -> None:
    fraud = engine()
    votes: list[VoteSignal] = []
    at = 0.0
    for index, device in enumerate(("phone-a", "phone-b", "phone-c")):
        for where in ("73.1.2.0/24", f"100.65.{index}.0/24"):
            user = new_user("puppet")
            for song in ("song-4", "song-5", "song-6"):
                votes.append(
                    vote(user, song=song, at=at, net=where, device=device, ua=f"ua-{device}", age_days=2)
                )
                at += 2.0
            at += 8.0
    assert fraud.observe(votes, votes[-1].at) == []
    swept = fraud.sweep(["show-1"], votes[-1].at + 60)
    assert ids(swept) == {v.vote_id for v in votes}
    # Returned once: the next sweep has nothing new.
    assert ids(fraud.sweep(["show-1"], votes[-1].at + 120)) == set()


def test_detect_is_pure_and_agrees_with_the_sweep() -> None:
    farm = bot_farm(15)
    fraud = engine()
    first = fraud.detect(farm, farm[-1].at + 30)
    again = fraud.detect(farm, farm[-1].at + 30)
    assert first == again
    assert ids(first) == {v.vote_id for v in farm}
    assert len(fraud.recent.show_window("show-1", 0)) == 0  # nothing was stored

    swept = engine()
    swept.recent.add(farm, farm[-1].at)
    assert ids(swept.sweep(["show-1"], farm[-1].at + 30)) == ids(first)


def test_detect_never_returns_moderated_votes() -> None:
    farm = bot_farm(15)
    moderated = [
        vote(
            v.user_id,
            song=v.song_id,
            at=v.at - NOW,
            net=v.net,
            ua=v.ua_hash,
            age_days=1.0,
            moderation=QUARANTINED,
        )
        for v in farm[:6]
    ]
    found = engine().detect(moderated + farm[6:], farm[-1].at + 30)
    assert ids(found) == {v.vote_id for v in farm[6:]}


def test_a_big_network_window_is_rechecked_at_most_once_per_period() -> None:
    config = FraudConfig.from_overrides(json.dumps({"recheck_min_votes": 10, "recheck_seconds": 300}))
    fraud = engine(config)
    crowd = [vote(new_user("fan"), song=f"song-{i % 5}", at=float(i), ua=f"agent-{i}") for i in range(40)]
    fraud.observe(crowd, crowd[-1].at)
    # A farm arriving right after on the same network waits for the recheck ...
    farm = bot_farm(12, start=45.0)
    assert ids(fraud.observe(farm, farm[-1].at), NETWORK_CLUSTER) == set()
    # ... which finds it with its earlier votes.
    later = vote(new_user("fan"), song="song-1", at=400.0, ua="agent-x")
    assert ids(fraud.observe([later], later.at), NETWORK_CLUSTER) == {v.vote_id for v in farm}
