"""The detectors, pure functions over votes: each fires on its attack and stays quiet on the organic
look-alikes (a campus network of independent fans, a venue crowd voting the song being played,
friends who signed up together, a family tablet, an announcement, a disliked song played live).

Organic look-alikes are drawn from several seeds, so a pass is not one lucky draw.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import pytest

from mysetlist.fraud.config import FraudConfig
from mysetlist.fraud.detectors import (
    ACCOUNT_BURST,
    CRITICAL,
    DEVICE_CLUSTER,
    DOWNVOTE_BRIGADE,
    NETWORK_CLUSTER,
    VELOCITY_SPIKE,
    WARNING,
    SongBaseline,
    account_burst,
    binomial_evidence,
    coordinated_accounts,
    downvote_brigade,
    spike_incident,
    usual_down_share,
    velocity_spike,
)
from mysetlist.signals import QUARANTINED, RELEASED, VoteSignal, vote_id

NOW = 1_780_000_000.0
DAY = 86400.0
CONFIG = FraudConfig()
SEEDS = range(8)
_users = itertools.count()


def vote(
    user: str,
    *,
    song: str = "song-1",
    show: str = "show-1",
    kind: str = "up",
    at: float = 0.0,
    net: str | None = "203.0.113.0/24",
    ua: str | None = "agent-0",
    device: str | None = None,
    age_days: float | None = 400.0,
    moderation: str | None = None,
) -> VoteSignal:
    """A vote ``at`` seconds after NOW by an account ``age_days`` old at NOW."""
    return VoteSignal(
        vote_id=vote_id(show, user, song),
        show_id=show,
        song_id=song,
        user_id=user,
        vote_type=kind,
        at=NOW + at,
        artist_id="artist-1",
        net=net,
        ip_hash=None,
        ua_hash=ua,
        device_hash=device,
        account_created_at=None if age_days is None else NOW - age_days * DAY,
        moderation=moderation,
    )


def new_user(prefix: str = "user") -> str:
    return f"{prefix}-{next(_users)}"


def organic_agent(rng: random.Random) -> str:
    """User agents of real phones: Zipf over 300 (the top one ~15 %)."""
    return f"agent-{rng.choices(range(300), weights=[1 / (k + 1) for k in range(300)])[0]}"


def organic_age(rng: random.Random, young_share: float = 0.25) -> float:
    return rng.uniform(0.1, 6.9) if rng.random() < young_share else rng.uniform(30, 2000)


def campus(
    rng: random.Random, fans: int, *, net: str = "128.10.1.0/24", span: float = 600.0
) -> list[VoteSignal]:
    """Independent fans on one campus network: 1-3 votes each on popular songs, at any time."""
    songs = [f"song-{k}" for k in range(12)]
    weights = [1 / (k + 1) for k in range(12)]
    votes: list[VoteSignal] = []
    for _ in range(fans):
        user, age, agent = new_user("fan"), organic_age(rng), organic_agent(rng)
        device = new_user("device") if rng.random() < 0.65 else None
        start = rng.uniform(0, span)
        for song in dict.fromkeys(rng.choices(songs, weights=weights, k=rng.randint(1, 3))):
            kind = "down" if rng.random() < 0.1 else "up"
            votes.append(
                vote(user, song=song, kind=kind, at=start, net=net, ua=agent, device=device, age_days=age)
            )
            start += 2 + rng.lognormvariate(math.log(6), 0.9)
    return votes


def venue_crowd(rng: random.Random, fans: int, *, net: str = "198.51.100.0/24") -> list[VoteSignal]:
    """A venue's crowd voting the song being played: all within its four minutes, on the venue
    Wi-Fi, with the venue's share of new sign-ups."""
    return [
        vote(
            new_user("crowd"),
            song="song-live",
            at=rng.uniform(0, 240),
            net=net,
            ua=organic_agent(rng),
            device=new_user("device") if rng.random() < 0.65 else None,
            age_days=organic_age(rng, young_share=0.3),
        )
        for _ in range(fans)
    ]


def bot_farm(
    accounts: int,
    *,
    net: str = "203.0.113.0/24",
    songs: Sequence[str] = ("song-7", "song-9"),
    start: float = 0.0,
) -> list[VoteSignal]:
    """Scripted accounts created a day ago, one user agent, each voting the same songs within
    seconds, the farm spread over a minute."""
    votes: list[VoteSignal] = []
    for index in range(accounts):
        user = new_user("bot")
        at = start + 60.0 * index / accounts
        for song in songs:
            votes.append(vote(user, song=song, at=at, net=net, ua="bot-agent", age_days=1.0))
            at += 1.5
    return votes


# ------------------------------------------------------------------------------- evidence


