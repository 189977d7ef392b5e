"""PredictionsApi in-process against moto and Valkey: every route, every error a client can act
on, the budget, the timeframe metrics against an independent computation over the stored score
items, stale flags after a weights change, and degradation (an open circuit, a throttled table)
that answers 503 and changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from mysetlist import keys
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import client_for, from_item, to_item
from mysetlist.importer import import_lines
from mysetlist.predictions.store import PredictionsStore, ScoreRecord
from tests.harness.events import LambdaContext, call_http, claims_for, http_event, load_event
from tests.support.template import load_handler, module_name_for
from tests.support.valkey import running_valkey

ROUTE = "/api/ml/predictions"
ARTIST = "Oracle Dead"
ARTIST_ID = "oracle-dead"
TODAY = dt.datetime.now(dt.UTC).date()
UPCOMING = f"{ARTIST_ID}:{TODAY + dt.timedelta(days=10)}"
RECENT = f"{ARTIST_ID}:{TODAY - dt.timedelta(days=5)}"
TOO_OLD = f"{ARTIST_ID}:{TODAY - dt.timedelta(days=40)}"
NEWCOMER = f"newcomer-band:{TODAY + dt.timedelta(days=12)}"
WEIGHTS = {
    "artist": 0.3,
    "venue": 0.2,
    "genre": 0.2,
    "popularity": 0.1,
    "historical": 0.1,
    "recentTrends": 0.1,
}


def user(*groups: str) -> dict[str, Any]:
    """Claims of a new user (each has a budget of its own)."""
    return claims_for(f"u-{uuid.uuid4().hex[:12]}", *(groups or ("user",)))


ADMIN_GROUPS = ("admin",)


@pytest.fixture(scope="module")
def predictions_api(aws: dict[str, str]) -> Any:
    return load_handler("PredictionsApi")


@pytest.fixture(scope="module")
def app_module(predictions_api: Any) -> Any:
    return sys.modules[module_name_for("PredictionsApi")]


@pytest.fixture(scope="module")
def store(aws: dict[str, str], dynamodb: Any, settings: Any) -> PredictionsStore:
    return PredictionsStore(dynamodb, settings.predictions_table)


@pytest.fixture(scope="module")
def catalog(aws: dict[str, str], dynamodb: Any, settings: Any, sample_lines: list[str]) -> CatalogStore:
    """A history of 120 shows (the Grateful Dead sample under another name), shows ahead and
    behind, and an artist with no setlist yet."""
    store = CatalogStore(dynamodb, settings.catalog_table)
    lines = []
    for line in sample_lines:
        record = json.loads(line)
        record.pop("show_id", None)
        record["artist"] = ARTIST
        lines.append(json.dumps(record))
    for show_id in (UPCOMING, RECENT, TOO_OLD):
        lines.append(json.dumps({"artist": ARTIST, "date": show_id.split(":")[1], "venue": "Fillmore West"}))
    lines.append(json.dumps({"artist": "Newcomer Band", "date": NEWCOMER.split(":")[1], "venue": "Cafe"}))
    import_lines(store, lines, warn=lambda _: None)
    return store


@pytest.fixture(scope="module", autouse=True)
def clean_weights_afterwards(aws: dict[str, str], dynamodb: Any, settings: Any) -> Iterator[None]:
    """The session's tables are shared: the weights go back to their defaults (no item) after
    this module, as do the predictions and scores it stored."""
    yield
    for pk_prefix in (
        keys.WEIGHTS_PK,
        keys.model_pk(ARTIST_ID),
        f"SHOW#{ARTIST_ID}:",
        "SHOW#newcomer-band:",
        "SHOW#scored-",
    ):
        for page in dynamodb.get_paginator("scan").paginate(
            TableName=settings.predictions_table, ProjectionExpression="PK, SK"
        ):
            for item in page["Items"]:
                if item["PK"]["S"].startswith(pk_prefix):
                    dynamodb.delete_item(TableName=settings.predictions_table, Key=item)


@pytest.fixture(autouse=True)
def fresh_limits(aws: dict[str, str]) -> Iterator[None]:
    """Each test starts with full budgets."""
    from mysetlist import ratelimit
    from mysetlist.settings import load_settings

    previous = ratelimit.shared_limiter()
    ratelimit.use_limiter(ratelimit.RateLimiter.from_settings(load_settings()))
    yield
    ratelimit.use_limiter(previous)


def post(api: Any, body: Any, claims: dict[str, Any] | None = None, **kwargs: Any) -> tuple[int, Any]:
    return call_http(api, http_event(f"POST {ROUTE}", body=body, claims=claims or user(), **kwargs))


def get(api: Any, claims: dict[str, Any] | None = None, /, **query: str) -> tuple[int, Any]:
    return call_http(api, http_event(f"GET {ROUTE}", query=query, claims=claims or user()))


def patch(api: Any, body: Any, claims: dict[str, Any] | None = None, **kwargs: Any) -> tuple[int, Any]:
    return call_http(
        api, http_event(f"PATCH {ROUTE}", body=body, claims=claims or user(*ADMIN_GROUPS), **kwargs)
    )


def raw_items(dynamodb: Any, table: str, sk: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items += [from_item(i) for i in page["Items"] if i["SK"]["S"] == sk]
    return items


def weights_items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    reply = dynamodb.query(
        TableName=table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues=to_item({":pk": keys.WEIGHTS_PK}),
        ConsistentRead=True,
    )
    return [from_item(i) for i in reply["Items"]]


# ---------------------------------------------------------------------------------- POST


def test_a_prediction_is_made_stored_and_then_served_while_current(
    predictions_api: Any, catalog: CatalogStore, store: PredictionsStore
) -> None:
    status, first = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 12, "force_refresh": True})
    assert status == 200, first
    assert (first["show_id"], first["artist_id"], first["setlist_length"]) == (UPCOMING, ARTIST_ID, 12)
    assert first["show_date"] == UPCOMING.split(":")[1]
    assert len(first["songs"]) == 12
    assert [s["position"] for s in first["songs"]] == list(range(1, 13))
    assert first["songs"][0]["set"] == "opener"
    for song in first["songs"]:
        assert song["song_id"].startswith(f"{ARTIST_ID}:")
        assert 0 <= song["probability"] <= 1
        assert 0 <= song["historical_frequency"] <= 1
        assert song["title"]
        assert song["reasons"]
    assert first["expected_correct"] == pytest.approx(sum(s["probability"] for s in first["songs"]), abs=0.01)
    assert first["shows_before"] > 0
    assert first["source"] == "on_demand"
    assert first["stale"] is False
    assert first["model_version"]
    stored = store.get_prediction(UPCOMING)
    assert stored is not None
    assert [s["song_id"] for s in stored.songs] == [s["song_id"] for s in first["songs"]]

    status, again = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 12})
    assert status == 200
    assert again == first  # the stored one: same time, same songs

    status, refreshed = post(
        predictions_api, {"show_id": UPCOMING, "setlist_length": 12, "force_refresh": True}
    )
    assert status == 200
    assert refreshed["generated_at"] > first["generated_at"]

    status, longer = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 30})
    assert status == 200
    assert (longer["setlist_length"], len(longer["songs"])) == (30, 30)
    assert longer["generated_at"] > refreshed["generated_at"]


def test_defaults_are_20_songs_and_a_recent_past_show_can_still_be_predicted(
    predictions_api: Any, catalog: CatalogStore
) -> None:
    status, body = post(predictions_api, {"show_id": RECENT})
    assert status == 200, body
    assert (body["setlist_length"], len(body["songs"])) == (20, 20)


def test_a_show_without_any_history_answers_with_no_songs(
    predictions_api: Any, catalog: CatalogStore
) -> None:
    status, body = post(predictions_api, {"show_id": NEWCOMER})
    assert status == 200, body
    assert (body["songs"], body["expected_correct"], body["model_version"]) == ([], 0, None)
    assert body["shows_before"] == 0


def test_an_unknown_show_is_a_404(predictions_api: Any, catalog: CatalogStore) -> None:
    status, body = post(predictions_api, {"show_id": f"{ARTIST_ID}:1999-01-01"})
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert f"{ARTIST_ID}:1999-01-01" in body["error"]["message"]


def test_a_show_more_than_30_days_past_is_refused_saying_the_limit(
    predictions_api: Any, catalog: CatalogStore, store: PredictionsStore
) -> None:
    status, body = post(predictions_api, {"show_id": TOO_OLD})
    assert status == 422
    assert body["error"]["code"] == "show_too_old"
    assert "30 days" in body["error"]["message"]
    assert store.get_prediction(TOO_OLD) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"show_id": UPCOMING, "setlist_length": 4}, "setlist_length"),
        ({"show_id": UPCOMING, "setlist_length": 51}, "setlist_length"),
        ({"show_id": UPCOMING, "setlist_length": "many"}, "setlist_length"),
        ({"setlist_length": 20}, "show_id"),
        ({"show_id": "not an id!"}, "show_id"),
        ({"show_id": UPCOMING, "refresh": True}, "refresh"),
        ({"show_id": UPCOMING, "force_refresh": "sometimes"}, "force_refresh"),
    ],
)
def test_a_bad_body_is_a_422_naming_the_field(
    predictions_api: Any, catalog: CatalogStore, body: dict[str, Any], field: str
) -> None:
    status, reply = post(predictions_api, body)
    assert status == 422
    assert reply["error"]["code"] == "validation_error"
    assert field in reply["error"]["message"]
    assert [p["field"] for p in reply["error"]["details"]["fields"]] == [field]


def test_a_body_that_is_not_json_is_a_422(predictions_api: Any) -> None:
    status, reply = post(predictions_api, None, raw_body="show_id=x")
    assert status == 422
    assert reply["error"]["code"] == "validation_error"


# ---------------------------------------------------------------------------------- GET ?show_id=


def test_the_stored_prediction_is_read_back(predictions_api: Any, catalog: CatalogStore) -> None:
    status, made = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 8, "force_refresh": True})
    assert status == 200
    status, read = get(predictions_api, show_id=UPCOMING)
    assert status == 200
    assert read == made


def test_a_show_without_a_stored_prediction_is_a_404(predictions_api: Any, catalog: CatalogStore) -> None:
    status, body = get(predictions_api, show_id=f"{ARTIST_ID}:2001-01-01")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert "POST /api/ml/predictions" in body["error"]["message"]


@pytest.mark.parametrize(
    "query",
    [{}, {"show_id": UPCOMING, "timeframe": "day"}],
    ids=["neither", "both"],
)
def test_exactly_one_of_show_id_and_timeframe(predictions_api: Any, query: dict[str, str]) -> None:
    status, body = get(predictions_api, **query)
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    assert "show_id" in body["error"]["message"]
    assert "timeframe" in body["error"]["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [({"timeframe": "year"}, "query.timeframe"), ({"show_id": "bad id"}, "query.show_id")],
)
def test_a_bad_parameter_is_a_422(predictions_api: Any, query: dict[str, str], field: str) -> None:
    status, body = get(predictions_api, **query)
    assert status == 422
    assert body["error"]["details"]["fields"][0]["field"] == field


# ---------------------------------------------------------------------------------- GET ?timeframe=


def score(
    show: str,
    scored_at: dt.datetime,
    *,
    k: int,
    hits: int,
    probs: list[float],
    played: list[int],
    model: str | None,
) -> ScoreRecord:
    bins = [{"n": 0.0, "sum_p": 0.0, "hits": 0.0} for _ in range(10)]
    for p, y in zip(probs, played, strict=True):
        b = min(int(p * 10), 9)
        bins[b]["n"] += 1
        bins[b]["sum_p"] += p
        bins[b]["hits"] += y
    return ScoreRecord(
        show_id=show,
        artist_id=show.split(":", maxsplit=1)[0],
        show_date=scored_at.date() - dt.timedelta(days=1),
        k=k,
        hits=hits,
        p_at_k=hits / k,
        brier=sum((p - y) ** 2 for p, y in zip(probs, played, strict=True)) / len(probs),
        expected_hits=sum(probs[:k]),
        bins=bins,
        model_version=model,
        weights_version=0,
        scored_at=scored_at,
        prediction_generated_at=scored_at - dt.timedelta(days=2),
        source="precompute",
    )


def independent_metrics(items: list[dict[str, Any]], start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """The figures recomputed from raw SCORE items with nothing of the code under test."""
    chosen = [i for i in items if start <= dt.datetime.fromisoformat(i["scored_at"]) < end]
    n = [sum(i["bins"][b]["n"] for i in chosen) for b in range(10)]
    sum_p = [sum(i["bins"][b]["sum_p"] for i in chosen) for b in range(10)]
    hit = [sum(i["bins"][b]["hits"] for i in chosen) for b in range(10)]
    songs = sum(n)
    sizes = [sum(b["n"] for b in i["bins"]) for i in chosen]
    versions: dict[str, int] = {}
    for i in chosen:
        versions[i.get("model_version") or "none"] = versions.get(i.get("model_version") or "none", 0) + 1
    return {
        "shows_scored": len(chosen),
        "p_at_k": sum(i["hits"] / i["k"] for i in chosen) / len(chosen) if chosen else None,
        "hits": sum(i["hits"] for i in chosen),
        "expected_hits": sum(i["expected_hits"] for i in chosen),
        "ranked_songs": songs,
        "brier": sum(i["brier"] * s for i, s in zip(chosen, sizes, strict=True)) / songs if songs else None,
        "ece": sum(abs(sum_p[b] - hit[b]) for b in range(10)) / songs if songs else None,
        "n": n,
        "hit_rate": [hit[b] / n[b] if n[b] else None for b in range(10)],
        "model_versions": versions,
        "shows": sorted((i for i in chosen), key=lambda i: (i["scored_at"], i["show_id"]), reverse=True),
    }


def test_timeframe_metrics_match_an_independent_computation_over_the_stored_scores(
    predictions_api: Any, store: PredictionsStore, dynamodb: Any, settings: Any
) -> None:
    now = dt.datetime.now(dt.UTC)
    ages = [dt.timedelta(hours=h) for h in (2, 5, 30, 70, 24 * 6, 24 * 8, 24 * 20, 24 * 29, 24 * 40)]
    for n, age in enumerate(ages):
        probs = [round(0.95 - 0.09 * j - 0.01 * n, 4) for j in range(10)]
        played = [1 if (j + n) % 3 else 0 for j in range(10)]
        k = 6 + n % 3
        store.put_score(
            score(
                f"scored-{n}:{(now - age).date()}",
                now - age,
                k=k,
                hits=sum(played[:k]),
                probs=probs,
                played=played,
                model=["m1", "m2", None][n % 3],
            )
        )
    items = raw_items(dynamodb, settings.predictions_table, keys.SCORE_SK)
    current = store.current_weights().version

    counts: dict[str, int] = {}
    for timeframe, days in (("day", 1), ("week", 7), ("month", 30)):
        status, body = get(predictions_api, timeframe=timeframe)
        assert status == 200, body
        counts[timeframe] = body["shows_scored"]
        start, end = dt.datetime.fromisoformat(body["from"]), dt.datetime.fromisoformat(body["to"])
        assert end - start == dt.timedelta(days=days)
        assert abs((end - now).total_seconds()) < 60
        expected = independent_metrics(items, start, end)
        assert body["timeframe"] == timeframe
        assert body["shows_scored"] == expected["shows_scored"] > 0
        assert body["p_at_k"] == pytest.approx(expected["p_at_k"], abs=1e-6)
        assert body["hits"] == expected["hits"]
        assert body["expected_hits"] == pytest.approx(expected["expected_hits"], abs=1e-5)
        assert body["ranked_songs"] == expected["ranked_songs"]
        assert body["brier"] == pytest.approx(expected["brier"], abs=1e-6)
        assert body["ece"] == pytest.approx(expected["ece"], abs=1e-6)
        assert [b["n"] for b in body["calibration"]] == expected["n"]
        for got, want in zip(body["calibration"], expected["hit_rate"], strict=True):
            assert got["hit_rate"] == (None if want is None else pytest.approx(want, abs=1e-6))
        assert body["model_versions"] == expected["model_versions"]
        assert [p["show_id"] for p in body["data_points"]] == [i["show_id"] for i in expected["shows"]]
        assert body["current_weights_version"] == current
        newest = body["data_points"][0]
        raw = expected["shows"][0]
        assert (newest["k"], newest["hits"], newest["model_version"]) == (
            raw["k"],
            raw["hits"],
            raw.get("model_version"),
        )
    # The month holds more than the week, the week more than the day; the 40-day-old score is in none.
    assert counts["day"] < counts["week"] < counts["month"]
    assert "scored-8:" not in json.dumps(get(predictions_api, timeframe="month")[1]["data_points"])


def test_a_scored_show_is_in_the_days_metrics_with_the_hits_of_its_ranking(
    predictions_api: Any, app_module: Any, catalog: CatalogStore, store: PredictionsStore
) -> None:
    status, made = post(predictions_api, {"show_id": RECENT, "setlist_length": 10, "force_refresh": True})
    assert status == 200, made
    stored = store.get_prediction(RECENT)
    assert stored is not None
    ranking = [song for song, _ in stored.ranking]
    # The actual setlist: 3 of the predicted top 10, one song ranked lower, 2 never ranked.
    played = [*ranking[:3], ranking[-1], f"{ARTIST_ID}:never-before", f"{ARTIST_ID}:debut"]
    # What the ModelTrainer does when the show's actual setlist arrives (from the catalogue's stream).
    app_module.predictor.score_show(RECENT, played, arrived_at=dt.datetime.now(dt.UTC))

    status, body = get(predictions_api, timeframe="day")
    assert status == 200
    (point,) = [p for p in body["data_points"] if p["show_id"] == RECENT]
    k = len(set(played))
    assert (point["k"], point["hits"]) == (k, len(set(ranking[:k]) & set(played)))
    assert point["p_at_k"] == pytest.approx(point["hits"] / k)
    assert point["model_version"] == made["model_version"]
    assert body["model_versions"][made["model_version"]] >= 1


# ---------------------------------------------------------------------------------- PATCH


def test_a_weights_change_is_versioned_and_makes_stored_predictions_stale(
    predictions_api: Any,
    app_module: Any,
    catalog: CatalogStore,
    store: PredictionsStore,
    dynamodb: Any,
    settings: Any,
) -> None:
    status, before = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 10, "force_refresh": True})
    assert status == 200
    assert before["stale"] is False
    version = store.current_weights().version
    assert before["weights_version"] == version

    admin = user(*ADMIN_GROUPS)
    status, changed = patch(
        predictions_api, {"weights": WEIGHTS, "expected_version": version, "note": "more venue"}, admin
    )
    assert status == 200, changed
    assert (changed["version"], changed["previous_version"]) == (version + 1, version)
    assert changed["weights"] == WEIGHTS
    assert changed["changed_by"] == admin["sub"]
    assert changed["note"] == "more venue"
    assert changed["retrain_requested"] is False  # no trainer function in this session
    current = store.current_weights(consistent=True)
    assert (current.version, current.weights, current.changed_by) == (version + 1, WEIGHTS, admin["sub"])
    history = {i["SK"]: i for i in weights_items(dynamodb, settings.predictions_table)}
    assert history[keys.weights_version_sk(version + 1)]["weights"] == WEIGHTS

    status, after = get(predictions_api, show_id=UPCOMING)
    assert status == 200
    assert after["stale"] is True
    assert {k: v for k, v in after.items() if k != "stale"} == {
        k: v for k, v in before.items() if k != "stale"
    }

    status, renewed = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 10})
    assert status == 200
    assert (renewed["stale"], renewed["weights_version"]) == (False, version + 1)
    assert renewed["generated_at"] > before["generated_at"]
    assert get(predictions_api, show_id=UPCOMING)[1]["stale"] is False


def test_a_stale_expected_version_is_a_409_and_changes_nothing(
    predictions_api: Any, store: PredictionsStore, dynamodb: Any, settings: Any
) -> None:
    current = store.current_weights(consistent=True)
    before = weights_items(dynamodb, settings.predictions_table)
    status, body = patch(predictions_api, {"weights": WEIGHTS, "expected_version": current.version + 5})
    assert status == 409
    assert body["error"]["code"] == "conflict"
    assert body["error"]["details"]["current_version"] == current.version
    assert weights_items(dynamodb, settings.predictions_table) == before


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ({k: v for k, v in WEIGHTS.items() if k != "genre"}, "weights.genre: Field required"),
        (WEIGHTS | {"tempo": 0.5}, "weights.tempo: Extra inputs are not permitted"),
        (WEIGHTS | {"venue": 1.01}, "weights.venue: Input should be less than or equal to 1"),
        (WEIGHTS | {"venue": -0.2}, "weights.venue: Input should be greater than or equal to 0"),
        (dict.fromkeys(WEIGHTS, 0), "at least one weight must be above 0"),
        ("heavy", "weights: Input should be a valid dictionary"),
    ],
)
def test_bad_weights_are_a_422_and_change_nothing(
    predictions_api: Any, dynamodb: Any, settings: Any, weights: Any, problem: str
) -> None:
    before = weights_items(dynamodb, settings.predictions_table)
    status, body = patch(predictions_api, {"weights": weights})
    assert status == 422, body
    assert problem in body["error"]["message"]
    assert weights_items(dynamodb, settings.predictions_table) == before


def test_a_weight_that_is_not_a_finite_number_is_a_422(
    predictions_api: Any, dynamodb: Any, settings: Any
) -> None:
    before = weights_items(dynamodb, settings.predictions_table)
    for bad in ("NaN", "Infinity"):
        raw = json.dumps({"weights": WEIGHTS}).replace('"venue": 0.2', f'"venue": {bad}')
        status, body = patch(predictions_api, None, raw_body=raw)
        assert status == 422, body
        assert "weights.venue" in body["error"]["message"]
    assert weights_items(dynamodb, settings.predictions_table) == before


@pytest.mark.parametrize("groups", [("user",), ("moderator",), ("content_manager",)])
def test_only_admins_may_change_the_weights(
    predictions_api: Any, dynamodb: Any, settings: Any, groups: tuple[str, ...]
) -> None:
    before = weights_items(dynamodb, settings.predictions_table)
    status, body = patch(predictions_api, {"weights": WEIGHTS}, user(*groups))
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert "admin" in body["error"]["message"]
    assert weights_items(dynamodb, settings.predictions_table) == before


def test_a_failed_retrain_request_still_answers_the_written_change(
    predictions_api: Any, app_module: Any, store: PredictionsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mysetlist.predictions.weights import TrainerTrigger

    # A trainer that does not exist: Lambda refuses the invoke (ResourceNotFoundException).
    missing = TrainerTrigger(lambda: boto3.client("lambda"), "it-no-such-trainer")
    monkeypatch.setattr(app_module, "trainer", missing)
    version = store.current_weights(consistent=True).version
    status, body = patch(predictions_api, {"weights": WEIGHTS})
    assert status == 200, body
    assert (body["version"], body["retrain_requested"]) == (version + 1, False)
    assert store.current_weights(consistent=True).version == version + 1


# ---------------------------------------------------------------------------------- auth, budget


@pytest.mark.parametrize(
    "event",
    [
        http_event(f"POST {ROUTE}", body={"show_id": UPCOMING}),
        http_event(f"GET {ROUTE}", query={"timeframe": "day"}),
        http_event(f"PATCH {ROUTE}", body={"weights": WEIGHTS}),
    ],
    ids=["post", "get", "patch"],
)
def test_without_a_verified_token_every_route_is_a_401(predictions_api: Any, event: dict[str, Any]) -> None:
    response = predictions_api(event, LambdaContext())
    assert response["statusCode"] == 401
    assert json.loads(response["body"])["error"]["code"] == "unauthorized"
    assert response["headers"]["www-authenticate"] == "Bearer"


class FrozenClock:
    """A clock that stands still: a bucket refills only when a test moves it (a request every 6
    seconds refills ``predictions.request``, and a busy test machine can take that long)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_allows_10_requests_a_minute_per_user_across_the_routes(
    predictions_api: Any, catalog: CatalogStore
) -> None:
    from mysetlist import ratelimit

    clock = FrozenClock()
    ratelimit.use_limiter(ratelimit.RateLimiter(client=lambda: None, clock=clock))  # the fixture restores it
    fan = user()
    statuses = [get(predictions_api, fan, timeframe="day")[0] for _ in range(6)]
    statuses += [post(predictions_api, {"show_id": UPCOMING}, fan)[0] for _ in range(4)]
    assert statuses == [200] * 10
    response = predictions_api(
        http_event(f"POST {ROUTE}", body={"show_id": UPCOMING}, claims=fan), LambdaContext()
    )
    assert response["statusCode"] == 429
    assert int(response["headers"]["retry-after"]) == 6  # one request every 6 seconds
    assert response["headers"]["ratelimit-policy"] == "10;w=60"
    body = json.loads(response["body"])
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["details"]["budget"] == "predictions.request"
    assert "10 per 60 seconds" in body["error"]["message"]
    assert get(predictions_api, fan, timeframe="day")[0] == 429
    assert get(predictions_api, user(), timeframe="day")[0] == 200  # another user's budget is whole
    # An admin's PATCH draws on the same budget; a 403 costs nothing.
    admin = user(*ADMIN_GROUPS)
    assert [get(predictions_api, admin, timeframe="day")[0] for _ in range(10)] == [200] * 10
    assert patch(predictions_api, {"weights": WEIGHTS}, admin)[0] == 429
    fan_two = user()
    assert [patch(predictions_api, {"weights": WEIGHTS}, fan_two)[0] for _ in range(12)] == [403] * 12
    assert get(predictions_api, fan_two, timeframe="day")[0] == 200
    # Six seconds later the fan may send one more, and only one.
    clock.now += 6
    assert [get(predictions_api, fan, timeframe="day")[0] for _ in range(2)] == [200, 429]


