"""Fans, end to end against moto and a real Valkey: a vote on an artist's show makes the voter a
follower of that artist (UsersTable ``FAN#`` items), the AbTestingApi then serves them an
experiment targeted at the artist's followers while everyone else gets the default content, the
first vote's time is kept, a relation costs at most one write an hour across containers, and a
UsersTable that fails never fails a vote or a content request."""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from typing import Any

import pytest

from mysetlist.cache import build_cache
from mysetlist.catalog_store import CatalogStore
from mysetlist.fans import FanStore, Recorded, record_key
from mysetlist.importer import import_lines
from mysetlist.votes_store import VotesStore
from tests.harness.events import call_http, claims_for, http_event
from tests.harness.fakes import throttled
from tests.integration.conftest import Issuer
from tests.support.template import load_handler, module_name_for

ROUTE = "/api/content/ab-testing"
FUTURE = (dt.date.today() + dt.timedelta(days=30)).isoformat()
PAST = "2001-05-05"
GOOSE, PANIC = "goose", "widespread-panic"
SONGS = {GOOSE: f"{GOOSE}:arcadia", PANIC: f"{PANIC}:chilly-water"}


@pytest.fixture(scope="module")
def shows(aws: dict[str, str], dynamodb: Any, settings: Any) -> None:
    """Two artists, each with a past show (its songs make the artist's catalogue) and an
    upcoming one that takes votes."""
    lines = []
    for name, title in [("Goose", "Arcadia"), ("Widespread Panic", "Chilly Water")]:
        past = {"artist": name, "date": PAST, "sets": [{"name": "Set 1", "songs": [title]}]}
        lines += [json.dumps(past), json.dumps({"artist": name, "date": FUTURE, "sets": []})]
    import_lines(CatalogStore(dynamodb, settings.catalog_table), lines, warn=lambda _: None)


@pytest.fixture(scope="module")
def api(aws: dict[str, str]) -> Any:
    return load_handler("AbTestingApi")


@pytest.fixture(scope="module")
def ab_module(api: Any) -> Any:
    return sys.modules[module_name_for("AbTestingApi")]


@pytest.fixture(scope="module")
def votes_module(votes_api: Any) -> Any:
    return sys.modules[module_name_for("VotesApi")]