def test_binomial_evidence_is_the_exact_tail() -> None:
    assert binomial_evidence(5, 5, 0.3) == pytest.approx(-math.log10(0.3**5))
    tail = sum(math.comb(10, k) * 0.2**k * 0.8 ** (10 - k) for k in range(6, 11))
    assert binomial_evidence(10, 6, 0.2) == pytest.approx(-math.log10(tail))
    assert binomial_evidence(10, 2, 0.2) == 0.0  # at the expectation: no evidence
    assert binomial_evidence(0, 0, 0.5) == 0.0
    assert binomial_evidence(5000, 5000, 0.01) == 50.0  # capped
    assert binomial_evidence(20, 8, 0.2) < binomial_evidence(20, 12, 0.2)


# ------------------------------------------------------------------------------- (a) bursts


def script_votes(
    user: str, shows: int, per_show: int, gap: float, *, age_days: float = 2.0
) -> list[VoteSignal]:
    votes = []
    at = 0.0
    for show in range(shows):
        for song in range(per_show):
            votes.append(vote(user, show=f"show-{show}", song=f"song-{song}", at=at, age_days=age_days))
            at += gap
    return votes


def test_an_account_voting_fast_across_shows_is_a_burst() -> None:
    votes = script_votes("script-1", shows=2, per_show=13, gap=3.0)
    incident = account_burst(votes, CONFIG)
    assert incident is not None
    assert incident.kind == ACCOUNT_BURST
    assert incident.entity == "user:script-1"
    assert set(incident.vote_ids) == {v.vote_id for v in votes}
    assert incident.evidence["votes_in_burst"] >= CONFIG.burst_min_votes
    assert incident.evidence["shows"] == {"show-0": 13, "show-1": 13}
    assert incident.severity == WARNING
    assert incident.show_id is None


def test_a_fan_voting_through_one_setlist_fast_is_not_a_burst() -> None:
    assert account_burst(script_votes("fan-1", shows=1, per_show=28, gap=2.0), CONFIG) is None


def test_an_enthusiast_voting_on_several_shows_at_human_pace_is_not_a_burst() -> None:
    votes = script_votes("fan-2", shows=3, per_show=10, gap=25.0, age_days=800)
    assert account_burst(votes, CONFIG) is None


def test_a_burst_holds_only_votes_never_moderated() -> None:
    votes = script_votes("script-2", shows=2, per_show=15, gap=2.0)
    votes[0] = vote("script-2", show="show-0", song="song-0", at=0.0, moderation=RELEASED)
    votes[1] = vote("script-2", show="show-0", song="song-1", at=2.0, moderation=QUARANTINED)
    incident = account_burst(votes, CONFIG)
    assert incident is not None
    assert votes[0].vote_id not in incident.vote_ids
    assert votes[1].vote_id not in incident.vote_ids
    assert len(incident.vote_ids) == len(votes) - 2


# ------------------------------------------------------------------------------- (b) groups


def test_a_bot_farm_on_one_network_is_a_network_cluster() -> None:
    votes = bot_farm(20)
    (incident,) = coordinated_accounts(votes, dimension="net", value="203.0.113.0/24", config=CONFIG)
    assert incident.kind == NETWORK_CLUSTER
    assert incident.entity == "net:203.0.113.0/24"
    assert incident.show_id == "show-1"
    assert set(incident.vote_ids) == {v.vote_id for v in votes}
    assert incident.evidence["accounts_flagged"] == 20
    assert incident.evidence["young_accounts"] == 20
    assert incident.evidence["evidence_log10"] >= CONFIG.cluster_min_evidence
    assert incident.severity == CRITICAL
    assert "203.0.113.0/24" in incident.summary


@pytest.mark.parametrize("seed", SEEDS)
def test_a_campus_network_of_independent_fans_is_not_a_cluster(seed: int) -> None:
    votes = campus(random.Random(seed), fans=150)
    assert coordinated_accounts(votes, dimension="net", value="128.10.1.0/24", config=CONFIG) == []
    assert coordinated_accounts(votes, dimension="show", value="show-1", config=CONFIG) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_a_venue_crowd_voting_the_song_being_played_is_not_a_cluster(seed: int) -> None:
    votes = venue_crowd(random.Random(seed), fans=120)
    assert coordinated_accounts(votes, dimension="net", value="198.51.100.0/24", config=CONFIG) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_fans_sharing_a_network_with_a_bot_farm_are_not_held(seed: int) -> None:
    rng = random.Random(seed)
    fans = campus(rng, fans=80, net="100.64.7.0/24", span=120.0)
    # The fans also vote the farm's song, at the same time.
    fans += [
        vote(
            new_user("fan"), song="song-7", at=rng.uniform(0, 60), net="100.64.7.0/24", ua=organic_agent(rng)
        )
        for _ in range(15)
    ]
    bots = bot_farm(25, net="100.64.7.0/24", songs=("song-7",))
    (incident,) = coordinated_accounts(fans + bots, dimension="net", value="100.64.7.0/24", config=CONFIG)
    flagged = set(incident.vote_ids)
    assert {v.vote_id for v in bots} <= flagged
    organic_flagged = [v for v in fans if v.vote_id in flagged]
    # A fan is held only when it is indistinguishable from a bot here: a new account whose
    # only vote is the farm's song, cast at the same time from the same network.
    only_vote = {
        user: [v for v in fans if v.user_id == user] for user in {v.user_id for v in organic_flagged}
    }
    for held in organic_flagged:
        assert held.account_age_seconds is not None
        assert held.account_age_seconds < CONFIG.young_account_seconds
        assert [v.song_id for v in only_vote[held.user_id]] == ["song-7"]
    assert len(organic_flagged) <= 0.05 * len({v.user_id for v in fans})


