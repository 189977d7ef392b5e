"""VotesApi: POST /api/votes (signed-in) and GET /api/votes?show_id= (anonymous or signed-in)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Depends, Query

from mysetlist import voting
from mysetlist.api import (
    create_app,
    current_caller,
    errors,
    lambda_handler,
    rate_limited,
    token_caller,
)
from mysetlist.auth import Caller
from mysetlist.cache import shared_cache
from mysetlist.catalog_cache import CachedCatalogStore
from mysetlist.dynamo import client_for
from mysetlist.jwt_verify import JwtVerifier
from mysetlist.models import Id, ShowVotes, VoteIn, VoteOut
from mysetlist.ratelimit import VOTES_CAST, VOTES_READ
from mysetlist.settings import load_settings
from mysetlist.tallies import TallyStore
from mysetlist.votes_store import VotesStore

settings = load_settings()
settings.require("catalog_table", "votes_table", "tallies_table", "jwt_issuer", "jwt_audience")
_db = client_for(settings)
cache = shared_cache()
# The show and song checks of every vote, and the shared tallies board, come from the cache.
catalog = CachedCatalogStore(_db, settings.catalog_table, cache)
votes = VotesStore(_db, settings.votes_table)
tallies = TallyStore(_db, settings.tallies_table, marker_ttl_seconds=settings.stream_marker_ttl_seconds)
verifier = JwtVerifier(settings.jwt_issuer, [settings.jwt_audience])

app = create_app("MySetlist votes API")


# The route is anonymous at the gateway: a token sent to it is verified here.
token_holder = token_caller(verifier)


# Votes are counted per user, after authentication (a 401 costs nothing); the tallies per
# client address, before the optional token is verified (a flood of bad tokens is limited too).
@app.post(
    "/api/votes",
    response_model=VoteOut,
    responses=errors(401, 404, 409, 429),
    dependencies=[Depends(rate_limited(VOTES_CAST, current_caller))],
)
async def cast_vote(body: VoteIn, caller: Annotated[Caller, Depends(current_caller)]) -> VoteOut:
    return voting.cast_vote(catalog, votes, caller, body, dt.datetime.now(dt.UTC))


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
