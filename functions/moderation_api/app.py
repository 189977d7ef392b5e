"""ModerationApi: the queue of flagged votes and the moderators' decisions (moderators and admins).

``GET /api/moderation/votes?show_id=`` lists a show's flagged votes in one state (quarantined by
default), most recently flagged first; ``POST /api/moderation/votes/{vote_id}`` releases a
quarantined vote (a false positive: it counts again) or confirms it (fraud: it stays excluded
and is kept). Both routes are behind the gateway's JWT authorizer; the role comes from the
token's groups. Tallies follow from the votes stream (mysetlist/moderation.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Body, Depends, Path, Query

from mysetlist.api import create_app, errors, lambda_handler, rate_limited, require_roles
from mysetlist.auth import Caller, Role
from mysetlist.dynamo import client_for
from mysetlist.models import Id, Page
from mysetlist.moderation import DecisionIn, FlaggedVote, ModerationState, ModerationStore
from mysetlist.ratelimit import MODERATION_READ, MODERATION_WRITE
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("votes_table")
store = ModerationStore(client_for(settings), settings.votes_table)

app = create_app(
    "MySetlist moderation API",
    "Votes flagged by suspicious-activity detection, and the moderators' decisions (docs/realtime.md).",
)

# Both budgets count the moderator, after the role check (a 401 or 403 costs nothing).
moderators = require_roles(Role.MODERATOR, Role.ADMIN)
reads = [Depends(rate_limited(MODERATION_READ, moderators))]
writes = [Depends(rate_limited(MODERATION_WRITE, moderators))]

# A vote id encodes the show, user and song ids (each at most 200 characters) in base64.
VoteId = Annotated[
    str, Path(min_length=1, max_length=1024, description="vote_id of an item of GET /api/moderation/votes")
]


@app.get(
    "/api/moderation/votes",
    response_model=Page[FlaggedVote],
    responses=errors(400, 401, 403, 429),
    dependencies=reads,
)
async def list_flagged_votes(
    _caller: Annotated[Caller, Depends(moderators)],
    show_id: Annotated[Id, Query(description="The show whose flagged votes to list")],
    state: Annotated[
        ModerationState, Query(description="quarantined (the queue), released or rejected")
    ] = ModerationState.QUARANTINED,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=2048, description="next_cursor of the previous page")
    ] = None,
) -> Page[FlaggedVote]:
    return store.list(show_id, state, min(limit, settings.max_page_size), cursor)


@app.post(
    "/api/moderation/votes/{vote_id}",
    response_model=FlaggedVote,
    responses=errors(401, 403, 404, 409, 429),
    dependencies=writes,
)
async def decide_on_vote(
    vote_id: VoteId,
    body: Annotated[DecisionIn, Body()],
    caller: Annotated[Caller, Depends(moderators)],
) -> FlaggedVote:
    """Release (the vote counts again) or confirm (it stays excluded) a quarantined vote. 409 when
    the vote is not quarantined (never flagged, or already decided); 404 when there is no such
    vote; 422 when the id is not a vote id."""
    return store.decide(vote_id, body.action, caller.user_id, body.note, dt.datetime.now(dt.UTC))


handler: Any = lambda_handler(app)