class UsersClient:
    """The real DynamoDB client, counting PutItem calls; the first ``put_faults`` of them are
    throttled, and every Query fails while ``queries_fail``."""

    def __init__(self, real: Any, put_faults: int = 0, *, queries_fail: bool = False) -> None:
        self._real = real
        self.put_faults = put_faults
        self.queries_fail = queries_fail
        self.puts = 0

    def put_item(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.put_faults > 0:
            self.put_faults -= 1
            raise throttled()
        return self._real.put_item(**kwargs)

    def query(self, **kwargs: Any) -> Any:
        if self.queries_fail:
            raise throttled()
        return self._real.query(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def fans_on(client: UsersClient, settings: Any, cache: Any) -> FanStore:
    """A FanStore on the wrapped client (a container of its own: its own memo)."""
    return FanStore(client, settings.users_table, cache)  # type: ignore[arg-type]


def someone(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:10]}"


def vote(
    votes_api: Any, user: str, artist: str, vote_type: str = "up", show_date: str = FUTURE
) -> tuple[int, Any]:
    body = {"show_id": f"{artist}:{show_date}", "song_id": SONGS[artist], "vote_type": vote_type}
    return call_http(votes_api, http_event("POST /api/votes", body=body, claims=claims_for(user, "user")))


def cast(votes_api: Any, user: str, artist: str, vote_type: str = "up") -> str:
    status, reply = vote(votes_api, user, artist, vote_type)
    assert status == 200, reply
    return str(reply["action"])


def fan_item(dynamodb: Any, settings: Any, user: str, artist: str) -> dict[str, str] | None:
    found = dynamodb.get_item(
        TableName=settings.users_table, Key={"PK": {"S": f"USER#{user}"}, "SK": {"S": f"FAN#{artist}"}}
    )
    item = found.get("Item")
    return {name: value["S"] for name, value in item.items()} if item else None


def ab_call(
    api: Any,
    issuer: Issuer,
    method: str,
    query: dict[str, str],
    *,
    user: str | None = None,
    groups: tuple[str, ...] = ("user",),
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    sent = dict(headers or {})
    if user is not None:
        sent["authorization"] = f"Bearer {issuer.token(user, *groups)}"
    return call_http(api, http_event(f"{method} {ROUTE}", query=query, headers=sent, body=body))


def served(api: Any, issuer: Issuer, where: str, user: str | None = None, device: str | None = None) -> Any:
    headers = {"x-device-id": device} if device else {}
    status, reply = ab_call(
        api, issuer, "GET", {"content_type": "banner", "placement": where}, user=user, headers=headers
    )
    assert status == 200, reply
    return reply


def followers_experiment(api: Any, issuer: Issuer, where: str, artist: str) -> str:
    """A running experiment on ``where`` for ``artist``'s followers only, and a default content."""
    manager, groups = someone("cm"), ("content_manager",)
    status, reply = ab_call(
        api,
        issuer,
        "POST",
        {"action": "default_content"},
        body={"content_type": "banner", "placement": where, "content": {"headline": "Hello"}},
        user=manager,
        groups=groups,
    )
    assert status == 200, reply
    definition = {
        "name": f"{artist} fans' hero",
        "content_type": "banner",
        "placement": where,
        "targeting": {"artist_followers": [artist]},
        "variants": [
            {"name": "Control", "content": {"headline": "Fans: vote"}, "weight": 50, "is_control": True},
            {"name": "Urgent", "content": {"headline": "Fans: vote now"}, "weight": 50},
        ],
    }
    status, reply = ab_call(api, issuer, "POST", {}, body=definition, user=manager, groups=groups)
    assert status == 201, reply
    test_id = str(reply["test"]["test_id"])
    status, reply = ab_call(
        api, issuer, "PATCH", {"test_id": test_id, "action": "start"}, user=manager, groups=groups
    )
    assert status == 200, reply
    return test_id


def test_a_voter_is_served_the_followers_experiment_and_everyone_else_the_default(
    api: Any,
    ab_module: Any,
    votes_api: Any,
    issuer: Issuer,
    settings: Any,
    dynamodb: Any,
    shows: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The AbTestingApi as a container of its own: its own L1, the same Valkey as the VotesApi.
    elsewhere = build_cache(settings.model_copy(update={"cache_version_check_seconds": 0.0}))
    monkeypatch.setattr(ab_module, "fans", FanStore(dynamodb, settings.users_table, elsewhere))
    where = f"fans-{uuid.uuid4().hex[:8]}"
    test_id = followers_experiment(api, issuer, where, GOOSE)
    fan, panic_fan, stranger = someone("fan"), someone("panic-fan"), someone("stranger")

    # Not a follower yet: the default content (and an empty set cached for five minutes).
    assert served(api, issuer, where, fan)["source"] == "default"
    assert cast(votes_api, fan, GOOSE) == "created"
    assert fan_item(dynamodb, settings, fan, GOOSE) is not None
    mine = served(api, issuer, where, fan)  # the vote dropped the cached set everywhere
    assert (mine["source"], mine["test_id"]) == ("experiment", test_id), mine
    assert mine["content"] in ({"headline": "Fans: vote"}, {"headline": "Fans: vote now"})

    assert cast(votes_api, panic_fan, PANIC) == "created"  # a fan of another artist
    for user in (panic_fan, stranger):
        other = served(api, issuer, where, user)
        assert (other["source"], other["content"], other["test_id"]) == (
            "default",
            {"headline": "Hello"},
            None,
        )
    anonymous = served(api, issuer, where, device=f"device-{where}")
    assert (anonymous["source"], anonymous["test_id"]) == ("default", None)


def test_the_first_vote_time_is_kept_and_written_at_most_once_an_hour(
    votes_api: Any,
    votes_module: Any,
    settings: Any,
    dynamodb: Any,
    shows: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = someone("fan")
    counting = UsersClient(dynamodb)
    monkeypatch.setattr(votes_module, "fans", fans_on(counting, settings, votes_module.cache))
    before = dt.datetime.now(dt.UTC)
    assert cast(votes_api, user, GOOSE) == "created"
    first = fan_item(dynamodb, settings, user, GOOSE)
    assert first is not None
    assert (first["PK"], first["SK"], first["artist_id"]) == (f"USER#{user}", f"FAN#{GOOSE}", GOOSE)
    assert before <= dt.datetime.fromisoformat(first["since"]) <= dt.datetime.now(dt.UTC)
    assert [cast(votes_api, user, GOOSE, t) for t in ("down", "down", "up")] == [
        "updated",
        "removed",
        "created",
    ]
    assert counting.puts == 1

    # Another container (its own memo and L1, the same Valkey) knows it is recorded.
    other_client = UsersClient(dynamodb)
    other = fans_on(other_client, settings, build_cache(settings))
    assert other.record(user, GOOSE, dt.datetime.now(dt.UTC)) is Recorded.KNOWN
    assert other_client.puts == 0

    # An hour on (the marker gone, a fresh container): one conditional write, the first time kept.
    votes_module.cache.delete(record_key(user, GOOSE))
    later = UsersClient(dynamodb)
    monkeypatch.setattr(votes_module, "fans", fans_on(later, settings, votes_module.cache))
    assert cast(votes_api, user, GOOSE, "down") == "updated"
    assert later.puts == 1
    assert fan_item(dynamodb, settings, user, GOOSE) == first


def test_only_a_vote_cast_makes_a_fan_not_a_removal_nor_a_refusal(
    votes_api: Any,
    votes_module: Any,
    settings: Any,
    dynamodb: Any,
    shows: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = someone("fan")
    counting = UsersClient(dynamodb)
    monkeypatch.setattr(votes_module, "fans", fans_on(counting, settings, votes_module.cache))
    status, reply = vote(votes_api, user, PANIC, show_date=PAST)
    assert status == 422, reply  # voting on a past show is closed
    assert cast(votes_api, user, GOOSE) == "created"
    assert counting.puts == 1

    # Forget the relation everywhere, then remove the vote: a removal records nothing.
    dynamodb.delete_item(
        TableName=settings.users_table, Key={"PK": {"S": f"USER#{user}"}, "SK": {"S": f"FAN#{GOOSE}"}}
    )
    votes_module.cache.delete(record_key(user, GOOSE))
    fresh = UsersClient(dynamodb)
    monkeypatch.setattr(votes_module, "fans", fans_on(fresh, settings, votes_module.cache))
    assert cast(votes_api, user, GOOSE) == "removed"
    assert fresh.puts == 0
    assert fan_item(dynamodb, settings, user, GOOSE) is None
    assert fan_item(dynamodb, settings, user, PANIC) is None


def test_a_throttled_users_table_never_fails_the_vote_and_the_next_vote_records(
    votes_api: Any,
    votes_module: Any,
    settings: Any,
    dynamodb: Any,
    shows: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = someone("fan")
    flaky = UsersClient(dynamodb, put_faults=1)
    monkeypatch.setattr(votes_module, "fans", fans_on(flaky, settings, votes_module.cache))
    assert cast(votes_api, user, GOOSE) == "created"
    assert VotesStore(dynamodb, settings.votes_table).votes_of(f"{GOOSE}:{FUTURE}", user) == {
        SONGS[GOOSE]: "up"
    }
    assert fan_item(dynamodb, settings, user, GOOSE) is None
    assert cast(votes_api, user, GOOSE, "down") == "updated"  # the failure was not remembered
    assert flaky.puts == 2
    assert fan_item(dynamodb, settings, user, GOOSE) is not None

    down = UsersClient(dynamodb, put_faults=10**6)
    monkeypatch.setattr(votes_module, "fans", fans_on(down, settings, votes_module.cache))
    assert cast(votes_api, user, PANIC) == "created"
    assert cast(votes_api, user, PANIC, "down") == "updated"
    assert down.puts == 2


def test_an_unreadable_users_table_serves_the_default_content(
    api: Any,
    ab_module: Any,
    votes_api: Any,
    issuer: Issuer,
    settings: Any,
    dynamodb: Any,
    shows: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    where = f"fans-{uuid.uuid4().hex[:8]}"
    followers_experiment(api, issuer, where, GOOSE)
    fan = someone("fan")
    assert cast(votes_api, fan, GOOSE) == "created"
    broken = UsersClient(dynamodb, queries_fail=True)
    monkeypatch.setattr(ab_module, "fans", fans_on(broken, settings, ab_module.cache))
    ab_module.cache.delete(f"fans:{fan}")
    assert served(api, issuer, where, fan)["source"] == "default"
    broken.queries_fail = False
    assert served(api, issuer, where, fan)["source"] == "experiment"  # the failure was not cached
