"""DynamoDB plumbing shared by the repositories: one client per container, value conversion,
and the mapping of throttling to a retryable 503 (nothing is changed when it happens)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

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
    return boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url or None, config=config)


def client_for(settings: Settings, *, read_timeout: float | None = None) -> DynamoDBClient:
    """The container's client for ``settings`` (``read_timeout`` overrides the setting)."""
    return client(
        settings.aws_region, settings.aws_endpoint_url, read_timeout or settings.dynamodb_read_timeout
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
    """Turn DynamoDB's throttling and server errors (after botocore's own retries) into
    :class:`Unavailable`, saying whether anything may have been written."""
    try:
        yield
    except ClientError as exc:
        raise_unavailable_for(exc, what)
        raise


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
