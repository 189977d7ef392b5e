"""Fraud detection wired to the votes, with fakes of the engine, the moderation store, the alert
store and the catalogue: which stream records are votes being cast, the alert of an incident,
faults that degrade instead of raising, and the sweep's choice between the Valkey window and the
vote items."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from mysetlist.alerts import Alert, AlertIn, RaisedAlert, Severity
from mysetlist.dynamo import to_item
from mysetlist.fraud.window import WindowUnavailable
from mysetlist.fraud_observer import (
    DetectionGaps,
    FraudObserver,
    FraudSweep,
    IncidentResponder,
    RecentRead,
    alert_entity,
    alert_for,
    alert_type,
    cast_signal,
    removal_signal,
    resolve_quiet_alerts,
)
from mysetlist.models import Page, Show, ShowStatus
from mysetlist.moderation import QuarantineReport, incident_id
from mysetlist.signals import Incident, VoteSignal, vote_id
from mysetlist.stream_batch import CountedBatch
from mysetlist.tallies import VoteChange

NOW = dt.datetime(2030, 6, 1, 18, 0, tzinfo=dt.UTC)
SHOW = "grateful-dead:2030-06-01"


def image(user: str, vote: str = "up", **extra: Any) -> dict[str, Any]:
    return to_item(
        {
            "PK": f"{SHOW}#{user}",
            "SK": "grateful-dead:dark-star",
            "show_id": SHOW,
            "song_id": "grateful-dead:dark-star",
            "user_id": user,
            "vote_type": vote,
            "created_at": "2030-06-01T17:59:00+00:00",
            "updated_at": "2030-06-01T17:59:30+00:00",
            "net": "203.0.113.0/24",
            "account_created_at": 1_900_000_000,
            **extra,
        }
    )


def record(
    new: dict[str, Any] | None, old: dict[str, Any] | None = None, sequence: str = "1"
) -> dict[str, Any]:
    body: dict[str, Any] = {"SequenceNumber": sequence}
    if new is not None:
        body["NewImage"] = new
    if old is not None:
        body["OldImage"] = old
    name = "INSERT" if old is None else ("REMOVE" if new is None else "MODIFY")
    return {"eventName": name, "dynamodb": body}


FLAG = {
    "moderation": "quarantined",
    "ModerationKey": f"{SHOW}#quarantined",
    "FlaggedAt": "2030-06-01T18:00:00+00:00",
}


# ---------------------------------------------------------------------------------- votes cast


def test_only_votes_being_cast_are_signals() -> None:
    created = cast_signal(record(image("u1")))
    assert created is not None
    assert (created.user_id, created.vote_type, created.net) == ("u1", "up", "203.0.113.0/24")
    assert created.vote_id == vote_id(SHOW, "u1", "grateful-dead:dark-star")
    assert created.at == dt.datetime(2030, 6, 1, 17, 59, 30, tzinfo=dt.UTC).timestamp()
    switched = cast_signal(record(image("u1", "down"), image("u1", "up")))
    assert switched is not None
    assert switched.vote_type == "down"

    not_casts = {
        "removal": record(None, image("u1")),
        "a flag": record(image("u1", **FLAG), image("u1")),
        "a release": record(image("u1", moderation="released"), image("u1", **FLAG)),
        "a confirmation": record(image("u1", moderation="rejected"), image("u1", **FLAG)),
        "a switch while quarantined": record(image("u1", "down", **FLAG), image("u1", "up", **FLAG)),
        "a switch of a released vote": record(
            image("u1", "down", moderation="released"), image("u1", "up", moderation="released")
        ),
        "another attribute": record(image("u1", artist_id="gd"), image("u1")),
        "not a vote": record(to_item({"PK": "x", "SK": "y", "vote_type": "sideways"})),
    }
    assert {name: cast_signal(r) for name, r in not_casts.items()} == dict.fromkeys(not_casts)


def test_removals_give_the_last_state_of_the_vote() -> None:
    removed = removal_signal(record(None, image("u1", **FLAG)))
    assert removed is not None
    assert (removed.vote_id, removed.moderation) == (
        vote_id(SHOW, "u1", "grateful-dead:dark-star"),
        "quarantined",
    )
    assert removal_signal(record(image("u1"))) is None  # a cast
    assert removal_signal(record(image("u1", **FLAG), image("u1"))) is None  # a flag


def test_the_observer_hands_removed_votes_to_the_engine() -> None:
    engine = FakeEngine()
    observer = FraudObserver(engine, FakeModeration(), FakeAlerts(), metric=lambda n, v: None)
    gone = record(None, image("u1", **FLAG))
    observer.observe(batch(gone))
    assert [s.user_id for s in engine.forgotten] == ["u1"]


# ---------------------------------------------------------------------------------- alerts


def incident(
    kind: str = "network_cluster", severity: str = "critical", n: int = 12, **extra: Any
) -> Incident:
    values: dict[str, Any] = {
        "kind": kind,
        "severity": severity,
        "entity": "net:203.0.113.0/24",
        "show_id": SHOW,
        "summary": f"{n} accounts from 203.0.113.0/24 voted Dark Star within 20 seconds",
        "evidence": {"accounts": n, "young_share": 0.9, "users": [f"u{i}" for i in range(n)]},
        "vote_ids": tuple(vote_id(SHOW, f"u{i}", "grateful-dead:dark-star") for i in range(n)),
    }
    return Incident(**(values | extra))


def test_an_incident_raises_one_alert_about_its_kind_and_entity() -> None:
    found = incident()
    alert = alert_for(found)
    assert alert.fingerprint == "vote_fraud.network_cluster#net:203.0.113.0/24"
    assert alert.severity is Severity.CRITICAL
    assert alert.summary == found.summary
    evidence = alert.evidence
    assert (evidence["kind"], evidence["show_id"], evidence["votes"]) == ("network_cluster", SHOW, 12)
    assert len(evidence["vote_ids_sample"]) == 5
    assert evidence["detector"]["users_total"] == 12
    # Another kind about the same entity is another incident; the same one again is not.
    assert alert_for(incident("device_cluster")).fingerprint != alert.fingerprint
    assert alert_for(incident(n=30)).fingerprint == alert.fingerprint


def test_alert_fields_always_fit_the_alert_rules() -> None:
    assert alert_type("Velocity Spike!") == "vote_fraud.velocity_spike"
    assert alert_type("") == "vote_fraud.unknown"
    assert alert_entity("net:2001:db8::/48") == "net:2001:db8::/48"
    assert alert_entity("show:a:2030-06-01/song:a:dark-star") == "show:a:2030-06-01/song:a:dark-star"
    assert alert_entity(" user:ünï côde ") == "user:-n-c-de"
    assert alert_entity("#weird") == "x#weird"
    assert len(alert_entity("show:" + "a" * 500)) == 200
    assert alert_for(incident(severity="catastrophic")).severity is Severity.WARNING
    assert alert_for(incident(summary="   ")).summary == "network_cluster on net:203.0.113.0/24"
    AlertIn.model_validate(alert_for(incident(entity="device:ab/c d")).model_dump())


# ---------------------------------------------------------------------------------- fakes


@dataclass
class FakeModeration:
    fail: bool = False
    failed_votes: int = 0
    calls: list[tuple[Incident, Alert | None, Mapping[str, str] | None]] = field(default_factory=list)

    def quarantine(
        self,
        incident: Incident,
        now: dt.datetime,
        *,
        alert: Alert | None = None,
        expected: Mapping[str, str] | None = None,
        remaining_ms: Callable[[], int | None] = lambda: None,
    ) -> QuarantineReport:
        if self.fail:
            raise RuntimeError("boom")
        self.calls.append((incident, alert, expected))
        failed = dict.fromkeys(incident.vote_ids[: self.failed_votes], "ThrottlingException: slow down")
        flagged = list(incident.vote_ids[self.failed_votes :])
        return QuarantineReport(incident_id(incident, alert), flagged=flagged, failed=failed)


@dataclass
class FakeAlerts:
    """PlatformStore's alert calls, in memory."""

    fail: bool = False
    raised: list[AlertIn] = field(default_factory=list)
    open: dict[str, Alert] = field(default_factory=dict)
    resolved: list[str] = field(default_factory=list)

    def raise_alert(self, alert: AlertIn, now: dt.datetime) -> RaisedAlert:
        if self.fail:
            raise RuntimeError("the alert store is busy")
        self.raised.append(alert)
        current = self.open.get(alert.fingerprint)
        self.open[alert.fingerprint] = Alert(
            fingerprint=alert.fingerprint,
            type=alert.type,
            entity=alert.entity,
            severity=alert.severity,
            summary=alert.summary,
            evidence=alert.evidence,
            opened_at=current.opened_at if current else now,
            last_seen=now,
            count=current.count + 1 if current else 1,
        )
        return RaisedAlert(self.open[alert.fingerprint], created=current is None, escalated=False)

    def open_alert(self, fingerprint: str) -> Alert | None:
        return self.open.get(fingerprint)

    def open_alerts(self, limit: int = 100) -> list[Alert]:
        return list(self.open.values())[:limit]

    def resolve_alert(
        self, fingerprint: str, now: dt.datetime, resolution: str | None = None
    ) -> Alert | None:
        self.resolved.append(fingerprint)
        return self.open.pop(fingerprint, None)


