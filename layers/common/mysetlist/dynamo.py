"""DynamoDB plumbing shared by the repositories: one client per container, value conversion,
and the mapping of throttling to a retryable 503 (nothing is changed when it happens).

Every client made here is guarded by the container's DYNAMODB circuit breaker
(:func:`attach_breaker`): each API call, botocore's own retries included, is one call of the
breaker. While the circuit is open, calls raise :class:`~mysetlist.breaker.CircuitOpenError`
before any request is sent, which :func:`unavailable_on_throttle` turns into a 503 that says
nothing was changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from mysetlist.breaker import CircuitBreaker, CircuitOpenError, Dependency, Permit, breaker_for
from mysetlist.errors import Unavailable
from mysetlist.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# DynamoDB refused the request: nothing was written, the same request may simply be retried.
THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
# DynamoDB failed to answer: a write may or may not have happened.
UNKNOWN_OUTCOME_CODES = frozenset({"InternalServerError", "ServiceUnavailable"})


@lru_cache(maxsize=4)
def client(region: str, endpoint_url: str, read_timeout: float = 5.0) -> DynamoDBClient:
    """A DynamoDB client for this container (created once; botocore clients are thread-safe).

    Request handlers keep the short default: a slow call should fail fast and be retried by the
    client. Batch tools (the importer) read megabytes per request and pass a longer one.
    """
    config = Config(
        retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=read_timeout
    )
    made = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url or None, config=config)
    # A call is slow when it takes half its read timeout: the importer's long reads and the
    # local stack's slow moto are not mistaken for a failing DynamoDB.
    attach_breaker(made, slow_call_duration=read_timeout / 2)
    return made


def client_for(settings: Settings, *, read_timeout: float | None = None) -> DynamoDBClient:
    """The container's client for ``settings`` (``read_timeout`` overrides the setting)."""
    return client(
        settings.aws_region, settings.aws_endpoint_url, read_timeout or settings.dynamodb_read_timeout
    )


_PERMIT = "mysetlist_breaker_permit"


def _dynamodb_breaker() -> CircuitBreaker:
    return breaker_for(Dependency.DYNAMODB)


def attach_breaker(
    db: DynamoDBClient,
    breaker: Callable[[], CircuitBreaker] = _dynamodb_breaker,
    *,
    slow_call_duration: float | None = None,
) -> None:
    """Guard every call of ``db`` with ``breaker()`` (by default the container's DYNAMODB breaker,
    looked up per call), through botocore's events:

    * ``before-call``: a permit, or :class:`CircuitOpenError` before any request is sent;
    * ``after-call``: the parsed response (an error response included) settles the permit;
    * ``after-call-error``: a request that raised (connection error, timeout, after botocore's
      retries) settles it as a failure if it counts.

    ``slow_call_duration`` overrides the breaker's for this client's calls. The client stays a
    plain boto3 client.
    """

    def before_call(context: dict[str, Any], **_: Any) -> None:
        context[_PERMIT] = breaker().acquire()

    def after_call(
        context: dict[str, Any], parsed: dict[str, Any], http_response: Any, model: Any, **_: Any
    ) -> None:
        permit: Permit | None = context.pop(_PERMIT, None)
        if permit is None:
            return  # another before-call handler answered first (a Stubber): nothing was admitted
        # botocore raises the error only after this event: classify the same ClientError here.
        error = ClientError(parsed, model.name) if http_response.status_code >= 300 else None  # type: ignore[arg-type]
        permit.record(error, slow_call_duration=slow_call_duration)

    def after_call_error(context: dict[str, Any], exception: BaseException, **_: Any) -> None:
        permit: Permit | None = context.pop(_PERMIT, None)
        if permit is not None:
            permit.record(exception, slow_call_duration=slow_call_duration)

    # First: so the breaker decides before a handler that answers in botocore's place.
    db.meta.events.register_first("before-call.dynamodb", before_call, unique_id="mysetlist-breaker-before")
    db.meta.events.register_first("after-call.dynamodb", after_call, unique_id="mysetlist-breaker-after")
    db.meta.events.register_first(
        "after-call-error.dynamodb", after_call_error, unique_id="mysetlist-breaker-error"
    )


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values -> DynamoDB attribute values (None values are left out)."""
    return {k: _serializer.serialize(_to_dynamo(v)) for k, v in values.items() if v is not None}


def to_value(value: Any) -> dict[str, Any]:
    return dict(_serializer.serialize(_to_dynamo(value)))


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values -> Python values (numbers become int or float)."""
    return {k: _from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo(v) for v in value}
    return value


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def unavailable_on_throttle(what: str) -> Iterator[None]:
    """Turn DynamoDB's throttling and server errors (after botocore's own retries), and an open
    circuit, into :class:`Unavailable`, saying whether anything may have been written."""
    try:
        yield
    except ClientError as exc:
        raise_unavailable_for(exc, what)
        raise
    except CircuitOpenError as exc:
        raise unavailable_for_open_circuit(exc, what) from exc


def unavailable_for_open_circuit(exc: CircuitOpenError, what: str) -> Unavailable:
    """The 503 for a call the breaker refused: nothing was sent, so nothing was changed."""
    seconds = max(1, math.ceil(exc.retry_after))
    return Unavailable(
        f"{what} is temporarily unavailable; retry in {seconds} s (nothing was changed)",
        details={
            "retryable": True,
            "outcome": "unchanged",
            "dependency": exc.dependency,
            "retry_after_seconds": seconds,
        },
    )


def raise_unavailable_for(exc: ClientError, what: str) -> None:
    """Raise :class:`Unavailable` for a throttling or server error; return for any other."""
    code = error_code(exc)
    if code in THROTTLING_CODES:
        raise Unavailable(
            f"{what} is busy; retry shortly (nothing was changed)",
            details={"retryable": True, "outcome": "unchanged"},
        ) from exc
    if code in UNKNOWN_OUTCOME_CODES:
        raise Unavailable(
            f"{what} did not answer in time; a change may or may not have been made: read the current state "
            "before you retry",
            details={"retryable": True, "outcome": "unknown"},
        ) from exc
