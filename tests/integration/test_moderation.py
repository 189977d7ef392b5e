"""The moderation queue against moto: votes flagged on their items (conditional updates), listed
from the sparse ByModeration index with cursors, decided through the ModerationApi (roles,
404/409/422), and the tallies following the flags through the votes stream and the real
VoteProcessor."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from mysetlist import keys
from mysetlist.dynamo import from_item, to_item
from mysetlist.models import VoteType
from mysetlist.moderation import ModerationStore, incident_id
from mysetlist.signals import ClientSignals, Incident, vote_id
from mysetlist.tallies import TallyStore
from mysetlist.votes_store import VotesStore
from tests.harness.delivery import deliver_all
from tests.harness.events import LambdaContext, call_http, claims_for, http_event, load_event
from tests.harness.fakes import throttled
from tests.harness.streams import StreamReader
from tests.support.template import load_handler

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MODERATOR = claims_for("mod-1", "moderator")


@pytest.fixture(scope="module")
def moderation_api(aws: dict[str, str]) -> Any:
    return load_handler("ModerationApi")


@pytest.fixture(autouse=True)
def roomy_limits(aws: dict[str, str]) -> Iterator[None]:
    """Each test starts with full moderation budgets (they are per moderator, shared by the
    session's tests)."""
    from mysetlist import ratelimit
    from mysetlist.settings import load_settings

    previous = ratelimit.shared_limiter()
    ratelimit.use_limiter(ratelimit.RateLimiter.from_settings(load_settings()))
    yield
    ratelimit.use_limiter(previous)


class World:
    def __init__(self, dynamodb: Any, settings: Any) -> None:
        self.db = dynamodb
        self.settings = settings
        self.votes = VotesStore(dynamodb, settings.votes_table)
        self.store = ModerationStore(dynamodb, settings.votes_table)
        self.show = f"mod-{uuid.uuid4().hex[:10]}:2031-05-01"
        self.artist = self.show.split(":")[0]

    def song(self, n: int) -> str:
        return f"{self.artist}:song-{n}"

    def vote(self, user: str, song: int, vote: VoteType = VoteType.UP, *, net: str = "203.0.113.7") -> str:
        self.votes.toggle(
            show_id=self.show,
            song_id=self.song(song),
            user_id=user,
            vote_type=vote,
            now=NOW,
            attributes={
                "artist_id": self.artist,
                **ClientSignals.from_request(
                    source_ip=net, user_agent="bot/1.0", device_id=None, account_created_at=None
                ).item_attributes(),
            },
        )
        return vote_id(self.show, user, self.song(song))

    def incident(self, *vote_ids: str, kind: str = "network_cluster") -> Incident:
        return Incident(
            kind=kind,
            severity="critical",
            entity="net:203.0.113.0/24",
            show_id=self.show,
            summary=f"{len(vote_ids)} accounts from 203.0.113.0/24 voted the same song within 20 seconds",
            evidence={"net": "203.0.113.0/24", "accounts": [f"u{i}" for i in range(40)], "window_s": 20.0},
            vote_ids=tuple(vote_ids),
        )

    def item(self, vid: str) -> dict[str, Any] | None:
        from mysetlist.signals import parse_vote_id

        parsed = parse_vote_id(vid)
        assert parsed is not None
        show, user, song = parsed
        raw = self.db.get_item(
            TableName=self.settings.votes_table,
            Key=to_item({"PK": keys.vote_pk(show, user), "SK": song}),
            ConsistentRead=True,
        ).get("Item")
        return from_item(raw) if raw else None


@pytest.fixture
def world(aws: dict[str, str], dynamodb: Any, settings: Any) -> World:
    return World(dynamodb, settings)


def listed(api: Any, show: str, state: str = "quarantined", **query: str) -> tuple[int, Any]:
    return call_http(
        api,
        http_event(
            "GET /api/moderation/votes", query={"show_id": show, "state": state, **query}, claims=MODERATOR
        ),
    )


def decide(
    api: Any, vid: str, action: str, claims: Any = MODERATOR, note: str | None = None
) -> tuple[int, Any]:
    body: dict[str, Any] = {"action": action}
    if note is not None:
        body["note"] = note
    return call_http(
        api,
        http_event("POST /api/moderation/votes/{vote_id}", path={"vote_id": vid}, body=body, claims=claims),
    )


# ---------------------------------------------------------------------------------- quarantine


def test_quarantine_flags_the_votes_and_skips_what_it_must_not_touch(world: World) -> None:
    bots = [world.vote(f"bot{i}", 0) for i in range(4)]
    removed = world.vote("bot-gone", 0)
    world.vote("bot-gone", 0)  # the same vote again: removed
    switched = world.vote("bot-switch", 1, VoteType.UP)
    world.vote("bot-switch", 1, VoteType.DOWN)
    incident = world.incident(*bots, removed, switched, "not-a-vote-id!")

    report = world.store.quarantine(incident, NOW, expected={switched: "up"})

    assert sorted(report.flagged) == sorted(bots)
    assert report.skipped == {removed: "gone", switched: "changed"}
    assert report.invalid == ["not-a-vote-id!"]
    assert report.failed == {}
    item = world.item(bots[0])
    assert item is not None
    assert item["moderation"] == "quarantined"
    assert item["ModerationKey"] == f"{world.show}#quarantined"
    assert dt.datetime.fromisoformat(item["FlaggedAt"]) == NOW
    flag = item["flag"]
    assert flag["incident_id"] == incident_id(incident) == report.incident_id
    assert (flag["kind"], flag["severity"]) == ("network_cluster", "critical")
    assert flag["evidence"]["net"] == "203.0.113.0/24"
    assert len(flag["evidence"]["accounts"]) == 10  # an excerpt
    assert flag["evidence"]["accounts_total"] == 40
    # The vote itself is untouched: its type, signals and times are what the voter sent.
    assert (item["vote_type"], item["net"]) == ("up", "203.0.113.0/24")

    again = world.store.quarantine(incident, NOW + dt.timedelta(minutes=5), expected={switched: "up"})
    assert again.flagged == []
    assert set(again.skipped.values()) == {"already_flagged_by_this_incident", "gone", "changed"}
    assert world.item(bots[0])["FlaggedAt"] == item["FlaggedAt"]  # type: ignore[index]


def test_released_and_rejected_votes_are_never_flagged_again(world: World, moderation_api: Any) -> None:
    released, rejected = world.vote("r1", 0), world.vote("r2", 0)
    world.store.quarantine(world.incident(released, rejected), NOW)
    assert decide(moderation_api, released, "release")[0] == 200
    assert decide(moderation_api, rejected, "confirm")[0] == 200

    report = world.store.quarantine(world.incident(released, rejected, kind="account_burst"), NOW)

    assert report.flagged == []
    assert report.skipped == {released: "already_released", rejected: "already_rejected"}


class ThrottlingClient:
    """The real client, whose first ``failures`` UpdateItem calls are throttled."""

    def __init__(self, real: Any, failures: int) -> None:
        self._real = real
        self.failures = failures
        self.updates = 0

    def update_item(self, **kwargs: Any) -> Any:
        self.updates += 1
        if self.failures > 0:
            self.failures -= 1
            raise throttled()
        return self._real.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_throttled_flags_are_retried_and_what_still_fails_is_reported(world: World) -> None:
    votes = [world.vote(f"t{i}", 0) for i in range(3)]
    flaky = ThrottlingClient(world.db, failures=2)
    store = ModerationStore(flaky, world.settings.votes_table, workers=1)  # type: ignore[arg-type]
    report = store.quarantine(world.incident(*votes), NOW)
    assert sorted(report.flagged) == sorted(votes)
    assert flaky.updates == 5

    more = [world.vote(f"t{i}", 1) for i in range(2)]
    down = ThrottlingClient(world.db, failures=10**6)
    store = ModerationStore(down, world.settings.votes_table, workers=1)  # type: ignore[arg-type]
    report = store.quarantine(world.incident(*more), NOW)
    assert report.flagged == []
    assert set(report.failed) == set(more)
    assert all("ThrottlingException" in reason for reason in report.failed.values())
    assert all(world.item(v) is not None and "moderation" not in world.item(v) for v in more)  # type: ignore[operator]


def test_no_flag_write_starts_without_time_left(world: World) -> None:
    votes = [world.vote(f"late{i}", 0) for i in range(3)]
    report = world.store.quarantine(world.incident(*votes), NOW, remaining_ms=lambda: 200)
    assert report.flagged == []
    assert set(report.failed.values()) == {"no time left in this invocation"}


# ---------------------------------------------------------------------------------- the queue


def test_the_queue_pages_with_cursors_newest_first(world: World, moderation_api: Any) -> None:
    votes = [world.vote(f"p{i}", i % 3) for i in range(5)]
    for minute, vid in enumerate(votes):
        world.store.quarantine(world.incident(vid), NOW + dt.timedelta(minutes=minute))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, body = listed(moderation_api, world.show, **query)
        assert status == 200, body
        seen += [v["vote_id"] for v in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(votes))
    assert pages >= 3
    first = listed(moderation_api, world.show, limit="1")[1]["items"][0]
    assert first["vote_id"] == votes[-1]
    assert (first["show_id"], first["song_id"], first["user_id"]) == (world.show, world.song(1), "p4")
    assert (first["vote_type"], first["state"], first["kind"], first["severity"]) == (
        "up",
        "quarantined",
        "network_cluster",
        "critical",
    )
    assert first["summary"].startswith("1 accounts from 203.0.113.0/24")
    assert first["evidence"]["net"] == "203.0.113.0/24"
    assert first["decided_by"] is None

    other = World(world.db, world.settings)
    status, body = listed(
        moderation_api, other.show, cursor=listed(moderation_api, world.show, limit="1")[1]["next_cursor"]
    )
    assert status == 400
    assert body["error"]["code"] == "invalid_request"


def test_decisions_move_votes_between_the_lists(world: World, moderation_api: Any) -> None:
    a, b = world.vote("d1", 0), world.vote("d2", 0)
    world.store.quarantine(world.incident(a, b), NOW)

    status, body = decide(moderation_api, a, "release", note="  a real fan on the venue wi-fi  ")
    assert status == 200, body
    assert (body["state"], body["decided_by"], body["note"]) == (
        "released",
        "mod-1",
        "a real fan on the venue wi-fi",
    )
    admin = claims_for("admin-1", "admin")
    status, body = decide(moderation_api, b, "confirm", claims=admin)
    assert status == 200, body
    assert (body["state"], body["decided_by"], body["note"]) == ("rejected", "admin-1", None)

    assert listed(moderation_api, world.show)[1]["items"] == []
    assert [v["vote_id"] for v in listed(moderation_api, world.show, "released")[1]["items"]] == [a]
    assert [v["vote_id"] for v in listed(moderation_api, world.show, "rejected")[1]["items"]] == [b]
    item = world.item(a)
    assert item is not None
    assert (item["moderation"], item["ModerationKey"]) == ("released", f"{world.show}#released")
    assert item["flag"]["kind"] == "network_cluster"  # the evidence stays with the vote


def test_decision_errors(world: World, moderation_api: Any) -> None:
    flagged, clean = world.vote("e1", 0), world.vote("e2", 0)
    world.store.quarantine(world.incident(flagged), NOW)
    assert decide(moderation_api, flagged, "confirm")[0] == 200

    status, body = decide(moderation_api, flagged, "release")
    assert status == 409
    assert "already rejected by mod-1" in body["error"]["message"]
    assert body["error"]["details"]["state"] == "rejected"

    status, body = decide(moderation_api, clean, "release")
    assert status == 409
    assert "is not flagged" in body["error"]["message"]

    status, body = decide(moderation_api, vote_id(world.show, "nobody", world.song(0)), "release")
    assert status == 404
    assert body["error"]["code"] == "not_found"

    status, body = decide(moderation_api, "not!a!vote", "release")
    assert status == 422
    assert "is not a vote id" in body["error"]["message"]

    status, body = decide(moderation_api, flagged, "delete")
    assert status == 422
    assert body["error"]["code"] == "validation_error"

    status, body = decide(moderation_api, flagged, "release", note="x" * 501)
    assert status == 422


def test_only_moderators_and_admins_may_use_the_queue(world: World, moderation_api: Any) -> None:
    vid = world.vote("f1", 0)
    world.store.quarantine(world.incident(vid), NOW)
    fan = claims_for("fan-1", "user")
    for event in (
        http_event("GET /api/moderation/votes", query={"show_id": world.show}, claims=fan),
        http_event(
            "POST /api/moderation/votes/{vote_id}",
            path={"vote_id": vid},
            body={"action": "release"},
            claims=fan,
        ),
    ):
        status, body = call_http(moderation_api, event)
        assert status == 403
        assert "moderator, admin" in body["error"]["message"]
    status, _ = call_http(
        moderation_api, http_event("GET /api/moderation/votes", query={"show_id": world.show})
    )
    assert status == 401
    assert world.item(vid)["moderation"] == "quarantined"  # type: ignore[index]


def test_list_validation(world: World, moderation_api: Any) -> None:
    assert listed(moderation_api, world.show, state="pending")[0] == 422
    assert listed(moderation_api, world.show, limit="0")[0] == 422
    status, _ = call_http(moderation_api, http_event("GET /api/moderation/votes", claims=MODERATOR))
    assert status == 422  # show_id is required
    assert listed(moderation_api, world.show, cursor="garbage")[0] == 400


def test_the_canonical_events(world: World, moderation_api: Any) -> None:
    """events/moderation_api (also for sam local invoke -e) against the deployed code."""
    status, body = call_http(moderation_api, load_event("moderation_api/list_flagged_votes.json"))
    assert status == 200, body
    status, body = call_http(moderation_api, load_event("moderation_api/decide_on_vote.json"))
    assert status == 404  # no such vote in this table: the route, role and body were accepted
    assert body["error"]["code"] == "not_found"


def test_moderation_budget_refuses_a_flood(world: World, moderation_api: Any) -> None:
    from mysetlist import ratelimit
    from mysetlist.settings import load_settings

    tight = load_settings().model_copy(update={"rate_limit_overrides": '{"moderation.write": "2/60"}'})
    ratelimit.use_limiter(ratelimit.RateLimiter.from_settings(tight))
    vid = vote_id(world.show, "nobody", world.song(0))
    moderator = claims_for(f"mod-{uuid.uuid4().hex}", "moderator")  # a bucket of its own
    statuses = [decide(moderation_api, vid, "release", claims=moderator)[0] for _ in range(3)]
    assert statuses == [404, 404, 429]


# ---------------------------------------------------------------------------------- tallies


def test_tallies_follow_flags_and_decisions_through_the_stream(
    world: World, dynamodb: Any, settings: Any, vote_processor: Any, moderation_api: Any
) -> None:
    arn = dynamodb.describe_table(TableName=settings.votes_table)["Table"]["LatestStreamArn"]
    reader = StreamReader(boto3.client("dynamodbstreams"), arn)
    reader.new_records()
    tallies = TallyStore(dynamodb, settings.tallies_table, marker_ttl_seconds=3600)

    def process() -> dict[str, tuple[int, int]]:
        deliver_all(
            reader.new_records(),
            lambda event: vote_processor(event, LambdaContext(function_name="VoteProcessor")),
            rng=random.Random(3),
        )
        return {c.song_id: (c.up, c.down) for c in tallies.read(world.show) if c.up or c.down}

    # The fans vote from their own networks: the VoteProcessor's own detectors (wired in, with
    # Valkey) must not take them for the bots, who share one address and one user agent.
    fans = [world.vote(f"fan{i}", 0, net=f"198.51.{100 + i}.9") for i in range(3)]
    bots = [world.vote(f"bot{i}", 0) for i in range(5)] + [world.vote("bot0", 1, VoteType.DOWN)]
    assert process() == {world.song(0): (8, 0), world.song(1): (0, 1)}

    world.store.quarantine(world.incident(*bots), NOW)
    assert process() == {world.song(0): (3, 0)}

    assert decide(moderation_api, bots[0], "release")[0] == 200  # a false positive counts again
    assert decide(moderation_api, bots[1], "confirm")[0] == 200  # stays excluded
    assert decide(moderation_api, bots[-1], "release")[0] == 200
    assert process() == {world.song(0): (4, 0), world.song(1): (0, 1)}

    world.vote("bot2", 0)  # a quarantined vote removed by its voter: nothing changes
    world.vote("bot3", 0, VoteType.DOWN)  # switched while quarantined: still excluded
    assert process() == {world.song(0): (4, 0), world.song(1): (0, 1)}
    assert len(fans) == 3
