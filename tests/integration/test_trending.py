"""Velocity and trending through the real pipeline: votes written to moto, the stream delivered
to the VoteProcessor as Lambda would, then read through the VotesApi (GET /api/votes and
GET /api/trending) and checked against a rebuild from the vote items."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from mysetlist import keys
from mysetlist.activity import ActivityConfig, trend_sums
from mysetlist.breaker import Dependency, breaker_for
from mysetlist.catalog_store import CatalogStore, show_item
from mysetlist.dynamo import to_item
from mysetlist.models import Show, ShowStatus, VoteType
from mysetlist.signals import QUARANTINED
from mysetlist.tallies import TallyStore
from mysetlist.trending import TrendingBoard, shows_key
from mysetlist.valkey import valkey_client
from mysetlist.votes_store import VotesStore
from tests.harness.delivery import deliver_all
from tests.harness.events import LambdaContext, call_http, http_event, load_event
from tests.harness.streams import StreamReader

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CONFIG = ActivityConfig()


class Pipeline:
    def __init__(self, dynamodb: Any, settings: Any, vote_processor: Any) -> None:
        self.db = dynamodb
        self.settings = settings
        self.catalog = CatalogStore(dynamodb, settings.catalog_table)
        self.votes = VotesStore(dynamodb, settings.votes_table)
        self.tallies = TallyStore(dynamodb, settings.tallies_table, marker_ttl_seconds=3600, activity=CONFIG)
        arn = dynamodb.describe_table(TableName=settings.votes_table)["Table"]["LatestStreamArn"]
        self.reader = StreamReader(boto3.client("dynamodbstreams"), arn)
        self.reader.new_records()
        self.vote_processor = vote_processor

    def show(self, artist: str, days: int = 10) -> Show:
        date = (NOW + dt.timedelta(days=days)).date()
        show = Show(
            show_id=keys.show_id_for(artist, date.isoformat()),
            artist_id=artist,
            date=date,
            status=ShowStatus.UPCOMING,
        )
        self.catalog.put_many([show_item(show)])
        return show

    def vote(self, show: Show, user: str, song: str, vote: VoteType, at: dt.datetime) -> None:
        self.votes.toggle(
            show_id=show.show_id,
            song_id=f"{show.artist_id}:{song}",
            user_id=user,
            vote_type=vote,
            now=at,
            attributes={"artist_id": show.artist_id},
        )

    def process(self) -> None:
        def invoke(event: dict[str, Any]) -> Any:
            return self.vote_processor(event, LambdaContext(function_name="VoteProcessor"))

        deliver_all(self.reader.new_records(), invoke, rng=random.Random(11))


@pytest.fixture
def pipeline(aws: dict[str, str], dynamodb: Any, settings: Any, vote_processor: Any) -> Pipeline:
    return Pipeline(dynamodb, settings, vote_processor)


@pytest.fixture
def valkey_down() -> Iterator[None]:
    breaker = breaker_for(Dependency.VALKEY)
    breaker.force_open(seconds=300, reason="test: Valkey down")
    yield
    breaker.reset()


def get(votes_api: Any, route: str, **query: str) -> tuple[int, Any]:
    return call_http(votes_api, http_event(f"GET {route}", query=query))


def test_velocity_and_trending_follow_the_votes_and_a_rebuild_gives_the_same_scores(
    pipeline: Pipeline, votes_api: Any
) -> None:
    artist = f"trend-{uuid.uuid4().hex[:8]}"
    show = pipeline.show(artist)
    # "fresh": 6 up votes in the last two minutes; "old": 9 up votes 18 hours (3 half-lives) ago,
    # "mixed": 3 up and 3 down votes an hour ago.
    for n in range(6):
        pipeline.vote(show, f"f{n}", "fresh", VoteType.UP, NOW - dt.timedelta(seconds=20 * n))
    for n in range(9):
        pipeline.vote(show, f"o{n}", "old", VoteType.UP, NOW - dt.timedelta(hours=18, minutes=n))
    for n in range(6):
        vote = VoteType.UP if n % 2 else VoteType.DOWN
        pipeline.vote(show, f"m{n}", "mixed", vote, NOW - dt.timedelta(hours=1, seconds=n))
    pipeline.process()

    status, board = get(votes_api, "/api/votes", show_id=show.show_id)
    assert status == 200
    songs = {s["song_id"].split(":")[1]: s for s in board["songs"]}
    assert songs["fresh"]["vote_velocity"] == pytest.approx(6 / 5, abs=0.25)
    assert songs["old"]["vote_velocity"] == 0
    assert songs["mixed"]["positive_ratio"] == 0.5
    assert board["vote_velocity"] == pytest.approx(sum(s["vote_velocity"] for s in board["songs"]), abs=0.01)
    assert (
        songs["fresh"]["trending_score"]
        > songs["mixed"]["trending_score"]
        > songs["old"]["trending_score"]
        > 0
    )

    # The durable sums equal a rebuild from the vote items, digit for digit.
    served = {c.song_id: c.trend for c in pipeline.tallies.read(show.show_id, consistent=True)}
    rebuilt = {
        song: trend_sums(states, CONFIG)
        for song, states in pipeline.votes.standing_votes(show.show_id).items()
    }
    assert served == rebuilt

    status, trending = get(votes_api, "/api/trending", scope="songs", show_id=show.show_id, limit="2")
    assert status == 200
    assert trending["ranked_by"] == "valkey"
    assert [i["song_id"].split(":")[1] for i in trending["items"]] == ["fresh", "mixed"]
    first = trending["items"][0]
    assert first["total_votes"] == 6
    # the same score, read a moment later (it decays) and rounded to 4 decimals
    assert first["trending_score"] == pytest.approx(songs["fresh"]["trending_score"], abs=1e-3)


def test_shows_rank_across_the_platform_and_by_artist(pipeline: Pipeline, votes_api: Any) -> None:
    artist = f"trend-{uuid.uuid4().hex[:8]}"
    busy, quiet = pipeline.show(artist, days=5), pipeline.show(artist, days=6)
    for n in range(8):
        pipeline.vote(busy, f"b{n}", "song-a", VoteType.UP, NOW - dt.timedelta(seconds=n))
    pipeline.vote(quiet, "q0", "song-a", VoteType.UP, NOW)
    pipeline.process()

    status, trending = get(votes_api, "/api/trending", scope="shows", artist_id=artist)
    assert status == 200
    assert [i["show_id"] for i in trending["items"]] == [busy.show_id, quiet.show_id]
    assert trending["items"][0]["total_votes"] == 8
    assert trending["items"][0]["positive_ratio"] == 1.0

    status, everywhere = get(votes_api, "/api/trending", scope="shows", limit="100")
    assert status == 200
    ids = [i["show_id"] for i in everywhere["items"]]
    assert ids.index(busy.show_id) < ids.index(quiet.show_id)


def test_a_rebuild_of_the_sorted_sets_gives_the_same_ranking(
    pipeline: Pipeline, votes_api: Any, settings: Any
) -> None:
    artist = f"trend-{uuid.uuid4().hex[:8]}"
    show = pipeline.show(artist)
    for n in range(12):
        song = ["a", "b", "c"][n % 3] if n < 9 else "c"
        pipeline.vote(show, f"u{n}", song, VoteType.UP, NOW - dt.timedelta(minutes=7 * n))
    pipeline.process()
    _, before = get(votes_api, "/api/trending", scope="songs", show_id=show.show_id)

    board = TrendingBoard(lambda: valkey_client(settings), CONFIG)
    client = valkey_client(settings)
    assert client is not None
    client.delete(*client.keys(f"msl:{{tr:{show.show_id}}}:*"))  # the sets are lost...
    sums = {c.song_id: c.trend for c in pipeline.tallies.read(show.show_id, consistent=True)}
    board.replace_show(show.show_id, artist, sums, NOW)  # ... and rebuilt from the tally items
    _, after = get(votes_api, "/api/trending", scope="songs", show_id=show.show_id)
    assert [i["song_id"] for i in after["items"]] == [i["song_id"] for i in before["items"]]
    assert [i["trending_score"] for i in after["items"]] == pytest.approx(
        [i["trending_score"] for i in before["items"]], abs=1e-3
    )


def test_a_quarantined_vote_leaves_tallies_velocity_and_trending(pipeline: Pipeline, votes_api: Any) -> None:
    artist = f"trend-{uuid.uuid4().hex[:8]}"
    show = pipeline.show(artist)
    for n in range(3):
        pipeline.vote(show, f"u{n}", "a", VoteType.UP, NOW - dt.timedelta(seconds=n))
    pipeline.process()
    _, before = get(votes_api, "/api/votes", show_id=show.show_id)
    pipeline.db.update_item(
        TableName=pipeline.settings.votes_table,
        Key=to_item({"PK": keys.vote_pk(show.show_id, "u1"), "SK": f"{artist}:a"}),
        UpdateExpression="SET moderation = :q",
        ExpressionAttributeValues=to_item({":q": QUARANTINED}),
    )
    pipeline.process()
    after = {c.song_id: c for c in pipeline.tallies.read(show.show_id, consistent=True)}[f"{artist}:a"]
    assert (after.up, after.down) == (2, 0)
    assert after.vote_velocity == pytest.approx(before["songs"][0]["vote_velocity"] * 2 / 3, rel=0.05)
    rebuilt = trend_sums(pipeline.votes.standing_votes(show.show_id)[f"{artist}:a"], CONFIG)
    assert after.trend == rebuilt
    assert pipeline.votes.recount(show.show_id) == {f"{artist}:a": (2, 0)}


def test_without_valkey_songs_rank_from_the_tallies_and_shows_answer_503(
    pipeline: Pipeline, votes_api: Any, valkey_down: None
) -> None:
    artist = f"trend-{uuid.uuid4().hex[:8]}"
    show = pipeline.show(artist)
    pipeline.vote(show, "u0", "a", VoteType.UP, NOW)
    pipeline.vote(show, "u1", "a", VoteType.UP, NOW)
    pipeline.vote(show, "u2", "b", VoteType.UP, NOW)
    pipeline.process()  # the sorted sets are not updated (Valkey down): the batch still counts
    status, songs = get(votes_api, "/api/trending", scope="songs", show_id=show.show_id)
    assert status == 200
    assert songs["ranked_by"] == "tallies"
    assert [i["song_id"] for i in songs["items"]] == [f"{artist}:a", f"{artist}:b"]
    status, shows = get(votes_api, "/api/trending", scope="shows")
    assert status == 503
    assert "retry" in shows["error"]["message"]


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ({"scope": "songs"}, 400, "needs show_id"),
        ({"scope": "shows", "show_id": "x:2030-01-01"}, 400, "show_id is for scope=songs"),
        ({"scope": "songs", "show_id": "nobody:2030-01-01"}, 404, "no show"),
        ({"scope": "everything"}, 422, "scope"),
        ({"scope": "shows", "limit": "0"}, 422, "limit"),
    ],
)
def test_bad_trending_queries_get_clear_errors(
    votes_api: Any, aws: dict[str, str], query: dict[str, str], status: int, fragment: str
) -> None:
    got, body = get(votes_api, "/api/trending", **query)
    assert got == status
    assert fragment in str(body)


def test_a_hot_batch_costs_one_increment_per_song_and_one_per_show_set(
    settings: Any, aws: dict[str, str]
) -> None:
    board = TrendingBoard(lambda: valkey_client(settings), CONFIG)
    show = f"trend-{uuid.uuid4().hex[:8]}:2030-01-01"
    era = 1000
    sent = board.add([(show, "artist-x", f"song-{n}", {era: 2_000_000_000}) for n in range(30)])
    # 30 song increments, one increment in each of the 2 show sets, one EXPIRE per set touched
    assert sent == 30 + 2 + 3
    client = valkey_client(settings)
    assert client is not None
    assert client.zscore(shows_key(era), show) == pytest.approx(60.0)
    assert client.zscore(shows_key(era, "artist-x"), show) == pytest.approx(60.0)


def test_the_canonical_trending_event_has_the_right_shape(votes_api: Any, aws: dict[str, str]) -> None:
    status, body = call_http(votes_api, load_event("votes_api/trending.json"))
    assert status == 404  # its show (in 2030) is not in this catalogue
    assert "grateful-dead:2030-06-01" in body["error"]["message"]
