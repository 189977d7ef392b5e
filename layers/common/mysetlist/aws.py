"""The container's AWS clients other than DynamoDB's (``dynamo.client_for``): one per service
and timeout policy, created on first use and kept (botocore clients are thread-safe).

Every client points at ``settings.aws_endpoint_url`` when it is set (the local stack's moto)
and has short timeouts: a call to a failing service should fail fast, and the caller (a
breaker, a retry loop, the next scheduled run) decides what happens next.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from mysetlist.settings import Settings


def service_client(
    service: str,
    settings: Settings,
    *,
    connect_timeout: float = 2.0,
    read_timeout: float = 5.0,
    attempts: int = 3,
) -> Any:
    """The container's client of ``service`` ("sqs", "events", "kms", "sns"...) with these
    timeouts; ``attempts`` counts the first call (botocore's standard retry mode)."""
    return _client(
        service, settings.aws_region, settings.aws_endpoint_url, connect_timeout, read_timeout, attempts
    )


@lru_cache(maxsize=16)
def _client(
    service: str, region: str, endpoint_url: str, connect_timeout: float, read_timeout: float, attempts: int
) -> Any:
    import boto3  # noqa: PLC0415 - loaded with the first client, as DynamoDB's usually is first
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": attempts},
    )
    make: Any = boto3.client  # one factory for several services (their stubs are per service)
    return make(service, region_name=region, endpoint_url=endpoint_url or None, config=config)