NETWORK_ALERT = "vote_fraud.network_cluster#net:203.0.113.0/24"
DETECTION_GAP_ALERT = "fraud_detection#detection"
QUARANTINE_GAP_ALERT = "fraud_detection#quarantine"


@dataclass
class FakeEngine:
    """Reports one network incident over the votes it is given from 203.0.113.0/24."""

    fail: Exception | None = None
    window: list[VoteSignal] = field(default_factory=list)
    window_fails: Exception | None = None
    seen: list[Sequence[VoteSignal]] = field(default_factory=list)
    swept: list[Sequence[str]] = field(default_factory=list)
    forgotten: list[VoteSignal] = field(default_factory=list)

    def forget(self, signals: Sequence[VoteSignal]) -> None:
        self.forgotten.extend(signals)

    def _incidents(self, votes: Sequence[VoteSignal]) -> list[Incident]:
        bots = [v for v in votes if v.net == "203.0.113.0/24" and v.flaggable]
        if len(bots) < 3:
            return []
        return [
            Incident(
                kind="network_cluster",
                severity="critical",
                entity="net:203.0.113.0/24",
                show_id=bots[0].show_id,
                summary=f"{len(bots)} accounts from 203.0.113.0/24",
                evidence={"accounts": len(bots)},
                vote_ids=tuple(v.vote_id for v in bots),
            )
        ]

    def observe(self, signals: Sequence[VoteSignal], now: float) -> list[Incident]:
        if self.fail:
            raise self.fail
        self.seen.append(signals)
        return self._incidents(signals)

    def detect(self, votes: Sequence[VoteSignal], now: float) -> list[Incident]:
        if self.fail:
            raise self.fail
        self.seen.append(votes)
        return self._incidents(votes)

    def sweep(self, show_ids: Sequence[str], now: float) -> list[Incident]:
        if self.window_fails:
            raise self.window_fails
        self.swept.append(show_ids)
        return self._incidents([v for v in self.window if v.show_id in show_ids])


