"""Vote events: their format, the publisher's chunking, retries and dead-lettering, and how the
tally processor publishes what it counted (fakes, no network)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response
from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.domain_events import (
    DEAD_LETTER_KIND,
    SOURCE,
    SqsEventDeadLetters,
    VoteEvent,
    VoteEventPublisher,
    vote_event,
)
from mysetlist.stream_batch import TallyBatchProcessor, record_handler
from mysetlist.tallies import MAX_SONGS_PER_COMMIT
from tests.harness.fakes import FakeQuarantine, FakeTallyStore, VoteTableModel

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
BUS = "mysetlist-test-votes"


@dataclass
class FakeEventBridge:
    """PutEvents in memory. ``codes`` gives, per event id, the error codes of its next attempts
    (an empty list: accepted); ``request_errors`` are raised by the next calls, in order."""

    codes: dict[str, list[str]] = field(default_factory=dict)
    request_errors: list[Exception | None] = field(default_factory=list)
    calls: list[list[dict[str, Any]]] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)

    def put_events(self, Entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        assert len(Entries) <= 10, "PutEvents takes at most 10 entries"
        self.calls.append([dict(e) for e in Entries])
        error = self.request_errors.pop(0) if self.request_errors else None
        if error is not None:
            raise error
        results: list[dict[str, Any]] = []
        for entry in Entries:
            pending = self.codes.get(json.loads(entry["Detail"])["event_id"], [])
            if pending:
                results.append({"ErrorCode": pending.pop(0), "ErrorMessage": "no"})
            else:
                results.append({"EventId": f"id-{len(self.published)}"})
                self.published.append(dict(entry))
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}

    def published_ids(self) -> list[str]:
        return [json.loads(e["Detail"])["event_id"] for e in self.published]


@dataclass
class FakeDeadLetters:
    broken: bool = False
    messages: list[tuple[list[dict[str, Any]], str]] = field(default_factory=list)

    def send_events(self, entries: Sequence[Mapping[str, Any]], reason: str) -> None:
        if self.broken:
            raise ConnectionError("queue unreachable")
        self.messages.append(([dict(e) for e in entries], reason))

    def ids(self) -> list[str]:
        return [json.loads(e["Detail"])["event_id"] for entries, _ in self.messages for e in entries]


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutEvents")


def publisher(
    client: FakeEventBridge, dead_letters: FakeDeadLetters | None = None, **kwargs: Any
) -> tuple[VoteEventPublisher, list[float]]:
    slept: list[float] = []
    kwargs.setdefault("rng", lambda: 0.5)
    made = VoteEventPublisher(
        client,  # type: ignore[arg-type]
        BUS,
        dead_letters or FakeDeadLetters(),
        sleep=slept.append,
        **kwargs,
    )
    return made, slept


def events_of(count: int) -> list[VoteEvent]:
    table = VoteTableModel()
    for i in range(count):
        table.toggle("show", f"user{i}", "song", "up")
    return [e for e in (vote_event(r) for r in table.records) if e is not None]


# ---------------------------------------------------------------------------------- the format


def test_one_event_per_kind_of_change_with_the_vote_and_the_stream_position() -> None:
    table = VoteTableModel()
    table.toggle("show-1", "user-1", "song-1", "up")  # created
    table.toggle("show-1", "user-1", "song-1", "down")  # switched
    table.toggle("show-1", "user-1", "song-1", "down")  # removed
    events = [vote_event(r) for r in table.records]
    assert [e.kind for e in events if e] == ["created", "switched", "removed"]
    entries = [e.entry(BUS) for e in events if e]
    assert [e["DetailType"] for e in entries] == ["Vote Created", "Vote Switched", "Vote Removed"]
    assert {e["Source"] for e in entries} == {SOURCE}
    assert {e["EventBusName"] for e in entries} == {BUS}
    assert entries[0]["Time"] == dt.datetime.fromtimestamp(1_900_000_000, tz=dt.UTC)
    details = [json.loads(e["Detail"]) for e in entries]
    assert details[1] == {
        "schema_version": 1,
        "event_id": table.records[1]["dynamodb"]["SequenceNumber"],
        "kind": "switched",
        "show_id": "show-1",
        "song_id": "song-1",
        "user_id": "user-1",
        "old_vote_type": "up",
        "new_vote_type": "down",
        "moderation": None,
        "stream_arn": table.stream_arn,
    }
    assert (details[0]["old_vote_type"], details[0]["new_vote_type"]) == (None, "up")
    assert (details[2]["old_vote_type"], details[2]["new_vote_type"]) == ("down", None)


def test_a_write_that_keeps_the_vote_has_no_event_and_time_is_optional() -> None:
    table = VoteTableModel()
    table.toggle("s", "u", "song", "up")
    record = table.records[0]
    del record["dynamodb"]["ApproximateCreationDateTime"]
    event = vote_event(record)
    assert event is not None
    assert "Time" not in event.entry(BUS)
    record["dynamodb"]["OldImage"] = record["dynamodb"]["NewImage"]
    assert vote_event(record) is None


def test_moderation_that_changes_what_counts_has_its_own_events() -> None:
    table = VoteTableModel()
    table.toggle("s", "u", "song", "up")
    created = table.records[0]["dynamodb"]["NewImage"]

    def record(old: str | None, new: str | None, sequence: str) -> dict[str, Any]:
        def image(state: str | None) -> dict[str, Any]:
            return {**created, "moderation": {"S": state}} if state else dict(created)

        return {"dynamodb": {"SequenceNumber": sequence, "OldImage": image(old), "NewImage": image(new)}}

    flagged = vote_event(record(None, "quarantined", "10"))
    released = vote_event(record("quarantined", "released", "11"))
    assert flagged is not None
    assert released is not None
    assert (flagged.kind, flagged.entry(BUS)["DetailType"]) == ("quarantined", "Vote Quarantined")
    assert json.loads(released.entry(BUS)["Detail"])["moderation"] == "released"
    assert vote_event(record("quarantined", "rejected", "12")) is None  # it did not count before either


# ---------------------------------------------------------------------------------- publishing


def test_entries_go_out_in_requests_of_at_most_ten() -> None:
    client = FakeEventBridge()
    events = events_of(25)
    outcome = publisher(client)[0].publish(events)
    assert [len(c) for c in client.calls] == [10, 10, 5]
    assert client.published_ids() == [e.event_id for e in events]
    assert (outcome.published, outcome.failed, outcome.retried) == (25, 0, 0)


def test_only_the_failed_entries_are_retried_after_a_backoff() -> None:
    events = events_of(12)
    client = FakeEventBridge(
        codes={
            events[3].event_id: ["ThrottlingException"],
            events[11].event_id: ["InternalFailure", "ThrottlingException"],
        }
    )
    made, slept = publisher(client, base_delay=0.1)
    outcome = made.publish(events)
    sent = [[json.loads(e["Detail"])["event_id"] for e in call] for call in client.calls]
    assert sent[2:] == [[events[3].event_id, events[11].event_id], [events[11].event_id]]
    assert sorted(client.published_ids()) == sorted(e.event_id for e in events)
    assert slept == [0.05, 0.1]  # full jitter (rng 0.5) of 0.1 s, then of 0.2 s
    assert (outcome.published, outcome.retried, outcome.failed) == (12, 3, 0)


def test_entries_that_keep_failing_go_to_the_dead_letter_queue_never_dropped() -> None:
    events = events_of(3)
    client = FakeEventBridge(codes={events[1].event_id: ["ThrottlingException"] * 10})
    dead_letters = FakeDeadLetters()
    outcome = publisher(client, dead_letters, attempts=3)[0].publish(events)
    assert len(client.calls) == 3
    assert dead_letters.ids() == [events[1].event_id]
    (entries, reason), *_ = dead_letters.messages
    assert entries == [events[1].entry(BUS)]
    assert "ThrottlingException" in reason
    assert outcome.dead_lettered == [events[1]]
    assert (outcome.published, outcome.failed, outcome.undelivered) == (2, 1, [])


def test_a_non_retryable_entry_error_is_dead_lettered_at_once() -> None:
    events = events_of(2)
    client = FakeEventBridge(codes={events[0].event_id: ["MalformedDetail"]})
    dead_letters = FakeDeadLetters()
    made, slept = publisher(client, dead_letters)
    made.publish(events)
    assert len(client.calls) == 1
    assert slept == []
    assert dead_letters.ids() == [events[0].event_id]


def test_a_throttled_request_is_retried_whole_and_a_missing_bus_is_not() -> None:
    events = events_of(4)
    client = FakeEventBridge(request_errors=[client_error("ThrottlingException", 400)])
    outcome = publisher(client)[0].publish(events)
    assert len(client.calls) == 2
    assert outcome.published == 4

    client = FakeEventBridge(request_errors=[client_error("ResourceNotFoundException", 400)])
    dead_letters = FakeDeadLetters()
    outcome = publisher(client, dead_letters)[0].publish(events)
    assert len(client.calls) == 1
    assert dead_letters.ids() == [e.event_id for e in events]
    assert "ResourceNotFoundException" in dead_letters.messages[0][1]


def test_retries_stop_when_the_invocation_has_no_time_for_the_backoff() -> None:
    events = events_of(2)
    client = FakeEventBridge(codes={events[0].event_id: ["ThrottlingException"]})
    dead_letters = FakeDeadLetters()
    made, slept = publisher(client, dead_letters, reserve_ms=2000)
    made.publish(events, remaining_ms=lambda: 2000)
    assert len(client.calls) == 1
    assert slept == []
    assert dead_letters.ids() == [events[0].event_id]


def test_dead_letters_hold_at_most_ten_entries_and_what_they_refuse_is_undelivered() -> None:
    events = events_of(23)
    client = FakeEventBridge(codes={e.event_id: ["AccessDeniedException"] for e in events})
    dead_letters = FakeDeadLetters()
    publisher(client, dead_letters)[0].publish(events)
    assert [len(entries) for entries, _ in dead_letters.messages] == [10, 10, 3]

    client = FakeEventBridge(codes={e.event_id: ["AccessDeniedException"] for e in events})
    outcome = publisher(client, FakeDeadLetters(broken=True))[0].publish(events)
    assert outcome.undelivered == events
    assert outcome.dead_lettered == []


def test_the_sqs_dead_letter_message_can_be_replayed_as_is() -> None:
    sent: list[dict[str, Any]] = []

    class Sqs:
        def send_message(self, **kwargs: Any) -> None:
            sent.append(kwargs)

    (event,) = events_of(1)
    dead_letters = SqsEventDeadLetters(Sqs(), "queue-url", source="VoteProcessor", event_bus_name=BUS)  # type: ignore[arg-type]
    dead_letters.send_events([event.entry(BUS)], "ThrottlingException: slow down")
    body = json.loads(sent[0]["MessageBody"])
    assert sent[0]["QueueUrl"] == "queue-url"
    assert body["kind"] == DEAD_LETTER_KIND
    assert body["source"] == "VoteProcessor"
    assert body["event_bus_name"] == BUS
    (entry,) = body["entries"]
    assert entry["Time"] == "2030-03-17T17:46:40+00:00"
    assert {k: v for k, v in entry.items() if k != "Time"} == {
        k: v for k, v in event.entry(BUS).items() if k != "Time"
    }


# ---------------------------------------------------------------------------------- the processor


def invoker(
    store: FakeTallyStore, client: FakeEventBridge, dead_letters: FakeDeadLetters | None = None
) -> Any:
    made, _ = publisher(client, dead_letters)
    processor = TallyBatchProcessor(store, FakeQuarantine(), clock=lambda: NOW, publisher=made)

    def invoke(records: list[dict[str, Any]]) -> Any:
        event = {"Records": records}
        return process_partial_response(event=event, record_handler=record_handler, processor=processor)

    return invoke


def sequences(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def test_every_counted_change_is_published_once_and_no_ops_are_not() -> None:
    table = VoteTableModel()
    for i in range(15):
        table.toggle("s", f"u{i}", "song", "up")
    table.toggle("s", "u0", "song", "down")  # a switch
    table.toggle("s", "u1", "song", "up")  # a removal
    table.records[5]["dynamodb"]["OldImage"] = table.records[5]["dynamodb"]["NewImage"]  # a no-op write
    del table.records[7]["dynamodb"]["NewImage"]  # unreadable: quarantined, not an event
    client = FakeEventBridge()
    assert invoker(FakeTallyStore(), client)(table.records) == {"batchItemFailures": []}
    expected = [s for i, s in enumerate(sequences(table.records)) if i not in (5, 7)]
    assert client.published_ids() == expected
    assert [len(c) for c in client.calls] == [10, 5]


def test_nothing_is_published_for_records_that_were_not_counted() -> None:
    table = VoteTableModel()
    for i in range(120):
        table.toggle("s", f"u{i}", f"song{i}", "up")
    # The first commit (99 songs) lands, the second is throttled: 21 records are not counted.
    faults = iter([None, "throttle"])
    store = FakeTallyStore(fault=lambda: next(faults, None))
    client = FakeEventBridge()
    response = invoker(store, client)(table.records)
    ids = sequences(table.records)
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in ids[MAX_SONGS_PER_COMMIT:]]}
    assert client.published_ids() == ids[:MAX_SONGS_PER_COMMIT]


def test_a_redelivery_publishes_again_with_the_same_event_ids() -> None:
    table = VoteTableModel()
    for i in range(4):
        table.toggle("s", f"u{i}", "song", "up")
    store, client = FakeTallyStore(), FakeEventBridge()
    invoke = invoker(store, client)
    invoke(table.records)
    invoke(table.records)  # a duplicate delivery: all skipped as counted, yet published again
    invoke(table.records[:2])  # a shorter retry (bisection)
    ids = sequences(table.records)
    assert Counter(client.published_ids()) == Counter(ids * 2 + ids[:2])
    assert store.totals() == {("s", "song"): (4, 0)}


def test_undeliverable_events_fail_their_records_and_the_replay_is_exact() -> None:
    table = VoteTableModel()
    for i in range(8):
        table.toggle("s", f"u{i}", "song", "up")
    ids = sequences(table.records)
    store = FakeTallyStore()
    client = FakeEventBridge(codes={ids[3]: ["AccessDeniedException"], ids[6]: ["AccessDeniedException"]})
    response = invoker(store, client, FakeDeadLetters(broken=True))(table.records)
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in ids[3:]]}
    assert store.totals() == {("s", "song"): (8, 0)}
    # The counted range from the first failed record is handed to the delivery that starts there.
    assert store.markers[keys.stream_marker_pk(table.stream_arn, ids[3])].sequences == ids[3:]
    # Lambda replays from that record: nothing is counted twice, every event is published.
    assert invoker(store, client)(table.records[3:]) == {"batchItemFailures": []}
    assert store.totals() == {("s", "song"): (8, 0)}
    assert set(client.published_ids()) == set(ids)


def test_when_the_first_record_fails_its_own_marker_covers_the_replay() -> None:
    table = VoteTableModel()
    for i in range(3):
        table.toggle("s", f"u{i}", "song", "up")
    ids = sequences(table.records)
    store = FakeTallyStore()
    client = FakeEventBridge(codes={ids[0]: ["AccessDeniedException"]})
    with pytest.raises(Exception, match="All records failed"):  # Powertools: a function error
        invoker(store, client, FakeDeadLetters(broken=True))(table.records)
    assert list(store.markers) == [keys.stream_marker_pk(table.stream_arn, ids[0])]
    assert invoker(store, client)(table.records) == {"batchItemFailures": []}
    assert store.totals() == {("s", "song"): (3, 0)}
    assert ids[0] in client.published_ids()


def test_without_a_publisher_nothing_is_published() -> None:
    table = VoteTableModel()
    table.toggle("s", "u", "song", "up")
    processor = TallyBatchProcessor(FakeTallyStore(), FakeQuarantine(), clock=lambda: NOW)
    event = {"Records": table.records}
    response = process_partial_response(event=event, record_handler=record_handler, processor=processor)
    assert response == {"batchItemFailures": []}
