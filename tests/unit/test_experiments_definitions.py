"""Experiment definitions: every create rule gives a 422-worthy message on the right field, the
lifecycle table, the phase rule of running experiments, weights, and the stored item."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from pydantic import ValidationError

from mysetlist.errors import Conflict, NotFound, Unprocessable
from mysetlist.experiments.definitions import (
    DEFAULT_PRIMARY_METRIC,
    EXPERIMENT_SK,
    ISO_COUNTRIES,
    MAX_CONTENT_BYTES,
    TRANSITIONS,
    Action,
    EventKind,
    Experiment,
    ExperimentIn,
    ExperimentPatch,
    ExperimentSpec,
    Method,
    MetricType,
    Status,
    Targeting,
    TargetRole,
    default_variant_id,
    normalise,
)

NOW = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=2)


def variants(*weights: float) -> list[dict[str, Any]]:
    names = ["Control", "Big Hero", "Carousel", "Video", "Quiz"]
    return [
        {"name": names[i], "content": {"title": names[i], "rank": i}, "weight": w, "is_control": i == 0}
        for i, w in enumerate(weights)
    ]


def body(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Home hero",
        "content_type": "banner",
        "placement": "home-hero",
        "variants": variants(50, 50),
        "end_date": "2030-06-01T00:00:00Z",
    } | extra


def spec(**extra: Any) -> ExperimentIn:
    return ExperimentIn.model_validate(body(**extra), context={"now": NOW})


def draft(**extra: Any) -> Experiment:
    return Experiment.create(spec(**extra), by="admin-1", now=NOW, test_id="t-1", salt="0123456789abcdef")


def running(**extra: Any) -> Experiment:
    return draft(**extra).apply_action(Action.START, "admin-1", NOW)


def patch(experiment: Experiment, **fields: Any) -> Experiment:
    return experiment.apply_patch(ExperimentPatch.model_validate(fields), "cm-2", LATER)


def problems(document: dict[str, Any], model: type[Any] = ExperimentIn) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(document, context={"now": NOW})
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in caught.value.errors()}


# ---------------------------------------------------------------------------------- create body


def test_a_minimal_body_gets_the_documented_defaults() -> None:
    made = spec(name="  Home hero  ")
    assert made.name == "Home hero"
    assert made.traffic_allocation == 100.0
    assert made.primary_metric == DEFAULT_PRIMARY_METRIC
    assert (made.primary_metric.type, made.primary_metric.event) == (
        MetricType.PROPORTION,
        EventKind.CONVERSION,
    )
    assert made.guardrail_metrics == []
    assert made.method is Method.FREQUENTIST
    assert made.alpha == 0.05
    assert made.correction.value == "holm"
    assert made.targeting.is_empty
    assert made.layer is None
    assert made.start_date is None
    assert [v.resolved_id for v in made.variants] == ["control", "big-hero"]


def test_variant_ids_default_to_the_slug_of_the_name() -> None:
    assert default_variant_id("Big Hero (v2)") == "big-hero-v2"
    assert default_variant_id("Café Noir") == "cafe-noir"
    assert default_variant_id("x" * 80) == "x" * 64
    # No letters or digits: a stable short hash, still a valid slug.
    assert default_variant_id("!!!") == default_variant_id("!!!")
    assert default_variant_id("!!!").startswith("v-")
    assert default_variant_id("!!!") != default_variant_id("???")
    made = spec(variants=[*variants(50, 50)[:1], {**variants(50, 50)[1], "variant_id": "b"}])
    assert [v.resolved_id for v in made.variants] == ["control", "b"]


REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("empty name", body(name="   "), "name", "at least 1 character"),
    ("long name", body(name="n" * 121), "name", "at most 120 characters"),
    ("long description", body(description="d" * 2001), "description", "at most 2000 characters"),
    ("content_type not a slug", body(content_type="Hero Banner"), "content_type", "lower-case letters"),
    ("placement with #", body(placement="home#hero"), "placement", "'home#hero'"),
    ("one variant", body(variants=variants(100)), "variants", "at least 2 items"),
    ("eleven variants", body(variants=variants(1, 1) * 5 + variants(1)), "variants", "at most 10 items"),
    (
        "no control",
        body(variants=[{**v, "is_control": False} for v in variants(50, 50)]),
        "variants",
        "exactly one variant must have is_control true (found none)",
    ),
    (
        "two controls",
        body(variants=[{**v, "is_control": True} for v in variants(50, 50)]),
        "variants",
        "(found 2: 'Control', 'Big Hero')",
    ),
    (
        "names equal but for case",
        body(variants=[variants(50, 50)[0], {**variants(50, 50)[1], "name": "CONTROL"}]),
        "variants",
        "variant names must be unique (ignoring case): variants[0] ('Control') and variants[1] ('CONTROL')",
    ),
    (
        "ids collide",
        body(variants=[variants(50, 50)[0], {**variants(50, 50)[1], "name": "Control!"}]),
        "variants",
        "both have the id 'control'",
    ),
    (
        "bad variant_id",
        body(variants=[variants(50, 50)[0], {**variants(50, 50)[1], "variant_id": "B side"}]),
        "variants.1.variant_id",
        "lower-case letters",
    ),
    ("zero weight", body(variants=variants(50, 0)), "variants.1.weight", "greater than 0"),
    ("negative weight", body(variants=variants(50, -1)), "variants.1.weight", "greater than 0"),
    ("infinite weight", body(variants=variants(50, math.inf)), "variants.1.weight", "finite number"),
    (
        "negligible share",
        body(variants=variants(1000, 5)),
        "variants",
        "variants[1] ('Big Hero') would get 0.4975% of the traffic: each variant needs at least 1%",
    ),
    (
        "content too big",
        body(
            variants=[
                {**variants(50, 50)[0], "content": {"html": "x" * MAX_CONTENT_BYTES}},
                variants(50, 50)[1],
            ]
        ),
        "variants.0.content",
        "more than the 8192 allowed",
    ),
    (
        "content not an object",
        body(variants=[{**variants(50, 50)[0], "content": ["a"]}, variants(50, 50)[1]]),
        "variants.0.content",
        "valid dictionary",
    ),
    (
        "content with NaN",
        body(variants=[{**variants(50, 50)[0], "content": {"x": math.nan}}, variants(50, 50)[1]]),
        "variants.0.content",
        "content must be plain JSON",
    ),
    (
        "variant missing weight",
        body(variants=[{k: v for k, v in variants(50, 50)[0].items() if k != "weight"}, variants(50, 50)[1]]),
        "variants.0.weight",
        "Field required",
    ),
    ("allocation below 1", body(traffic_allocation=0.5), "traffic_allocation", "greater than or equal to 1"),
    ("allocation above 100", body(traffic_allocation=101), "traffic_allocation", "less than or equal to 100"),
    (
        "empty device list",
        body(targeting={"devices": []}),
        "targeting.devices",
        "give at least one value, or leave devices out to include every caller",
    ),
    (
        "unknown device",
        body(targeting={"devices": ["watch"]}),
        "targeting.devices.0",
        "'mobile', 'tablet' or 'desktop'",
    ),
    (
        "UK for GB",
        body(targeting={"regions": ["uk"]}),
        "targeting.regions.0",
        "'UK' is not an ISO 3166-1 alpha-2 country code: use 'GB'",
    ),
    (
        "made-up region",
        body(targeting={"regions": ["XX"]}),
        "targeting.regions.0",
        "'XX' is not an ISO 3166-1",
    ),
    ("unknown role", body(targeting={"roles": ["guest"]}), "targeting.roles.0", "'anonymous', 'user'"),
    (
        "unknown user type",
        body(targeting={"user_type": "vip"}),
        "targeting.user_type",
        "'new' or 'returning'",
    ),
    (
        "bad artist id",
        body(targeting={"artist_followers": ["bad id!"]}),
        "targeting.artist_followers.0",
        "pattern",
    ),
    ("unknown targeting field", body(targeting={"country": ["US"]}), "targeting.country", "Extra inputs"),
    (
        "bad metric name",
        body(primary_metric={"name": "Signup Rate", "type": "proportion", "event": "click"}),
        "primary_metric.name",
        "1 to 40 lower-case letters, digits or '_'",
    ),
    (
        "unknown metric type",
        body(primary_metric={"name": "m", "type": "median", "event": "click"}),
        "primary_metric.type",
        "'proportion' or 'mean'",
    ),
    (
        "unknown event kind",
        body(primary_metric={"name": "m", "type": "mean", "event": "purchase"}),
        "primary_metric.event",
        "'view', 'click', 'conversion' or 'engagement'",
    ),
    (
        "six guardrails",
        body(guardrail_metrics=[{"name": f"g{i}", "type": "mean", "event": "view"} for i in range(6)]),
        "guardrail_metrics",
        "at most 5 items",
    ),
    (
        "guardrails share a name",
        body(
            guardrail_metrics=[
                {"name": "g", "type": "mean", "event": "view"},
                {"name": "g", "type": "mean", "event": "click"},
            ]
        ),
        "guardrail_metrics",
        "guardrail_metrics[0] and guardrail_metrics[1] are both 'g'",
    ),
    (
        "guardrail named like the primary",
        body(guardrail_metrics=[{"name": "conversion_rate", "type": "mean", "event": "view"}]),
        "guardrail_metrics",
        "guardrail_metrics[0] is named 'conversion_rate' like the primary metric",
    ),
    (
        "guardrail measuring the primary",
        body(guardrail_metrics=[{"name": "converted", "type": "proportion", "event": "conversion"}]),
        "guardrail_metrics",
        "guardrail_metrics[0] measures the same thing as primary_metric",
    ),
    ("layer not a slug", body(layer="Hero Layer"), "layer", "lower-case letters"),
    ("naive end date", body(end_date="2030-06-01T00:00:00"), "end_date", "timezone info"),
    (
        "end before start",
        body(start_date="2030-06-02T00:00:00Z"),
        "end_date",
        "end_date (2030-06-01T00:00:00+00:00) must be after start_date (2030-06-02T00:00:00+00:00)",
    ),
    ("end in the past", body(end_date="2030-04-30T00:00:00Z"), "end_date", "must be in the future"),
    ("unknown method", body(method="bootstrap"), "method", "'frequentist', 'bayesian' or 'sequential'"),
    ("alpha too large", body(alpha=0.5), "alpha", "less than or equal to 0.2"),
    ("alpha too small", body(alpha=0.0001), "alpha", "greater than or equal to 0.001"),
    ("unknown correction", body(correction="bonferroni"), "correction", "'holm' or 'bh'"),
    ("zero MDE", body(minimum_detectable_effect=0), "minimum_detectable_effect", "greater than 0"),
    ("unknown field", body(user_id="someone"), "user_id", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(
    ("document", "field", "message"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED]
)
def test_each_broken_rule_names_its_field_and_says_what_to_do(
    document: dict[str, Any], field: str, message: str
) -> None:
    found = problems(document)
    assert field in found, f"expected a problem on {field!r}, got {found}"
    assert message in found[field], f"{field}: {found[field]!r} does not say {message!r}"
    assert not found[field].startswith("Value error"), found[field]  # written for the client as is


def test_content_is_measured_in_utf8_bytes_of_compact_json() -> None:
    # {"t":"..."} is 8 bytes of JSON around the text; 'é' is 2 bytes in UTF-8.
    fits = {"t": "é" * ((MAX_CONTENT_BYTES - 8) // 2)}
    too_big = {"t": "é" * ((MAX_CONTENT_BYTES - 8) // 2) + "x"}
    assert len(json.dumps(fits, separators=(",", ":"), ensure_ascii=False).encode()) == MAX_CONTENT_BYTES
    ok = spec(variants=[{**variants(50, 50)[0], "content": fits}, variants(50, 50)[1]])
    assert ok.variants[0].content == fits
    found = problems(body(variants=[{**variants(50, 50)[0], "content": too_big}, variants(50, 50)[1]]))
    assert f"content is {MAX_CONTENT_BYTES + 1} bytes" in found["variants.0.content"]


def test_targeting_values_are_normalised_and_deduplicated() -> None:
    made = spec(
        targeting={"regions": ["us", " gb ", "US"], "devices": ["mobile", "mobile"], "user_type": "new"}
    )
    assert made.targeting.regions == ["US", "GB"]
    assert [d.value for d in made.targeting.devices or []] == ["mobile"]
    assert not made.targeting.is_empty
    assert len(ISO_COUNTRIES) == 249
    assert {"US", "GB", "DE", "JP", "BR", "ZA", "AQ"} <= ISO_COUNTRIES
    assert "UK" not in ISO_COUNTRIES
    assert {r.value for r in TargetRole} == {"anonymous", "user", "moderator", "content_manager", "admin"}


def test_the_service_clock_decides_the_end_date_when_no_now_is_given() -> None:
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    with pytest.raises(ValidationError, match="must be in the future"):
        ExperimentIn.model_validate(body(end_date=past))
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert ExperimentIn.model_validate(body(end_date=future)).end_date is not None
    # The stored definition's rules have no clock: an ended experiment stays valid.
    assert ExperimentSpec.model_validate(body(end_date=past)).end_date is not None


def test_patch_bodies_validate_their_fields_and_refuse_null_for_required_ones() -> None:
    found = problems({"name": None, "variants": None, "alpha": 0.9, "layer": None}, ExperimentPatch)
    assert found["name"] == "name cannot be null: leave it out to keep the current value"
    assert found["variants"] == "variants cannot be null: leave it out to keep the current value"
    assert "less than or equal to 0.2" in found["alpha"]
    assert "layer" not in found  # null clears the layer
    assert (
        "exactly one variant" in problems({"variants": variants(1, 1)[1:] * 2}, ExperimentPatch)["variants"]
    )
    cleared = ExperimentPatch.model_validate({"layer": None, "targeting": None, "description": None})
    assert cleared.changes == {"description": "", "layer": None, "targeting": Targeting()}
    assert ExperimentPatch.model_validate({"new_phase": True}).changes == {}


# ---------------------------------------------------------------------------------- weights


@pytest.mark.parametrize(
    ("weights", "shares"),
    [
        ([50, 50], [0.5, 0.5]),
        ([20, 30, 50], [0.2, 0.3, 0.5]),
        ([1, 1, 2], [0.25, 0.25, 0.5]),
        ([3, 1], [0.75, 0.25]),
    ],
)
def test_weights_are_normalised_to_shares_in_the_variants_order(
    weights: list[float], shares: list[float]
) -> None:
    experiment = draft(variants=variants(*weights))
    got = experiment.normalised_weights()
    assert list(got) == [v.variant_id for v in experiment.current_variants]
    assert list(got.values()) == pytest.approx(shares, abs=1e-15)
    assert math.fsum(got.values()) == pytest.approx(1.0, abs=1e-15)


def test_thirds_sum_to_one_and_bad_weights_are_refused() -> None:
    assert math.fsum(normalise([1, 1, 1])) == pytest.approx(1.0, abs=1e-15)
    for bad in ([], [0, 0], [1, math.inf]):
        with pytest.raises(ValueError, match="weights must be positive and finite"):
            normalise(bad)


# ---------------------------------------------------------------------------------- lifecycle

ALL_STATUSES = list(Status)
ALL_ACTIONS = list(Action)
EXPECTED = {
    ("draft", "start"): "running",
    ("draft", "archive"): "archived",
    ("running", "pause"): "paused",
    ("running", "complete"): "completed",
    ("paused", "resume"): "running",
    ("paused", "complete"): "completed",
    ("completed", "archive"): "archived",
}


def in_status(status: Status) -> Experiment:
    return draft().model_copy(update={"status": status})


@pytest.mark.parametrize("status", ALL_STATUSES)
@pytest.mark.parametrize("action", ALL_ACTIONS)
def test_lifecycle_table(status: Status, action: Action) -> None:
    experiment = in_status(status)
    expected = EXPECTED.get((status.value, action.value))
    if expected is None:
        with pytest.raises(Conflict) as caught:
            experiment.transition(action, NOW)
        assert f"cannot {action.value} experiment t-1: it is {status.value}" in caught.value.message
        assert caught.value.details["status"] == status.value
        assert caught.value.details["allowed"] == sorted(a for (s, a) in EXPECTED if s == status.value)
    else:
        assert experiment.transition(action, NOW).value == expected
        assert experiment.apply_action(action, "admin-2", NOW).status.value == expected
    assert {(s.value, a.value): t.value for (s, a), t in TRANSITIONS.items()} == EXPECTED


def test_an_experiment_past_its_end_cannot_start_or_resume() -> None:
    ended = NOW + dt.timedelta(days=40)  # end_date is 2030-06-01
    with pytest.raises(Conflict, match=re.escape("its end_date 2030-06-01T00:00:00.000000+00:00 has passed")):
        draft().transition(Action.START, ended)
    paused = running().apply_action(Action.PAUSE, "a", NOW)
    with pytest.raises(Conflict, match="cannot resume"):
        paused.transition(Action.RESUME, ended)
    assert paused.transition(Action.COMPLETE, ended) is Status.COMPLETED


def test_actions_stamp_the_phase_and_give_up_the_layer_slice() -> None:
    started = running(layer="hero")
    assert started.status is Status.RUNNING
    assert started.current_phase.started_at == NOW
    assert started.updated_by == "admin-1"
    assert started.version == 1  # the store writes version + 1
    assert started.needs_layer_range  # a layered start reserves its slice in the store
    held = started.with_layer_range((0, 10_000))
    assert not held.needs_layer_range
    paused = held.apply_action(Action.PAUSE, "admin-2", LATER)
    assert paused.layer_range == (0, 10_000)  # paused experiments keep their users' slice
    assert paused.current_phase.started_at == NOW
    done = paused.apply_action(Action.COMPLETE, "admin-2", LATER)
    assert done.layer_range is None
    assert done.completed_at == LATER
    assert done.current_phase.ended_at == LATER
    assert not done.needs_layer_range


def test_liveness_follows_status_dates_and_layer() -> None:
    scheduled = running(start_date="2030-05-10T00:00:00Z")
    assert scheduled.not_live_reason(NOW) == "the experiment starts at 2030-05-10T00:00:00.000000+00:00"
    assert scheduled.is_live(dt.datetime(2030, 5, 10, tzinfo=dt.UTC))
    assert scheduled.not_live_reason(dt.datetime(2030, 6, 1, tzinfo=dt.UTC)) == (
        "the experiment ended at 2030-06-01T00:00:00.000000+00:00"
    )
    assert draft().not_live_reason(NOW) == "the experiment is draft"
    assert running(layer="hero").not_live_reason(NOW) == "the experiment has no slice of layer 'hero' yet"
    assert running(layer="hero").with_layer_range((0, 100)).is_live(NOW)


# ---------------------------------------------------------------------------------- phases


def test_a_running_experiment_refuses_new_variants_or_allocation_without_new_phase() -> None:
    experiment = running()
    with pytest.raises(Conflict) as caught:
        patch(experiment, variants=variants(20, 80), traffic_allocation=50)
    assert caught.value.details == {
        "status": "running",
        "fields": ["traffic_allocation", "variants"],
        "phase": 1,
    }
    assert 'changing its traffic_allocation and variants starts a new phase, send "new_phase": true' in (
        caught.value.message
    )
    assert "?phase=1" in caught.value.message
    # Content of a variant is part of it too.
    changed = [variants(50, 50)[0], {**variants(50, 50)[1], "content": {"title": "new"}}]
    with pytest.raises(Conflict, match="changing its variants"):
        patch(experiment, variants=changed)


def test_new_phase_keeps_the_randomisation_when_only_the_allocation_changes() -> None:
    experiment = running(traffic_allocation=10)
    ramped = patch(experiment, traffic_allocation=50, new_phase=True)
    assert ramped.phase == 2
    assert [(p.number, p.seed_phase, p.traffic_allocation) for p in ramped.phases] == [
        (1, 1, 10.0),
        (2, 1, 50.0),
    ]
    assert ramped.phases[0].ended_at == LATER
    assert ramped.phases[1].started_at == LATER
    assert ramped.traffic_allocation == 50.0
    assert ramped.updated_by == "cm-2"
    assert ramped.version == experiment.version
    reweighted = patch(ramped, variants=variants(20, 80), new_phase=True)
    assert [(p.number, p.seed_phase) for p in reweighted.phases] == [(1, 1), (2, 1), (3, 3)]
    assert reweighted.normalised_weights() == pytest.approx({"control": 0.2, "big-hero": 0.8})
    assert reweighted.normalised_weights(1) == pytest.approx({"control": 0.5, "big-hero": 0.5})
    # Same shares at another scale, new content: users keep their variant.
    rescaled = [{**v, "weight": v["weight"] * 10, "content": {"v": 2}} for v in variants(20, 80)]
    assert patch(reweighted, variants=rescaled, new_phase=True).phases[-1].seed_phase == 3
    # A new phase with nothing changed restarts the counts on the same randomisation.
    fresh = patch(experiment, new_phase=True)
    assert [(p.number, p.seed_phase) for p in fresh.phases] == [(1, 1), (2, 1)]


def test_a_paused_experiment_starts_its_new_phase_when_resumed() -> None:
    paused = running().apply_action(Action.PAUSE, "a", NOW)
    next_phase = patch(paused, traffic_allocation=30, new_phase=True)
    assert next_phase.current_phase.started_at is None
    resumed = next_phase.apply_action(Action.RESUME, "a", LATER + dt.timedelta(hours=1))
    assert resumed.current_phase.started_at == LATER + dt.timedelta(hours=1)
    assert resumed.phases[0].started_at == NOW


def test_a_draft_changes_in_place() -> None:
    experiment = draft(traffic_allocation=10)
    changed = patch(experiment, variants=variants(20, 30, 50), traffic_allocation=40, layer="hero")
    assert changed.phase == 1
    assert len(changed.phases) == 1
    assert changed.traffic_allocation == 40.0
    assert [v.variant_id for v in changed.current_variants] == ["control", "big-hero", "carousel"]
    assert changed.layer == "hero"


def test_placement_layer_and_metrics_are_fixed_once_started() -> None:
    experiment = running()
    for fields in (
        {"placement": "sidebar"},
        {"layer": "hero"},
        {"primary_metric": {"name": "ctr", "type": "proportion", "event": "click"}},
        {"guardrail_metrics": [{"name": "views", "type": "mean", "event": "view"}]},
    ):
        with pytest.raises(Conflict, match="cannot change once experiment t-1 has started"):
            patch(experiment, **fields, new_phase=True)
    with pytest.raises(Conflict, match="start_date cannot change"):
        patch(experiment, start_date="2030-05-20T00:00:00Z")
    # A scheduled experiment that has not served yet may move its start.
    scheduled = running(start_date="2030-05-10T00:00:00Z")
    assert patch(scheduled, start_date="2030-05-12T00:00:00Z").start_date == dt.datetime(
        2030, 5, 12, tzinfo=dt.UTC
    )


def test_live_fields_change_without_a_phase_and_are_checked_against_the_rest() -> None:
    experiment = running()
    changed = patch(
        experiment,
        name="Hero v2",
        targeting={"devices": ["mobile"]},
        end_date="2030-07-01T00:00:00Z",
        method="bayesian",
        minimum_detectable_effect=0.05,
    )
    assert changed.phase == 1
    assert changed.name == "Hero v2"
    assert changed.targeting.devices is not None
    assert changed.method is Method.BAYESIAN
    assert patch(changed, targeting=None).targeting.is_empty
    with pytest.raises(Unprocessable) as caught:
        patch(experiment, end_date="2030-05-01T00:00:00Z")
    assert caught.value.details["fields"] == [{"field": "end_date", "problem": "must be in the future"}]
    with pytest.raises(Unprocessable) as caught:
        patch(draft(), guardrail_metrics=[{"name": "conversion_rate", "type": "mean", "event": "view"}])
    assert caught.value.details["fields"][0]["field"] == "guardrail_metrics"
    assert "like the primary metric" in caught.value.message
    with pytest.raises(Unprocessable, match="must be after start_date"):
        patch(draft(start_date="2030-05-20T00:00:00Z"), end_date="2030-05-19T00:00:00Z")


def test_sending_the_current_values_changes_nothing() -> None:
    experiment = running()
    same = patch(experiment, name="Home hero", variants=variants(50, 50), traffic_allocation=100)
    assert same is experiment


def test_completed_and_archived_experiments_keep_their_design() -> None:
    done = running().apply_action(Action.COMPLETE, "a", NOW)
    assert patch(done, alpha=0.01, name="Hero (final)").alpha == 0.01
    with pytest.raises(Conflict, match="is completed: only alpha, correction, description"):
        patch(done, targeting={"devices": ["mobile"]})
    with pytest.raises(Conflict, match="is completed"):
        patch(done, new_phase=True)
    archived = done.apply_action(Action.ARCHIVE, "a", NOW)
    with pytest.raises(Conflict, match="is archived: it cannot change"):
        patch(archived, name="again")


def test_phase_lookup_and_the_stored_size_budget() -> None:
    experiment = patch(running(), traffic_allocation=20, new_phase=True)
    assert experiment.phase_of(1).traffic_allocation == 100.0
    with pytest.raises(NotFound, match="has no phase 3: its phases are 1 to 2"):
        experiment.phase_of(3)
    big = [{**v, "content": {"html": "x" * 7000}} for v in variants(10, 10, 10, 10, 10)] + [
        {**v, "name": f"{v['name']} 2", "content": {"html": "y" * 7000}}
        for v in variants(10, 10, 10, 10, 10)[1:]
    ]
    for _ in range(4):  # about 63 KB of content per phase
        big = [{**v, "weight": v["weight"] + 1} for v in big]
        experiment = patch(experiment, variants=big, new_phase=True)
    assert len(experiment.phases) == 6
    big = [{**v, "weight": v["weight"] + 1} for v in big]
    with pytest.raises(Unprocessable, match="bytes of variants over its 7 phases") as caught:
        patch(experiment, variants=big, new_phase=True)
    assert caught.value.details["bytes"] > 300_000


def test_metrics_for_an_event_and_layer_width() -> None:
    experiment = draft(
        primary_metric={"name": "signup", "type": "proportion", "event": "conversion"},
        guardrail_metrics=[
            {"name": "clicks", "type": "mean", "event": "click"},
            {"name": "clicked", "type": "proportion", "event": "click"},
        ],
        traffic_allocation=12.345,
    )
    assert [m.name for m in experiment.metrics] == ["signup", "clicks", "clicked"]
    assert [m.name for m in experiment.metrics_for(EventKind.CLICK)] == ["clicks", "clicked"]
    assert experiment.metrics_for(EventKind.VIEW) == []
    assert experiment.layer_width == 1234
    assert draft(traffic_allocation=1).layer_width == 100
    assert draft().layer_width == 10_000


# ---------------------------------------------------------------------------------- stored item


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in item.items()}


def test_the_item_carries_its_keys_and_reads_back_equal() -> None:
    experiment = patch(
        running(
            variants=variants(20, 30, 50),
            targeting={
                "regions": ["US"],
                "roles": ["user", "anonymous"],
                "artist_followers": ["grateful-dead"],
            },
            guardrail_metrics=[{"name": "time_spent", "type": "mean", "event": "engagement"}],
            layer="hero",
            minimum_detectable_effect=0.05,
            alpha=0.01,
        ).with_layer_range((2500, 7500)),
        traffic_allocation=33.3,
        new_phase=True,
    )
    item = experiment.to_item()
    plain = _plain(item)
    assert plain["PK"] == "EXP#t-1"
    assert plain["SK"] == EXPERIMENT_SK
    assert plain["GSI1PK"] == "PLACEMENT#banner#home-hero"
    assert plain["GSI1SK"] == "running#t-1"
    assert plain["GSI2PK"] == "EXPERIMENTS"
    assert plain["GSI2SK"] == "running#2030-05-01T12:00:00.000000+00:00#t-1"
    assert plain["version"] == Decimal(1)
    assert plain["alpha"] == Decimal("0.01")
    assert plain["layer_range"] == [Decimal(2500), Decimal(7500)]
    assert "variants" not in plain  # the current phase's, computed for API answers
    assert isinstance(plain["phases"][0]["variants"][0]["content"], str)
    back = Experiment.from_item(item)
    assert back == experiment
    assert back.normalised_weights(1) == pytest.approx({"control": 0.2, "big-hero": 0.3, "carousel": 0.5})
    assert back.traffic_allocation == 33.3


def test_variant_content_reads_back_exactly_as_sent() -> None:
    content = {
        "title": None,
        "ratio": 1.0,
        "count": 3,
        "big": 2**70,
        "nested": {"empty": {}, "list": [None, 0.1]},
    }
    experiment = draft(variants=[{**variants(50, 50)[0], "content": content}, variants(50, 50)[1]])
    back = Experiment.from_item(experiment.to_item())
    assert back.current_variants[0].content == content
    assert isinstance(back.current_variants[0].content["ratio"], float)
    assert json.dumps(back.current_variants[0].content) == json.dumps(content)


def test_a_stored_item_with_unknown_attributes_still_reads() -> None:
    item = draft().to_item() | {"added_later": {"S": "x"}}
    assert Experiment.from_item(item).test_id == "t-1"


def test_api_answers_carry_the_originals_top_level_variants_and_allocation() -> None:
    answer = running(traffic_allocation=40).model_dump(mode="json")
    assert answer["traffic_allocation"] == 40.0
    assert [v["variant_id"] for v in answer["variants"]] == ["control", "big-hero"]
    assert answer["status"] == "running"