metrics: list[tuple[str, float]] = []


def metric(name: str, value: float) -> None:
    metrics.append((name, value))


def batch(*records: dict[str, Any], first_new: int = 0) -> CountedBatch:
    counted = [(r, VoteChange(str(i), None)) for i, r in enumerate(records)]
    return CountedBatch(counted, first_new, NOW, lambda: 30_000)


BOTS = [record(image(f"b{i}"), sequence=str(i)) for i in range(4)]


# ---------------------------------------------------------------------------------- the observer


def test_the_observer_alerts_then_quarantines_once_per_incident() -> None:
    metrics.clear()
    engine, moderation, alerts = FakeEngine(), FakeModeration(), FakeAlerts()
    observer = FraudObserver(engine, moderation, alerts, lambda: NOW, metric=metric)
    flag_record = record(image("b0", **FLAG), image("b0"))
    fan = record(image("fan", net="198.51.100.0/24"))

    observer.observe(batch(*BOTS, flag_record, fan, first_new=2))

    # Every record of the batch is looked at (an earlier attempt's observers may not have run),
    # the flag's own record is not a vote.
    assert [s.user_id for s in engine.seen[0]] == ["b0", "b1", "b2", "b3", "fan"]
    (quarantined, alert, expected) = moderation.calls[0]
    assert len(quarantined.vote_ids) == 4
    assert alert is not None
    assert alert.fingerprint == NETWORK_ALERT  # raised first: the flags name it
    assert expected is not None
    assert expected[vote_id(SHOW, "b1", "grateful-dead:dark-star")] == "up"
    assert [a.fingerprint for a in alerts.raised] == [NETWORK_ALERT]
    assert metrics == [("FraudIncidents", 1), ("VotesQuarantined", 4), ("FraudAlertsOpened", 1)]

    observer.observe(batch(flag_record))  # nothing cast: the engine is not even asked
    assert len(engine.seen) == 1


