"""The A/B testing API in-process (AbTestingApi through Mangum), against moto and a real Valkey:
who may do what, definitions refused with a 4xx that change nothing, the lifecycle and phases,
serving (sticky variants, one exposure per user, the default content), tracking (idempotent,
only while live, only for exposed callers), layers, and the analyses with the original's fields,
computed from what was tracked."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from tests.harness.events import call_http, http_event
from tests.integration.conftest import Issuer
from tests.support.template import load_handler

ROUTE = "/api/content/ab-testing"


@pytest.fixture(scope="module")
def api(aws: dict[str, str]) -> Any:
    return load_handler("AbTestingApi")


class Client:
    """Calls the API as one identity: a token (with groups), or a device id, or nobody."""

    def __init__(
        self, api: Any, issuer: Issuer, user: str | None = None, *groups: str, device: str | None = None
    ):
        self.api, self.headers = api, {}
        if user is not None:
            self.headers["authorization"] = f"Bearer {issuer.token(user, *groups)}"
        if device is not None:
            self.headers["x-device-id"] = device

    def call(self, method: str, query: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
        return call_http(
            self.api, http_event(f"{method} {ROUTE}", query=query, body=body, headers=self.headers)
        )


@pytest.fixture
def manager(api: Any, issuer: Issuer) -> Client:
    return Client(api, issuer, f"cm-{uuid.uuid4().hex[:8]}", "content_manager")


def definition(placement: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Hero headline",
        "content_type": "banner",
        "placement": placement,
        "variants": [
            {"name": "Control", "content": {"headline": "Vote now"}, "weight": 50, "is_control": True},
            {"name": "Urgent", "content": {"headline": "Doors open soon"}, "weight": 50},
        ],
        "primary_metric": {"name": "clicked", "type": "proportion", "event": "click"},
        "guardrail_metrics": [{"name": "engaged_seconds", "type": "mean", "event": "engagement"}],
    }
    body.update(overrides)
    return body


def placement() -> str:
    return f"hero-{uuid.uuid4().hex[:8]}"


def started(manager: Client, body: dict[str, Any]) -> dict[str, Any]:
    status, created = manager.call("POST", body=body)
    assert status == 201, created
    test = created["test"]
    status, running = manager.call("PATCH", {"test_id": test["test_id"], "action": "start"})
    assert status == 200, running
    assert running["test"]["status"] == "running"
    return running["test"]  # type: ignore[no-any-return]


def test_only_admins_and_content_managers_define_and_read_experiments(api: Any, issuer: Issuer) -> None:
    body = definition(placement())
    assert Client(api, issuer).call("POST", body=body)[0] == 401
    assert Client(api, issuer, "fan", "user").call("POST", body=body)[0] == 403
    assert Client(api, issuer, "mod", "moderator").call("GET")[0] == 403
    status, created = Client(api, issuer, "boss", "admin").call("POST", body=body)
    assert status == 201, created
    assert "salt" not in created["test"]  # it would let anyone compute the assignments
    status, listed = Client(api, issuer, "cm", "content_manager").call(
        "GET", {"status": "draft", "limit": "100"}
    )
    assert status == 200
    assert created["test"]["test_id"] in {t["test_id"] for t in listed["items"]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variants": [{"name": "A", "content": {}, "weight": 50, "is_control": True}]}, "variants"),
        (
            {
                "variants": [
                    {"name": "A", "content": {}, "weight": 50, "is_control": True},
                    {"name": "B", "content": {}, "weight": 50, "is_control": True},
                ]
            },
            "variants",
        ),
        ({"traffic_allocation": 0}, "traffic_allocation"),
        ({"traffic_allocation": 101}, "traffic_allocation"),
        ({"targeting": {"devices": ["fridge"]}}, "targeting"),
        ({"end_date": "2001-01-01T00:00:00Z"}, "end_date"),
        ({"primary_metric": {"name": "x", "type": "median", "event": "click"}}, "primary_metric"),
        ({"user_id": "someone-else"}, "user_id"),
    ],
)
def test_an_invalid_definition_is_a_422_naming_the_field_and_stores_nothing(
    manager: Client, change: dict[str, Any], field: str
) -> None:
    where = placement()
    status, reply = manager.call("POST", body=definition(where, **change))
    assert status == 422, reply
    assert field in str(reply), reply
    status, listed = manager.call("GET", {"limit": "100"})
    assert status == 200
    assert where not in {t["placement"] for t in listed["items"]}


def test_serving_is_sticky_records_one_exposure_and_falls_back_to_the_default(
    api: Any, issuer: Issuer, manager: Client
) -> None:
    where = placement()
    query = {"content_type": "banner", "placement": where}
    # Nothing set yet: no content, and a caller with no identity is never assigned.
    status, served = Client(api, issuer).call("GET", query)
    assert (status, served["source"], served["content"]) == (200, "none", None)

    status, _ = manager.call(
        "POST",
        {"action": "default_content"},
        {"content_type": "banner", "placement": where, "content": {"headline": "Hi"}},
    )
    assert status == 200
    huge = {"content_type": "banner", "placement": where, "content": {"html": "x" * 9000}}
    status, refused = manager.call("POST", {"action": "default_content"}, huge)
    assert status == 422, refused
    test = started(manager, definition(where))

    status, served = Client(api, issuer).call("GET", query)
    assert (served["source"], served["content"]) == ("default", {"headline": "Hi"})

    variants: Counter[str] = Counter()
    for i in range(40):
        visitor = Client(api, issuer, device=f"device-{where}-{i:04d}")
        status, first = visitor.call("GET", query)
        assert status == 200, first
        assert (first["source"], first["test_id"], first["first_exposure"]) == (
            "experiment",
            test["test_id"],
            True,
        )
        again = visitor.call("GET", query)[1]
        assert (again["variant_id"], again["first_exposure"]) == (first["variant_id"], False)
        variants[first["variant_id"]] += 1
    assert set(variants) == {"control", "urgent"}, variants  # 40 fair coins: both sides, all but surely

    fan = Client(api, issuer, f"fan-{where}", "user")
    status, mine = fan.call("GET", query)
    assert mine["source"] == "experiment"

    status, results = manager.call("GET", {"test_id": test["test_id"], "action": "results"})
    assert status == 200, results
    exposed = {v["variant_id"]: v["sample_size"] for v in results["variants"]}
    expected = Counter(variants)
    expected[mine["variant_id"]] += 1
    assert exposed == dict(expected)
    assert results["sample_size"] == 41


def test_tracking_is_idempotent_only_for_exposed_callers_and_only_while_running(
    api: Any, issuer: Issuer, manager: Client
) -> None:
    where = placement()
    test = started(manager, definition(where))
    query = {"content_type": "banner", "placement": where}
    visitor = Client(api, issuer, device=f"device-{where}-track")
    served = visitor.call("GET", query)[1]
    click = {"test_id": test["test_id"], "events": [{"event_id": f"ev-{where}-1", "type": "click"}]}

    status, tracked = visitor.call("POST", {"action": "track"}, click)
    assert status == 200, tracked
    assert tracked["variant_id"] == served["variant_id"]
    assert tracked["events"] == [{"event_id": f"ev-{where}-1", "outcome": "recorded", "counted": ["clicked"]}]
    status, again = visitor.call("POST", {"action": "track"}, click)
    assert again["events"][0]["outcome"] == "duplicate"

    engaged = {
        "test_id": test["test_id"],
        "events": [
            {"event_id": f"ev-{where}-2", "type": "engagement", "value": 30},
            {"event_id": f"ev-{where}-3", "type": "engagement", "value": 12.5},
            {"event_id": f"ev-{where}-4", "type": "click"},  # a second click: still one converter
        ],
    }
    assert visitor.call("POST", {"action": "track"}, engaged)[0] == 200

    stranger = Client(api, issuer, device=f"device-{where}-never-served")
    status, refused = stranger.call(
        "POST", {"action": "track"}, {**click, "events": [{"event_id": "ev-stranger-1", "type": "click"}]}
    )
    assert status == 403, refused
    assert Client(api, issuer).call("POST", {"action": "track"}, click)[0] == 401
    bad = {"test_id": test["test_id"], "events": [{"event_id": "short", "type": "click"}]}
    assert visitor.call("POST", {"action": "track"}, bad)[0] == 422

    status, analysis = manager.call("PATCH", {"test_id": test["test_id"], "action": "statistical_analysis"})
    assert status == 200, analysis
    by_name = {m["name"]: m for m in analysis["metrics"]}
    mine = served["variant_id"]

    def totals(metric: dict[str, Any]) -> tuple[int, float]:
        rows = [metric["control"], *metric["comparisons"]]
        row = next(r for r in rows if r["variant_id"] == mine)
        return row["n"], row["sum"]

    assert totals(by_name["clicked"]) == (1, 1)
    assert totals(by_name["engaged_seconds"]) == (1, 42.5)

    assert manager.call("PATCH", {"test_id": test["test_id"], "action": "pause"})[0] == 200
    late = {"test_id": test["test_id"], "events": [{"event_id": f"ev-{where}-5", "type": "click"}]}
    status, refused = visitor.call("POST", {"action": "track"}, late)
    assert status == 409, refused
    status, paused_serve = visitor.call("GET", query)
    assert paused_serve["source"] == "none"  # a paused experiment serves nothing (no default set)


def test_a_running_experiment_changes_its_variants_only_in_a_new_phase(manager: Client) -> None:
    test = started(manager, definition(placement()))
    three = [
        {"name": "Control", "content": {"headline": "Vote now"}, "weight": 40, "is_control": True},
        {"name": "Urgent", "content": {"headline": "Doors open soon"}, "weight": 30},
        {"name": "Friendly", "content": {"headline": "Pick tonight's songs"}, "weight": 30},
    ]
    target = {"test_id": test["test_id"]}
    status, refused = manager.call("PATCH", target, {"variants": three})
    assert status == 409, refused
    status, same = manager.call("PATCH", target, {"name": test["name"]})  # changes nothing
    assert (status, same["test"]["version"]) == (200, test["version"])
    status, stale = manager.call(
        "PATCH", {**target, "expected_version": str(test["version"] - 1)}, {"name": "x"}
    )
    assert status == 409, stale
    status, changed = manager.call(
        "PATCH", {**target, "expected_version": str(test["version"])}, {"variants": three, "new_phase": True}
    )
    assert status == 200, changed
    assert (changed["test"]["phase"], len(changed["test"]["variants"])) == (2, 3)
    status, first_phase = manager.call("GET", {**target, "action": "results", "phase": "1"})
    assert status == 200, first_phase
    assert manager.call("GET", {**target, "action": "results", "phase": "9"})[0] == 404
    assert manager.call("PATCH", {**target, "action": "archive"})[0] == 409  # running: complete it first
    assert manager.call("PATCH", {**target, "action": "complete"})[0] == 200
    assert manager.call("PATCH", {**target, "action": "archive"})[0] == 200


def test_experiments_sharing_a_layer_never_share_a_user(api: Any, issuer: Issuer, manager: Client) -> None:
    where, layer = placement(), f"layer-{uuid.uuid4().hex[:6]}"
    first = started(manager, definition(where, name="First", layer=layer, traffic_allocation=50))
    second = started(manager, definition(where, name="Second", layer=layer, traffic_allocation=50))
    status, created = manager.call(
        "POST", body=definition(where, name="Third", layer=layer, traffic_allocation=10)
    )
    assert status == 201
    status, full = manager.call("PATCH", {"test_id": created["test"]["test_id"], "action": "start"})
    assert status == 409, full  # the layer's 100% is taken

    seen: Counter[str] = Counter()
    for i in range(30):
        visitor = Client(api, issuer, device=f"device-{where}-{i:04d}")
        served = visitor.call("GET", {"content_type": "banner", "placement": where})[1]
        seen[served["test_id"]] += 1
    assert set(seen) <= {first["test_id"], second["test_id"]}
    assert sum(seen.values()) == 30  # 100% of the layer is allocated: everyone is in exactly one


def test_every_analysis_answers_on_get_and_patch_with_the_originals_fields(
    api: Any, issuer: Issuer, manager: Client
) -> None:
    where = placement()
    test = started(manager, definition(where))
    for i in range(12):
        visitor = Client(api, issuer, device=f"device-{where}-{i:04d}")
        visitor.call("GET", {"content_type": "banner", "placement": where})
        if i % 3 == 0:
            visitor.call(
                "POST",
                {"action": "track"},
                {"test_id": test["test_id"], "events": [{"event_id": f"e-{where}-{i}", "type": "click"}]},
            )
    for action in ("results", "statistical_analysis", "segment_analysis", "real_time_metrics"):
        for method in ("GET", "PATCH"):
            status, answer = manager.call(method, {"test_id": test["test_id"], "action": action})
            assert status == 200, (action, method, answer)
    results = manager.call("GET", {"test_id": test["test_id"], "action": "results"})[1]
    for variant in results["variants"]:
        for field in (
            "improvement_percentage",
            "confidence_level",
            "is_significant",
            "sample_size",
            "recommendation",
        ):
            assert field in variant, (field, variant)
    assert sum(v["conversions"] for v in results["variants"]) == 4
    live = manager.call("GET", {"test_id": test["test_id"], "action": "real_time_metrics"})[1]
    assert sum(v["exposures"] for v in live["variants"]) == 12
    assert sum(v["clicks"] for v in live["variants"]) == 4
    assert manager.call("GET", {"test_id": test["test_id"], "action": "nonsense"})[0] == 422
    assert manager.call("PATCH", {"test_id": test["test_id"], "action": "nonsense"})[0] == 400


def test_the_canonical_events_answer(api: Any, settings: Any) -> None:
    """events/ab_testing_api/ against the local stack's demo experiment (the same seed code)."""
    from tests.harness.events import load_event
    from tests.local_stack.seed import DEMO_EXPERIMENT_ID, seed_demo_experiment

    assert seed_demo_experiment(settings, report=lambda _line: None) == DEMO_EXPERIMENT_ID
    assert seed_demo_experiment(settings, report=lambda _line: None) == DEMO_EXPERIMENT_ID  # kept as it is
    status, served = call_http(api, load_event("ab_testing_api/serve_content.json"))
    assert status == 200, served
    assert (served["source"], served["test_id"]) == ("experiment", DEMO_EXPERIMENT_ID)
    status, tracked = call_http(api, load_event("ab_testing_api/track_events.json"))
    assert status == 200, tracked
    assert [e["outcome"] for e in tracked["events"]] == ["recorded", "recorded"]
    assert tracked["variant_id"] == served["variant_id"]
