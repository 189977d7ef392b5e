"""The fraud observer in a VoteProcessor against moto and the session's Valkey: a bot farm's
votes cast with their client signals, the votes stream delivered as Lambda would to a
TallyBatchProcessor observed by the real FraudEngine, the farm quarantined and alerted once,
and the tallies losing the farm's votes once the flags' own stream records are processed. With
Valkey away, the tallies are still counted and the gap is recorded for the sweeper."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response

from mysetlist import keys
from mysetlist.alerts import PlatformStore
from mysetlist.dynamo import from_item, to_item
from mysetlist.fraud import FraudConfig, FraudEngine, ValkeyRecentVotes
from mysetlist.fraud_observer import FraudObserver
from mysetlist.models import VoteType
from mysetlist.moderation import ModerationAction, ModerationStore
from mysetlist.signals import ClientSignals, vote_id
from mysetlist.stream_batch import TallyBatchProcessor, record_handler
from mysetlist.tallies import TallyStore
from mysetlist.votes_store import VotesStore
from tests.harness.delivery import deliver_all
from tests.harness.events import LambdaContext
from tests.harness.streams import StreamReader

FARM_AGENT = "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0"


@dataclass
class DeadLetters:
    """Unreadable records (none are expected here)."""

    sent: list[tuple[Any, str]] = field(default_factory=list)

    def send(self, record: Any, reason: str) -> None:
        self.sent.append((record, reason))


class Stadium:
    """One upcoming show, its fans and a bot farm, the votes table's stream, and processors."""

    def __init__(self, dynamodb: Any, settings: Any) -> None:
        self.db = dynamodb
        self.settings = settings
        self.artist = f"farm-{uuid.uuid4().hex[:10]}"
        self.show = keys.show_id_for(self.artist, (dt.date.today() + dt.timedelta(days=20)).isoformat())
        # Each test farms from its own network (the engine's re-alert claims are per entity).
        self.farm_net = f"10.{random.randrange(256)}.{random.randrange(256)}"
        self.votes = VotesStore(dynamodb, settings.votes_table)
        self.moderation = ModerationStore(dynamodb, settings.votes_table)
        self.alerts = PlatformStore(dynamodb, settings.platform_table)
        self.tallies = TallyStore(dynamodb, settings.tallies_table, marker_ttl_seconds=3600)
        arn = dynamodb.describe_table(TableName=settings.votes_table)["Table"]["LatestStreamArn"]
        self.reader = StreamReader(boto3.client("dynamodbstreams"), arn)
        self.reader.new_records()  # only what this test writes from here on
        self.dead_letters = DeadLetters()

    def song(self, n: int) -> str:
        return f"{self.artist}:song-{n}"

    def cast(
        self,
        user: str,
        song: int,
        at: dt.datetime,
        *,
        ip: str,
        agent: str,
        created: dt.datetime,
        vote: VoteType = VoteType.UP,
    ) -> str:
        signals = ClientSignals.from_request(
            source_ip=ip, user_agent=agent, device_id=None, account_created_at=created
        )
        self.votes.toggle(
            show_id=self.show,
            song_id=self.song(song),
            user_id=user,
            vote_type=vote,
            now=at,
            attributes={"artist_id": self.artist, **signals.item_attributes()},
        )
        return vote_id(self.show, user, self.song(song))

    def fans(self, start: dt.datetime, count: int = 12) -> list[str]:
        """Organic fans: old accounts, their own networks and browsers, minutes apart."""
        cast = []
        for i in range(count):
            at = start + dt.timedelta(seconds=37 * i)
            cast.append(
                self.cast(
                    f"fan-{self.artist}-{i}",
                    i % 3,
                    at,
                    ip=f"198.51.{i}.{10 + i}",
                    agent=f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_{i} like Mac OS X)",
                    created=start - dt.timedelta(days=400 + i),
                )
            )
        return cast

    def farm(self, start: dt.datetime, accounts: int = 12) -> list[str]:
        """A bot farm: fresh accounts on one network, one user agent, the same two songs within
        seconds."""
        cast = []
        for i in range(accounts):
            user = f"bot-{self.artist}-{i}"
            for song in (0, 1):
                at = start + dt.timedelta(seconds=i + song)
                cast.append(
                    self.cast(
                        user,
                        song,
                        at,
                        ip=f"{self.farm_net}.{20 + i}",
                        agent=FARM_AGENT,
                        created=start - dt.timedelta(hours=2),
                    )
                )
        return cast

    def processor(self, observer: FraudObserver | None) -> TallyBatchProcessor:
        return TallyBatchProcessor(self.tallies, self.dead_letters, observers=[observer] if observer else [])

    def deliver(self, processor: TallyBatchProcessor) -> int:
        records = self.reader.new_records()

        def invoke(event: dict[str, Any]) -> Any:
            return process_partial_response(
                event=event,
                record_handler=record_handler,
                processor=processor,
                context=LambdaContext(function_name="VoteProcessor"),  # type: ignore[arg-type]
            )

        deliver_all(records, invoke, rng=random.Random(11), batch_size=25)
        return len(records)

    def counted(self) -> dict[str, tuple[int, int]]:
        return {c.song_id: (c.up, c.down) for c in self.tallies.read(self.show) if c.up or c.down}

    def state(self, vid: str) -> str | None:
        from mysetlist.signals import parse_vote_id

        parsed = parse_vote_id(vid)
        assert parsed is not None
        show, user, song = parsed
        item = self.db.get_item(
            TableName=self.settings.votes_table,
            Key=to_item({"PK": keys.vote_pk(show, user), "SK": song}),
            ConsistentRead=True,
        )["Item"]
        return from_item(item).get("moderation")


