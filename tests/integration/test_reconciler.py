"""The tally reconciler against moto: votes processed by the real VoteProcessor (through the
stream, as Lambda delivers it), a lost update simulated on a tally item, and the repair rule
run on an injected clock (mysetlist/reconcile.py)."""

from __future__ import annotations

import datetime as dt
import random
import sys
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.activity import ActivityConfig, VoteState, contribution, trend_attribute, trend_sums
from mysetlist.catalog_store import CatalogStore, show_item
from mysetlist.dynamo import from_item, to_item
from mysetlist.models import Show, ShowStatus, VoteType
from mysetlist.reconcile import (
    REPAIR_LANE,
    ReconcileStore,
    ShowResult,
    active_shows,
    observation_pk,
    reconcile_show,
)
from mysetlist.tallies import TallyStore
from mysetlist.trending import TrendingBoard
from mysetlist.valkey import valkey_client
from mysetlist.votes_store import VotesStore
from tests.harness.delivery import deliver_all
from tests.harness.events import LambdaContext, load_event
from tests.harness.streams import StreamReader
from tests.support.template import load_handler, module_name_for

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SONGS = [f"song-{i}" for i in range(3)]


class World:
    def __init__(self, dynamodb: Any, settings: Any, vote_processor: Any) -> None:
        self.db = dynamodb
        self.settings = settings
        self.catalog = CatalogStore(dynamodb, settings.catalog_table)
        self.votes = VotesStore(dynamodb, settings.votes_table)
        self.tallies = TallyStore(dynamodb, settings.tallies_table, marker_ttl_seconds=3600)
        self.store = ReconcileStore(dynamodb, settings.tallies_table, self.tallies)
        arn = dynamodb.describe_table(TableName=settings.votes_table)["Table"]["LatestStreamArn"]
        self.reader = StreamReader(boto3.client("dynamodbstreams"), arn)
        self.reader.new_records()  # only what this test writes from here on
        self.vote_processor = vote_processor
        self.logged: list[tuple[str, dict[str, Any]]] = []

    def show(self, *, closes_at: dt.datetime, status: ShowStatus) -> Show:
        artist = f"recon-{uuid.uuid4().hex[:10]}"
        show = Show(
            show_id=keys.show_id_for(artist, closes_at.date().isoformat()),
            artist_id=artist,
            date=closes_at.date(),
            starts_at=closes_at,
            status=status,
        )
        self.catalog.put_many([show_item(show)])
        return show

    def song(self, show: Show, n: int) -> str:
        return f"{show.artist_id}:{SONGS[n]}"

    def vote(self, show: Show, user: str, song: int, vote: VoteType) -> None:
        self.votes.toggle(
            show_id=show.show_id, song_id=self.song(show, song), user_id=user, vote_type=vote, now=NOW
        )

    def process(self) -> None:
        def invoke(event: dict[str, Any]) -> Any:
            return self.vote_processor(event, LambdaContext(function_name="VoteProcessor"))

        deliver_all(self.reader.new_records(), invoke, rng=random.Random(7))

    def served(self, show: Show) -> dict[str, tuple[int, int]]:
        return {c.song_id: (c.up, c.down) for c in self.tallies.read(show.show_id)}

    def run(self, show: Show, now: dt.datetime) -> ShowResult:
        return reconcile_show(
            show, self.votes, self.store, now, lambda msg, **kw: self.logged.append((msg, kw))
        )

    def lose_an_update(self, show: Show, song: int, *, up: int = 0, down: int = 0) -> None:
        """Take votes off one of the processor's own tally items, as a lost stream record would."""
        song_id = self.song(show, song)
        items = self.db.query(
            TableName=self.settings.tallies_table,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :song)",
            ExpressionAttributeValues=to_item(
                {":pk": keys.tally_pk(show.show_id, song_id), ":song": f"{song_id}#"}
            ),
        )["Items"]
        key = {"PK": items[0]["PK"], "SK": items[0]["SK"]}
        self.db.update_item(
            TableName=self.settings.tallies_table,
            Key=key,
            UpdateExpression="ADD upvotes :up, downvotes :down",
            ExpressionAttributeValues=to_item({":up": -up, ":down": -down}),
        )

    def snapshot(self, show: Show) -> list[dict[str, Any]]:
        """Every item of the show in TalliesTable: its tallies and its observation."""
        items: list[dict[str, Any]] = []
        for pk in [*keys.tally_partitions(show.show_id), observation_pk(show.show_id)]:
            response = self.db.query(
                TableName=self.settings.tallies_table,
                KeyConditionExpression="PK = :pk",
                ExpressionAttributeValues=to_item({":pk": pk}),
                ConsistentRead=True,
            )
            items += [from_item(i) for i in response["Items"]]
        return sorted(items, key=lambda i: (i["PK"], i["SK"]))

    def repair_items(self, show: Show) -> dict[str, tuple[int, int]]:
        return {
            i["song_id"]: (int(i["upvotes"]), int(i["downvotes"]))
            for i in self.snapshot(show)
            if i["SK"].endswith(f"#{REPAIR_LANE}") and "song_id" in i
        }


