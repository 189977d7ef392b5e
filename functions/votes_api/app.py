"""VotesApi: POST /api/votes (signed-in), GET /api/votes?show_id= (anonymous or signed-in) and
GET /api/trending (anonymous)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request

from mysetlist import voting
from mysetlist.activity import ActivityConfig
from mysetlist.api import (
    create_app,
    current_caller,
    errors,
    lambda_handler,
    rate_limited,
    source_ip,
    token_caller,
)
from mysetlist.auth import Caller
from mysetlist.cache import shared_cache
from mysetlist.catalog_cache import CachedCatalogStore
from mysetlist.dynamo import client_for
from mysetlist.errors import InvalidRequest
from mysetlist.fans import FanStore
from mysetlist.jwt_verify import JwtVerifier
from mysetlist.models import Id, ShowVotes, Trending, TrendingScope, VoteIn, VoteOut
from mysetlist.profiles import ProfileStore, cached_account_created_at
from mysetlist.ratelimit import VOTES_CAST, VOTES_READ
from mysetlist.settings import load_settings
from mysetlist.signals import DEVICE_ID_HEADER, DEVICE_ID_PATTERN, ClientSignals
from mysetlist.tallies import TallyStore
from mysetlist.trending import TrendingBoard
from mysetlist.valkey import valkey_client
from mysetlist.votes_store import VotesStore

settings = load_settings()
settings.require("catalog_table", "votes_table", "tallies_table", "jwt_issuer", "jwt_audience")
_db = client_for(settings)
cache = shared_cache()
# The show and song checks of every vote, and the shared tallies board, come from the cache.
catalog = CachedCatalogStore(_db, settings.catalog_table, cache)
votes = VotesStore(_db, settings.votes_table)
tallies = TallyStore(
    _db,
    settings.tallies_table,
    marker_ttl_seconds=settings.stream_marker_ttl_seconds,
    activity=ActivityConfig.from_settings(settings),
)
board = TrendingBoard(lambda: valkey_client(settings), tallies.activity)
profiles = ProfileStore(_db, settings.users_table) if settings.users_table else None
# Who follows which artist (a vote makes a fan: mysetlist.fans), for A/B targeting.
fans = FanStore(_db, settings.users_table, cache) if settings.users_table else None
verifier = JwtVerifier(settings.jwt_issuer, [settings.jwt_audience])

app = create_app("MySetlist votes API")


# The route is anonymous at the gateway: a token sent to it is verified here.
token_holder = token_caller(verifier)


# Votes are counted per user, after authentication (a 401 costs nothing); the tallies per
# client address, before the optional token is verified (a flood of bad tokens is limited too).
@app.post(
    "/api/votes",
    response_model=VoteOut,
    responses=errors(400, 401, 404, 409, 429),
    dependencies=[Depends(rate_limited(VOTES_CAST, current_caller))],
)
async def cast_vote(
    body: VoteIn,
    caller: Annotated[Caller, Depends(current_caller)],
    request: Request,
    x_device_id: Annotated[
        str | None,
        Header(
            description="An id the app keeps per installation (8-128 of A-Z a-z 0-9 . _ : -); "
            "stored hashed, for suspicious-activity detection (docs/realtime.md)"
        ),
    ] = None,
) -> VoteOut:
    signals = client_signals(request, caller, x_device_id)
    now = dt.datetime.now(dt.UTC)
    return voting.cast_vote(catalog, votes, caller, body, now, signals, on_cast=fan_recorder(caller, now))


@app.get(
    "/api/trending",
    response_model=Trending,
    responses=errors(400, 404, 429, 503),
    dependencies=[Depends(rate_limited(VOTES_READ))],
)
async def trending(
    scope: Annotated[
        TrendingScope, Query(description="songs: the songs of one show; shows: across the platform")
    ],
    show_id: Annotated[Id | None, Query(description="The show whose songs to rank (scope=songs)")] = None,
    artist_id: Annotated[Id | None, Query(description="Only this artist's shows (scope=shows)")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="How many to return")] = 20,
) -> Trending:
    return voting.trending(
        catalog,
        votes,
        tallies,
        board,
        scope=scope,
        show_id=show_id,
        artist_id=artist_id,
        limit=limit,
        now=dt.datetime.now(dt.UTC),
        cache=cache,
        ttl=settings.tallies_cache_seconds,
    )


def client_signals(request: Request, caller: Caller, device_id: str | None) -> ClientSignals:
    """What suspicious-activity detection needs to know of the client (docs/realtime.md)."""
    if device_id is not None and not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise InvalidRequest(
            f"the {DEVICE_ID_HEADER} header must be 8 to 128 letters, digits or '._:-' (or be left out)",
            details={"header": DEVICE_ID_HEADER},
        )
    return ClientSignals.from_request(
        source_ip=source_ip(request),
        user_agent=request.headers.get("user-agent"),
        device_id=device_id,
        account_created_at=account_created_at(caller.user_id),
    )


def fan_recorder(caller: Caller, now: dt.datetime) -> Callable[[str], object] | None:
    """Records that the caller follows the artist whose show it voted on (mysetlist.fans: a
    vote cast is the platform's signal of fandom). At most one UsersTable write per user and
    artist per hour, and a failure is logged and counted, never the vote's; None without a
    users table."""
    store = fans
    if store is None:
        return None
    return lambda artist_id: store.record(caller.user_id, artist_id, now)


def account_created_at(user_id: str) -> dt.datetime | None:
    """The caller's account creation time; None when unknown or when it cannot be read now
    (detection then goes without it, the vote does not fail)."""
    return cached_account_created_at(profiles, cache, user_id)


@app.get(
    "/api/votes",
    response_model=ShowVotes,
    responses=errors(401, 404, 429),
    dependencies=[Depends(rate_limited(VOTES_READ))],
)
async def show_votes(
    show_id: Annotated[Id, Query(description="The show whose tallies to read")],
    caller: Annotated[Caller | None, Depends(token_holder)],
) -> ShowVotes:
    return voting.show_votes(catalog, votes, tallies, show_id, caller, cache, settings.tallies_cache_seconds)


handler: Any = lambda_handler(app)