def test_friends_who_signed_up_together_are_not_a_cluster() -> None:
    votes = []
    for index in range(4):
        user = new_user("friend")
        for offset, song in enumerate(("song-1", "song-2")):
            votes.append(
                vote(user, song=song, at=offset * 200 + index * 3, ua=f"phone-{index}", age_days=0.05)
            )
    assert coordinated_accounts(votes, dimension="net", value="203.0.113.0/24", config=CONFIG) == []


def test_accounts_on_one_device_voting_the_same_song_are_a_device_cluster() -> None:
    votes = [
        vote(new_user("puppet"), song="song-3", at=60.0 * i, device="device-x", ua="phone-x", age_days=3)
        for i in range(3)
    ]
    (incident,) = coordinated_accounts(votes, dimension="device", value="device-x", config=CONFIG)
    assert incident.kind == DEVICE_CLUSTER
    assert incident.entity == "device:device-x"
    assert set(incident.vote_ids) == {v.vote_id for v in votes}


def test_a_family_tablet_is_not_a_device_cluster() -> None:
    votes = [
        vote(user, song=song, at=at, device="tablet", ua="tablet-agent", age_days=900)
        for user in ("parent", "child")
        for at, song in ((0.0, "song-1"), (30.0, "song-2"))
    ]
    assert coordinated_accounts(votes, dimension="device", value="tablet", config=CONFIG) == []


def test_one_persons_accounts_are_followed_across_networks_through_their_devices() -> None:
    home = "73.1.2.0/24"
    votes: list[VoteSignal] = []
    at = 0.0
    for index, device in enumerate(("phone-a", "phone-b", "phone-c")):
        # Each phone has two accounts: one votes from home, one from a carrier pool.
        for where in (home, f"100.65.{index}.0/24"):
            user = new_user("puppet")
            for song in ("song-4", "song-5", "song-6"):
                votes.append(
                    vote(user, song=song, at=at, net=where, device=device, ua=f"ua-{device}", age_days=2)
                )
                at += 2.0
            at += 8.0
    # Neither one network nor one device holds enough of them ...
    on_home = [v for v in votes if v.net == home]
    assert coordinated_accounts(on_home, dimension="net", value=home, config=CONFIG) == []
    on_phone = [v for v in votes if v.device_hash == "phone-a"]
    assert coordinated_accounts(on_phone, dimension="device", value="phone-a", config=CONFIG) == []
    # ... but the show's view links them: through the home network and the devices.
    incidents = coordinated_accounts(votes, dimension="show", value="show-1", config=CONFIG)
    assert len(incidents) == 1
    assert incidents[0].kind == DEVICE_CLUSTER
    assert set(incidents[0].vote_ids) == {v.vote_id for v in votes}


# ------------------------------------------------------------------------------- (c) velocity


def minutes(baseline: int, recent: int, *, history: int = 60) -> tuple[dict[int, int], float]:
    now = NOW + 30.0
    current = math.floor(now / 60)
    counts = dict.fromkeys(range(current - 5 - history + 1, current - 4), baseline)
    counts |= dict.fromkeys(range(current - 4, current + 1), recent)
    return counts, now


def test_a_rate_far_above_the_show_baseline_is_a_spike() -> None:
    counts, now = minutes(baseline=5, recent=60)
    spike = velocity_spike("show-1", counts, now, CONFIG)
    assert spike is not None
    assert spike.baseline_per_minute == 5
    assert spike.ratio > CONFIG.velocity_ratio


def test_no_spike_without_history_or_below_the_floor() -> None:
    counts, now = minutes(baseline=5, recent=60, history=CONFIG.velocity_min_history_minutes - 1)
    assert velocity_spike("show-1", counts, now, CONFIG) is None
    counts, now = minutes(baseline=1, recent=15)  # 15x, but 15 votes a minute is no news
    assert velocity_spike("show-1", counts, now, CONFIG) is None
    counts, now = minutes(baseline=30, recent=60)  # busy, but only twice its usual rate
    assert velocity_spike("show-1", counts, now, CONFIG) is None


