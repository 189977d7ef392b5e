"""The moderation queue: flagged votes on their vote items, and the moderators' decisions.

A flag is a handful of attributes on the vote item itself (``mysetlist.signals``): nothing is
copied, so a flagged vote stays the one truth its tallies derive from.

* ``moderation``: ``quarantined`` (excluded from tallies, velocity and trending), then
  ``released`` (counts again) or ``rejected`` (stays excluded, is kept as evidence);
* ``ModerationKey`` = ``<show_id>#<state>`` and ``FlaggedAt`` (ISO): the keys of the sparse
  ``ByModeration`` index, one partition per show and state, so the queue of a show is one
  ``Query``;
* ``flag``: which incident flagged it (``incident_id``, ``kind``, ``severity``, ``summary``
  and a small excerpt of the detector's evidence);
* after a decision: ``decided_by``, ``decided_at`` and the moderator's ``decision_note``.

Every change is one conditional ``UpdateItem`` on the vote item, so the VoteProcessor sees it on
the stream and adjusts the tallies (a flag is a -1, a release a +1, a confirmation nothing):

* :meth:`ModerationStore.quarantine` flags a vote only if it still exists, was never flagged
  (released votes stay cleared) and, when the detector's view is given, still has the vote type
  the detector saw. A vote that fails the condition is skipped, not an error. Throttled writes
  are retried with backoff; what still fails is reported, never dropped silently (the sweeper
  finds those votes again on its next run).
* :meth:`ModerationStore.decide` moves a quarantined vote to released or rejected, on condition
  that it is still quarantined: two moderators deciding at once cannot both win.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from botocore.exceptions import ClientError
from pydantic import Field, StringConstraints

from mysetlist import keys
from mysetlist.alerts import Alert
from mysetlist.breaker import CircuitOpenError
from mysetlist.dynamo import error_code, from_item, to_item, unavailable_on_throttle
from mysetlist.errors import Conflict, NotFound, Unprocessable
from mysetlist.models import Model, Page
from mysetlist.observability import remaining_time_ms
from mysetlist.pagination import decode_cursor, encode_cursor
from mysetlist.retry import retry_call
from mysetlist.signals import QUARANTINED, Incident, parse_vote_id, vote_id
from mysetlist.timestamps import parse_utc

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MODERATION_INDEX = "ByModeration"
# Writes of one incident run concurrently (a bot farm's incident can hold hundreds of votes):
# botocore clients are thread-safe, and each write is one item.
FLAG_WORKERS = 8
# Attempts per vote write (throttling, 5xx, connection errors), with full-jitter backoff.
FLAG_ATTEMPTS = 4
# No new flag write starts with less time than this left in the invocation (ms).
FLAG_RESERVE_MS = 1500
# Evidence excerpts stored on each flagged vote: a moderator reads them, they are not archives.
EVIDENCE_MAX_KEYS = 20
EVIDENCE_MAX_ITEMS = 10
EVIDENCE_MAX_TEXT = 200
EVIDENCE_MAX_DEPTH = 3
MAX_NOTE = 500


class ModerationState(StrEnum):
    """Where a flagged vote is in the queue (the values of ``mysetlist.signals``)."""

    QUARANTINED = "quarantined"
    RELEASED = "released"
    REJECTED = "rejected"


class ModerationAction(StrEnum):
    """A moderator's decision on a quarantined vote."""

    RELEASE = "release"  # a false positive: the vote counts again
    CONFIRM = "confirm"  # fraud: the vote stays excluded (and is kept)

    @property
    def outcome(self) -> ModerationState:
        return ModerationState.RELEASED if self is ModerationAction.RELEASE else ModerationState.REJECTED


Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_NOTE)]


class DecisionIn(Model):
    """Body of ``POST /api/moderation/votes/{vote_id}``."""

    action: ModerationAction = Field(
        description="release: a false positive, the vote counts again; confirm: fraud, it stays excluded"
    )
    note: Note | None = Field(default=None, description="Why (kept with the decision)")


class FlaggedVote(Model):
    """A flagged vote as moderators see it."""

    vote_id: str = Field(description="Opaque id: POST /api/moderation/votes/{vote_id} decides on it")
    show_id: str
    song_id: str
    user_id: str
    vote_type: str = Field(description="up or down")
    voted_at: dt.datetime | None = Field(default=None, description="When the vote took its current type")
    state: ModerationState
    flagged_at: dt.datetime
    incident_id: str | None = Field(
        default=None, description="Votes flagged while one fraud alert is open share it"
    )
    alert: str | None = Field(
        default=None,
        description="Fingerprint of the fraud alert (system_alerts), e.g. vote_fraud.network_cluster#net:203.0.113.0/24",
    )
    kind: str | None = Field(default=None, description="The detector: account_burst, network_cluster ...")
    severity: str | None = None
    summary: str | None = None
    evidence: dict[str, Any] = Field(
        default_factory=dict, description="An excerpt of the detector's evidence"
    )
    decided_by: str | None = Field(default=None, description="The moderator who released or confirmed it")
    decided_at: dt.datetime | None = None
    note: str | None = Field(default=None, description="The moderator's note")