def test_the_budget_is_shared_in_valkey(predictions_api: Any) -> None:
    """The same budget through Valkey (the containers' shared buckets), over a day instead of a
    minute so that no refill lands while the test runs."""
    from mysetlist import ratelimit
    from mysetlist.settings import load_settings

    daily = load_settings().model_copy(update={"rate_limit_overrides": '{"predictions.request": "10/86400"}'})
    limiter = ratelimit.RateLimiter.from_settings(daily)
    ratelimit.use_limiter(limiter)  # the fixture restores it
    fan = user()
    statuses = [get(predictions_api, fan, timeframe="day")[0] for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    # A new container's limiter (no local state) sees the same bucket.
    ratelimit.use_limiter(ratelimit.RateLimiter.from_settings(daily))
    assert get(predictions_api, fan, timeframe="day")[0] == 429


# ---------------------------------------------------------------------------------- degradation


@contextmanager
def throttled(operation: str) -> Iterator[None]:
    """DynamoDB refuses ``operation`` on the container's client (as when a table is throttled)."""
    from mysetlist.breaker import reset_all
    from mysetlist.settings import load_settings

    db = client_for(load_settings())

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        response = AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 400, {}, None)  # type: ignore[arg-type]
        return response, {
            "Error": {
                "Code": "ThrottlingException",
                "Message": "Rate of requests exceeds the allowed throughput.",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    db.meta.events.register(f"before-call.dynamodb.{operation}", refuse, unique_id="it-throttle")  # type: ignore[arg-type]
    try:
        yield
    finally:
        db.meta.events.unregister(f"before-call.dynamodb.{operation}", unique_id="it-throttle")
        reset_all()


def test_a_throttled_table_is_a_503_and_the_weights_are_unchanged(
    predictions_api: Any, dynamodb: Any, settings: Any
) -> None:
    before = weights_items(dynamodb, settings.predictions_table)
    with throttled("TransactWriteItems"):
        status, body = patch(predictions_api, {"weights": WEIGHTS})
    assert status == 503
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["details"]["outcome"] == "unchanged"
    assert weights_items(dynamodb, settings.predictions_table) == before
    with throttled("Query"):
        status, body = get(predictions_api, timeframe="week")
    assert status == 503
    assert body["error"]["details"]["retryable"] is True


def test_a_throttled_catalogue_is_a_503_for_a_prediction_and_nothing_is_stored(
    predictions_api: Any, catalog: CatalogStore, store: PredictionsStore
) -> None:
    before = store.get_prediction(RECENT, consistent=True)
    with throttled("GetItem"):
        status, body = post(predictions_api, {"show_id": RECENT, "force_refresh": True})
    assert status == 503, body
    assert body["error"]["code"] == "unavailable"
    assert store.get_prediction(RECENT, consistent=True) == before


def test_with_valkey_down_the_routes_answer_and_the_budget_holds_per_container(
    predictions_api: Any, tmp_path: Path
) -> None:
    import redis

    from mysetlist import ratelimit

    with running_valkey(tmp_path / "valkey") as server:
        url = server.url
    dead = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)  # stopped now
    limiter = ratelimit.RateLimiter(client=lambda: dead, clock=FrozenClock())
    ratelimit.use_limiter(limiter)  # the fixture restores it
    fan = user()
    statuses = [get(predictions_api, fan, timeframe="day")[0] for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    assert len(limiter.local) == 1  # decided by this container's own bucket


def test_an_open_circuit_is_a_503_with_retry_after(
    predictions_api: Any, dynamodb: Any, settings: Any
) -> None:
    from mysetlist.breaker import Dependency, breaker_for

    before = weights_items(dynamodb, settings.predictions_table)
    breaker = breaker_for(Dependency.DYNAMODB)
    breaker.force_open(seconds=30, reason="test")
    try:
        for event in (
            http_event(f"PATCH {ROUTE}", body={"weights": WEIGHTS}, claims=user(*ADMIN_GROUPS)),
            http_event(f"GET {ROUTE}", query={"timeframe": "month"}, claims=user()),
            http_event(f"GET {ROUTE}", query={"show_id": UPCOMING}, claims=user()),
        ):
            response = predictions_api(event, LambdaContext())
            assert response["statusCode"] == 503, response
            assert int(response["headers"]["retry-after"]) >= 1
            assert json.loads(response["body"])["error"]["details"]["outcome"] == "unchanged"
    finally:
        breaker.reset()
    assert weights_items(dynamodb, settings.predictions_table) == before


# ---------------------------------------------------------------------------------- events/


def test_the_canonical_events(predictions_api: Any, catalog: CatalogStore, store: PredictionsStore) -> None:
    """events/predictions_api (also for sam local invoke -e) against the deployed code."""
    status, body = call_http(predictions_api, load_event("predictions_api/request_prediction.json"))
    assert status == 404  # its show (in 2030) is not in this catalogue: route, auth and body were accepted
    assert body["error"]["code"] == "not_found"
    status, body = call_http(predictions_api, load_event("predictions_api/stored_prediction.json"))
    assert status == 404
    status, body = call_http(predictions_api, load_event("predictions_api/timeframe_metrics.json"))
    assert (status, body["timeframe"]) == (200, "week")
    version = store.current_weights(consistent=True).version
    status, body = call_http(predictions_api, load_event("predictions_api/change_weights.json"))
    assert status == 200, body
    assert body["version"] == version + 1
    assert math.isclose(sum(body["weights"].values()), 1.0)


# ---------------------------------------------------------------------------------- a trained model
# Last in the module: from here on the artist has a trained model (the tests above rely on the
# frequency baseline).


def test_with_a_trained_model_a_weights_change_leaves_predictions_stale_until_the_retrain(
    predictions_api: Any,
    catalog: CatalogStore,
    store: PredictionsStore,
    settings: Any,
    request: pytest.FixtureRequest,
) -> None:
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    from mysetlist.predictions.service import build_pipeline

    # One OpenMP thread: on a busy machine several spin for the CPU and training takes minutes.
    limits = threadpool_limits(limits=1)
    request.addfinalizer(limits.restore_original_limits)
    _, trainer = build_pipeline(settings)
    assert trainer.train_artist(ARTIST_ID, force=True).status == "trained"
    first = store.model_pointer(ARTIST_ID, consistent=True)
    assert first is not None

    status, made = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 15})
    assert status == 200, made
    assert (made["model_version"], made["stale"]) == (first.version, False)
    assert len(made["songs"]) == 15

    status, changed = patch(predictions_api, {"weights": WEIGHTS | {"venue": 0.05}})
    assert status == 200, changed
    assert get(predictions_api, show_id=UPCOMING)[1]["stale"] is True
    # Until the model is retrained with the new weights, a new prediction is still made by the
    # old model, and says so.
    status, interim = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 15})
    assert (status, interim["model_version"], interim["stale"]) == (200, first.version, True)

    # What the retrain the PATCH asked for does (the ModelTrainer's {"retrain": "all"}).
    assert trainer.train_artist(ARTIST_ID).status == "trained"
    second = store.model_pointer(ARTIST_ID, consistent=True)
    assert second is not None
    assert (second.weights_version, second.version != first.version) == (changed["version"], True)
    assert get(predictions_api, show_id=UPCOMING)[1]["stale"] is True  # made by the old model
    status, renewed = post(predictions_api, {"show_id": UPCOMING, "setlist_length": 15})
    assert status == 200
    assert (renewed["model_version"], renewed["weights_version"], renewed["stale"]) == (
        second.version,
        changed["version"],
        False,
    )
    assert get(predictions_api, show_id=UPCOMING)[1] == renewed
