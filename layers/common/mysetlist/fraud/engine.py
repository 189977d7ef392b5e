"""The fraud engine: runs the detectors for the VoteProcessor (per batch), the FraudSweeper (on a
schedule) and the sweeper's fallback (over vote items, when the window store is down).

- :meth:`FraudEngine.observe` adds a batch's signals to the window and runs the detectors over
  the slices the batch touched: its accounts' recent votes, its networks' and devices' recent
  votes on each show, the songs it down-voted, its shows' votes per minute. A cluster found
  now brings its earlier votes still in the window with it. Cost: a big network or device
  window (``recheck_min_votes``) and a show's velocity are analysed at most once per
  ``recheck_seconds`` per container, and only the groups with a vote since the last analysis
  are judged again.
- :meth:`FraudEngine.sweep` runs every detector over whole shows with the longer
  ``sweep_window_seconds`` (slow attacks, stragglers of a brigade, one person's accounts
  across networks, what the processor skipped or missed).
- :meth:`FraudEngine.detect` does the same over a given list of votes, with no store (pure).

Faults: ``observe`` and ``sweep`` raise :class:`mysetlist.fraud.window.WindowUnavailable`
when the window store fails; ``detect`` needs no store.

De-duplication (``observe`` and ``sweep``): incidents of the same kind and entity found in one
call are merged into one; a vote id is returned once (the window store remembers the returned
ones, and the votes that arrive already moderated), and an incident whose votes were all
returned before is reported again at most once per ``realert_seconds``, so an open alert is
refreshed, not re-raised on every batch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Literal

from mysetlist.fraud.config import FraudConfig
from mysetlist.fraud.detectors import (
    SongBaseline,
    Spike,
    account_burst,
    coordinated_accounts,
    downvote_brigade,
    spike_incident,
    velocity_spike,
)
from mysetlist.fraud.window import (
    InMemoryRecentVotes,
    RecentVotes,
    Span,
    WindowKey,
    latest_per_vote,
)
from mysetlist.signals import Incident, VoteSignal, parse_vote_id

# Analysis times remembered per container before old ones are forgotten.
_MAX_REMEMBERED = 50_000
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
# A candidate brigade window: (start, until (inf: now), the song's down votes in it).
DownWindow = tuple[float, float, Sequence[VoteSignal]]


def epoch_seconds(now: dt.datetime | float) -> float:
    """``now`` as epoch seconds (a naive datetime is taken as UTC)."""
    if isinstance(now, dt.datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        return now.timestamp()
    return float(now)


class FraudEngine:
    """The detectors over a window store. One per container; thread-safe if the store is."""

    def __init__(self, config: FraudConfig, recent: RecentVotes) -> None:
        self.config = config
        self.recent = recent
        # When this container last analysed a big network or device window, or a show's
        # velocity, and how many votes the window held: (kind, show, key) -> (time, votes).
        self._analysed: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def _due(self, kind: str, show: str, key: str, at: float) -> bool:
        """Whether the processor analyses this window now: small windows always, a big one (or
        a show's velocity) at most once per ``recheck_seconds`` in this container."""
        with self._lock:
            last = self._analysed.get((kind, show, key))
        if last is None:
            return True
        when, votes = last
        small = kind != "velocity" and votes < self.config.recheck_min_votes
        return small or not 0 <= at - when < self.config.recheck_seconds

    def _focus(
        self, kind: str, show: str, key: str, window: Sequence[VoteSignal], batch: Sequence[VoteSignal]
    ) -> set[str] | None:
        """The accounts whose groups may have changed since this engine last analysed the
        window: the batch's on it and those with a vote since (a big window is analysed once
        per ``recheck_seconds``); None (judge every group) when never analysed here."""
        with self._lock:
            last = self._analysed.get((kind, show, key))
        if last is None:
            return None
        field = "net" if kind == "net" else "device_hash"
        focus = {s.user_id for s in batch if s.show_id == show and getattr(s, field) == key}
        focus.update(v.user_id for v in window if v.at >= last[0])
        return focus

    def _analysed_now(self, kind: str, show: str, key: str, at: float, votes: int = 0) -> None:
        with self._lock:
            self._analysed[kind, show, key] = (at, votes)
            if len(self._analysed) > _MAX_REMEMBERED:
                horizon = at - self.config.recheck_seconds
                self._analysed = {k: v for k, v in self._analysed.items() if v[0] >= horizon}

    # ------------------------------------------------------------------------- the processor

    def observe(self, signals: Sequence[VoteSignal], now: dt.datetime | float) -> list[Incident]:
        """Add a processed batch's vote signals to the window and return the incidents they
        reveal (the VoteProcessor's path).

        ``signals``: the batch's current votes (new or changed; a signal carrying a moderation
        state is remembered as already flagged, never returned). ``now``: the batch's time.
        Runs the account-burst detector over each account of the batch (its votes on every show
        in the last ``user_window_seconds``), the network and device detectors over each
        network and device of the batch per show (last ``cluster_window_seconds``), the brigade
        detector over each song the batch down-voted, and the velocity detector over each show
        of the batch. A network or device window that held ``recheck_min_votes`` votes or more,
        and a show's velocity, are analysed at most once per ``recheck_seconds`` by this engine
        (a busy venue's network holds thousands of votes; the sweep covers what falls between). Returns merged incidents whose ``vote_ids`` were never returned before
        (see the module docstring). Raises :class:`mysetlist.fraud.window.WindowUnavailable`
        when the window store fails (nothing is half-done that matters: a retry adds the same
        signals again).
        """
        at = epoch_seconds(now)
        batch = latest_per_vote(signals)
        if not batch:
            return []
        config = self.config
        self.recent.add(batch, at)

        users = sorted({s.user_id for s in batch})
        nets = sorted({(s.show_id, s.net) for s in batch if s.net and self._due("net", s.show_id, s.net, at)})
        devices = sorted(
            {
                (s.show_id, s.device_hash)
                for s in batch
                if s.device_hash and self._due("device", s.show_id, s.device_hash, at)
            }
        )
        downs = sorted({(s.show_id, s.song_id) for s in batch if s.vote_type == "down"})
        shows = sorted({s.show_id for s in batch if self._due("velocity", s.show_id, "", at)})
        cluster_since = at - config.cluster_window_seconds
        brigade_since = at - config.brigade_window_seconds
        spans = (
            [Span(WindowKey.user(u), at - config.user_window_seconds) for u in users]
            + [Span(WindowKey.net(show, net), cluster_since) for show, net in nets]
            + [Span(WindowKey.device(show, device), cluster_since) for show, device in devices]
            + [Span(WindowKey.song(show, song, "down"), brigade_since) for show, song in downs]
        )
        windows = iter(self.recent.votes(spans))
        incidents: list[Incident] = []
        for _ in users:
            found = account_burst(next(windows), config)
            if found is not None:
                incidents.append(found)
        # Groups without an account that voted since the last analysis were judged then.
        for show, net in nets:
            window = next(windows)
            focus = self._focus("net", show, net, window, batch)
            self._analysed_now("net", show, net, at, len(window))
            incidents += coordinated_accounts(window, dimension="net", value=net, config=config, focus=focus)
        for show, device in devices:
            window = next(windows)
            focus = self._focus("device", show, device, window, batch)
            self._analysed_now("device", show, device, at, len(window))
            incidents += coordinated_accounts(
                window, dimension="device", value=device, config=config, focus=focus
            )
        for show in shows:
            self._analysed_now("velocity", show, "", at)
        candidates: dict[tuple[str, str], list[DownWindow]] = {}
        for key in downs:
            song_downs = next(windows)
            if len(song_downs) >= config.brigade_min_downs:
                candidates[key] = [(brigade_since, math.inf, song_downs)]
        incidents += self._activity(
            self.recent,
            shows,
            candidates,
            at,
            lambda spike: self._spike_votes(spike, at),
            lambda show, users: self._voters(show, users, at),
        )
        return self._settle(incidents, at)

    def _voters(self, show_id: str, users: Collection[str], at: float) -> dict[str, list[VoteSignal]]:
        """The votes of ``users`` on the show in their look-back."""
        accounts = sorted(users)
        since = at - self.config.user_window_seconds
        windows = self.recent.votes([Span(WindowKey.user(u), since) for u in accounts])
        return {
            user: [v for v in votes if v.show_id == show_id]
            for user, votes in zip(accounts, windows, strict=True)
        }

    def _spike_votes(self, spike: Spike, at: float) -> list[VoteSignal]:
        return self.recent.votes([Span(WindowKey.show(spike.show_id), spike.since, at + 1.0)])[0]

    def _activity(
        self,
        store: RecentVotes,
        shows: Sequence[str],
        brigade_candidates: Mapping[tuple[str, str], Sequence[DownWindow]],
        at: float,
        spike_votes: Callable[[Spike], Sequence[VoteSignal]],
        voters_of: Callable[[str, Collection[str]], Mapping[str, Sequence[VoteSignal]]],
    ) -> list[Incident]:
        """The velocity detector over ``shows`` and the brigade detector over candidate windows
        of songs' down votes (per song, the first window that qualifies is reported), with one
        round trip of counts for both. ``spike_votes`` gives a spike's votes; ``voters_of(show,
        users)`` the votes of ``users`` on the show in their look-back."""
        config = self.config
        window = config.velocity_window_minutes
        current = int(at // 60)
        first_minute = current - window - config.velocity_baseline_minutes + 1
        minutes = list(range(first_minute, current + 1))
        spans: list[Span] = []
        for show in shows:
            spans += [Span(WindowKey.show(show), m * 60.0, (m + 1) * 60.0) for m in minutes]
        bb = config.brigade_baseline_seconds
        for (show, song), windows in brigade_candidates.items():
            for start, until, _ in windows:
                spans += [
                    Span(WindowKey.song(show, song, "up"), start, until),
                    Span(WindowKey.song(show, song, "up"), start - bb, start),
                    Span(WindowKey.song(show, song, "down"), start - bb, start),
                ]
        counts = iter(store.counts(spans))
        incidents: list[Incident] = []
        for show in shows:
            per_minute = {m: next(counts) for m in minutes}
            spike = velocity_spike(show, per_minute, at, config)
            if spike is not None:
                incidents.append(spike_incident(spike, spike_votes(spike), config))
        for (show, _), windows in brigade_candidates.items():
            reported = False
            for _, _, downs in windows:
                recent_ups, base_ups, base_downs = next(counts), next(counts), next(counts)
                baseline = SongBaseline(ups=base_ups, downs=base_downs)
                if reported or downvote_brigade(downs, recent_ups, baseline, config) is None:
                    continue
                voters = voters_of(show, {v.user_id for v in downs})
                found = downvote_brigade(downs, recent_ups, baseline, config, voters=voters)
                if found is not None:
                    incidents.append(found)
                    reported = True
        return incidents

    def forget(self, signals: Sequence[VoteSignal]) -> None:
        """Votes their voters removed leave the window, and so does their flag: a vote cast
        again (a quarantined one too) is a new vote, judged again. Raises WindowUnavailable."""
        if signals:
            self.recent.remove(signals)

    # ------------------------------------------------------------------------- the sweeper

    def sweep(self, show_ids: Iterable[str], now: dt.datetime | float) -> list[Incident]:
        """Run every detector over whole shows (the FraudSweeper's path, every few minutes).

        Reads each show's votes of the last ``sweep_window_seconds`` from the window store and
        runs: account bursts over each account's votes on these shows; the network and device
        detectors over each network and device of each show, and over the whole show (one
        person's accounts followed across networks through their devices); the brigade
        detector over each song with enough down votes (its densest ``brigade_window_seconds``
        among windows ending every half window across the look-back, extended to now so the
        stragglers of a brigade come with it); and the velocity detector. Returns merged
        incidents with vote ids never returned before.
        Raises :class:`mysetlist.fraud.window.WindowUnavailable` when the store fails (the
        sweeper then reads the vote items and calls :meth:`detect`).
        """
        at = epoch_seconds(now)
        shows = sorted(set(show_ids))
        if not shows:
            return []
        since = at - self.config.sweep_window_seconds
        windows = self.recent.votes([Span(WindowKey.show(show), since) for show in shows])
        incidents = self._analyze(dict(zip(shows, windows, strict=True)), at, self.recent)
        return self._settle(incidents, at)

    def detect(self, votes: Iterable[VoteSignal], now: dt.datetime | float) -> list[Incident]:
        """Run every detector over ``votes`` as :meth:`sweep` does, without the window store:
        pure, nothing remembered (the sweeper's fallback over vote items when Valkey is down,
        and tests). Votes with a moderation state are evidence but never returned; incidents of
        the same kind and entity are merged."""
        at = epoch_seconds(now)
        given = latest_per_vote(votes)
        moderated = {v.vote_id for v in given if not v.flaggable}
        store = InMemoryRecentVotes.for_config(self.config)
        store.add(given, at)
        since = at - self.config.sweep_window_seconds
        by_show: dict[str, list[VoteSignal]] = defaultdict(list)
        for vote in given:
            if vote.at >= since:
                by_show[vote.show_id].append(vote)
        incidents = self._analyze(by_show, at, store)
        merged = _merge(incidents)
        return [
            dataclasses.replace(i, vote_ids=tuple(v for v in i.vote_ids if v not in moderated))
            for i in merged
        ]

    def _analyze(
        self, by_show: Mapping[str, Sequence[VoteSignal]], at: float, store: RecentVotes
    ) -> list[Incident]:
        """Every detector over whole shows' votes; baselines (counts) from ``store``."""
        config = self.config
        by_user: dict[str, list[VoteSignal]] = defaultdict(list)
        for votes in by_show.values():
            for vote in votes:
                by_user[vote.user_id].append(vote)
        incidents = [
            found for found in (account_burst(v, config) for v in by_user.values()) if found is not None
        ]
        candidates: dict[tuple[str, str], list[DownWindow]] = {}
        for show, votes in by_show.items():
            by_key: dict[tuple[Literal["net", "device"], str], list[VoteSignal]] = defaultdict(list)
            downs: dict[str, list[VoteSignal]] = defaultdict(list)
            for vote in votes:
                if vote.net:
                    by_key["net", vote.net].append(vote)
                if vote.device_hash:
                    by_key["device", vote.device_hash].append(vote)
                if vote.vote_type == "down":
                    downs[vote.song_id].append(vote)
            for (dimension, value), key_votes in by_key.items():
                incidents += coordinated_accounts(key_votes, dimension=dimension, value=value, config=config)
            # One person's accounts across networks, followed through their devices.
            incidents += coordinated_accounts(votes, dimension="show", value=show, config=config)
            for song, song_downs in downs.items():
                found_windows = self._brigade_windows(song_downs, at)
                if found_windows:
                    candidates[show, song] = found_windows
        shows = sorted(by_show)

        def spike_votes(spike: Spike) -> list[VoteSignal]:
            return [v for v in by_show.get(spike.show_id, ()) if v.at >= spike.since]

        def voters_of(show: str, users: Collection[str]) -> dict[str, list[VoteSignal]]:
            return {user: [v for v in by_user.get(user, ()) if v.show_id == show] for user in users}

        incidents += self._activity(store, shows, candidates, at, spike_votes, voters_of)
        return incidents

    def _brigade_windows(self, song_downs: list[VoteSignal], at: float) -> list[DownWindow]:
        """The sweep's candidate windows of a song's down votes: the densest window of
        ``brigade_window_seconds`` among those ending now and every half window back across
        the look-back, first extended to now (so the stragglers of a brigade come with it),
        then as it is. Empty when no window holds ``brigade_min_downs``."""
        config = self.config
        if len(song_downs) < config.brigade_min_downs:
            return []
        ordered = sorted(song_downs, key=lambda v: v.at)
        bw = config.brigade_window_seconds
        ends = [at]
        while ends[-1] - bw / 2 - bw >= at - config.sweep_window_seconds:
            ends.append(ends[-1] - bw / 2)
        best: DownWindow | None = None
        for end in ends:
            until = math.inf if end == at else end
            inside = [v for v in ordered if end - bw <= v.at < until]
            if len(inside) >= config.brigade_min_downs and (best is None or len(inside) > len(best[2])):
                best = (end - bw, until, inside)
        if best is None:
            return []
        if best[1] == math.inf:
            return [best]
        extended = [v for v in ordered if v.at >= best[0]]
        return [(best[0], math.inf, extended), best]

    # ------------------------------------------------------------------------- de-duplication

    def _settle(self, incidents: Sequence[Incident], at: float) -> list[Incident]:
        """Merge, drop vote ids returned before, remember the new ones, and keep an incident
        without new votes only when its re-alert claim is free."""
        merged = _merge(incidents)
        if not merged:
            return []
        asked: dict[str, set[str]] = defaultdict(set)
        for incident in merged:
            for vote in incident.vote_ids:
                parsed = parse_vote_id(vote)
                if parsed is not None:
                    asked[parsed[0]].add(vote)
        known = self.recent.flagged(asked) if asked else set()
        settled: list[Incident] = []
        fresh_by_show: dict[str, list[str]] = defaultdict(list)
        returned: set[str] = set()
        for incident in merged:
            fresh = tuple(v for v in incident.vote_ids if v not in known and v not in returned)
            claimed = self.recent.claim(f"{incident.kind}|{incident.entity}", self.config.realert_seconds, at)
            if not fresh and not claimed:
                continue
            returned.update(fresh)
            for vote in fresh:
                parsed = parse_vote_id(vote)
                if parsed is not None:
                    fresh_by_show[parsed[0]].append(vote)
            evidence = dict(incident.evidence) | {"votes_flagged_now": len(fresh)}
            settled.append(dataclasses.replace(incident, vote_ids=fresh, evidence=evidence))
        if fresh_by_show:
            self.recent.mark_flagged(fresh_by_show)
        return settled


def _merge(incidents: Sequence[Incident]) -> list[Incident]:
    """One incident per (kind, entity): vote ids united in order, the highest severity, the
    evidence of the one with the most votes (and how many were merged)."""
    groups: dict[tuple[str, str], list[Incident]] = {}
    for incident in incidents:
        groups.setdefault((incident.kind, incident.entity), []).append(incident)
    merged: list[Incident] = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        main = max(group, key=lambda i: len(i.vote_ids))
        ids = tuple(dict.fromkeys(v for i in group for v in i.vote_ids))
        severity = max((i.severity for i in group), key=lambda s: _SEVERITY_RANK.get(s, 0))
        shows = {i.show_id for i in group}
        evidence = dict(main.evidence) | {"merged_incidents": len(group)}
        if len(shows) > 1:
            evidence["shows"] = sorted(s for s in shows if s)
        merged.append(
            dataclasses.replace(
                main,
                severity=severity,
                show_id=main.show_id if len(shows) == 1 else None,
                evidence=evidence,
                vote_ids=ids,
            )
        )
    return merged
