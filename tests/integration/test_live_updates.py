"""Live pushes against moto, with the connections table of template.yaml: the connection
store (subscriptions sharded per show, the per-connection limit, TTL-expired items ignored,
$disconnect leaves nothing), the LiveUpdates handler on the canonical events of
``events/live_updates/``, and the vote pipeline: votes cast through VotesApi, the votes
table's real stream counted by the VoteProcessor's batch processor with the LiveObserver, one
message per show per batch to each subscriber, equal to what ``GET /api/votes`` serves, and a
gone connection removed from the table."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response
from botocore.exceptions import ClientError

from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines
from mysetlist.live import (
    Connection,
    ConnectionStore,
    ConnectionUnknown,
    LiveObserver,
    LivePusher,
    SubscriptionLimit,
    connection_pk,
    subscription_partitions,
)
from mysetlist.stream_batch import TallyBatchProcessor, record_handler
from mysetlist.tallies import TallyStore
from tests.harness.events import LambdaContext, call_http, claims_for, http_event, load_event
from tests.harness.fakes import FakeQuarantine
from tests.harness.streams import StreamReader
from tests.integration.conftest import Issuer, wipe
from tests.support.template import load_handler

NOW = dt.datetime.now(dt.UTC)
ARTIST = "Live Band"
SONGS = [f"live-band:tune-{n}" for n in range(5)]
FUTURE = dt.date.today() + dt.timedelta(days=90)
SHOWS = [f"live-band:{(FUTURE + dt.timedelta(days=n)).isoformat()}" for n in range(4)]


@pytest.fixture(scope="module")
def connections_table(aws: dict[str, str], dynamodb: Any) -> Iterator[str]:
    """The connections table, named in the environment before LiveUpdates is imported."""
    table = aws["ConnectionsTable"]
    os.environ["CONNECTIONS_TABLE"] = table
    yield table
    wipe(dynamodb, table)


@pytest.fixture(scope="module")
def catalogue(aws: dict[str, str], dynamodb: Any, settings: Any) -> list[str]:
    lines = [
        json.dumps(
            {
                "artist": ARTIST,
                "date": "2001-01-01",
                "sets": [{"name": "Set 1", "songs": [f"Tune {n}" for n in range(5)]}],
            }
        )
    ]
    lines += [json.dumps({"artist": ARTIST, "date": show.split(":")[1], "sets": []}) for show in SHOWS]
    import_lines(CatalogStore(dynamodb, settings.catalog_table), lines, warn=lambda _: None)
    return SHOWS


@pytest.fixture
def store(connections_table: str, dynamodb: Any) -> Iterator[ConnectionStore]:
    wipe(dynamodb, connections_table)
    yield ConnectionStore(dynamodb, connections_table)
    wipe(dynamodb, connections_table)


@pytest.fixture(scope="module")
def live_updates(connections_table: str, catalogue: list[str]) -> Any:
    return load_handler("LiveUpdates")


def items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    return [
        item for page in dynamodb.get_paginator("scan").paginate(TableName=table) for item in page["Items"]
    ]


# ---------------------------------------------------------------------------------- the store


def test_a_show_s_subscribers_are_one_query_per_shard(store: ConnectionStore, dynamodb: Any) -> None:
    ids = [f"conn-{n:03d}=" for n in range(60)]
    for connection_id in ids:
        store.connect(connection_id, f"fan-{connection_id}", NOW)
        store.subscribe(Connection(connection_id, f"fan-{connection_id}", ""), SHOWS[0], NOW, limit=5)
    store.subscribe(Connection(ids[0], "fan", ""), SHOWS[1], NOW, limit=5)
    assert sorted(store.subscribers(SHOWS[0], NOW)) == ids
    assert store.subscribers(SHOWS[1], NOW) == [ids[0]]
    assert store.subscribers(SHOWS[2], NOW) == []
    used = {item["PK"]["S"] for item in items(dynamodb, store._table) if item["PK"]["S"].startswith("SHOW#")}
    assert used >= set(subscription_partitions(SHOWS[0]))  # 60 watchers use every shard
    stored = store.get(ids[0])
    assert stored is not None
    assert stored.shows == {SHOWS[0], SHOWS[1]}


def test_the_subscription_limit_and_unknown_connections(store: ConnectionStore) -> None:
    store.connect("c1=", "fan-1", NOW)
    fan = Connection("c1=", "fan-1", "")
    store.subscribe(fan, SHOWS[0], NOW, limit=2)
    store.subscribe(fan, SHOWS[1], NOW, limit=2)
    store.subscribe(fan, SHOWS[1], NOW, limit=2)  # already watched: within the limit
    with pytest.raises(SubscriptionLimit) as refused:
        store.subscribe(fan, SHOWS[2], NOW, limit=2)
    assert refused.value.details["subscriptions"] == sorted(SHOWS[:2])
    assert store.subscribers(SHOWS[2], NOW) == []  # the transaction left nothing behind
    store.unsubscribe("c1=", SHOWS[0])
    store.subscribe(fan, SHOWS[2], NOW, limit=2)
    assert store.subscribers(SHOWS[0], NOW) == []
    assert store.subscribers(SHOWS[2], NOW) == ["c1="]
    with pytest.raises(ConnectionUnknown):
        store.subscribe(Connection("nobody=", "x", ""), SHOWS[0], NOW, limit=2)
    store.unsubscribe("nobody=", SHOWS[0])  # idempotent, no error


def test_disconnect_leaves_nothing_and_expired_items_are_ignored(
    store: ConnectionStore, dynamodb: Any
) -> None:
    store.connect("c1=", "fan-1", NOW)
    for show in SHOWS[:3]:
        store.subscribe(Connection("c1=", "fan-1", ""), show, NOW, limit=5)
    old = NOW - dt.timedelta(hours=4)  # written four hours ago: past its TTL, not yet swept
    store.connect("stale=", "fan-2", old)
    store.subscribe(Connection("stale=", "fan-2", ""), SHOWS[0], old, limit=5)
    assert store.subscribers(SHOWS[0], NOW) == ["c1="]
    assert store.disconnect("c1=") == 4
    assert store.disconnect("c1=") == 0
    left = [item["PK"]["S"] + " " + item["SK"]["S"] for item in items(dynamodb, store._table)]
    assert all("c1=" not in key for key in left), left
    expires = {item["PK"]["S"]: int(item["expires_at"]["N"]) for item in items(dynamodb, store._table)}
    assert expires[connection_pk("stale=")] == int(old.timestamp()) + 3 * 3600


# ---------------------------------------------------------------------------------- the handler


def event(name: str, **changes: Any) -> dict[str, Any]:
    loaded = copy.deepcopy(load_event(f"live_updates/{name}.json"))
    loaded["requestContext"].update(changes)
    return loaded


def message(route: str, body: Any, connection_id: str) -> dict[str, Any]:
    loaded = event("subscribe", routeKey=route, connectionId=connection_id)
    loaded["body"] = json.dumps(body)
    return loaded


def test_the_handler_on_the_canonical_events(
    live_updates: Any, issuer: Issuer, dynamodb: Any, connections_table: str
) -> None:
    wipe(dynamodb, connections_table)
    connect = event("connect")
    connect["headers"].pop("Origin")
    connect["queryStringParameters"] = {"token": issuer.token("fan-77", "user")}
    assert live_updates(connect, LambdaContext()) == {"statusCode": 200}
    connection_id = connect["requestContext"]["connectionId"]
    refused = event("connect", connectionId="other=")
    refused["headers"].pop("Origin")
    refused["queryStringParameters"] = {"token": issuer.token("fan-77", "user", lifetime=-60)}
    assert live_updates(refused, LambdaContext())["statusCode"] == 401

    reply = live_updates(
        message("subscribe", {"action": "subscribe", "show_id": SHOWS[3]}, connection_id), LambdaContext()
    )
    body = json.loads(reply["body"])
    assert (reply["statusCode"], body["type"], body["subscriptions"]) == (200, "subscribed", [SHOWS[3]])
    assert body["board"]["show_id"] == SHOWS[3]
    canonical = live_updates(event("subscribe"), LambdaContext())  # grateful-dead:2030-06-01 is not here
    assert (canonical["statusCode"], json.loads(canonical["body"])["error"]) == (404, "not_found")
    unknown = live_updates(event("unknown_action"), LambdaContext())
    assert json.loads(unknown["body"])["error"] == "unknown_action"

    assert live_updates(event("disconnect"), LambdaContext()) == {"statusCode": 200}
    assert items(dynamodb, connections_table) == []


# ---------------------------------------------------------------------------------- pushes


@dataclass
class RecordingManagement:
    """The management API: records what each connection receives; some connections are gone."""

    gone: set[str] = field(default_factory=set)
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post_to_connection(self, *, Data: bytes, ConnectionId: str) -> Any:
        if ConnectionId in self.gone:
            raise ClientError({"Error": {"Code": "GoneException", "Message": ""}}, "PostToConnection")
        with self.lock:
            self.received.setdefault(ConnectionId, []).append(json.loads(Data))
        return {}


def test_each_subscriber_gets_one_message_per_show_per_batch_equal_to_the_served_tallies(
    votes_api: Any, settings: Any, dynamodb: Any, store: ConnectionStore, catalogue: list[str]
) -> None:
    watched, other, unwatched = SHOWS[0], SHOWS[1], SHOWS[2]
    for connection_id, shows in (("a=", [watched]), ("b=", [watched, other]), ("gone=", [watched])):
        store.connect(connection_id, f"fan-{connection_id}", NOW)
        for show in shows:
            store.subscribe(Connection(connection_id, "fan", ""), show, NOW, limit=5)
    arn = dynamodb.describe_table(TableName=settings.votes_table)["Table"]["LatestStreamArn"]
    reader = StreamReader(boto3.client("dynamodbstreams"), arn)
    reader.new_records()  # from here on
    for n, (show, song, vote) in enumerate(
        [(watched, s, "up") for s in SONGS]
        + [(watched, SONGS[0], "down"), (other, SONGS[1], "up")]
        + [(unwatched, SONGS[2], "up")] * 3
    ):
        status, reply = call_http(
            votes_api,
            http_event(
                "POST /api/votes",
                body={"show_id": show, "song_id": song, "vote_type": vote},
                claims=claims_for(f"voter-{n}", "user"),
            ),
        )
        assert status == 200, reply
    records = reader.new_records()
    assert len(records) == 10

    management = RecordingManagement(gone={"gone="})
    tallies = TallyStore(dynamodb, settings.tallies_table, marker_ttl_seconds=3600)
    processor = TallyBatchProcessor(
        tallies,
        FakeQuarantine(),
        observers=[LiveObserver(store, LivePusher(lambda: management, store), tallies)],
    )
    result = process_partial_response(
        event={"Records": records},
        record_handler=record_handler,
        processor=processor,
        context=cast(Any, LambdaContext()),
    )
    assert result == {"batchItemFailures": []}

    assert sorted(management.received) == ["a=", "b="]
    assert [m["show_id"] for m in management.received["a="]] == [watched]
    assert sorted(m["show_id"] for m in management.received["b="]) == sorted([watched, other])
    for connection_id, messages in management.received.items():
        for pushed in messages:
            status, served = call_http(
                votes_api, http_event("GET /api/votes", query={"show_id": pushed["show_id"]})
            )
            assert status == 200
            expected = [
                {k: s[k] for k in ("song_id", "upvotes", "downvotes", "net", "vote_velocity")}
                for s in served["songs"]
            ]
            assert [{k: s[k] for k in expected[0]} for s in pushed["songs"]] == expected, connection_id
            assert (pushed["total_upvotes"], pushed["total_downvotes"]) == (
                served["total_upvotes"],
                served["total_downvotes"],
            )
            last = [r for r in records if r["dynamodb"]["NewImage"]["show_id"]["S"] == pushed["show_id"]][-1]
            assert pushed["sequence"] == last["dynamodb"]["SequenceNumber"]
    # The gone connection and its subscription items are removed.
    assert store.get("gone=") is None
    assert sorted(store.subscribers(watched, NOW)) == ["a=", "b="]
