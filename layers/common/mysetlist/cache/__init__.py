"""The two-level cache shared by every function: L1 in the container, L2 in Valkey.

``shared_cache()`` is the container's cache, built from the settings on first use. See
``core.py`` for how reads, loads, invalidation and refresh-ahead work, ``l1.py`` for the
in-process policy, ``l2.py`` for the Valkey layout, ``codec.py`` and ``crypto.py`` for the stored
form (compressed above a threshold, AES-GCM under a KMS data key when marked sensitive).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mysetlist.aws import service_client
from mysetlist.cache.core import Cache, CacheConfig, WarmSpec, pattern_of
from mysetlist.cache.crypto import KmsEnvelope
from mysetlist.cache.l1 import Priority
from mysetlist.cache.l2 import ValkeyLayer
from mysetlist.settings import Settings, load_settings
from mysetlist.valkey import valkey_client

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_kms import KMSClient
    from redis import Redis

__all__ = [
    "Cache",
    "CacheConfig",
    "Priority",
    "WarmSpec",
    "build_cache",
    "pattern_of",
    "publish_metrics",
    "shared_cache",
]

# The L1 may use at most this share of the function's memory, whatever cache_max_memory_mb says.
L1_MEMORY_SHARE = 0.25


def config_from(settings: Settings) -> CacheConfig:
    return CacheConfig(
        l1_max_entries=settings.cache_l1_max_entries,
        l2_max_entries=settings.cache_l2_max_entries,
        max_memory_mb=settings.cache_max_memory_mb,
        compression_threshold=settings.cache_compression_threshold,
        refresh_ahead_threshold=settings.cache_refresh_ahead_threshold,
        l1_ttl_seconds=settings.cache_l1_ttl_seconds,
        version_check_seconds=settings.cache_version_check_seconds,
        stale_seconds=settings.cache_stale_seconds,
    )


def l1_byte_budget(settings: Settings) -> int:
    """``cache_max_memory_mb``, capped at a quarter of the function's memory in Lambda."""
    budget = settings.cache_max_memory_mb * 2**20
    function_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if function_mb.isdigit():
        budget = min(budget, int(function_mb) * 2**20 * L1_MEMORY_SHARE)
    return int(budget)


def _valkey_guard(operation: Callable[[], Any]) -> Any:
    from mysetlist.breaker import Dependency, breaker_for  # noqa: PLC0415 - the breaker imports the cache's settings

    return breaker_for(Dependency.VALKEY).call(operation)


def _connected(settings: Settings) -> Redis:
    client = valkey_client(settings)
    if client is None:  # pragma: no cover - cache_url is set when this is called
        raise RuntimeError("no cache endpoint configured")
    return client


def build_cache(settings: Settings, *, kms: Callable[[], KMSClient] | None = None, **overrides: Any) -> Cache:
    """A cache for ``settings``: L2 when ``cache_url`` is set, encryption when
    ``cache_kms_key_id`` is set (``kms`` makes the KMS client; by default one per container)."""
    from mysetlist.observability import remaining_time_ms  # noqa: PLC0415

    l2 = None
    if settings.cache_url:
        l2 = ValkeyLayer(
            lambda: _connected(settings), _valkey_guard, max_entries=settings.cache_l2_max_entries
        )
    encryptor = None
    if settings.cache_kms_key_id:
        encryptor = KmsEnvelope(kms or (lambda: _kms_client(settings)), settings.cache_kms_key_id)
    options: dict[str, Any] = {"l2": l2, "encryptor": encryptor, "remaining_ms": remaining_time_ms}
    options["l1_max_bytes"] = l1_byte_budget(settings)
    options.update(overrides)
    return Cache(config_from(settings), **options)


@lru_cache(maxsize=1)
def shared_cache() -> Cache:
    """The container's cache (built on first use, from the environment's settings)."""
    return build_cache(load_settings())


def publish_metrics() -> None:
    """Add this invocation's cache counters to the function's metrics (embedded metric format,
    flushed with the invocation's other metrics). Nothing when the cache was never built."""
    if shared_cache.cache_info().currsize == 0:
        return
    from aws_lambda_powertools.metrics import MetricUnit  # noqa: PLC0415

    from mysetlist.observability import metrics  # noqa: PLC0415

    for name, value in shared_cache().counter_deltas().items():
        if value:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def _kms_client(settings: Settings) -> KMSClient:
    kms: KMSClient = service_client("kms", settings)
    return kms