def test_a_spike_driven_by_new_accounts_holds_their_votes() -> None:
    counts, now = minutes(baseline=5, recent=60)
    spike = velocity_spike("show-1", counts, now, CONFIG)
    assert spike is not None
    young = [vote(new_user("new"), at=i, age_days=0.5) for i in range(70)]
    old = [vote(new_user("fan"), at=i, age_days=500) for i in range(30)]
    incident = spike_incident(spike, young + old, CONFIG)
    assert incident.kind == VELOCITY_SPIKE
    assert incident.entity == "show:show-1"
    assert set(incident.vote_ids) == {v.vote_id for v in young}
    assert incident.severity == CRITICAL


def test_an_announcement_surge_is_an_alert_that_holds_nothing() -> None:
    counts, now = minutes(baseline=5, recent=60)
    spike = velocity_spike("show-1", counts, now, CONFIG)
    assert spike is not None
    rng = random.Random(3)
    surge = [vote(new_user("fan"), at=i, age_days=organic_age(rng)) for i in range(300)]
    incident = spike_incident(spike, surge, CONFIG)
    assert incident.vote_ids == ()
    assert incident.severity == WARNING
    assert "nothing held" in incident.summary


# ------------------------------------------------------------------------------- (d) brigades


def downs(count: int, *, song: str = "song-1", young: int = 0) -> list[VoteSignal]:
    return [
        vote(new_user("rival"), song=song, kind="down", at=20.0 * i, age_days=2 if i < young else 700)
        for i in range(count)
    ]


def only_downs(recent: Sequence[VoteSignal]) -> dict[str, list[VoteSignal]]:
    """Each voter's votes on the show: just the down vote."""
    return {v.user_id: [v] for v in recent}


def test_drive_by_down_votes_far_above_the_usual_share_are_a_brigade() -> None:
    recent = downs(15)
    baseline = SongBaseline(ups=190, downs=10)
    incident = downvote_brigade(recent, 10, baseline, CONFIG, voters=only_downs(recent))
    assert incident is not None
    assert incident.kind == DOWNVOTE_BRIGADE
    assert incident.entity == "show:show-1/song:song-1"
    assert set(incident.vote_ids) == {v.vote_id for v in recent}
    assert incident.evidence["usual_down_share"] == pytest.approx(
        usual_down_share(baseline, CONFIG), abs=1e-3
    )
    # The test alone (engaged unknown) holds nothing yet.
    tested = downvote_brigade(recent, 10, baseline, CONFIG)
    assert tested is not None
    assert tested.vote_ids == ()


def test_fans_turning_on_a_disliked_song_played_live_are_an_alert_only() -> None:
    recent = downs(39)
    # A song little voted before (the prior weighs in), now played: 39 down, 43 up.
    baseline = SongBaseline(ups=6, downs=4)
    voters = only_downs(recent)
    for vote_ in recent[:22]:  # most of them voted for other songs too
        voters[vote_.user_id].append(vote(vote_.user_id, song="song-9", at=-30.0))
    incident = downvote_brigade(recent, 43, baseline, CONFIG, voters=voters)
    if incident is not None:
        assert incident.vote_ids == ()
        assert "too few to hold" in incident.summary


def test_no_brigade_on_a_song_usually_down_voted_or_with_few_down_votes() -> None:
    assert downvote_brigade(downs(15), 20, SongBaseline(ups=60, downs=40), CONFIG, voters={}) is None
    assert downvote_brigade(downs(5), 0, SongBaseline(ups=200, downs=2), CONFIG, voters={}) is None
    # A hit being played live: 15 down among 400 up is within its usual share.
    assert downvote_brigade(downs(15), 400, SongBaseline(ups=950, downs=50), CONFIG, voters={}) is None


def test_a_brigade_hidden_in_a_song_being_played_live_is_found() -> None:
    # 28 down votes among 220 up votes (11 %) on a song usually down-voted 3 % of the time.
    recent = downs(28)
    incident = downvote_brigade(recent, 220, SongBaseline(ups=314, downs=9), CONFIG, voters={})
    assert incident is not None
    assert len(incident.vote_ids) == 28


def test_a_brigade_holds_its_accounts_other_down_votes_on_the_show() -> None:
    recent = downs(15)
    voters = {v.user_id: [v, vote(v.user_id, song="song-2", kind="down", at=v.at - NOW + 5)] for v in recent}
    incident = downvote_brigade(recent, 10, SongBaseline(ups=190, downs=10), CONFIG, voters=voters)
    assert incident is not None
    others = {votes[1].vote_id for votes in voters.values()}
    assert set(incident.vote_ids) == {v.vote_id for v in recent} | others
    assert incident.evidence["their_other_down_votes"] == 15
