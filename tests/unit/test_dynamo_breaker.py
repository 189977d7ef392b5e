"""The DynamoDB client's circuit breaker: botocore's call events settle one breaker call per API
call (botocore's own retries inside it), against moto in-process. Faults are injected where a
real one would come from, as HTTP responses or errors on botocore's ``before-send`` event, so
botocore's retry logic and response parsing run as they would in AWS."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from mysetlist.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    Dependency,
    WindowKind,
    breaker_for,
)
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import (
    attach_breaker,
    client_for,
    to_item,
    unavailable_for_open_circuit,
    unavailable_on_throttle,
)
from mysetlist.errors import Unavailable
from mysetlist.settings import Settings, load_settings
from tests.support.template import create_tables

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state_of(b: CircuitBreaker) -> BreakerState:
    """The breaker's state, read through a call: the state changes under calls mypy cannot see."""
    return b.state


class _Raw:
    """The raw body botocore reads an HTTP response from."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def error_response(request: Any, status: int, code: str) -> AWSResponse:
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected"}).encode()
    headers = {"x-amzn-ErrorType": code, "content-type": "application/x-amz-json-1.0"}
    return AWSResponse(request.url, status, headers, _Raw(body))  # type: ignore[arg-type]


class Faults:
    """A ``before-send`` handler: each request takes the next planned fault (None lets moto
    answer). Counts the requests that reached the wire."""

    def __init__(self) -> None:
        self.plan: list[Callable[[Any], AWSResponse] | BaseException | None] = []
        self.requests = 0

    def handler(self, request: Any, **_: Any) -> Any:  # botocore's hooks are typed as returning None
        self.requests += 1
        if not self.plan:
            return None
        fault = self.plan.pop(0)
        if isinstance(fault, BaseException):
            raise fault
        return fault(request) if fault is not None else None

    def throttle(self, times: int = 1) -> None:
        self.plan += [lambda r: error_response(r, 400, "ThrottlingException")] * times

    def server_error(self, times: int = 1) -> None:
        self.plan += [lambda r: error_response(r, 500, "InternalServerError")] * times


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield create_tables(boto3.client("dynamodb", region_name="us-east-1"), "unit-")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    config = BreakerConfig(
        window=WindowKind.COUNT,
        window_size=10,
        minimum_calls=3,
        failure_rate_threshold=0.5,
        slow_call_duration=1.0,
        wait_in_open=30.0,
        half_open_permitted_calls=1,
    )
    return CircuitBreaker("dynamodb", config, clock=clock)


def guarded_client(
    breaker: CircuitBreaker, faults: Faults, *, attempts: int = 1, **options: Any
) -> DynamoDBClient:
    db = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )
    attach_breaker(db, lambda: breaker, **options)
    db.meta.events.register_first("before-send.dynamodb", faults.handler)
    return db


def put(db: DynamoDBClient, table: str, pk: str, **options: Any) -> None:
    db.put_item(TableName=table, Item=to_item({"PK": pk, "SK": "x"}), **options)


def test_a_successful_call_is_one_success(aws: dict[str, str], breaker: CircuitBreaker) -> None:
    db = guarded_client(breaker, Faults())
    put(db, aws["CatalogTable"], "a")
    snapshot = breaker.snapshot()
    assert (snapshot["calls"], snapshot["failures"]) == (1, 0)


def test_throttling_after_botocores_retries_counts_as_a_failure_and_opens_it(
    aws: dict[str, str], breaker: CircuitBreaker
) -> None:
    faults = Faults()
    db = guarded_client(breaker, faults)
    faults.throttle(3)
    for _ in range(3):
        with pytest.raises(ClientError) as caught:
            put(db, aws["CatalogTable"], "a")
        assert (
            caught.value.response["Error"]["Code"] == "ThrottlingException"
        )  # the caller's error is unchanged
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.snapshot()["failures"] == 3


def test_server_errors_count_as_failures(aws: dict[str, str], breaker: CircuitBreaker) -> None:
    faults = Faults()
    db = guarded_client(breaker, faults)
    faults.server_error()
    with pytest.raises(ClientError):
        put(db, aws["CatalogTable"], "a")
    assert breaker.snapshot()["failures"] == 1


def test_a_request_that_never_got_an_answer_counts_as_a_failure(
    aws: dict[str, str], breaker: CircuitBreaker
) -> None:
    faults = Faults()
    db = guarded_client(breaker, faults)
    faults.plan.append(ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"))
    with pytest.raises(ReadTimeoutError):
        put(db, aws["CatalogTable"], "a")
    assert breaker.snapshot()["failures"] == 1


def test_botocores_own_retries_are_inside_one_breaker_call(
    aws: dict[str, str], breaker: CircuitBreaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore sleeps between its retries; the sleeps are recorded instead of waited.
    slept: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=slept.append))
    faults = Faults()
    db = guarded_client(breaker, faults, attempts=3)
    faults.throttle(2)  # the third attempt reaches moto
    put(db, aws["CatalogTable"], "a")
    assert faults.requests == 3
    assert len(slept) == 2
    snapshot = breaker.snapshot()
    assert (snapshot["calls"], snapshot["failures"]) == (1, 0)


def test_conditional_check_failures_are_answers_not_failures(
    aws: dict[str, str], breaker: CircuitBreaker
) -> None:
    db = guarded_client(breaker, Faults())
    table = aws["CatalogTable"]
    put(db, table, "a")
    for _ in range(5):
        with pytest.raises(ClientError) as caught:
            put(db, table, "a", ConditionExpression="attribute_not_exists(PK)")
        assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    with pytest.raises(ClientError) as cancelled:
        db.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table,
                        "Item": to_item({"PK": "a", "SK": "x"}),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                }
            ]
        )
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert state_of(breaker) is BreakerState.CLOSED
    snapshot = breaker.snapshot()
    assert (snapshot["calls"], snapshot["failures"]) == (7, 0)


def test_an_open_circuit_refuses_before_any_request_is_sent(
    aws: dict[str, str], breaker: CircuitBreaker, clock: Clock
) -> None:
    faults = Faults()
    db = guarded_client(breaker, faults)
    breaker.force_open(30.0)
    clock.now += 10.0
    with pytest.raises(CircuitOpenError) as refused:
        put(db, aws["CatalogTable"], "a")
    assert faults.requests == 0
    assert refused.value.dependency == "dynamodb"
    assert refused.value.retry_after == pytest.approx(20.0)
    # After the wait, one trial goes through; its success closes the circuit.
    clock.now += 20.0
    put(db, aws["CatalogTable"], "a")
    assert faults.requests == 1
    assert state_of(breaker) is BreakerState.CLOSED


def test_slow_calls_use_the_clients_own_threshold(
    aws: dict[str, str], breaker: CircuitBreaker, clock: Clock
) -> None:
    faults = Faults()
    db = guarded_client(breaker, faults, slow_call_duration=10.0)

    def takes(seconds: float) -> Callable[[Any], None]:
        def answer(request: Any) -> None:
            clock.now += seconds

        return answer

    faults.plan = [takes(9.0), takes(10.0)]  # type: ignore[list-item]
    put(db, aws["CatalogTable"], "a")
    put(db, aws["CatalogTable"], "b")
    assert breaker.snapshot()["slow_calls"] == 1  # the breaker's own 1 s would have made both slow


def test_the_open_circuit_is_a_503_that_says_nothing_changed() -> None:
    with pytest.raises(Unavailable) as caught, unavailable_on_throttle("the catalogue"):
        raise CircuitOpenError("dynamodb", 4.2)
    assert caught.value.status == 503
    assert caught.value.details == {
        "retryable": True,
        "outcome": "unchanged",
        "dependency": "dynamodb",
        "retry_after_seconds": 5,
    }
    assert (
        caught.value.message == "the catalogue is temporarily unavailable; retry in 5 s (nothing was changed)"
    )
    assert isinstance(caught.value.__cause__, CircuitOpenError)
    # Never "retry in 0 s": a half-open circuit whose trial slot frees any moment still says 1.
    assert (
        unavailable_for_open_circuit(CircuitOpenError("dynamodb", 0.0), "x").details["retry_after_seconds"]
        == 1
    )


def test_the_containers_clients_are_guarded_by_the_dynamodb_breaker(aws: dict[str, str]) -> None:
    """client_for wires the registry's breaker: a store read with the circuit open is a 503,
    and no request leaves."""
    settings = Settings(catalog_table=aws["CatalogTable"], aws_region=os.environ["AWS_DEFAULT_REGION"])
    db = client_for(settings)
    faults = Faults()
    db.meta.events.register_first("before-send.dynamodb", faults.handler, unique_id="unit-faults")
    shared = breaker_for(Dependency.DYNAMODB)
    try:
        shared.reset()
        CatalogStore(db, settings.catalog_table).get_show("show-1")
        assert faults.requests == 1
        shared.force_open(3600.0)
        with pytest.raises(Unavailable) as caught:
            CatalogStore(db, settings.catalog_table).get_show("show-1")
        assert caught.value.details["dependency"] == "dynamodb"
        assert caught.value.details["retry_after_seconds"] > 3500
        assert faults.requests == 1
    finally:
        db.meta.events.unregister("before-send.dynamodb", unique_id="unit-faults")
        shared.reset()
        # The registry's breaker read the settings (for shared state) from this test's
        # environment: forget them, later tests in this process have their own.
        load_settings.cache_clear()
