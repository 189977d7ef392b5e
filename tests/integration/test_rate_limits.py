"""Rate limits against a real Valkey and through the real handlers.

The script is checked with two limiters on two clients (two containers) sharing one budget;
the handlers answer 429 with ``Retry-After`` and a body a client developer can act on, change
nothing stored, and keep working under per-container limits when Valkey stops.

The session's Valkey and moto are shared by every test of a worker: each test charges its own
users and addresses. Budgets whose period is an hour (set through the same overrides a
deployment uses) keep the counts exact however slowly the machine runs: GCRA refills one
request per ``period / limit``, a minute here, never within a test.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mysetlist import ratelimit
from mysetlist.breaker import Dependency, breaker_for
from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines
from mysetlist.ratelimit import Budget, RateLimiter, Scope, Subject, use_limiter
from mysetlist.settings import Settings
from mysetlist.valkey import plain_key
from mysetlist.votes_store import VotesStore
from tests.harness.events import LambdaContext, claims_for, http_event
from tests.integration.conftest import Issuer
from tests.support.valkey import LocalValkey, running_valkey

FUTURE = (dt.date.today() + dt.timedelta(days=40)).isoformat()
SHOW = f"grateful-dead:{FUTURE}"
SONGS = ["grateful-dead:mindbender", "grateful-dead:sick-and-tired", "grateful-dead:dark-star"]
HOUR = 3600


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unique_address() -> str:
    """An address no other test charges (10.0.0.0/8 has 16 million)."""
    n = uuid.uuid4().int % (1 << 24)
    return f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


def invoke(handler: Any, event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names) and decoded body of one HTTP invocation."""
    response = handler(event, LambdaContext())
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    body = response.get("body")
    return int(response["statusCode"]), headers, json.loads(body) if body else None


def from_address(event: dict[str, Any], address: str) -> dict[str, Any]:
    event["requestContext"]["http"]["sourceIp"] = address
    return event


def vote(user: str, song: str, address: str, vote_type: str = "up") -> dict[str, Any]:
    body = {"show_id": SHOW, "song_id": song, "vote_type": vote_type}
    return from_address(http_event("POST /api/votes", body=body, claims=claims_for(user, "user")), address)


@pytest.fixture(scope="module")
def catalog(aws: dict[str, str], dynamodb: Any, settings: Any, sample_lines: list[str]) -> CatalogStore:
    store = CatalogStore(dynamodb, settings.catalog_table)
    upcoming = json.dumps({"artist": "Grateful Dead", "date": FUTURE, "venue": "Winterland", "sets": []})
    import_lines(store, [*sample_lines, upcoming], warn=lambda _: None)
    return store


@pytest.fixture
def votes(dynamodb: Any, settings: Any) -> VotesStore:
    return VotesStore(dynamodb, settings.votes_table)


@pytest.fixture
def limits(aws: dict[str, str], valkey: LocalValkey) -> Iterator[Any]:
    """``limits(overrides)`` makes the container's limiter one with those overrides on the
    session's Valkey (what RATE_LIMIT_OVERRIDES does in a deployment); restored afterwards."""
    previous = ratelimit.shared_limiter()

    def install(overrides: dict[str, str], cache_url: str = valkey.url) -> RateLimiter:
        limiter = RateLimiter.from_settings(
            Settings(cache_url=cache_url, rate_limit_overrides=json.dumps(overrides))
        )
        use_limiter(limiter)
        return limiter

    yield install
    use_limiter(previous)


# ------------------------------------------------------------------ the script, two containers