@pytest.fixture
def stadium(platform: Any, dynamodb: Any, settings: Any) -> Stadium:
    """A new show, with an empty PlatformTable (alerts) before and after."""
    return Stadium(dynamodb, settings)


@dataclass
class CountingEngine:
    """The real engine, counting the votes it is shown."""

    real: FraudEngine
    shown: list[int] = field(default_factory=list)

    def observe(self, signals: Sequence[Any], now: float) -> Any:
        self.shown.append(len(signals))
        return self.real.observe(signals, now)

    def forget(self, signals: Sequence[Any]) -> None:
        self.real.forget(signals)


def observer_for(stadium: Stadium, engine: Any, metric: Callable[[str, float], None]) -> FraudObserver:
    return FraudObserver(engine, stadium.moderation, stadium.alerts, metric=metric)


def window(url: str, config: FraudConfig) -> ValkeyRecentVotes:
    import redis

    return ValkeyRecentVotes.for_config(redis.Redis.from_url(url, socket_timeout=0.5), config)


def test_a_bot_farm_is_quarantined_alerted_once_and_leaves_the_tallies(stadium: Stadium, valkey: Any) -> None:
    config = FraudConfig()
    engine = CountingEngine(FraudEngine(config, window(valkey.url, config)))
    seen: list[tuple[str, float]] = []
    processor = stadium.processor(observer_for(stadium, engine, lambda n, v: seen.append((n, v))))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)

    fans = stadium.fans(start)
    bots = stadium.farm(start + dt.timedelta(seconds=30))
    assert stadium.deliver(processor) == len(fans) + len(bots)

    assert {v: stadium.state(v) for v in bots} == dict.fromkeys(bots, "quarantined")
    assert {v: stadium.state(v) for v in fans} == dict.fromkeys(fans)
    fingerprint = f"vote_fraud.network_cluster#net:{stadium.farm_net}.0/24"
    alert = stadium.alerts.open_alert(fingerprint)
    assert alert is not None, [a.fingerprint for a in stadium.alerts.open_alerts()]
    assert alert.entity == f"net:{stadium.farm_net}.0/24"
    assert alert.evidence["show_id"] == stadium.show
    assert sum(v for n, v in seen if n == "VotesQuarantined") == len(bots)
    queue = stadium.moderation.list(stadium.show, limit=100)
    assert {v.vote_id for v in queue.items} == set(bots)
    assert {v.alert for v in queue.items} == {fingerprint}
    assert len({v.incident_id for v in queue.items}) == 1  # one alert, one incident

    # The tallies counted the farm with the fans; the flags' own stream records take it out,
    # and they are not votes: the engine is not shown them.
    before = sum(engine.shown)
    flags = stadium.deliver(processor)
    assert flags == len(bots)
    assert sum(engine.shown) == before
    fan_counts: dict[str, list[int]] = {}
    for i in range(len(fans)):
        fan_counts.setdefault(stadium.song(i % 3), [0, 0])[0] += 1
    assert stadium.counted() == {song: (up, down) for song, (up, down) in fan_counts.items()}
    assert stadium.alerts.open_alert(fingerprint).count == alert.count  # type: ignore[union-attr]

    # A moderator releases one bot (a false positive): it counts again; replays change nothing.
    stadium.moderation.decide(bots[0], ModerationAction.RELEASE, "mod-1", None, dt.datetime.now(dt.UTC))
    stadium.deliver(processor)
    assert stadium.counted()[stadium.song(0)] == (fan_counts[stadium.song(0)][0] + 1, 0)