@pytest.fixture
def world(dynamodb: Any, settings: Any, vote_processor: Any) -> World:
    return World(dynamodb, settings, vote_processor)


def seed_votes(world: World, show: Show) -> None:
    for user in range(5):
        world.vote(show, f"u{user}", 0, VoteType.UP)
    world.vote(show, "u0", 1, VoteType.DOWN)
    world.vote(show, "u1", 1, VoteType.UP)
    world.vote(show, "u2", 2, VoteType.UP)
    world.vote(show, "u2", 2, VoteType.DOWN)  # switched
    world.process()


def test_exact_tallies_show_no_drift_and_nothing_is_written(world: World) -> None:
    show = world.show(closes_at=NOW - dt.timedelta(hours=3), status=ShowStatus.COMPLETED)
    seed_votes(world, show)
    before = world.snapshot(show)
    result = world.run(show, NOW)
    assert (result.drift, result.repaired, result.outcome, result.settled) == ({}, {}, "clean", True)
    assert world.snapshot(show) == before
    assert not any(i["PK"] == observation_pk(show.show_id) for i in before)


def test_a_settled_show_is_repaired_exactly_once(world: World) -> None:
    show = world.show(closes_at=NOW - dt.timedelta(hours=3), status=ShowStatus.COMPLETED)
    seed_votes(world, show)
    truth = world.served(show)
    world.lose_an_update(show, 0, up=2)
    world.lose_an_update(show, 2, down=1)

    first = world.run(show, NOW)
    song0, song2 = world.song(show, 0), world.song(show, 2)
    assert first.drift == {song0: (2, 0), song2: (0, 1)}
    assert (first.repaired, first.outcome) == (first.drift, "repaired")
    assert world.served(show) == truth
    assert world.repair_items(show) == {song0: (2, 0), song2: (0, 1)}
    assert [msg for msg, _ in world.logged] == ["tally drift repaired"]

    after = world.snapshot(show)
    second = world.run(show, NOW + dt.timedelta(minutes=15))
    assert (second.drift, second.repaired, second.outcome) == ({}, {}, "clean")
    assert world.snapshot(show) == after  # nothing written


def test_a_concurrent_run_cannot_apply_the_same_correction_twice(world: World) -> None:
    show = world.show(closes_at=NOW - dt.timedelta(hours=3), status=ShowStatus.COMPLETED)
    seed_votes(world, show)
    truth = world.served(show)
    world.lose_an_update(show, 1, down=1)
    previous = world.store.observation(show.show_id)
    drift = {world.song(show, 1): (0, 1)}
    world.store.commit(show_id=show.show_id, previous=previous, repairs=drift, pending={}, now=NOW)
    with pytest.raises(ClientError) as raised:
        world.store.commit(show_id=show.show_id, previous=previous, repairs=drift, pending={}, now=NOW)
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert world.served(show) == truth