# ---------------------------------------------------------------------------------- pure parts


def incident_id(incident: Incident, alert: Alert | None = None) -> str:
    """A stable id for an incident.

    With its open ``alert`` (raised first): the alert's fingerprint and opening time, so every
    vote flagged while that alert stays open (by the processor, batch after batch, and by the
    sweeper) shares one id, and the id names the alert. The engine reports each vote once, so
    the votes of one attack arrive in several incidents: an id from the votes alone would split
    it. Without the alert (the alert store failed): the kind, the entity and the first vote.
    """
    parts: tuple[str, ...]
    if alert is not None:
        parts = (alert.fingerprint, alert.opened_at.astimezone(dt.UTC).isoformat())
    else:
        parts = (incident.kind, incident.entity, min(incident.vote_ids) if incident.vote_ids else "")
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:20]


def evidence_excerpt(evidence: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """A small, storable copy of ``evidence``: at most ``EVIDENCE_MAX_KEYS`` keys, lists cut to
    ``EVIDENCE_MAX_ITEMS`` (with ``<key>_total`` giving the full length), long text cut, nested
    maps to ``EVIDENCE_MAX_DEPTH``; values DynamoDB cannot store (NaN, infinities, None, other
    types) are left out."""
    excerpt: dict[str, Any] = {}
    for key, value in list(evidence.items())[:EVIDENCE_MAX_KEYS]:
        name = str(key)[:64]
        kept = _excerpt_value(value, depth)
        if kept is not None:
            excerpt[name] = kept
        if isinstance(value, list | tuple | set | frozenset) and len(value) > EVIDENCE_MAX_ITEMS:
            excerpt[f"{name}_total"] = len(value)
    return excerpt


def _excerpt_value(value: Any, depth: int) -> Any:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= EVIDENCE_MAX_TEXT else value[: EVIDENCE_MAX_TEXT - 1] + "…"
    if isinstance(value, Mapping):
        return evidence_excerpt(value, depth + 1) if depth + 1 < EVIDENCE_MAX_DEPTH else None
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        return [v for v in (_excerpt_value(i, depth) for i in items[:EVIDENCE_MAX_ITEMS]) if v is not None]
    return None


def moderation_key(show_id: str, state: ModerationState) -> str:
    return f"{show_id}#{state.value}"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _when(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return parse_utc(str(value))


def flagged_vote(item: Mapping[str, Any]) -> FlaggedVote:
    """The moderators' view of a (plain) flagged vote item."""
    flag: Mapping[str, Any] = item.get("flag") or {}
    show_id, song_id, user_id = str(item["show_id"]), str(item["song_id"]), str(item["user_id"])
    flagged_at = _when(item.get("FlaggedAt"))
    return FlaggedVote(
        vote_id=vote_id(show_id, user_id, song_id),
        show_id=show_id,
        song_id=song_id,
        user_id=user_id,
        vote_type=str(item.get("vote_type", "")),
        voted_at=_when(item.get("updated_at") or item.get("created_at")),
        state=ModerationState(str(item["moderation"])),
        flagged_at=flagged_at or dt.datetime.fromtimestamp(0, dt.UTC),
        incident_id=flag.get("incident_id"),
        alert=flag.get("alert"),
        kind=flag.get("kind"),
        severity=flag.get("severity"),
        summary=flag.get("summary"),
        evidence=dict(flag.get("evidence") or {}),
        decided_by=item.get("decided_by"),
        decided_at=_when(item.get("decided_at")),
        note=item.get("decision_note"),
    )


# ---------------------------------------------------------------------------------- reports


@dataclass(slots=True)
class QuarantineReport:
    """What one :meth:`ModerationStore.quarantine` call did with each of the incident's votes.

    ``skipped`` votes needed nothing (already flagged, released or rejected, deleted, or changed
    since the detector saw them); ``failed`` ones could not be written (throttled past the
    retries, an open circuit, no time left) and are flagged by a later run; ``invalid`` ids are
    not vote ids (a detector bug)."""

    incident_id: str
    flagged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "flagged": len(self.flagged),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "invalid": len(self.invalid),
        }


# ---------------------------------------------------------------------------------- the store


class ModerationStore:
    """Flags, lists and decides on votes in the votes table (see the module docstring)."""

    def __init__(self, client: DynamoDBClient, votes_table: str, *, workers: int = FLAG_WORKERS) -> None:
        self._db = client
        self._table = votes_table
        self._workers = max(1, workers)

    # ------------------------------------------------------------------ flagging
    def quarantine(
        self,
        incident: Incident,
        now: dt.datetime,
        *,
        alert: Alert | None = None,
        expected: Mapping[str, str] | None = None,
        remaining_ms: Callable[[], int | None] = remaining_time_ms,
    ) -> QuarantineReport:
        """Quarantine the votes of ``incident`` (see the module docstring).

        ``alert`` is the open alert the incident raised: the flags name it (:func:`incident_id`).
        ``expected`` maps a vote id to the vote type the detector saw: such a vote is flagged
        only if it still has that type. ``remaining_ms`` is the invocation's time left: no
        write starts with less than ``FLAG_RESERVE_MS`` left (those votes are reported failed).
        Never raises for a DynamoDB fault: see :class:`QuarantineReport`.
        """
        flag_id = incident_id(incident, alert)
        report = QuarantineReport(flag_id)
        votes: builtins.list[tuple[str, tuple[str, str, str]]] = []
        for vid in dict.fromkeys(incident.vote_ids):  # unique, in the incident's order
            parsed = parse_vote_id(vid)
            if parsed is None:
                report.invalid.append(vid)
            else:
                votes.append((vid, parsed))
        if not votes:
            return report
        flag = {
            "incident_id": flag_id,
            "alert": alert.fingerprint if alert is not None else None,
            "kind": incident.kind,
            "severity": incident.severity,
            "entity": incident.entity,
            "summary": incident.summary[:300],
            "evidence": evidence_excerpt(incident.evidence),
        }
        # Worker threads do not see the invocation's context: give them a deadline instead.
        left = remaining_ms()
        deadline = None if left is None else time.monotonic() + left / 1000

        def time_left() -> int | None:
            return None if deadline is None else int((deadline - time.monotonic()) * 1000)

        def one(entry: tuple[str, tuple[str, str, str]]) -> tuple[str, str, str]:
            vid, (show_id, user_id, song_id) = entry
            left_now = time_left()
            if left_now is not None and left_now < FLAG_RESERVE_MS:
                return vid, "failed", "no time left in this invocation"
            try:
                outcome = retry_call(
                    lambda: self._flag(
                        show_id, user_id, song_id, flag, now, (expected or {}).get(vid), flag_id
                    ),
                    attempts=FLAG_ATTEMPTS,
                    remaining_ms=time_left,
                    reserve_ms=FLAG_RESERVE_MS,
                )
            except CircuitOpenError:
                return vid, "failed", "circuit open"
            except Exception as exc:  # throttled past the retries, or another fault: reported
                return vid, "failed", f"{type(exc).__name__}: {str(exc)[:200]}"
            return vid, ("flagged" if outcome is None else "skipped"), outcome or ""

        workers = min(self._workers, len(votes))
        if workers == 1:
            results = [one(entry) for entry in votes]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flag") as pool:
                results = builtins.list(pool.map(one, votes))
        for vid, status, reason in results:
            if status == "flagged":
                report.flagged.append(vid)
            elif status == "skipped":
                report.skipped[vid] = reason
            else:
                report.failed[vid] = reason
        return report

    def _flag(
        self,
        show_id: str,
        user_id: str,
        song_id: str,
        flag: Mapping[str, Any],
        now: dt.datetime,
        expected_type: str | None,
        flag_id: str,
    ) -> str | None:
        """Flag one vote; None when written, else why it was skipped."""
        condition = "attribute_exists(PK) AND attribute_not_exists(moderation)"
        values: dict[str, Any] = {
            ":state": QUARANTINED,
            ":key": moderation_key(show_id, ModerationState.QUARANTINED),
            ":at": _iso(now),
            ":flag": dict(flag),
        }
        if expected_type is not None:
            condition += " AND vote_type = :seen"
            values[":seen"] = expected_type
        try:
            self._db.update_item(
                TableName=self._table,
                Key=to_item({"PK": keys.vote_pk(show_id, user_id), "SK": song_id}),
                UpdateExpression="SET moderation = :state, ModerationKey = :key, FlaggedAt = :at, flag = :flag",
                ConditionExpression=condition,
                ExpressionAttributeValues=to_item(values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            old: Any = exc.response.get("Item")
            return _skip_reason(from_item(old) if old else None, flag_id)
        return None

    # ------------------------------------------------------------------ the queue
    def list(
        self,
        show_id: str,
        state: ModerationState = ModerationState.QUARANTINED,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[FlaggedVote]:
        """Flagged votes of a show in ``state``, most recently flagged first (the sparse
        ByModeration index: eventually consistent, a decision shows up within a second).
        400 for a cursor of another list; 503 when DynamoDB is throttled."""
        key = moderation_key(show_id, state)
        start = decode_cursor(cursor, expect={"PK": "", "SK": "", "ModerationKey": key, "FlaggedAt": ""})
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": MODERATION_INDEX,
            "KeyConditionExpression": "ModerationKey = :key",
            "ExpressionAttributeValues": to_item({":key": key}),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            request["ExclusiveStartKey"] = start
        with unavailable_on_throttle("the moderation queue"):
            response = self._db.query(**request)
        items = [flagged_vote(from_item(raw)) for raw in response.get("Items", [])]
        last: Any = response.get("LastEvaluatedKey")
        return Page[FlaggedVote](items=items, next_cursor=encode_cursor(last))

    def get(self, vote: str) -> FlaggedVote | None:
        """A flagged vote by id (strongly consistent); None when it is not flagged or not there.
        422 for a malformed id."""
        show_id, user_id, song_id = _parse(vote)
        with unavailable_on_throttle("the moderation queue"):
            response = self._db.get_item(
                TableName=self._table,
                Key=to_item({"PK": keys.vote_pk(show_id, user_id), "SK": song_id}),
                ConsistentRead=True,
            )
        raw = response.get("Item")
        if not raw:
            return None
        item = from_item(raw)
        return flagged_vote(item) if item.get("moderation") else None

    # ------------------------------------------------------------------ decisions
    def decide(
        self,
        vote: str,
        action: ModerationAction,
        moderator_id: str,
        note: str | None,
        now: dt.datetime,
    ) -> FlaggedVote:
        """Release or confirm a quarantined vote. 422 for a malformed id, 404 for no such vote,
        409 when it is not (or no longer) quarantined; 503 when DynamoDB is throttled."""
        show_id, user_id, song_id = _parse(vote)
        outcome = action.outcome
        values: dict[str, Any] = {
            ":quarantined": QUARANTINED,
            ":state": outcome.value,
            ":key": moderation_key(show_id, outcome),
            ":by": moderator_id,
            ":at": _iso(now),
        }
        sets = ["moderation = :state", "ModerationKey = :key", "decided_by = :by", "decided_at = :at"]
        removes = []
        if note:
            values[":note"] = note
            sets.append("decision_note = :note")
        else:
            removes.append("decision_note")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            with unavailable_on_throttle("the moderation queue"):
                response = self._db.update_item(
                    TableName=self._table,
                    Key=to_item({"PK": keys.vote_pk(show_id, user_id), "SK": song_id}),
                    UpdateExpression=expression,
                    ConditionExpression="moderation = :quarantined",
                    ExpressionAttributeValues=to_item(values),
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            old: Any = exc.response.get("Item")
            raise _decision_refused(vote, action, from_item(old) if old else None) from None
        return flagged_vote(from_item(response["Attributes"]))


def _parse(vote: str) -> tuple[str, str, str]:
    parsed = parse_vote_id(vote)
    if parsed is None:
        raise Unprocessable(
            f"{vote!r} is not a vote id: use the vote_id of an item of GET /api/moderation/votes",
            details={"vote_id": vote[:200]},
        )
    return parsed


def _skip_reason(current: Mapping[str, Any] | None, flag_id: str) -> str:
    if current is None:
        return "gone"
    state = current.get("moderation")
    if state is None:
        return "changed"  # its vote type is no longer the one the detector saw
    if state == QUARANTINED and (current.get("flag") or {}).get("incident_id") == flag_id:
        return "already_flagged_by_this_incident"
    return f"already_{state}"


def _decision_refused(vote: str, action: ModerationAction, current: Mapping[str, Any] | None) -> Exception:
    if current is None:
        return NotFound(f"no vote with id {vote!r} (it may have been removed by its voter)")
    state = current.get("moderation")
    if state is None:
        return Conflict(
            f"vote {vote!r} is not flagged: only quarantined votes can be released or confirmed",
            details={"state": None, "action": action.value},
        )
    by, at = current.get("decided_by"), current.get("decided_at")
    decided = f" by {by} at {at}" if by and at else ""
    return Conflict(
        f"vote {vote!r} is already {state}{decided}: only quarantined votes can be released or confirmed",
        details={"state": state, "action": action.value, "decided_by": by, "decided_at": at},
    )


def summarize(reports: Iterable[QuarantineReport]) -> dict[str, int]:
    """Totals over several quarantine reports (logs and metrics)."""
    totals = {"flagged": 0, "skipped": 0, "failed": 0, "invalid": 0}
    for report in reports:
        totals["flagged"] += len(report.flagged)
        totals["skipped"] += len(report.skipped)
        totals["failed"] += len(report.failed)
        totals["invalid"] += len(report.invalid)
    return totals