def test_a_bot_that_removes_its_quarantined_vote_and_votes_again_is_quarantined_again(
    stadium: Stadium, valkey: Any
) -> None:
    config = FraudConfig()
    engine = CountingEngine(FraudEngine(config, window(valkey.url, config)))
    processor = stadium.processor(observer_for(stadium, engine, lambda n, v: None))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)
    bots = stadium.farm(start)
    stadium.deliver(processor)
    stadium.deliver(processor)  # the flags' own records
    assert {stadium.state(v) for v in bots} == {"quarantined"}
    # bot 0 toggles its quarantined vote off (the item is deleted), then casts it again
    bot, again = f"bot-{stadium.artist}-0", start + dt.timedelta(seconds=40)
    ip, created = f"{stadium.farm_net}.20", start - dt.timedelta(hours=2)
    stadium.cast(bot, 0, again, ip=ip, agent=FARM_AGENT, created=created)
    assert stadium.song(0) not in stadium.votes.votes_of(stadium.show, bot)
    stadium.deliver(processor)
    assert stadium.cast(bot, 0, again, ip=ip, agent=FARM_AGENT, created=created) == bots[0]
    stadium.deliver(processor)  # the new vote: judged again, with the farm still in the window
    stadium.deliver(processor)  # its flag's record
    assert stadium.state(bots[0]) == "quarantined"
    assert stadium.counted().get(stadium.song(0), (0, 0)) == (0, 0)


def test_with_valkey_away_votes_are_counted_and_the_gap_recorded(stadium: Stadium) -> None:
    import redis

    from tests.support.valkey import free_port

    config = FraudConfig()
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=0.2, socket_connect_timeout=0.2)
    engine = FraudEngine(config, ValkeyRecentVotes.for_config(dead, config))
    seen: list[tuple[str, float]] = []
    processor = stadium.processor(observer_for(stadium, engine, lambda n, v: seen.append((n, v))))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)

    bots = stadium.farm(start)
    stadium.deliver(processor)

    assert stadium.counted() == {stadium.song(0): (12, 0), stadium.song(1): (12, 0)}
    assert {stadium.state(v) for v in bots} == {None}
    assert ("FraudDetectionDegraded", 1) in seen
    gap = stadium.alerts.open_alert("fraud_detection#detection")
    assert gap is not None
    assert gap.severity.value == "warning"
    assert "window" in gap.evidence["detail"]
