"""CatalogApi: artists, songs, shows (anonymous reads) and actual setlists (moderators)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Depends, Path, Query

from mysetlist import catalog
from mysetlist.api import create_app, errors, lambda_handler, rate_limited, require_roles
from mysetlist.auth import Caller, Role
from mysetlist.cache import shared_cache
from mysetlist.catalog_cache import CachedCatalogStore
from mysetlist.dynamo import client_for
from mysetlist.models import Artist, Id, Page, SetlistIn, Show, ShowDetail, ShowStatus, Song
from mysetlist.ratelimit import CATALOG_READ, CATALOG_WRITE
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("catalog_table")
# Reads go through the two-level cache; recording a setlist invalidates what it changed.
store = CachedCatalogStore(client_for(settings), settings.catalog_table, shared_cache())

app = create_app("MySetlist catalogue API")

# Reads are counted per client address; setlist changes per moderator, after the role check.
reads = [Depends(rate_limited(CATALOG_READ))]
moderators = require_roles(Role.MODERATOR, Role.ADMIN)
writes = [Depends(rate_limited(CATALOG_WRITE, moderators))]

Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=2048, description="next_cursor of the previous page")]


@app.get("/api/artists", response_model=Page[Artist], responses=errors(400, 429), dependencies=reads)
async def list_artists(
    query: Annotated[str, Query(max_length=100, description="Name prefix")] = "",
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[Artist]:
    return store.search_artists(query, limit, cursor)


@app.get("/api/artists/{artist_id}", response_model=Artist, responses=errors(404, 429), dependencies=reads)
async def get_artist(artist_id: Annotated[Id, Path()]) -> Artist:
    return catalog.get_artist(store, artist_id)


@app.get(
    "/api/artists/{artist_id}/songs",
    response_model=Page[Song],
    responses=errors(400, 404, 429),
    dependencies=reads,
)
async def list_songs(
    artist_id: Annotated[Id, Path()], limit: Limit = 50, cursor: Cursor = None
) -> Page[Song]:
    return catalog.list_artist_songs(store, artist_id, limit, cursor)


@app.get("/api/shows", response_model=Page[Show], responses=errors(400, 404, 429), dependencies=reads)
async def list_shows(
    artist_id: Annotated[Id | None, Query()] = None,
    status: Annotated[ShowStatus | None, Query(description="upcoming or completed")] = None,
    date_from: Annotated[dt.date | None, Query(alias="from", description="First date, YYYY-MM-DD")] = None,
    date_to: Annotated[dt.date | None, Query(alias="to", description="Last date, YYYY-MM-DD")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[Show]:
    return catalog.list_shows(
        store,
        artist_id=artist_id,
        status=status,
        date_from=date_from,
        date_to=date_to,
        limit=limit,
        cursor=cursor,
    )


@app.get("/api/shows/{show_id}", response_model=ShowDetail, responses=errors(404, 429), dependencies=reads)
async def get_show(show_id: Annotated[Id, Path()]) -> ShowDetail:
    return catalog.get_show_detail(store, show_id)


@app.put(
    "/api/shows/{show_id}/setlist",
    response_model=ShowDetail,
    responses=errors(401, 403, 404, 409, 429),
    dependencies=writes,
)
async def put_setlist(
    show_id: Annotated[Id, Path()],
    body: SetlistIn,
    caller: Annotated[Caller, Depends(moderators)],
) -> ShowDetail:
    return catalog.record_setlist(store, show_id, body, caller, dt.datetime.now(dt.UTC))


handler: Any = lambda_handler(app)