def test_two_containers_share_one_budget_through_the_script(valkey: LocalValkey) -> None:
    budget = Budget("it.shared", 5, HOUR, Scope.USER, "shared requests")
    clients = [redis.Redis.from_url(valkey.url), redis.Redis.from_url(valkey.url)]
    containers = [RateLimiter({budget.name: budget}, lambda c=c: c) for c in clients]  # type: ignore[misc]
    subject = Subject(Scope.USER, unique("sharer"))
    decisions = [containers[i % 2].check(budget.name, subject) for i in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False, False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert not any(d.degraded for d in decisions)
    interval = HOUR / 5  # 720 s until one request comes back
    assert interval - 60 < decisions[5].retry_after <= interval
    assert HOUR - 60 < decisions[5].reset_after <= HOUR

    key = plain_key("rl", budget.name, subject.key)
    stored = clients[0].get(key)
    ttl_ms = clients[0].pttl(key)
    assert 0 < ttl_ms <= HOUR * 1000  # the key lives at most one period
    assert not containers[1].check(budget.name, subject).allowed
    assert clients[0].get(key) == stored  # a refusal writes nothing

    other = Subject(Scope.USER, unique("sharer"))
    assert containers[0].check(budget.name, other).allowed  # another subject: its own bucket


def test_the_script_is_reloaded_when_valkey_forgot_it(valkey: LocalValkey) -> None:
    budget = Budget("it.reload", 3, HOUR, Scope.ADDRESS, "reloads")
    client = redis.Redis.from_url(valkey.url)
    limiter = RateLimiter({budget.name: budget}, lambda: client)
    subject = Subject(Scope.ADDRESS, unique_address())
    assert limiter.check(budget.name, subject).remaining == 2
    client.script_flush()  # a restarted or failed-over server knows no scripts
    again = limiter.check(budget.name, subject)
    assert (again.allowed, again.remaining, again.degraded) == (True, 1, False)


# ------------------------------------------------------------------ 429 through the handlers


def test_the_61st_vote_is_429_and_changes_nothing(
    votes_api: Any, catalog: CatalogStore, votes: VotesStore, limits: Any
) -> None:
    limits({"votes.cast": f"60/{HOUR}"})
    user, address = unique("voter"), unique_address()
    remaining: list[int] = []
    for n in range(60):  # toggles: an even number of votes per song leaves no vote
        status, headers, body = invoke(votes_api, vote(user, SONGS[n % 2], address))
        assert status == 200, body
        remaining.append(int(headers["ratelimit-remaining"]))
        assert headers["ratelimit-limit"] == "60"
    assert remaining == list(range(59, -1, -1))
    before = votes.votes_of(SHOW, user)
    assert before == {}

    status, headers, body = invoke(votes_api, vote(user, SONGS[2], address))
    assert status == 429
    retry = int(headers["retry-after"])
    assert 1 <= retry <= 60  # the next request comes back after period / limit
    assert headers["ratelimit-remaining"] == "0"
    assert headers["ratelimit-policy"] == f"60;w={HOUR}"
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["message"] == (
        f"too many vote requests: the limit is 60 per {HOUR} seconds per user; "
        f"retry in {retry} second{'s' if retry != 1 else ''}"
    )
    assert body["error"]["details"] == {
        "budget": "votes.cast",
        "limit": 60,
        "period_seconds": HOUR,
        "scope": "user",
        "retry_after_seconds": retry,
    }
    assert votes.votes_of(SHOW, user) == before  # the vote it asked for was not cast

    status, _, body = invoke(votes_api, vote(unique("other-voter"), SONGS[2], address))
    assert (status, body["action"]) == (200, "created")  # another user, same address: unaffected


def test_the_default_vote_budget_is_the_issue_figure(votes_api: Any, catalog: CatalogStore) -> None:
    status, headers, _ = invoke(votes_api, vote(unique("voter"), SONGS[0], unique_address()))
    assert status == 200
    assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("60", "59")
    assert headers["ratelimit-policy"] == "60;w=60"


def test_authentication_comes_before_a_user_budget(
    votes_api: Any, catalog_api: Any, catalog: CatalogStore, limits: Any
) -> None:
    limits({"votes.cast": f"1/{HOUR}", "catalog.write": f"1/{HOUR}"})
    address = unique_address()
    anonymous = from_address(
        http_event("POST /api/votes", body={"show_id": SHOW, "song_id": SONGS[0], "vote_type": "up"}),
        address,
    )
    assert [invoke(votes_api, anonymous)[0] for _ in range(3)] == [401, 401, 401]  # never 429

    setlist = {"sets": [{"name": "Set 1", "songs": ["Bertha"]}]}

    def put(user: str, *groups: str) -> int:
        event = http_event(
            "PUT /api/shows/{show_id}/setlist",
            path={"show_id": "grateful-dead:1800-01-01"},
            body=setlist,
            claims=claims_for(user, *groups),
        )
        return invoke(catalog_api, from_address(event, address))[0]

    # A body that is not JSON is refused before any dependency runs: it costs nothing either.
    garbled = http_event("POST /api/votes", raw_body="{not json", claims=claims_for(unique("voter"), "user"))
    garbled = from_address(garbled, address)
    assert [invoke(votes_api, garbled)[0] for _ in range(2)] == [422, 422]
    user = garbled["requestContext"]["authorizer"]["jwt"]["claims"]["sub"]
    assert [invoke(votes_api, vote(user, SONGS[0], address))[0] for _ in range(2)] == [200, 429]

    fan = unique("fan")
    assert [put(fan, "user") for _ in range(3)] == [403, 403, 403]  # the role check first
    moderator = unique("moderator")
    # The limit comes before the business logic: the unknown show's 404 costs the budget.
    assert [put(moderator, "moderator") for _ in range(2)] == [404, 429]
    assert put(unique("moderator"), "moderator") == 404  # another moderator: a budget of their own


def test_an_address_budget_is_charged_before_the_token_and_the_parameters(
    votes_api: Any, catalog: CatalogStore, issuer: Issuer, limits: Any
) -> None:
    limits({"votes.read": f"3/{HOUR}"})
    address = unique_address()
    forged = from_address(
        http_event(
            "GET /api/votes", query={"show_id": SHOW}, headers={"authorization": "Bearer abc.def.ghi"}
        ),
        address,
    )
    missing = from_address(http_event("GET /api/votes"), address)
    assert [invoke(votes_api, e)[0] for e in (forged, forged, missing)] == [401, 401, 422]
    status, _, body = invoke(votes_api, forged)
    assert status == 429
    assert body["error"]["details"]["scope"] == "address"
    assert "per client address" in body["error"]["message"]
    signed = from_address(
        http_event(
            "GET /api/votes",
            query={"show_id": SHOW},
            headers={"authorization": f"Bearer {issuer.token(unique('reader'))}"},
        ),
        address,
    )
    assert invoke(votes_api, signed)[0] == 429  # a valid token does not lift an address budget
    elsewhere = from_address(http_event("GET /api/votes", query={"show_id": SHOW}), unique_address())
    assert invoke(votes_api, elsewhere)[0] == 200


def test_every_catalogue_read_shares_the_address_budget(
    catalog_api: Any, catalog: CatalogStore, limits: Any
) -> None:
    limits({"catalog.read": f"4/{HOUR}"})
    address = unique_address()
    reads = [
        http_event("GET /api/artists", query={"query": "grate"}),
        http_event("GET /api/artists/{artist_id}", path={"artist_id": "grateful-dead"}),
        http_event("GET /api/artists/{artist_id}/songs", path={"artist_id": "grateful-dead"}),
        http_event("GET /api/shows"),
        http_event("GET /api/shows/{show_id}", path={"show_id": SHOW}),
    ]
    statuses = [invoke(catalog_api, from_address(e, address))[0] for e in reads]
    assert statuses == [200, 200, 200, 200, 429]
    # IPv6: one /64 is one client, whichever address of it it uses.
    network = f"2001:db8:{uuid.uuid4().int % 65536:x}:{uuid.uuid4().int % 65536:x}"
    first, second = f"{network}::1", f"{network}:1234:5678:9abc:def0"
    for _ in range(4):
        assert invoke(catalog_api, from_address(http_event("GET /api/shows"), first))[0] == 200
    assert invoke(catalog_api, from_address(http_event("GET /api/shows"), second))[0] == 429


# ------------------------------------------------------------------ Valkey stops


def test_with_valkey_stopped_requests_succeed_under_per_container_limits(
    votes_api: Any, catalog: CatalogStore, limits: Any, tmp_path: Path
) -> None:
    with running_valkey(tmp_path / "valkey") as own:
        limiter = limits({"votes.cast": f"5/{HOUR}"}, cache_url=own.url)
        user, address = unique("voter"), unique_address()
        for n in range(3):
            assert invoke(votes_api, vote(user, SONGS[n % 2], address))[0] == 200
        shared = redis.Redis.from_url(own.url)
        assert shared.exists(plain_key("rl", "votes.cast", f"user:{user}"))
        assert len(limiter.local) == 0
        own.stop()

        # Valkey is gone: the budget is kept by this container alone, never an error.
        statuses = [invoke(votes_api, vote(user, SONGS[n % 2], address))[0] for n in range(6)]
        assert statuses == [200] * 5 + [429]
        assert len(limiter.local) == 1
        assert invoke(votes_api, vote(unique("voter"), SONGS[0], address))[0] == 200
    # The stopped server may have opened the container's VALKEY circuit: close it again so
    # that later tests (on the session's healthy Valkey) start from a closed one.
    breaker_for(Dependency.VALKEY).reset()
