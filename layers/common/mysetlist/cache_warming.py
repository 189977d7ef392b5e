"""What the CacheWarmer does every few minutes: warm the shows starting soon, prefetch the keys
the fleet reads most, and keep the cache tidy.

- **Shows starting soon.** The schedule is known: every upcoming show in the next
  ``WARM_HORIZON_DAYS`` days gets its show, show detail, artist and artist-with-venue entries
  loaded (or reloaded when due for refresh), so the first fans who open a show page or vote
  find them cached.
- **Hot keys.** The cache counts accesses (sampled in each container, summed in Valkey); the
  most read keys that can be loaded by key are reloaded when missing or near expiry.
- **Housekeeping.** ``Cache.optimize``: hold L2 to its bound, prune dead keys from tag sets, age
  the access counts so yesterday's hot keys cool down.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mysetlist.cache import Cache, WarmSpec
from mysetlist.catalog_cache import CachedCatalogStore
from mysetlist.catalog_store import CatalogStore
from mysetlist.models import ShowStatus

WARM_HORIZON_DAYS = 2
# A bound on one run's work (a run must finish well before the next one starts).
MAX_SHOWS = 500
HOT_KEYS = 200
_PAGE = 100


def upcoming_specs(
    store: CachedCatalogStore, today: dt.date, *, days: int = WARM_HORIZON_DAYS
) -> list[WarmSpec]:
    """The cache entries of every upcoming show from ``today`` to ``today + days``."""
    specs: list[WarmSpec] = []
    cursor: str | None = None
    shows = 0
    while shows < MAX_SHOWS:
        # Straight from DynamoDB: the warmer must see shows a cached list page would hide.
        page = CatalogStore.list_shows(
            store,
            artist_id=None,
            status=ShowStatus.UPCOMING,
            date_from=today,
            date_to=today + dt.timedelta(days=days),
            descending=False,
            limit=min(_PAGE, MAX_SHOWS - shows),
            cursor=cursor,
        )
        for show in page.items:
            shows += 1
            specs += [
                store.show_spec(show.show_id),
                store.show_detail_spec(show.show_id),
                store.artist_spec(show.artist_id),
                store.artist_venue_spec(show.artist_id, show.venue_id),
            ]
        cursor = page.next_cursor
        if not cursor:
            break
    return _unique(specs)


def warm(store: CachedCatalogStore, cache: Cache, now: dt.datetime) -> dict[str, Any]:
    """One warmer run; the report is logged and returned."""
    soon = upcoming_specs(store, now.date())
    report: dict[str, Any] = {"upcoming_keys": len(soon), "upcoming": cache.warm_up(soon)}
    report["popular"] = cache.prefetch_popular(store.spec_for_key, limit=HOT_KEYS)
    report["optimize"] = cache.optimize()
    return report


def _unique(specs: list[WarmSpec]) -> list[WarmSpec]:
    seen: dict[str, WarmSpec] = {}
    for spec in specs:
        seen.setdefault(spec.key, spec)
    return list(seen.values())
