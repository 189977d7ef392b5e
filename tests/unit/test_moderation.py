"""The moderation store's pure parts: incident ids, evidence excerpts, the moderators' view of an
item, and the states shared with mysetlist.signals."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from pydantic import ValidationError

from mysetlist import signals
from mysetlist.dynamo import from_item, to_item
from mysetlist.moderation import (
    EVIDENCE_MAX_ITEMS,
    EVIDENCE_MAX_KEYS,
    EVIDENCE_MAX_TEXT,
    DecisionIn,
    ModerationAction,
    ModerationState,
    evidence_excerpt,
    flagged_vote,
    incident_id,
    moderation_key,
)
from mysetlist.signals import Incident, vote_id

SHOW = "grateful-dead:2030-06-01"


def incident(*vote_ids: str, kind: str = "network_cluster", entity: str = "net:203.0.113.0/24") -> Incident:
    return Incident(
        kind=kind, severity="critical", entity=entity, show_id=SHOW, summary="s", vote_ids=tuple(vote_ids)
    )


def test_states_are_the_ones_the_tallies_know() -> None:
    assert {s.value for s in ModerationState} == {signals.QUARANTINED, signals.RELEASED, signals.REJECTED}
    assert {ModerationState.QUARANTINED, ModerationState.REJECTED} == signals.UNCOUNTED_STATES
    assert ModerationAction.RELEASE.outcome is ModerationState.RELEASED
    assert ModerationAction.CONFIRM.outcome is ModerationState.REJECTED
    assert moderation_key(SHOW, ModerationState.RELEASED) == f"{SHOW}#released"


def test_incident_ids_are_stable_and_name_the_detection() -> None:
    a, b, c = (vote_id(SHOW, f"u{i}", "s") for i in range(3))
    first = incident_id(incident(a, b, c))
    assert first == incident_id(incident(c, b, a))  # the processor and the sweeper agree
    assert len(first) == 20
    assert first != incident_id(incident(a, b, c, kind="account_burst"))
    assert first != incident_id(incident(a, b, c, entity="net:198.51.100.0/24"))
    assert first != incident_id(incident(b, c))
    assert incident_id(incident()) == incident_id(incident())  # an alert-only finding


def test_evidence_excerpts_are_small_and_storable() -> None:
    evidence = {
        "accounts": [f"user-{i}" for i in range(500)],
        "ratio": 7.123456789,
        "not_a_number": math.nan,
        "infinite": math.inf,
        "nothing": None,
        "text": "x" * 1000,
        "nested": {"deeper": {"deepest": {"gone": 1}, "kept": 2}, "networks": {"b", "a"}},
        "rows": [{"user": "a", "votes": 3}, {"user": "b", "votes": 9}],
        "flag": True,
        "obj": object(),
    } | {f"k{i}": i for i in range(40)}
    excerpt = evidence_excerpt(evidence)
    assert len(excerpt["accounts"]) == EVIDENCE_MAX_ITEMS
    assert excerpt["accounts_total"] == 500
    assert excerpt["ratio"] == 7.123457
    assert not {"not_a_number", "infinite", "nothing", "obj"} & set(excerpt)
    assert len(excerpt["text"]) == EVIDENCE_MAX_TEXT
    assert excerpt["nested"] == {"deeper": {"kept": 2}, "networks": ["a", "b"]}
    assert excerpt["rows"] == [{"user": "a", "votes": 3}, {"user": "b", "votes": 9}]
    assert excerpt["flag"] is True
    assert sum(1 for k in excerpt if not k.endswith("_total")) <= EVIDENCE_MAX_KEYS
    assert len(json.dumps(excerpt)) < 2000
    assert from_item(to_item({"e": excerpt}))["e"] == excerpt  # DynamoDB takes it as it is


def test_the_moderators_view_of_a_flagged_item() -> None:
    item = {
        "show_id": SHOW,
        "song_id": "grateful-dead:dark-star",
        "user_id": "u1",
        "vote_type": "down",
        "created_at": "2030-05-30T20:00:00+00:00",
        "updated_at": "2030-05-30T20:01:00+00:00",
        "moderation": "released",
        "FlaggedAt": "2030-05-30T20:02:00.000000+00:00",
        "flag": {
            "incident_id": "abc",
            "kind": "downvote_brigade",
            "severity": "warning",
            "summary": "s",
            "evidence": {"downs": 12},
        },
        "decided_by": "mod-1",
        "decided_at": "2030-05-30T21:00:00.000000+00:00",
        "decision_note": "a real fan",
        "net": "203.0.113.0/24",
    }
    view = flagged_vote(item)
    assert view.vote_id == vote_id(SHOW, "u1", "grateful-dead:dark-star")
    assert view.state is ModerationState.RELEASED
    assert view.voted_at == dt.datetime(2030, 5, 30, 20, 1, tzinfo=dt.UTC)
    assert view.flagged_at == dt.datetime(2030, 5, 30, 20, 2, tzinfo=dt.UTC)
    assert (view.kind, view.severity, view.evidence) == ("downvote_brigade", "warning", {"downs": 12})
    assert (view.decided_by, view.note) == ("mod-1", "a real fan")


def test_decision_bodies_are_validated() -> None:
    assert DecisionIn.model_validate({"action": "release", "note": "  ok  "}).note == "ok"
    for bad in (
        {"action": "approve"},
        {"action": "confirm", "note": "x" * 501},
        {"action": "release", "extra": 1},
    ):
        with pytest.raises(ValidationError):
            DecisionIn.model_validate(bad)


def test_votes_flagged_while_one_alert_is_open_share_its_incident_id() -> None:
    from mysetlist.alerts import Alert, Severity

    opened = dt.datetime(2030, 6, 1, 18, 0, tzinfo=dt.UTC)
    alert = Alert(
        fingerprint="vote_fraud.network_cluster#net:203.0.113.0/24",
        type="vote_fraud.network_cluster",
        entity="net:203.0.113.0/24",
        severity=Severity.CRITICAL,
        summary="s",
        opened_at=opened,
        last_seen=opened,
        count=1,
    )
    first, later = incident(vote_id(SHOW, "u1", "s")), incident(vote_id(SHOW, "u9", "s"))
    assert incident_id(first, alert) == incident_id(later, alert)  # one attack, several batches
    assert incident_id(first, alert) != incident_id(first)
    reopened = alert.model_copy(update={"opened_at": opened + dt.timedelta(hours=2)})
    assert incident_id(first, reopened) != incident_id(first, alert)  # a new alert, a new incident
