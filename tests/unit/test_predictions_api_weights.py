"""The weights PATCH use case: validation at the edge, the versioned write, the retrain request
(botocore Stubber: the exact Invoke request) and what happens when any step fails."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from pydantic import ValidationError

from mysetlist.auth import Caller, Role
from mysetlist.errors import Conflict, Unavailable
from mysetlist.predictions.api_models import WEIGHT_NAMES, Weights, WeightsPatch
from mysetlist.predictions.model import EnsembleWeights
from mysetlist.predictions.store import WeightsVersion
from mysetlist.predictions.weights import RETRAIN_REQUEST_FAILED, TrainerTrigger, change_weights

NOW = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)
ADMIN = Caller("admin-1", frozenset({Role.ADMIN}))
NEW = {"artist": 0.3, "venue": 0.2, "genre": 0.1, "popularity": 0.2, "historical": 0.1, "recentTrends": 0.1}
DEFAULTS = EnsembleWeights().as_dict()


@dataclass
class FakeWeightsStore:
    """The weights items in memory, with the store's conditional write (PredictionsStore.put_weights)."""

    versions: list[WeightsVersion] = field(default_factory=list)
    fail_writes: Exception | None = None
    race: WeightsVersion | None = None  # written by "another admin" between read and write

    def current_weights(self) -> WeightsVersion:
        return self.versions[-1] if self.versions else WeightsVersion.defaults()

    def put_weights(
        self,
        weights: Mapping[str, float],
        *,
        changed_by: str,
        note: str | None = None,
        expected_version: int | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[WeightsVersion, int]:
        seen = self.current_weights().version
        if expected_version is not None and expected_version != seen:
            raise Conflict(f"the weights are at version {seen}", details={"current_version": seen})
        if self.race is not None:
            self.versions.append(self.race)
            self.race = None
        if self.fail_writes is not None:
            raise self.fail_writes
        if self.current_weights().version != seen:
            raise Conflict("the weights were changed by someone else at the same time")
        new = WeightsVersion(seen + 1, dict(weights), changed_by, now, note)
        self.versions.append(new)
        return new, seen


@dataclass
class Emitted:
    metrics: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)

    def __call__(self, name: str, dimensions: Mapping[str, str]) -> None:
        self.metrics.append((name, dict(dimensions)))


def lambda_client() -> Any:
    return boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def trigger_with(client: Any, emitted: Emitted, name: str = "mysetlist-local-ModelTrainer") -> TrainerTrigger:
    return TrainerTrigger(lambda: client, name, emit=emitted)


def never_invoked() -> TrainerTrigger:
    """A trigger whose client fails the test when it is asked for (BaseException: the trigger's
    own error handling cannot swallow it)."""

    def client() -> Any:
        pytest.fail("the trainer must not be invoked")

    return TrainerTrigger(client, "mysetlist-local-ModelTrainer", emit=Emitted())


def expect_invoke(stub: Stubber, version: int) -> None:
    stub.add_response(
        "invoke",
        {"StatusCode": 202},
        {
            "FunctionName": "mysetlist-local-ModelTrainer",
            "InvocationType": "Event",
            "Payload": json.dumps({"retrain": "all", "reason": f"weights v{version}"}).encode(),
        },
    )


