"""The detectors: pure functions over recent votes (one signal per vote id), returning incidents.

Each detector looks at one slice of the window, the slice its attack shows up in:

- :func:`account_burst`: one account's votes on every show (``account_burst``);
- :func:`coordinated_accounts`: one show's votes from one network (``network_cluster``) or one
  device (``device_cluster``);
- :func:`velocity_spike` then :func:`spike_incident`: one show's votes per minute, then the
  votes of the spike (``velocity_spike``);
- :func:`downvote_brigade`: one song's recent down votes against its usual down share
  (``downvote_brigade``).

An incident's ``vote_ids`` are the votes to quarantine: only ``flaggable`` ones (never flagged
before). Organic look-alikes are the design constraint: carriers and venues put thousands of
fans behind one network, the same phone model sends the same user agent, real fans sign up on
the night, and a song being played live collects votes from the whole venue within seconds. So
a network alone never flags anything: a group is judged by how unlikely its make-up is under
organic voting (binomial tails with deliberately generous priors, :class:`FraudConfig`), and
within a suspicious group only the accounts carrying several individual marks are flagged.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mysetlist.fraud.config import FraudConfig
from mysetlist.signals import Incident, VoteSignal

ACCOUNT_BURST = "account_burst"
NETWORK_CLUSTER = "network_cluster"
DEVICE_CLUSTER = "device_cluster"
VELOCITY_SPIKE = "velocity_spike"
DOWNVOTE_BRIGADE = "downvote_brigade"
KINDS = (ACCOUNT_BURST, NETWORK_CLUSTER, DEVICE_CLUSTER, VELOCITY_SPIKE, DOWNVOTE_BRIGADE)

WARNING = "warning"
CRITICAL = "critical"

# Marks an account of a coordinated group can carry.
YOUNG = "young"
HERD_AGENT = "herd_agent"
SHARED_DEVICE = "shared_device"
LOCKSTEP = "lockstep"
SAME_VOTES = "same_votes"

_HERD_EVIDENCE = -math.log10(0.05)
_MAX_EVIDENCE = 50.0  # -log10 p is capped: beyond this it is "certain" and floats get silly
_LISTED = 10  # evidence lists (accounts, networks, songs) are cut to this many entries


# ------------------------------------------------------------------------------- helpers


def binomial_evidence(n: int, k: int, p: float) -> float:
    """-log10 P(X >= k) for X ~ Binomial(n, p): how surprising k successes in n trials are.
    0 when k is at most the expectation (no evidence), capped at 50."""
    if k <= 0 or n <= 0 or k <= n * p:
        return 0.0
    if k > n:
        return _MAX_EVIDENCE
    log_term = (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    # The terms fall from i = k on (k is above the mode): sum their ratios to the first one.
    odds = p / (1.0 - p)
    total, ratio = 1.0, 1.0
    for i in range(k, n):
        ratio *= (n - i) / (i + 1) * odds
        total += ratio
        if ratio < total * 1e-12:
            break
    log10_tail = (log_term + math.log(total)) / math.log(10)
    return min(_MAX_EVIDENCE, max(0.0, -log10_tail))


def _severity(critical: bool) -> str:
    return CRITICAL if critical else WARNING


def _flaggable_ids(votes: Iterable[VoteSignal]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.vote_id for v in votes if v.flaggable))


def _top(counter: Counter[str], limit: int = _LISTED) -> dict[str, int]:
    return dict(counter.most_common(limit))


def _span(votes: Sequence[VoteSignal]) -> float:
    if not votes:
        return 0.0
    times = [v.at for v in votes]
    return max(times) - min(times)


def _is_young(vote: VoteSignal, config: FraudConfig) -> bool:
    age = vote.account_age_seconds
    return age is not None and age < config.young_account_seconds


def _short(value: str, keep: int = 12) -> str:
    return value if len(value) <= keep else value[:keep] + "…"


# ------------------------------------------------------------------------------- (a) bursts


def account_burst(user_votes: Sequence[VoteSignal], config: FraudConfig) -> Incident | None:
    """One account casting at least ``burst_min_votes`` votes within ``burst_window_seconds``
    on at least ``burst_min_shows`` shows. ``user_votes``: the account's votes (every show) in
    the look-back; all its flaggable votes there are flagged (a script's earlier votes too)."""
    if len(user_votes) < config.burst_min_votes:
        return None
    votes = sorted(user_votes, key=lambda v: v.at)
    shows: Counter[str] = Counter()
    best: tuple[int, int] | None = None  # the widest qualifying window (start, end) indexes
    start = 0
    for end, vote in enumerate(votes):
        shows[vote.show_id] += 1
        while vote.at - votes[start].at > config.burst_window_seconds:
            gone = votes[start].show_id
            shows[gone] -= 1
            if not shows[gone]:
                del shows[gone]
            start += 1
        size = end - start + 1
        if (
            size >= config.burst_min_votes
            and len(shows) >= config.burst_min_shows
            and (best is None or size > best[1] - best[0] + 1)
        ):
            best = (start, end)
    if best is None:
        return None
    burst = votes[best[0] : best[1] + 1]
    user_id = votes[0].user_id
    burst_shows = Counter(v.show_id for v in burst)
    span = _span(burst)
    ids = _flaggable_ids(votes)
    evidence: dict[str, Any] = {
        "user_id": user_id,
        "votes_in_burst": len(burst),
        "votes_in_window": len(votes),
        "shows": _top(burst_shows),
        "songs": len({(v.show_id, v.song_id) for v in burst}),
        "span_seconds": round(span, 1),
        "votes_per_minute": round(len(burst) / max(span, 1.0) * 60.0, 1),
        "down_votes": sum(v.vote_type == "down" for v in burst),
        "networks": _top(Counter(v.net for v in burst if v.net)),
        "account_age_days": _age_days(votes),
        "first_vote_at": burst[0].at,
        "last_vote_at": burst[-1].at,
        "thresholds": {
            "burst_min_votes": config.burst_min_votes,
            "burst_window_seconds": config.burst_window_seconds,
            "burst_min_shows": config.burst_min_shows,
        },
    }
    shows_voted = len(burst_shows)
    show_id = next(iter(burst_shows)) if shows_voted == 1 else None
    return Incident(
        kind=ACCOUNT_BURST,
        severity=_severity(len(burst) >= 2 * config.burst_min_votes),
        entity=f"user:{user_id}",
        show_id=show_id,
        summary=(
            f"Account {_short(user_id)} cast {len(burst)} votes on {shows_voted} shows "
            f"within {span:.0f} seconds."
        ),
        evidence=evidence,
        vote_ids=ids,
    )


def _age_days(votes: Sequence[VoteSignal]) -> float | None:
    ages = [v.account_age_seconds for v in votes if v.account_age_seconds is not None]
    return round(min(ages) / 86400.0, 2) if ages else None


# ------------------------------------------------------------------------------- (b) groups


class _Links:
    """Union-find over account ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        parent = self.parent.setdefault(item, item)
        while parent != item:
            grand = self.parent[parent]
            self.parent[item] = grand
            item, parent = parent, grand
        return item

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def groups(self) -> list[list[str]]:
        found: dict[str, list[str]] = {}
        for item in self.parent:
            found.setdefault(self.find(item), []).append(item)
        return list(found.values())


@dataclass(frozen=True, slots=True)
class GroupFinding:
    """How one group of linked accounts was judged (also what the evidence reports)."""

    accounts: int
    young: int
    same_signature_accounts: int
    top_agent_accounts: int
    agents: int
    shared_device_accounts: int
    evidence: float
    suspects_sharing: int
    marks: Mapping[str, frozenset[str]]
    suspects: frozenset[str]
    groups: int = 1


Dimension = Literal["net", "device", "show"]


def coordinated_accounts(
    votes: Sequence[VoteSignal],
    *,
    dimension: Dimension,
    value: str,
    config: FraudConfig,
    focus: Collection[str] | None = None,
) -> list[Incident]:
    """Accounts of one network or one device voting the same songs in the same direction
    together (ballot stuffing, sockpuppets). ``votes``: one show's votes in the look-back from
    the network ``value`` (``dimension="net"``), from the device ``value`` (``"device"``), or
    all of them (``"show"``, ``value`` the show id: the sweep's view, where one person's
    accounts are followed across networks through their devices).

    Accounts are linked when they voted the same song in the same direction within
    ``sync_seconds`` of each other on the same network (on a device: anywhere in the
    look-back), or used the same device. Judged: each linked group, and each unbroken run of
    votes on one song inside it. A group is suspicious when its make-up is unlikely under
    organic voting: the sum of -log10 binomial tails of its young accounts (prior
    ``young_share_prior``), of the accounts sending its most common user agent
    (``ua_share_prior``), of the accounts sharing a device (``device_share_prior``) and of the
    accounts that cast exactly the same two or more votes (``signature_share_prior``) reaches
    ``cluster_min_evidence``. In a suspicious group, an account is a suspect when it carries
    ``min_marks`` of the marks young, herd user agent, shared device, lockstep (voted
    ``lockstep_min_songs`` songs together with the group) and same votes. An incident needs
    ``cluster_min_accounts`` suspects (``device_min_accounts`` on a device), of which
    ``cluster_min_sharing`` share a device, or a user agent with two more: accounts voting
    together from distinct phones are people together, not one person or one script. Only the
    suspects' votes are flagged: bystanders of a busy network are not.

    One incident per network or device (its groups merged); per group on the show dimension,
    named after the group's main device or network. ``focus``: judge only the groups holding
    one of these accounts, linked through the songs they voted (the processor's new votes: the
    other groups were judged with earlier batches).
    """
    if not votes or not value:
        return []
    show_id = votes[0].show_id
    minimum = config.device_min_accounts if dimension == "device" else config.cluster_min_accounts
    if len({v.user_id for v in votes}) < minimum:
        return []
    groups, together = _groups(votes, dimension, minimum, config, focus)
    if not groups:
        return []
    judged = set().union(*groups)
    profile = Profiles(v for v in votes if v.user_id in judged)
    found: list[GroupFinding] = []
    for accounts in sorted(groups, key=lambda g: (-len(g), min(g))):
        finding = judge_group(accounts, profile, together, config)
        if (
            len(finding.suspects) >= minimum
            and finding.evidence >= config.cluster_min_evidence
            and finding.suspects_sharing >= config.cluster_min_sharing
        ):
            found.append(finding)
    if not found:
        return []
    if dimension == "show":
        incidents = []
        taken: set[str] = set()
        for finding in sorted(found, key=lambda f: -f.evidence):
            if finding.suspects <= taken:
                continue  # a run inside a group already reported
            taken |= finding.suspects
            flagged = [v for v in votes if v.user_id in finding.suspects]
            where, name = _main_identity(flagged, finding)
            incidents.append(_group_incident(flagged, finding, where, name, show_id, config))
        return incidents
    # Several unlinked groups on one network (two waves on different songs): one incident.
    strongest = max(found, key=lambda f: f.evidence)
    suspects = frozenset().union(*(f.suspects for f in found))
    marks = {a: m for f in found for a, m in f.marks.items()}
    finding = dataclasses.replace(strongest, suspects=suspects, marks=marks, groups=len(found))
    flagged = [v for v in votes if v.user_id in suspects]
    return [_group_incident(flagged, finding, dimension, value, show_id, config)]


def _groups(
    votes: Sequence[VoteSignal],
    dimension: str,
    minimum: int,
    config: FraudConfig,
    focus: Collection[str] | None,
) -> tuple[set[frozenset[str]], Together]:
    """The groups to judge: each linked group, and each run of one song inside a larger group,
    of at least ``minimum`` accounts (holding a ``focus`` account, when given)."""
    linked = votes
    if focus is not None:
        # Only the songs the focus accounts voted can link them (a group reaching them through
        # other songs is the sweep's to find).
        targets = {(v.song_id, v.vote_type) for v in votes if v.user_id in focus}
        linked = [v for v in votes if (v.song_id, v.vote_type) in targets]
    links, together, runs = _link(linked, dimension, config)
    groups = {frozenset(g) for g in links.groups() if len(g) >= minimum}
    groups |= {run for run in runs if len(run) >= minimum}
    if focus is not None:
        wanted = set(focus)
        groups = {g for g in groups if not wanted.isdisjoint(g)}
    return groups, together


def _main_identity(
    flagged: Sequence[VoteSignal], finding: GroupFinding
) -> tuple[Literal["net", "device"], str]:
    """A group found on the show dimension is named after its most used device when most of its
    accounts share devices, else after its most used network."""
    sharing = sum(SHARED_DEVICE in finding.marks[a] for a in finding.suspects)
    devices = Counter(v.device_hash for v in flagged if v.device_hash)
    if devices and 2 * sharing >= len(finding.suspects):
        return "device", devices.most_common(1)[0][0]
    nets = Counter(v.net for v in flagged if v.net)
    if nets:
        return "net", nets.most_common(1)[0][0]
    if devices:
        return "device", devices.most_common(1)[0][0]
    return "net", "unknown"


class Together:
    """The pairs of accounts that voted a (song, direction) together; indexed per account on
    first use (only a suspicious group asks)."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str, tuple[str, str]]] = []
        self._index: dict[str, dict[tuple[str, str], set[str]]] | None = None

    def partners(self, account: str) -> dict[tuple[str, str], set[str]]:
        """(song, direction) -> the accounts ``account`` voted that together with."""
        if self._index is None:
            index: dict[str, dict[tuple[str, str], set[str]]] = {}
            for a, b, target in self.pairs:
                index.setdefault(a, {}).setdefault(target, set()).add(b)
                index.setdefault(b, {}).setdefault(target, set()).add(a)
            self._index = index
        return self._index.get(account, {})


def _link(
    votes: Sequence[VoteSignal], dimension: str, config: FraudConfig
) -> tuple[_Links, Together, list[frozenset[str]]]:
    """Links accounts that voted together. Also gives, per account and (song, direction), the
    accounts it voted that with together (its neighbours in time), and the *runs*: the accounts
    of each unbroken sequence of votes on one song in one direction (a group of its own: a farm
    voting one song inside a crowd that votes many is judged apart from the crowd)."""
    links = _Links()
    together = Together()
    runs: list[frozenset[str]] = []
    by_target: dict[tuple[str, str, str], list[VoteSignal]] = {}
    for vote in votes:
        # On the show dimension, votes are together only on the same network.
        where = (vote.net or "") if dimension == "show" else ""
        if dimension == "show" and not where:
            continue
        by_target.setdefault((vote.song_id, vote.vote_type, where), []).append(vote)
    # On a device every vote for the same song is together; elsewhere, within sync_seconds.
    sync = math.inf if dimension == "device" else config.sync_seconds
    for (song, kind, _), target_votes in by_target.items():
        if len(target_votes) > 1:
            target_votes.sort(key=lambda v: v.at)
            runs += _chain(target_votes, (song, kind), sync, links, together)
    if dimension != "device":
        # Accounts on one device are one person's, whatever they voted and from where.
        by_device: dict[str, str] = {}
        for vote in votes:
            if vote.device_hash:
                first = by_device.setdefault(vote.device_hash, vote.user_id)
                if first != vote.user_id:
                    links.union(first, vote.user_id)
    return links, together, runs


def _chain(
    ordered: Sequence[VoteSignal], target: tuple[str, str], sync: float, links: _Links, together: Together
) -> list[frozenset[str]]:
    """Links consecutive votes on one target that are at most ``sync`` apart; returns the runs."""
    runs: list[frozenset[str]] = []
    run = {ordered[0].user_id}
    pairs = together.pairs
    for before, after in itertools.pairwise(ordered):
        if after.user_id != before.user_id and after.at - before.at <= sync:
            links.union(before.user_id, after.user_id)
            pairs.append((before.user_id, after.user_id, target))
            run.add(after.user_id)
            continue
        if len(run) > 1:
            runs.append(frozenset(run))
        run = {after.user_id}
    if len(run) > 1:
        runs.append(frozenset(run))
    return runs


class Profiles:
    """What each account looked like in the window, in one pass over its votes: computed
    once, used by every group judged (see :func:`judge_group`)."""

    def __init__(self, votes: Iterable[VoteSignal]) -> None:
        self.first_at: dict[str, float] = {}
        self.created: dict[str, float] = {}
        self.agents: dict[str, set[str]] = {}
        self.devices: dict[str, set[str]] = {}
        self._votes: dict[str, set[tuple[str, str]]] = {}
        self._frozen: dict[str, frozenset[tuple[str, str]]] = {}
        for vote in votes:
            user = vote.user_id
            first = self.first_at.get(user)
            if first is None or vote.at < first:
                self.first_at[user] = vote.at
            if vote.account_created_at is not None:
                self.created[user] = vote.account_created_at
            if vote.ua_hash:
                self.agents.setdefault(user, set()).add(vote.ua_hash)
            if vote.device_hash:
                self.devices.setdefault(user, set()).add(vote.device_hash)
            self._votes.setdefault(user, set()).add((vote.song_id, vote.vote_type))

    def young(self, user: str, config: FraudConfig) -> bool:
        created = self.created.get(user)
        return created is not None and self.first_at[user] - created < config.young_account_seconds

    def votes(self, user: str) -> frozenset[tuple[str, str]]:
        """The account's (song, direction) votes."""
        found = self._frozen.get(user)
        if found is None:
            found = self._frozen[user] = frozenset(self._votes.get(user, ()))
        return found


def judge_group(
    accounts: Collection[str],
    profile: Profiles,
    together: Together,
    config: FraudConfig,
) -> GroupFinding:
    """The evidence against one linked group and, when it is enough to matter, each account's
    marks (see :func:`coordinated_accounts`). ``profile``: the accounts' :class:`Profiles`."""
    members = set(accounts)
    n = len(members)
    young = {a for a in members if profile.young(a, config)}
    agents: dict[str, set[str]] = {}
    devices: dict[str, set[str]] = {}
    sets: Counter[frozenset[tuple[str, str]]] = Counter()
    for account in members:
        for agent in profile.agents.get(account, ()):
            agents.setdefault(agent, set()).add(account)
        for device in profile.devices.get(account, ()):
            devices.setdefault(device, set()).add(account)
        sets[profile.votes(account)] += 1
    shared = {a for users in devices.values() if len(users) >= 2 for a in users}
    top_agent = max((len(users) for users in agents.values()), default=0)
    multi = [count for votes, count in sets.most_common() if len(votes) >= 2]
    same_set = multi[0] if multi else 0
    evidence = (
        binomial_evidence(n, len(young), config.young_share_prior)
        + binomial_evidence(n, top_agent, config.ua_share_prior)
        + binomial_evidence(n, len(shared), config.device_share_prior)
        + binomial_evidence(n, same_set, config.signature_share_prior)
    )
    finding = GroupFinding(
        accounts=n,
        young=len(young),
        same_signature_accounts=same_set,
        top_agent_accounts=top_agent,
        agents=len(agents),
        shared_device_accounts=len(shared),
        evidence=round(evidence, 2),
        suspects_sharing=0,
        marks={},
        suspects=frozenset(),
    )
    if evidence < config.cluster_min_evidence:
        return finding  # organic enough: nobody in it is flagged, marks are not needed
    # A herd agent: sent by more of the group than the most common phone would be (p <= 0.05).
    herd = {
        a
        for users in agents.values()
        if len(users) >= config.herd_min_accounts
        and binomial_evidence(n, len(users), config.ua_share_prior) >= _HERD_EVIDENCE
        for a in users
    }
    modal, modal_count = sets.most_common(1)[0]
    same_votes = (
        {a for a in members if profile.votes(a) == modal}
        if modal_count >= config.herd_min_accounts
        else set()
    )
    marks: dict[str, frozenset[str]] = {}
    for account in sorted(members):
        found = set()
        if account in young:
            found.add(YOUNG)
        if account in herd:
            found.add(HERD_AGENT)
        if account in shared:
            found.add(SHARED_DEVICE)
        if account in same_votes:
            found.add(SAME_VOTES)
        # Lockstep with this group: songs voted together with another of its accounts.
        partners = together.partners(account)
        if sum(1 for users in partners.values() if users & members) >= config.lockstep_min_songs:
            found.add(LOCKSTEP)
        marks[account] = frozenset(found)
    suspects = frozenset(a for a, m in marks.items() if len(m) >= config.min_marks)
    # The suspects sharing a device with another suspect, or a user agent with at least
    # herd_min_accounts - 1 others (two friends may have the same phone): one person's
    # accounts, or one script's.
    sharing = {a for users in devices.values() if len(users & suspects) >= 2 for a in users & suspects}
    sharing |= {
        a
        for users in agents.values()
        if len(users & suspects) >= config.herd_min_accounts
        for a in users & suspects
    }
    return dataclasses.replace(finding, suspects_sharing=len(sharing), marks=marks, suspects=suspects)


def _group_incident(
    flagged: Sequence[VoteSignal],
    finding: GroupFinding,
    dimension: str,
    value: str,
    show_id: str,
    config: FraudConfig,
) -> Incident:
    targets = Counter((v.song_id, v.vote_type) for v in flagged)
    (top_song, top_type), _ = targets.most_common(1)[0]
    direction = "down" if top_type == "down" else "up"
    suspects = len(finding.suspects)
    young_suspects = sum(YOUNG in finding.marks[a] for a in finding.suspects)
    span = _span(flagged)
    marks = Counter(m for a in finding.suspects for m in finding.marks[a])
    where = f"network {value}" if dimension == "net" else f"device {_short(value)}"
    evidence: dict[str, Any] = {
        dimension: value,
        "show_id": show_id,
        "accounts_flagged": suspects,
        "accounts_linked": finding.accounts,
        "young_accounts": finding.young,
        "accounts_with_the_same_votes": finding.same_signature_accounts,
        "accounts_with_top_user_agent": finding.top_agent_accounts,
        "user_agents": finding.agents,
        "accounts_sharing_a_device": finding.shared_device_accounts,
        "evidence_log10": finding.evidence,
        "suspects_sharing_an_agent_or_device": finding.suspects_sharing,
        "groups": finding.groups,
        "marks": dict(marks),
        "songs": {f"{song}:{kind}": n for (song, kind), n in targets.most_common(_LISTED)},
        "accounts": sorted(finding.suspects)[:_LISTED],
        "networks": _top(Counter(v.net for v in flagged if v.net)),
        "devices": len({v.device_hash for v in flagged if v.device_hash}),
        "span_seconds": round(span, 1),
        "first_vote_at": min(v.at for v in flagged),
        "last_vote_at": max(v.at for v in flagged),
        "thresholds": {
            "sync_seconds": config.sync_seconds,
            "min_accounts": config.device_min_accounts
            if dimension == "device"
            else config.cluster_min_accounts,
            "cluster_min_evidence": config.cluster_min_evidence,
            "young_account_days": config.young_account_days,
            "min_marks": config.min_marks,
        },
    }
    minimum = config.device_min_accounts if dimension == "device" else config.cluster_min_accounts
    return Incident(
        kind=DEVICE_CLUSTER if dimension == "device" else NETWORK_CLUSTER,
        severity=_severity(suspects >= 3 * minimum),
        entity=f"{dimension}:{value}",
        show_id=show_id,
        summary=(
            f"{suspects} accounts ({young_suspects} under {config.young_account_days:g} days old) "
            f"on {where} voted {direction} the same songs together, over {span:.0f} seconds "
            f"({len(targets)} votes on {len({s for s, _ in targets})} songs, top {top_song})."
        ),
        evidence=evidence,
        vote_ids=_flaggable_ids(flagged),
    )


# ------------------------------------------------------------------------------- (c) velocity


@dataclass(frozen=True, slots=True)
class Spike:
    """A show's recent rate far above its own baseline."""

    show_id: str
    recent_per_minute: float
    baseline_per_minute: float
    history_minutes: int
    since: float  # the start of the recent window (epoch seconds)

    @property
    def ratio(self) -> float:
        if self.baseline_per_minute <= 0:
            return math.inf
        return self.recent_per_minute / self.baseline_per_minute


def velocity_spike(
    show_id: str, minute_counts: Mapping[int, int], now: float, config: FraudConfig
) -> Spike | None:
    """The show's votes per minute over the last ``velocity_window_minutes`` compared with its
    rate over the ``velocity_baseline_minutes`` before (from the first minute with votes, and
    only once there are ``velocity_min_history_minutes`` of them): a spike when the recent rate
    is at least ``velocity_ratio`` times the baseline and ``velocity_floor_per_minute``.
    ``minute_counts``: votes per epoch minute, covering both windows."""
    window = config.velocity_window_minutes
    current = math.floor(now / 60)
    elapsed = (now - current * 60) / 60.0
    recent = sum(minute_counts.get(m, 0) for m in range(current - window + 1, current + 1))
    recent_minutes = max(window - 1 + elapsed, 1.0)
    recent_rate = recent / recent_minutes
    if recent_rate < config.velocity_floor_per_minute:
        return None
    last_baseline = current - window
    first_baseline = last_baseline - config.velocity_baseline_minutes + 1
    active = [m for m in range(first_baseline, last_baseline + 1) if minute_counts.get(m, 0) > 0]
    if not active:
        return None
    history = last_baseline - active[0] + 1
    if history < config.velocity_min_history_minutes:
        return None
    baseline_rate = sum(minute_counts.get(m, 0) for m in active) / history
    if recent_rate < config.velocity_ratio * baseline_rate:
        return None
    return Spike(
        show_id=show_id,
        recent_per_minute=round(recent_rate, 2),
        baseline_per_minute=round(baseline_rate, 2),
        history_minutes=history,
        since=(current - window + 1) * 60.0,
    )


def spike_incident(spike: Spike, recent_votes: Sequence[VoteSignal], config: FraudConfig) -> Incident:
    """The incident of a spike, over the show's votes since ``spike.since``: an alert, and the
    young accounts' votes flagged when young accounts cast at least ``spike_young_share`` of
    the spike's votes (an organic surge, an announcement, has the usual share)."""
    young = [v for v in recent_votes if _is_young(v, config)]
    share = len(young) / len(recent_votes) if recent_votes else 0.0
    flag = share >= config.spike_young_share
    ids = _flaggable_ids(young) if flag else ()
    ratio = spike.ratio
    evidence: dict[str, Any] = {
        "show_id": spike.show_id,
        "votes_per_minute": spike.recent_per_minute,
        "baseline_per_minute": spike.baseline_per_minute,
        "ratio": None if math.isinf(ratio) else round(ratio, 1),
        "baseline_minutes": spike.history_minutes,
        "votes_in_spike": len(recent_votes),
        "young_account_votes": len(young),
        "young_share": round(share, 3),
        "accounts": len({v.user_id for v in recent_votes}),
        "networks": _top(Counter(v.net for v in recent_votes if v.net), 5),
        "since": spike.since,
        "young_votes_flagged": flag,
        "thresholds": {
            "velocity_ratio": config.velocity_ratio,
            "velocity_floor_per_minute": config.velocity_floor_per_minute,
            "velocity_window_minutes": config.velocity_window_minutes,
            "spike_young_share": config.spike_young_share,
        },
    }
    times = "" if math.isinf(ratio) else f" ({ratio:.1f} times its baseline of {spike.baseline_per_minute:g})"
    action = (
        f"; {share:.0%} of them from accounts under {config.young_account_days:g} days old, whose votes are held"
        if flag
        else f"; {share:.0%} from young accounts, nothing held"
    )
    return Incident(
        kind=VELOCITY_SPIKE,
        severity=_severity(flag),
        entity=f"show:{spike.show_id}",
        show_id=spike.show_id,
        summary=f"Show votes reached {spike.recent_per_minute:g} per minute{times}{action}.",
        evidence=evidence,
        vote_ids=ids,
    )


# ------------------------------------------------------------------------------- (d) brigades


@dataclass(frozen=True, slots=True)
class SongBaseline:
    """A song's votes before the brigade window (its usual down share)."""

    ups: int
    downs: int


def usual_down_share(baseline: SongBaseline, config: FraudConfig) -> float:
    """The song's down share before the window, shrunk toward ``brigade_prior_down_share`` with
    the weight of ``brigade_prior_weight`` votes."""
    weight = config.brigade_prior_weight
    total = baseline.ups + baseline.downs + weight
    return (baseline.downs + config.brigade_prior_down_share * weight) / total if total > 0 else 0.0


def downvote_brigade(
    recent_downs: Sequence[VoteSignal],
    recent_ups: int,
    baseline: SongBaseline,
    config: FraudConfig,
    voters: Mapping[str, Sequence[VoteSignal]] | None = None,
) -> Incident | None:
    """Many accounts down-voting one song of a show in a short span, out of line with the song's
    usual down share. ``recent_downs``: the song's down votes in the brigade window;
    ``recent_ups``: its up votes there; ``baseline``: its votes before; ``voters``: each down
    voter's votes on the show in their look-back (``None``: the test only, nothing flagged; the
    engine asks first and reads the voters' other votes only for a brigade).

    A brigade when there are at least ``brigade_min_downs`` down votes, making at least
    ``brigade_min_share`` of the song's votes in the window and ``brigade_min_ratio`` times its
    usual down share, and the binomial tail under the usual share is at most
    ``brigade_max_p_value``. Held: the down votes of the *drive-by* accounts, those that
    up-voted nothing on the show (their down votes on its other songs too: one campaign),
    when they are at least ``brigade_min_drive_by_share`` of the down voters. A brigade comes
    to down-vote, while fans turning on a song they heard live also vote for others: then the
    incident is an alert and nothing is held.
    """
    downs = len(recent_downs)
    if downs < config.brigade_min_downs:
        return None
    total = downs + recent_ups
    share = downs / total
    if share < config.brigade_min_share:
        return None
    usual = usual_down_share(baseline, config)
    if share < config.brigade_min_ratio * usual:
        return None
    evidence_log10 = binomial_evidence(total, downs, max(usual, 1e-6))
    if evidence_log10 < -math.log10(config.brigade_max_p_value):
        return None
    drive_by: list[VoteSignal] = []
    also: list[VoteSignal] = []
    if voters is not None:
        engaged = {user for user, votes in voters.items() if any(v.vote_type == "up" for v in votes)}
        drive_by = [v for v in recent_downs if v.user_id not in engaged]
        accounts = {v.user_id for v in drive_by}
        song = recent_downs[0].song_id
        also = [
            v
            for user in sorted(accounts)
            for v in voters.get(user, ())
            if v.vote_type == "down" and v.song_id != song and v.show_id == recent_downs[0].show_id
        ]
    # Mostly fans who vote for other songs too: an alert, nothing held.
    enough = len(drive_by) >= config.brigade_min_drive_by_share * downs
    held_votes = [*drive_by, *also] if enough and drive_by else []
    first = recent_downs[0]
    show_id, song_id = first.show_id, first.song_id
    span = _span(recent_downs)
    young = sum(_is_young(v, config) for v in recent_downs)
    evidence: dict[str, Any] = {
        "show_id": show_id,
        "song_id": song_id,
        "down_votes": downs,
        "up_votes": recent_ups,
        "down_share": round(share, 3),
        "usual_down_share": round(usual, 3),
        "baseline_votes": baseline.ups + baseline.downs,
        "evidence_log10": round(evidence_log10, 2),
        "drive_by_accounts": len({v.user_id for v in drive_by}),
        "drive_by_share_required": config.brigade_min_drive_by_share,
        "their_other_down_votes": len(also) if enough else 0,
        "young_accounts": young,
        "networks": len({v.net for v in recent_downs if v.net}),
        "top_networks": _top(Counter(v.net for v in recent_downs if v.net), 5),
        "span_seconds": round(span, 1),
        "first_vote_at": min(v.at for v in recent_downs),
        "last_vote_at": max(v.at for v in recent_downs),
        "thresholds": {
            "brigade_window_seconds": config.brigade_window_seconds,
            "brigade_min_downs": config.brigade_min_downs,
            "brigade_min_share": config.brigade_min_share,
            "brigade_min_ratio": config.brigade_min_ratio,
            "brigade_max_p_value": config.brigade_max_p_value,
        },
    }
    held = (
        f"; the {len(drive_by)} from accounts that voted nothing else are held"
        + (f" with their {len(also)} other down votes on the show" if also else "")
        if held_votes
        else f"; {len(drive_by)} from accounts that voted nothing else, too few to hold"
    )
    return Incident(
        kind=DOWNVOTE_BRIGADE,
        severity=_severity(len(drive_by) >= 3 * config.brigade_min_downs and bool(held_votes)),
        entity=f"show:{show_id}/song:{song_id}",
        show_id=show_id,
        summary=(
            f"{downs} accounts down-voted song {_short(song_id)} within {span / 60:.0f} minutes, "
            f"{share:.0%} of its votes there against a usual {usual:.0%}{held}."
        ),
        evidence=evidence,
        vote_ids=_flaggable_ids(held_votes),
    )
