"""Vote events end to end in moto: votes cast through VotesApi, the votes table's real stream fed
to the VoteProcessor handler, and what reaches the votes bus (created from template.yaml) read
back through a rule that targets an SQS queue, as a consumer would."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines
from tests.harness.events import LambdaContext, call_http, claims_for, http_event
from tests.harness.streams import StreamReader
from tests.support.template import module_name_for

SONGS = ["Event Song 0", "Event Song 1", "Event Song 2"]


@pytest.fixture(scope="module")
def show(aws: dict[str, str], dynamodb: Any, settings: Any) -> dict[str, Any]:
    future = dt.date.today() + dt.timedelta(days=90)
    lines = [
        json.dumps(
            {"artist": "Event Band", "date": "2001-01-01", "sets": [{"name": "Set 1", "songs": SONGS}]}
        ),
        json.dumps({"artist": "Event Band", "date": future.isoformat(), "sets": []}),
        json.dumps({"artist": "Event Band", "date": (future + dt.timedelta(days=1)).isoformat(), "sets": []}),
    ]
    import_lines(CatalogStore(dynamodb, settings.catalog_table), lines, warn=lambda _: None)
    arn = dynamodb.describe_table(TableName=settings.votes_table)["Table"]["LatestStreamArn"]
    return {
        "shows": [
            f"event-band:{future.isoformat()}",
            f"event-band:{(future + dt.timedelta(days=1)).isoformat()}",
        ],
        "songs": [f"event-band:event-song-{i}" for i in range(3)],
        "reader": StreamReader(boto3.client("dynamodbstreams"), arn),
        "stream_arn": arn,
    }


@pytest.fixture(scope="module")
def consumer(aws: dict[str, str], settings: Any) -> Iterator[Any]:
    """A rule on the votes bus sending every vote event to an SQS queue (moto delivers it)."""
    events, sqs = boto3.client("events"), boto3.client("sqs")
    url = sqs.create_queue(QueueName="it-vote-events-consumer")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = settings.event_bus_name
    events.put_rule(
        Name="it-all-vote-events",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["mysetlist.votes"]}),
        State="ENABLED",
    )
    events.put_targets(
        Rule="it-all-vote-events", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}]
    )

    def received(show_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
            if not page.get("Messages"):
                break
            for message in page["Messages"]:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                event = json.loads(message["Body"])
                if event["detail"]["show_id"] == show_id:
                    out.append(event)
        return out

    yield received
    events.remove_targets(Rule="it-all-vote-events", EventBusName=bus, Ids=["queue"])
    events.delete_rule(Name="it-all-vote-events", EventBusName=bus)
    sqs.delete_queue(QueueUrl=url)


def cast(votes_api: Any, user: str, show_id: str, song_id: str, vote_type: str) -> None:
    body = {"show_id": show_id, "song_id": song_id, "vote_type": vote_type}
    status, reply = call_http(
        votes_api, http_event("POST /api/votes", body=body, claims=claims_for(user, "user"))
    )
    assert status == 200, reply


def test_the_bus_is_the_templates_and_the_processor_publishes_to_it(settings: Any) -> None:
    assert settings.event_bus_name == "it-mysetlist-local-votes"
    module = sys.modules.get(module_name_for("VoteProcessor"))
    assert module is None or module.publisher.event_bus_name == settings.event_bus_name


def test_one_event_per_counted_vote_with_its_detail(
    votes_api: Any, vote_processor: Any, show: dict[str, Any], consumer: Any
) -> None:
    show_id, (song_a, song_b, _) = show["shows"][0], show["songs"]
    show["reader"].new_records()  # start from here
    cast(votes_api, "ev-fan-1", show_id, song_a, "up")  # created
    cast(votes_api, "ev-fan-2", show_id, song_a, "down")  # created
    cast(votes_api, "ev-fan-1", show_id, song_a, "down")  # switched
    cast(votes_api, "ev-fan-2", show_id, song_a, "down")  # removed
    cast(votes_api, "ev-fan-3", show_id, song_b, "up")  # created
    records = show["reader"].new_records()
    assert len(records) == 5

    assert vote_processor({"Records": records}, LambdaContext()) == {"batchItemFailures": []}

    received = consumer(show_id)
    assert [e["detail"]["event_id"] for e in received] == [r["dynamodb"]["SequenceNumber"] for r in records]
    assert [e["detail-type"] for e in received] == [
        "Vote Created",
        "Vote Created",
        "Vote Switched",
        "Vote Removed",
        "Vote Created",
    ]
    assert {e["source"] for e in received} == {"mysetlist.votes"}
    # The event's time is the vote's (the stream record's creation time), not the publish time.
    assert [e["time"] for e in received] == [
        dt.datetime.fromtimestamp(r["dynamodb"]["ApproximateCreationDateTime"], tz=dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        for r in records
    ]
    assert received[2]["detail"] == {
        "schema_version": 1,
        "event_id": records[2]["dynamodb"]["SequenceNumber"],
        "kind": "switched",
        "show_id": show_id,
        "song_id": song_a,
        "user_id": "ev-fan-1",
        "old_vote_type": "up",
        "new_vote_type": "down",
        "moderation": None,
        "stream_arn": show["stream_arn"],
    }
    assert [(e["detail"]["user_id"], e["detail"]["song_id"]) for e in received] == [
        ("ev-fan-1", song_a),
        ("ev-fan-2", song_a),
        ("ev-fan-1", song_a),
        ("ev-fan-2", song_a),
        ("ev-fan-3", song_b),
    ]

    # Redelivered (already counted): published again, with the same event ids to dedupe on.
    assert vote_processor({"Records": records}, LambdaContext()) == {"batchItemFailures": []}
    again = consumer(show_id)
    assert [e["detail"]["event_id"] for e in again] == [e["detail"]["event_id"] for e in received]


@pytest.fixture
def processor_module(vote_processor: Any) -> Iterator[Any]:
    module = sys.modules[module_name_for("VoteProcessor")]
    bus = module.publisher.event_bus_name
    yield module
    module.publisher.event_bus_name = bus


def test_events_the_bus_refuses_go_to_the_dead_letter_queue(
    votes_api: Any, vote_processor: Any, processor_module: Any, show: dict[str, Any], settings: Any
) -> None:
    sqs = boto3.client("sqs")
    show_id, song = show["shows"][1], show["songs"][2]
    show["reader"].new_records()
    cast(votes_api, "ev-fan-9", show_id, song, "up")
    records = show["reader"].new_records()
    processor_module.publisher.event_bus_name = "it-no-such-bus"  # ResourceNotFoundException

    assert vote_processor({"Records": records}, LambdaContext()) == {"batchItemFailures": []}

    bodies: list[dict[str, Any]] = []
    while page := sqs.receive_message(QueueUrl=settings.dead_letter_queue_url, MaxNumberOfMessages=10).get(
        "Messages"
    ):
        for message in page:
            sqs.delete_message(
                QueueUrl=settings.dead_letter_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
            bodies.append(json.loads(message["Body"]))
    (body,) = [b for b in bodies if b["kind"] == "unpublished-vote-events"]
    assert body["source"] == "VoteProcessor"
    assert "ResourceNotFoundException" in body["reason"]
    (entry,) = body["entries"]
    assert entry["EventBusName"] == "it-no-such-bus"
    assert json.loads(entry["Detail"])["event_id"] == records[0]["dynamodb"]["SequenceNumber"]
    # Replayed as is once the bus is right, it is accepted.
    entry["EventBusName"] = settings.event_bus_name
    result = boto3.client("events").put_events(Entries=[entry])
    assert result["FailedEntryCount"] == 0