def patch(**changes: Any) -> WeightsPatch:
    return WeightsPatch.model_validate({"weights": NEW} | changes)


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ({k: v for k, v in NEW.items() if k != "venue"}, "venue"),
        (NEW | {"tempo": 0.1}, "tempo"),
        (NEW | {"genre": 1.5}, "less than or equal to 1"),
        (NEW | {"genre": -0.1}, "greater than or equal to 0"),
        (NEW | {"genre": math.nan}, "finite number"),
        (NEW | {"genre": math.inf}, "finite number"),
        (NEW | {"genre": "lots"}, "valid number"),
        (dict.fromkeys(WEIGHT_NAMES, 0.0), "at least one weight must be above 0"),
    ],
)
def test_bad_weights_are_refused_naming_the_problem(weights: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        WeightsPatch.model_validate({"weights": weights})


def test_the_body_forbids_unknown_fields_and_negative_versions() -> None:
    with pytest.raises(ValidationError, match="extra"):
        WeightsPatch.model_validate({"weights": NEW, "force": True})
    with pytest.raises(ValidationError, match="expected_version"):
        WeightsPatch.model_validate({"weights": NEW, "expected_version": -1})
    assert WeightsPatch.model_validate({"weights": NEW, "note": "  tuning  "}).note == "tuning"


def test_the_weights_are_the_models_six() -> None:
    assert tuple(EnsembleWeights().as_dict()) == WEIGHT_NAMES
    assert tuple(Weights.model_fields) == WEIGHT_NAMES
    assert WeightsVersion.defaults().weights == EnsembleWeights().as_dict()


# ---------------------------------------------------------------------------------- the write


def test_a_change_is_written_as_the_next_version_and_asks_for_a_retrain() -> None:
    store = FakeWeightsStore()
    client, emitted = lambda_client(), Emitted()
    with Stubber(client) as stub:
        expect_invoke(stub, 1)
        out = change_weights(store, trigger_with(client, emitted), patch(note="more venue"), ADMIN, NOW)
        stub.assert_no_pending_responses()
    assert (out.version, out.previous_version, out.changed_by, out.changed_at) == (1, 0, "admin-1", NOW)
    assert out.weights.as_dict() == NEW
    assert out.retrain_requested is True
    assert out.note == "more venue"
    assert store.versions == [WeightsVersion(1, NEW, "admin-1", NOW, "more venue")]
    assert emitted.metrics == []

    with Stubber(client) as stub:
        expect_invoke(stub, 2)
        again = change_weights(store, trigger_with(client, emitted), patch(expected_version=1), ADMIN, NOW)
    assert (again.version, again.previous_version) == (2, 1)


def test_a_stale_expected_version_is_a_conflict_and_writes_nothing() -> None:
    store = FakeWeightsStore([WeightsVersion(1, DEFAULTS, "someone", NOW)])
    with pytest.raises(Conflict) as raised:
        change_weights(store, never_invoked(), patch(expected_version=0), ADMIN, NOW)
    assert raised.value.details["current_version"] == 1
    assert len(store.versions) == 1


def test_a_concurrent_change_between_read_and_write_is_a_conflict() -> None:
    store = FakeWeightsStore(race=WeightsVersion(1, DEFAULTS, "other-admin", NOW))
    with pytest.raises(Conflict):
        change_weights(store, never_invoked(), patch(), ADMIN, NOW)
    assert [v.changed_by for v in store.versions] == ["other-admin"]


def test_a_failed_write_asks_for_no_retrain() -> None:
    store = FakeWeightsStore(fail_writes=Unavailable("the predictions table is busy"))
    with pytest.raises(Unavailable):
        change_weights(store, never_invoked(), patch(), ADMIN, NOW)
    assert store.versions == []


@pytest.mark.parametrize(
    "failure",
    [
        {"service_error_code": "TooManyRequestsException", "http_status_code": 429},
        {"service_error_code": "ResourceNotFoundException", "http_status_code": 404},
        {"service_error_code": "ServiceException", "http_status_code": 500},
    ],
)
def test_a_failed_retrain_request_never_undoes_or_fails_the_change(failure: dict[str, Any]) -> None:
    store = FakeWeightsStore()
    client, emitted = lambda_client(), Emitted()
    with Stubber(client) as stub:
        stub.add_client_error("invoke", **failure)
        out = change_weights(store, trigger_with(client, emitted), patch(), ADMIN, NOW)
    assert (out.version, out.retrain_requested) == (1, False)
    assert len(store.versions) == 1
    assert emitted.metrics == [(RETRAIN_REQUEST_FAILED, {"reason": "invoke"})]


def test_an_unexpected_invoke_status_counts_as_failed() -> None:
    client, emitted = lambda_client(), Emitted()
    with Stubber(client) as stub:
        stub.add_response("invoke", {"StatusCode": 200})
        assert trigger_with(client, emitted).retrain_all("weights v1") is False
    assert emitted.metrics == [(RETRAIN_REQUEST_FAILED, {"reason": "invoke"})]


def test_without_a_trainer_nothing_is_sent() -> None:
    def no_client() -> Any:
        pytest.fail("no client may be created without a trainer")

    emitted = Emitted()
    store = FakeWeightsStore()
    out = change_weights(store, TrainerTrigger(no_client, "", emit=emitted), patch(), ADMIN, NOW)
    assert (out.version, out.retrain_requested) == (1, False)
    assert emitted.metrics == []