@pytest.mark.parametrize("broken", ["window", "engine", "moderation", "alerts", "throttled"])
def test_observer_faults_degrade_and_never_raise(broken: str) -> None:
    metrics.clear()
    failure = {"window": WindowUnavailable("ConnectionError: refused"), "engine": ValueError("a bug")}
    engine = FakeEngine(fail=failure.get(broken))
    moderation = FakeModeration(fail=broken == "moderation", failed_votes=2 if broken == "throttled" else 0)
    alerts = FakeAlerts(fail=broken == "alerts")
    observer = FraudObserver(engine, moderation, alerts, lambda: NOW, metric=metric)

    observer.observe(batch(*BOTS))

    expected_metrics = {
        "window": [("FraudDetectionDegraded", 1)],
        "engine": [("FraudDetectionDegraded", 1)],
        "moderation": [
            ("FraudIncidents", 1),
            ("VotesQuarantined", 0),
            ("FraudQuarantineFailed", 1),
            ("FraudAlertsOpened", 1),
        ],
        "alerts": [("FraudIncidents", 1), ("VotesQuarantined", 4), ("FraudAlertFailed", 1)],
        "throttled": [
            ("FraudIncidents", 1),
            ("VotesQuarantined", 2),
            ("FraudQuarantineFailed", 2),
            ("FraudAlertsOpened", 1),
        ],
    }
    assert metrics == expected_metrics[broken]
    # What the window will not report again is recorded as a gap for the sweeper.
    gaps = {
        "window": {DETECTION_GAP_ALERT},
        "engine": {DETECTION_GAP_ALERT},
        "moderation": {QUARANTINE_GAP_ALERT},
        "alerts": set(),
        "throttled": {QUARANTINE_GAP_ALERT},
    }
    assert {f for f in alerts.open if f.startswith("fraud_detection")} == gaps[broken]
    if broken == "moderation":
        assert NETWORK_ALERT in alerts.open  # the alert still went out
    if broken == "alerts":
        (_, alert, _) = moderation.calls[0]
        assert alert is None  # quarantined all the same, with an id from the votes


def test_gaps_are_raised_at_most_once_a_minute_per_reason() -> None:
    alerts, clock = FakeAlerts(), [0.0]
    gaps = DetectionGaps(alerts, monotonic=lambda: clock[0])
    for second in (0.0, 10.0, 59.0, 61.0):
        clock[0] = second
        gaps.record("detection", NOW, "window unavailable")
    gaps.record("quarantine", NOW, "3 votes not flagged")
    assert [a.fingerprint for a in alerts.raised] == [
        DETECTION_GAP_ALERT,
        DETECTION_GAP_ALERT,
        QUARANTINE_GAP_ALERT,
    ]
    assert alerts.raised[0].severity is Severity.WARNING
    alerts.fail = True
    clock[0] = 200.0
    gaps.record("detection", NOW, "again")  # a failed raise is logged, and retried next time
    alerts.fail = False
    gaps.record("detection", NOW, "again")
    assert len(alerts.raised) == 4


def test_the_responder_counts_repeats_of_an_open_alert() -> None:
    alerts, moderation = FakeAlerts(), FakeModeration()
    responder = IncidentResponder(moderation, alerts, clock=lambda: NOW, metric=lambda *_: None)
    first = responder.respond([incident()])
    again = responder.respond([incident(n=20), incident("account_burst")])
    assert (first.alerts_opened, first.alerts_repeated) == (1, 0)
    assert (again.alerts_opened, again.alerts_repeated) == (1, 1)
    assert alerts.open[NETWORK_ALERT].count == 2
    # Every vote flagged while the alert is open shares one incident id.
    ids = {r.incident_id for r in first.quarantines + again.quarantines[:1]}
    assert len(ids) == 1
    alert_only = responder.respond([incident(vote_ids=())])
    assert alert_only.quarantines == []
    assert alert_only.alerts_repeated == 1


# ---------------------------------------------------------------------------------- the sweep


def show(show_id: str, starts_in: dt.timedelta) -> Show:
    start = NOW + starts_in
    return Show(
        show_id=show_id,
        artist_id=show_id.split(":", maxsplit=1)[0],
        date=start.date(),
        starts_at=start,
        status=ShowStatus.UPCOMING,
    )