def test_an_open_show_is_observed_first_and_repaired_when_the_drift_holds_10_minutes(world: World) -> None:
    show = world.show(closes_at=NOW + dt.timedelta(days=3), status=ShowStatus.UPCOMING)
    seed_votes(world, show)
    truth = world.served(show)
    world.lose_an_update(show, 0, up=1)
    song0 = world.song(show, 0)

    first = world.run(show, NOW)
    assert (first.settled, first.drift, first.repaired, first.outcome) == (
        False,
        {song0: (1, 0)},
        {},
        "observed",
    )
    assert world.served(show) != truth
    assert world.repair_items(show) == {}

    too_soon = world.run(show, NOW + dt.timedelta(minutes=9))
    assert (too_soon.repaired, too_soon.outcome) == ({}, "observed")

    second = world.run(show, NOW + dt.timedelta(minutes=10))
    assert (second.repaired, second.outcome) == ({song0: (1, 0)}, "repaired")
    assert world.served(show) == truth

    after = world.snapshot(show)
    third = world.run(show, NOW + dt.timedelta(minutes=25))
    assert (third.drift, third.outcome) == ({}, "clean")
    assert world.snapshot(show) == after


def test_a_vote_in_flight_changes_the_drift_and_holds_the_repair_back(world: World) -> None:
    show = world.show(closes_at=NOW + dt.timedelta(days=3), status=ShowStatus.UPCOMING)
    seed_votes(world, show)
    world.lose_an_update(show, 0, up=1)
    song0 = world.song(show, 0)
    assert world.run(show, NOW).drift == {song0: (1, 0)}

    world.vote(show, "u9", 0, VoteType.UP)  # cast, not yet through the stream
    second = world.run(show, NOW + dt.timedelta(minutes=15))
    assert (second.drift, second.repaired, second.outcome) == ({song0: (2, 0)}, {}, "observed")

    world.process()  # the vote is counted: back to the lost update alone, seen anew
    third = world.run(show, NOW + dt.timedelta(minutes=30))
    assert (third.drift, third.repaired) == ({song0: (1, 0)}, {})
    fourth = world.run(show, NOW + dt.timedelta(minutes=45))
    assert fourth.repaired == {song0: (1, 0)}
    assert world.served(show)[song0] == (6, 0)
    assert world.votes.recount(show.show_id)[song0] == (6, 0)


def test_active_shows_are_upcoming_within_30_days_and_recently_closed(world: World) -> None:
    recent = world.show(closes_at=NOW - dt.timedelta(hours=20), status=ShowStatus.COMPLETED)
    unmarked = world.show(closes_at=NOW - dt.timedelta(hours=5), status=ShowStatus.UPCOMING)
    soon = world.show(closes_at=NOW + dt.timedelta(days=29), status=ShowStatus.UPCOMING)
    old = world.show(closes_at=NOW - dt.timedelta(days=3), status=ShowStatus.COMPLETED)
    far = world.show(closes_at=NOW + dt.timedelta(days=31), status=ShowStatus.UPCOMING)
    cancelled = world.show(closes_at=NOW + dt.timedelta(days=2), status=ShowStatus.CANCELLED)
    shows, truncated = active_shows(world.catalog, NOW, limit=100_000)
    ids = {s.show_id for s in shows}
    assert not truncated
    assert {recent.show_id, unmarked.show_id, soon.show_id} <= ids
    assert not ids & {old.show_id, far.show_id, cancelled.show_id}
    _, cut = active_shows(world.catalog, NOW, limit=1)
    assert cut


@pytest.fixture
def reconciler(aws: dict[str, str]) -> tuple[Any, Any]:
    handler = load_handler("TallyReconciler")
    return sys.modules[module_name_for("TallyReconciler")], handler


class OneShowCatalog:
    """The handler's catalogue, narrowed to one show (the session's tables are shared)."""

    def __init__(self, show: Show) -> None:
        self._show = show
        self._served = False

    def list_shows(self, **_: Any) -> Any:
        from mysetlist.models import Page

        items = [] if self._served else [self._show]
        self._served = True
        return Page[Show](items=items, next_cursor=None)


