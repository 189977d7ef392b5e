"""A/B testing over the local stack: the seeded demo experiment (tests/local_stack/seed.py) serves
a signed-out visitor a sticky variant by device id, the visitor's interactions are recorded once
per event id, and a content manager's results count them."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import LocalStackProcess
from tests.local_stack.seed import DEMO_CONTENT_TYPE, DEMO_EXPERIMENT_ID, DEMO_PLACEMENT

ROUTE = "/api/content/ab-testing"


def test_a_visitor_is_served_a_sticky_variant_and_its_conversion_is_counted(stack: LocalStackProcess) -> None:
    device = {"X-Device-Id": f"e2e-{uuid.uuid4().hex}"}
    where = {"content_type": DEMO_CONTENT_TYPE, "placement": DEMO_PLACEMENT}
    first = stack.get(ROUTE, params=where, headers=device)
    assert first.status_code == 200, first.text
    served = first.json()
    assert (served["source"], served["test_id"], served["first_exposure"]) == (
        "experiment",
        DEMO_EXPERIMENT_ID,
        True,
    )
    again = stack.get(ROUTE, params=where, headers=device).json()
    assert (again["variant_id"], again["first_exposure"]) == (served["variant_id"], False)

    nobody = stack.get(ROUTE, params=where).json()  # no identity: the placement's default content
    assert nobody["source"] == "default"

    manager = stack.auth("e2e-content-manager", ("content_manager",))
    before = stack.get(ROUTE, params={"test_id": DEMO_EXPERIMENT_ID, "action": "results"}, headers=manager)
    assert before.status_code == 200, before.text
    converted_before = {v["variant_id"]: v["conversions"] for v in before.json()["variants"]}

    event = {"event_id": f"e2e-{uuid.uuid4().hex}", "type": "conversion"}
    body = {"test_id": DEMO_EXPERIMENT_ID, "events": [event]}
    for expected in ("recorded", "duplicate"):
        tracked = stack.request("POST", ROUTE, params={"action": "track"}, json=body, headers=device)
        assert tracked.status_code == 200, tracked.text
        assert tracked.json()["events"][0]["outcome"] == expected

    after = stack.get(
        ROUTE, params={"test_id": DEMO_EXPERIMENT_ID, "action": "results"}, headers=manager
    ).json()
    converted = {v["variant_id"]: v["conversions"] for v in after["variants"]}
    assert converted[served["variant_id"]] == converted_before[served["variant_id"]] + 1
    assert {
        "improvement_percentage",
        "confidence_level",
        "is_significant",
        "sample_size",
        "recommendation",
    } <= set(after["variants"][1])

    user = stack.auth("e2e-fan", ("user",))
    refused = stack.get(ROUTE, params={"test_id": DEMO_EXPERIMENT_ID, "action": "results"}, headers=user)
    assert refused.status_code == 403, refused.text