@dataclass
class FakeCatalog:
    shows: list[Show]

    def list_shows(self, *, status: ShowStatus | None, **_: Any) -> Page[Show]:
        return Page[Show](items=[s for s in self.shows if s.status is status])


@dataclass
class FakeVotes:
    votes: dict[str, list[VoteSignal]]
    fail: set[str] = field(default_factory=set)
    reads: list[tuple[str, int]] = field(default_factory=list)

    def recent(self, show_id: str, since: dt.datetime, limit: int, scan_limit: int) -> RecentRead:
        self.reads.append((show_id, limit))
        if show_id in self.fail:
            raise ConnectionError("dynamodb")
        stored = self.votes.get(show_id, [])[:scan_limit]
        found = [v for v in stored if v.at >= since.timestamp()]
        return RecentRead(found[:limit], len(stored), len(found) > limit or len(stored) == scan_limit)


def signal(show_id: str, user: str, net: str = "203.0.113.0/24") -> VoteSignal:
    return VoteSignal(
        vote_id=vote_id(show_id, user, "song"),
        show_id=show_id,
        song_id="song",
        user_id=user,
        vote_type="up",
        at=(NOW - dt.timedelta(minutes=2)).timestamp(),
        net=net,
    )


SHOWS = [
    show("a:2030-06-01", dt.timedelta(hours=3)),
    show("b:2030-06-02", dt.timedelta(days=1)),
    show("c:2030-05-31", -dt.timedelta(hours=5)),  # voting closed long ago: not swept
]
VOTES = {
    "a:2030-06-01": [signal("a:2030-06-01", f"u{i}") for i in range(5)],
    "b:2030-06-02": [signal("b:2030-06-02", f"v{i}", net="198.51.100.0/24") for i in range(5)],
}


def sweeper(
    engine: FakeEngine, votes: FakeVotes, *, alerts: FakeAlerts | None = None, **options: Any
) -> tuple[FraudSweep, FakeAlerts, FakeModeration]:
    alerts, moderation = alerts or FakeAlerts(), FakeModeration()
    options.setdefault("window_configured", True)
    sweep = FraudSweep(
        engine,
        moderation,
        alerts,
        FakeCatalog(SHOWS),  # type: ignore[arg-type]
        votes,
        clock=lambda: NOW,
        metric=lambda *_: None,
        lookback=dt.timedelta(minutes=70),
        **options,
    )
    return sweep, alerts, moderation


def test_the_sweep_reads_the_window_when_valkey_answers() -> None:
    engine = FakeEngine(window=VOTES["a:2030-06-01"])
    votes = FakeVotes(VOTES)
    sweep, alerts, moderation = sweeper(engine, votes)
    report = sweep.run(NOW)
    assert engine.swept == [["a:2030-06-01", "b:2030-06-02"]]
    assert (report.source, report.fallback_reason, report.shows, votes.reads) == ("window", None, 2, [])
    assert len(moderation.calls) == 1
    assert moderation.calls[0][2] == {}  # the window's votes: no expectation to check
    assert list(alerts.open) == [NETWORK_ALERT]
    assert not report.failed


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("no_valkey", "no_window"),
        ("window_fails", "window_unavailable"),
        ("recent_gap", "gap:detection"),
        ("recent_quarantine_gap", "gap:quarantine"),
    ],
)
def test_without_a_whole_window_the_sweep_reads_the_vote_items(how: str, reason: str) -> None:
    engine = FakeEngine(
        window_fails=WindowUnavailable("TimeoutError") if how == "window_fails" else None,
        window=VOTES["a:2030-06-01"],
    )
    alerts = FakeAlerts()
    gaps = DetectionGaps(alerts)
    if how == "recent_gap":
        gaps.record("detection", NOW - dt.timedelta(minutes=40), "window unavailable")
    if how == "recent_quarantine_gap":
        gaps.record("quarantine", NOW - dt.timedelta(minutes=5), "votes not flagged")
    votes = FakeVotes(VOTES)
    sweep, alerts, moderation = sweeper(engine, votes, alerts=alerts, window_configured=how != "no_valkey")

    report = sweep.run(NOW)

    assert (report.source, report.fallback_reason) == ("votes_table", reason)
    assert [show_id for show_id, _ in votes.reads] == ["a:2030-06-01", "b:2030-06-02"]
    assert report.votes_read == 10
    (quarantined, _, expected) = moderation.calls[0]
    assert set(quarantined.vote_ids) == {v.vote_id for v in VOTES["a:2030-06-01"]}
    assert expected is not None
    assert set(expected) == {v.vote_id for v in VOTES["a:2030-06-01"] + VOTES["b:2030-06-02"]}
    assert NETWORK_ALERT in alerts.open
    assert (DETECTION_GAP_ALERT in alerts.open) == (how in ("window_fails", "recent_gap"))
    assert not report.failed


