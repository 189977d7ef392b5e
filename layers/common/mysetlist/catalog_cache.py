"""The catalogue's reads through the two-level cache, and the tags that invalidate them.

``CachedCatalogStore`` is a :class:`CatalogStore` whose hot reads go through the cache; writes
go to DynamoDB and then invalidate the tags of what they changed. What is cached, for how long,
and what invalidates it:

| read | key | TTL | tags | invalidated by |
|---|---|---|---|---|
| show (every vote) | ``show:<id>`` | 5 min | ``show:<id>`` | setlist recorded, import |
| song exists (every vote) | ``song-exists:<artist>:<song>`` | 10 min | ``artist-songs:<artist>`` | setlist with new songs, import |
| artist | ``artist:<id>`` | 5 min | ``artist:<id>`` | setlist with new songs (song count), import |
| artist and venue | ``artist-venue:<a>:<v>`` | 5 min | ``artist:<a>`` | as above |
| show and setlist (display) | ``show-detail:<id>`` | 2 min | ``show:<id>`` | setlist recorded, import |
| songs of an artist, a page | ``songs:<a>:<limit>:<cursor>`` | 2 min | ``artist-songs:<a>`` | setlist recorded (plays), import |
| shows list, a page | ``shows:<...query...>`` | 1 min | ``shows`` | setlist recorded (status), import |
| artist search, a page | ``artists:<query>:<limit>:<cursor>`` | 5 min | ``artists`` | import |

Reads a write depends on (``get_show_and_setlist`` before recording a setlist, ``song_titles``,
``raw_songs`` for the importer) are never cached. Values are stored as JSON (``model_dump``) and
validated back into models on the way out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from mysetlist.cache import Cache, Priority, WarmSpec
from mysetlist.catalog_store import CatalogStore, SetlistChange
from mysetlist.errors import NotFound
from mysetlist.models import Artist, Page, Setlist, Show, ShowStatus, Song, Venue

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SHOW_TTL = 300.0
SONG_EXISTS_TTL = 600.0
ARTIST_TTL = 300.0
SHOW_DETAIL_TTL = 120.0
SONG_PAGE_TTL = 120.0
SHOW_LIST_TTL = 60.0
ARTIST_SEARCH_TTL = 300.0

SHOWS_TAG = "shows"
ARTISTS_TAG = "artists"


def show_tag(show_id: str) -> str:
    return f"show:{show_id}"


def artist_tag(artist_id: str) -> str:
    return f"artist:{artist_id}"


def artist_songs_tag(artist_id: str) -> str:
    return f"artist-songs:{artist_id}"


def tags_for_setlist_change(change: SetlistChange) -> list[str]:
    """What recording a setlist changes: the show (status, setlist), the shows lists (status),
    the artist's songs (plays) and, when songs are new, the artist (song count)."""
    artist = change.show.artist_id
    tags = [show_tag(change.show.show_id), SHOWS_TAG, artist_songs_tag(artist)]
    if change.new_song_ids:
        tags.append(artist_tag(artist))
    return tags


def tags_for_import(artist_ids: Iterable[str], show_ids: Iterable[str]) -> list[str]:
    """Everything an import may have changed for these artists and shows."""
    tags = [SHOWS_TAG, ARTISTS_TAG]
    for artist in dict.fromkeys(artist_ids):
        tags += [artist_tag(artist), artist_songs_tag(artist)]
    tags += [show_tag(s) for s in dict.fromkeys(show_ids)]
    return tags