def test_the_scheduled_handler_repairs_and_reports(
    world: World, reconciler: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, handler = reconciler
    show = world.show(closes_at=NOW - dt.timedelta(hours=3), status=ShowStatus.COMPLETED)
    seed_votes(world, show)
    truth = world.served(show)
    world.lose_an_update(show, 0, up=1)
    monkeypatch.setattr(module, "catalog", OneShowCatalog(show))
    summary = handler(
        load_event("tally_reconciler/schedule.json"), LambdaContext(function_name="TallyReconciler")
    )
    assert summary["shows"] == 1
    assert (summary["drift_votes"], summary["drift_songs"], summary["repairs"]) == (1, 1, 1)
    assert summary["failed"] == []
    assert world.served(show) == truth


def test_trending_drift_is_repaired_and_the_sorted_sets_rebuilt(world: World, settings: Any) -> None:
    show = world.show(closes_at=NOW - dt.timedelta(hours=3), status=ShowStatus.COMPLETED)
    seed_votes(world, show)
    song0 = world.song(show, 0)
    exact = {c.song_id: c.trend for c in world.tallies.read(show.show_id, consistent=True)}
    # A lost stream record: the processor's item misses one vote's count and trending amount.
    era, amount = contribution(VoteState("up", NOW.timestamp()), world.tallies.activity)
    items = world.db.query(
        TableName=settings.tallies_table,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :song)",
        ExpressionAttributeValues=to_item({":pk": keys.tally_pk(show.show_id, song0), ":song": f"{song0}#"}),
    )["Items"]
    world.db.update_item(
        TableName=settings.tallies_table,
        Key={"PK": items[0]["PK"], "SK": items[0]["SK"]},
        UpdateExpression="ADD upvotes :one, #t :amount",
        ExpressionAttributeNames={"#t": trend_attribute(era, world.tallies.activity)},
        ExpressionAttributeValues=to_item({":one": -1, ":amount": -amount}),
    )
    board = TrendingBoard(lambda: valkey_client(settings), world.tallies.activity)
    client = valkey_client(settings)
    assert client is not None
    client.delete(*client.keys(f"msl:{{tr:{show.show_id}}}:*"))

    result = reconcile_show(show, world.votes, world.store, NOW, lambda *a, **k: None, board)
    assert (result.drift, result.trend_drift, result.outcome) == ({song0: (1, 0)}, 1, "repaired")
    assert {c.song_id: c.trend for c in world.tallies.read(show.show_id, consistent=True)} == exact
    ranked = board.top_songs(show.show_id, NOW, 10)
    assert ranked[0].id == song0  # 5 up votes: the show's top song again
    assert {r.id for r in ranked} == {s for s, sums in exact.items() if sums}


def test_after_a_half_life_change_the_reconciler_fills_the_new_sums(world: World, settings: Any) -> None:
    show = world.show(closes_at=NOW + dt.timedelta(days=3), status=ShowStatus.UPCOMING)
    seed_votes(world, show)  # counted under the default half-life (6 h)
    changed = ActivityConfig(half_life_seconds=3 * 3600)
    tallies = TallyStore(world.db, settings.tallies_table, marker_ttl_seconds=3600, activity=changed)
    store = ReconcileStore(world.db, settings.tallies_table, tallies)

    def run(at: dt.datetime) -> ShowResult:
        return reconcile_show(show, world.votes, store, at, lambda *a, **k: None)

    first = run(NOW)
    assert (first.drift, first.trend_drift, first.outcome) == ({}, 3, "observed")
    assert all(not c.trend for c in tallies.read(show.show_id, consistent=True))
    second = run(NOW + dt.timedelta(minutes=11))
    assert (second.outcome, second.trend_drift) == ("repaired", 3)
    rebuilt = {s: trend_sums(v, changed) for s, v in world.votes.standing_votes(show.show_id).items()}
    assert {c.song_id: c.trend for c in tallies.read(show.show_id, consistent=True)} == rebuilt
    assert run(NOW + dt.timedelta(minutes=26)).outcome == "clean"