def test_a_gap_older_than_the_look_back_is_resolved_and_the_window_used_again() -> None:
    alerts = FakeAlerts()
    DetectionGaps(alerts).record("detection", NOW - dt.timedelta(minutes=71), "window unavailable")
    sweep, alerts, _ = sweeper(FakeEngine(window=VOTES["a:2030-06-01"]), FakeVotes(VOTES), alerts=alerts)
    report = sweep.run(NOW)
    assert report.source == "window"
    assert DETECTION_GAP_ALERT in report.alerts_resolved
    assert DETECTION_GAP_ALERT not in alerts.open


def test_the_fallback_reads_recently_changed_shows_first_within_its_budget() -> None:
    votes = FakeVotes(VOTES)
    changed = {"a:2030-06-01": NOW - dt.timedelta(minutes=20), "b:2030-06-02": NOW - dt.timedelta(minutes=1)}
    sweep, _, _ = sweeper(FakeEngine(), votes, window_configured=False, last_change=changed.get, max_votes=7)
    report = sweep.run(NOW)
    assert votes.reads == [("b:2030-06-02", 7), ("a:2030-06-01", 2)]
    assert (report.votes_read, report.truncated) == (7, True)

    idle = FakeVotes(VOTES)
    old = {"a:2030-06-01": NOW - dt.timedelta(hours=3)}
    sweep, _, _ = sweeper(FakeEngine(), idle, window_configured=False, last_change=old.get)
    assert sweep.run(NOW).votes_read == 0
    assert idle.reads == []  # no show's tallies changed within the look-back

    scanned = FakeVotes(VOTES)
    sweep, _, _ = sweeper(FakeEngine(), scanned, window_configured=False, max_scanned=5)
    report = sweep.run(NOW)
    assert (report.items_scanned, report.truncated, len(scanned.reads)) == (5, True, 1)


def test_the_fallback_reports_what_it_could_not_do() -> None:
    votes = FakeVotes(VOTES, fail={"b:2030-06-02"})
    sweep, alerts, moderation = sweeper(FakeEngine(), votes, window_configured=False)
    report = sweep.run(NOW)
    assert report.detection_failed  # partial: the error alarm counts it
    assert report.failed
    assert len(moderation.calls) == 1  # what was read was still acted on
    assert DETECTION_GAP_ALERT in alerts.open

    broken = FakeVotes(VOTES, fail={"a:2030-06-01", "b:2030-06-02"})
    sweep, _, moderation = sweeper(FakeEngine(), broken, window_configured=False)
    assert sweep.run(NOW).detection_failed
    assert moderation.calls == []

    sweep, _, _ = sweeper(FakeEngine(fail=ValueError("bug")), FakeVotes(VOTES), window_configured=False)
    assert sweep.run(NOW).detection_failed

    sweep, _, _ = sweeper(FakeEngine(), FakeVotes(VOTES), window_configured=False)
    assert sweep.run(NOW, time_left=lambda: 1.0).truncated


def test_quiet_fraud_alerts_are_resolved_and_others_left_alone() -> None:
    alerts = FakeAlerts()
    alerts.raise_alert(alert_for(incident()), NOW - dt.timedelta(hours=2))
    alerts.raise_alert(alert_for(incident("account_burst")), NOW - dt.timedelta(minutes=10))
    alerts.raise_alert(
        AlertIn(type="dependency", entity="valkey", severity=Severity.CRITICAL, summary="down"),
        NOW - dt.timedelta(hours=5),
    )
    resolved = resolve_quiet_alerts(alerts, NOW, dt.timedelta(hours=1))
    assert resolved == [NETWORK_ALERT]
    assert set(alerts.open) == {"vote_fraud.account_burst#net:203.0.113.0/24", "dependency#valkey"}