class CachedCatalogStore(CatalogStore):
    """A :class:`CatalogStore` whose reads for display and voting go through ``cache``."""

    def __init__(self, client: DynamoDBClient, table: str, cache: Cache) -> None:
        super().__init__(client, table)
        self.cache = cache

    # -- reads ---------------------------------------------------------------------------------

    def get_show(self, show_id: str) -> Show | None:
        return _load(Show, self._cached(self.show_spec(show_id)))

    def song_exists(self, artist_id: str, song_id: str) -> bool:
        return bool(self.cache.get(**_arguments(self.song_exists_spec(artist_id, song_id))))

    def get_artist(self, artist_id: str) -> Artist | None:
        return _load(Artist, self._cached(self.artist_spec(artist_id)))

    def get_artist_and_venue(
        self, artist_id: str, venue_id: str | None
    ) -> tuple[Artist | None, Venue | None]:
        found = self.cache.get(**_arguments(self.artist_venue_spec(artist_id, venue_id)))
        return _load(Artist, found["artist"]), _load(Venue, found["venue"])

    def read_show_and_setlist(self, show_id: str) -> tuple[Show, Setlist | None] | None:
        cached = self._cached(self.show_detail_spec(show_id))
        if cached is None:
            return None
        return Show.model_validate(cached["show"]), _load(Setlist, cached["setlist"])

    # -- what each entity read caches (the cache warmer uses the same specs) ------------------------

    def show_spec(self, show_id: str) -> WarmSpec:
        return WarmSpec(
            f"show:{show_id}",
            lambda: _present(f"show:{show_id}", CatalogStore.get_show(self, show_id)),
            SHOW_TTL,
            Priority.HIGH,
            [show_tag(show_id)],
        )

    def song_exists_spec(self, artist_id: str, song_id: str) -> WarmSpec:
        return WarmSpec(
            f"song-exists:{artist_id}:{song_id}",
            lambda: CatalogStore.song_exists(self, artist_id, song_id),
            SONG_EXISTS_TTL,
            Priority.HIGH,
            [artist_songs_tag(artist_id)],
        )

    def artist_spec(self, artist_id: str) -> WarmSpec:
        return WarmSpec(
            f"artist:{artist_id}",
            lambda: _present(f"artist:{artist_id}", CatalogStore.get_artist(self, artist_id)),
            ARTIST_TTL,
            Priority.NORMAL,
            [artist_tag(artist_id)],
        )

    def artist_venue_spec(self, artist_id: str, venue_id: str | None) -> WarmSpec:
        def load() -> dict[str, Any]:
            artist, venue = CatalogStore.get_artist_and_venue(self, artist_id, venue_id)
            return {"artist": _dump(artist), "venue": _dump(venue)}

        return WarmSpec(
            f"artist-venue:{artist_id}:{venue_id or ''}",
            load,
            ARTIST_TTL,
            Priority.NORMAL,
            [artist_tag(artist_id)],
        )

    def show_detail_spec(self, show_id: str) -> WarmSpec:
        def load() -> dict[str, Any]:
            found = self.get_show_and_setlist(show_id)  # strongly consistent: fresh after a write
            if found is None:
                raise _Absent(f"show-detail:{show_id}")
            return {"show": _dump(found[0]), "setlist": _dump(found[1])}

        return WarmSpec(f"show-detail:{show_id}", load, SHOW_DETAIL_TTL, Priority.NORMAL, [show_tag(show_id)])

    def spec_for_key(self, key: str) -> WarmSpec | None:
        """How to load a cached entity key (the cache warmer's resolver); None for keys that are
        not worth prefetching (list pages, tallies that live two seconds)."""
        kind, _, rest = key.partition(":")
        parts = rest.split(":")
        if kind == "show" and len(parts) == 1:
            return self.show_spec(parts[0])
        if kind == "show-detail" and len(parts) == 1:
            return self.show_detail_spec(parts[0])
        if kind == "artist" and len(parts) == 1:
            return self.artist_spec(parts[0])
        if kind == "song-exists" and len(parts) == 2:
            return self.song_exists_spec(parts[0], parts[1])
        if kind == "artist-venue" and len(parts) == 2:
            return self.artist_venue_spec(parts[0], parts[1] or None)
        return None

    def _cached(self, spec: WarmSpec) -> Any:
        try:
            return self.cache.get(**_arguments(spec))
        except _Absent:
            return None

    def list_songs(self, artist_id: str, limit: int, cursor: str | None) -> Page[Song]:
        return self._page(
            Page[Song],
            f"songs:{artist_id}:{limit}:{cursor or ''}",
            lambda: super(CachedCatalogStore, self).list_songs(artist_id, limit, cursor),
            SONG_PAGE_TTL,
            [artist_songs_tag(artist_id)],
            Priority.LOW,
        )

    def search_artists(self, query: str, limit: int, cursor: str | None) -> Page[Artist]:
        return self._page(
            Page[Artist],
            f"artists:{query}:{limit}:{cursor or ''}",
            lambda: super(CachedCatalogStore, self).search_artists(query, limit, cursor),
            ARTIST_SEARCH_TTL,
            [ARTISTS_TAG],
            Priority.LOW,
        )

    def list_shows(
        self,
        *,
        artist_id: str | None,
        status: ShowStatus | None,
        date_from: dt.date | None,
        date_to: dt.date | None,
        descending: bool,
        limit: int,
        cursor: str | None,
    ) -> Page[Show]:
        parts = [
            artist_id or "",
            status.value if status else "",
            date_from.isoformat() if date_from else "",
            date_to.isoformat() if date_to else "",
            "desc" if descending else "asc",
            str(limit),
            cursor or "",
        ]
        return self._page(
            Page[Show],
            "shows:" + ":".join(parts),
            lambda: super(CachedCatalogStore, self).list_shows(
                artist_id=artist_id,
                status=status,
                date_from=date_from,
                date_to=date_to,
                descending=descending,
                limit=limit,
                cursor=cursor,
            ),
            SHOW_LIST_TTL,
            [SHOWS_TAG, *([artist_tag(artist_id)] if artist_id else [])],
            Priority.NORMAL,
        )

    # -- writes ----------------------------------------------------------------------------------

    def record_setlist(self, change: SetlistChange) -> None:
        super().record_setlist(change)
        self.cache.invalidate_tags(tags_for_setlist_change(change))

    # -- helpers ---------------------------------------------------------------------------------

    def _model[M: BaseModel](
        self,
        model: type[M],
        key: str,
        loader: Callable[[], M | None],
        ttl: float,
        tags: list[str],
        priority: Priority = Priority.NORMAL,
    ) -> M | None:
        def load() -> dict[str, Any]:
            value = loader()
            if value is None:
                raise _Absent(key)  # absence is not cached: an import may create it any moment
            return value.model_dump(mode="json")

        try:
            found = self.cache.get(key, load, ttl=ttl, tags=tags, priority=priority)
        except _Absent:
            return None
        return _load(model, found)

    def _page[M: BaseModel](
        self,
        model: type[M],
        key: str,
        loader: Callable[[], M],
        ttl: float,
        tags: list[str],
        priority: Priority,
    ) -> M:
        found = self._model(model, key, loader, ttl, tags, priority)
        if found is None:  # a page is never None; a None here means a foreign value under this key
            raise TypeError(f"cache key {key!r} holds no page")
        return found


class _Absent(NotFound):
    """The item does not exist (a domain answer: never replaced by a stale cached value)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"nothing stored for {key}")


def _present(key: str, model: BaseModel | None) -> dict[str, Any]:
    if model is None:
        raise _Absent(key)  # absence is not cached: an import may create it any moment
    return model.model_dump(mode="json")


def _arguments(spec: WarmSpec) -> dict[str, Any]:
    return {
        "key": spec.key,
        "loader": spec.loader,
        "ttl": spec.ttl,
        "priority": spec.priority,
        "tags": spec.tags,
        "compress": spec.compress,
        "encrypt": spec.encrypt,
    }


def _dump(model: BaseModel | None) -> dict[str, Any] | None:
    return None if model is None else model.model_dump(mode="json")


def _load[M: BaseModel](model: type[M], value: Any) -> M | None:
    return None if value is None else model.model_validate(value)
