"""CacheWarmer (EventBridge Scheduler, every 5 minutes): warms the cache entries of shows
starting soon and of the keys the fleet reads most, then tidies the cache
(mysetlist/cache_warming.py). Without a cache endpoint it has nothing to share and says so."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.cache import shared_cache
from mysetlist.cache_warming import warm
from mysetlist.catalog_cache import CachedCatalogStore
from mysetlist.dynamo import client_for
from mysetlist.observability import entrypoint, logger, metrics
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("catalog_table")
cache = shared_cache()
catalog = CachedCatalogStore(client_for(settings), settings.catalog_table, cache)


@entrypoint()
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if not settings.cache_url:
        logger.info("no cache endpoint configured: an L1-only cache has nothing to warm for others")
        return {"skipped": "no cache endpoint"}
    report = warm(catalog, cache, dt.datetime.now(dt.UTC))
    metrics.add_metric(name="CacheKeysWarmed", unit=MetricUnit.Count, value=report["upcoming"]["warmed"])
    metrics.add_metric(name="CacheKeysPrefetched", unit=MetricUnit.Count, value=report["popular"]["warmed"])
    metrics.add_metric(
        name="CacheWarmFailures",
        unit=MetricUnit.Count,
        value=report["upcoming"]["failed"] + report["popular"]["failed"],
    )
    logger.info("cache warmed", extra={"report": report, "scheduled_time": event.get("scheduled_time")})
    return report
