"""AbTestingApi: A/B tests on content placements, on the original's routes (docs/api.md).

``GET /api/content/ab-testing``
  ``?content_type=&placement=``: the caller's content for a placement (anyone: a signed-in
  caller by its token, a signed-out one by its ``X-Device-Id``); ``?test_id=``: one experiment,
  with ``&action=results|statistical_analysis|segment_analysis|real_time_metrics`` its analysis;
  no parameters: the experiments, by status (admins and content managers).
``POST /api/content/ab-testing``
  ``?action=create`` (default): a new experiment, as a draft; ``?action=default_content``: a
  placement's default content (admins and content managers); ``?action=track``: the caller's own
  interactions with an experiment it was served (anyone exposed).
``PATCH /api/content/ab-testing?test_id=&action=``
  ``update`` (default): change the definition; ``start|pause|resume|complete|archive``: the
  lifecycle; the four analysis actions as with GET (admins and content managers).

Every method is anonymous at the gateway; a token sent is verified here, as the authorizer
would, and a bad one is a 401, never silently anonymous. Budgets: ``experiments.serve`` per
client address for content, ``events.track`` per address for interactions, and
``experiments.manage`` per user for everything else (charged after the role check).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Body, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from mysetlist.api import charge_budget, create_app, errors, lambda_handler, token_caller
from mysetlist.auth import Caller, Role
from mysetlist.cache import shared_cache
from mysetlist.dynamo import client_for
from mysetlist.errors import Conflict, Forbidden, InvalidRequest, Unauthorized
from mysetlist.experiments import service
from mysetlist.experiments.assignment import (
    AssignmentContext,
    segment_role,
    subject_for,
    user_type_for,
)
from mysetlist.experiments.definitions import (
    Action,
    Experiment,
    ExperimentIn,
    ExperimentPatch,
    Method,
    Status,
)
from mysetlist.experiments.store import ExperimentStore
from mysetlist.fans import FanStore
from mysetlist.jwt_verify import JwtVerifier
from mysetlist.profiles import ProfileStore, cached_account_created_at
from mysetlist.ratelimit import EVENTS_TRACK, EXPERIMENTS_MANAGE, EXPERIMENTS_SERVE
from mysetlist.settings import load_settings
from mysetlist.signals import DEVICE_ID_HEADER

settings = load_settings()
settings.require("experiments_table", "jwt_issuer", "jwt_audience")
_db = client_for(settings)
cache = shared_cache()
store = ExperimentStore(_db, settings.experiments_table)
profiles = ProfileStore(_db, settings.users_table) if settings.users_table else None
# The artists a signed-in caller follows (voted on a show of: mysetlist.fans), for targeting.
fans = FanStore(_db, settings.users_table, cache) if settings.users_table else None
verifier = JwtVerifier(settings.jwt_issuer, [settings.jwt_audience])
token_holder = token_caller(verifier)

# A placement's running experiments and default content are read on every content request:
# cached briefly, so a started, paused or changed experiment, or a new default, is served
# everywhere within this many seconds.
PLACEMENT_CACHE_SECONDS = 15.0
MANAGERS = (Role.ADMIN, Role.CONTENT_MANAGER)
COUNTRY_HEADER = "cloudfront-viewer-country"

app = create_app(
    "MySetlist A/B testing API",
    "Experiments on content placements: serving, tracking, definitions and analysis (docs/experiments.md).",
)

Caller_ = Annotated[Caller | None, Depends(token_holder)]
DeviceId = Annotated[
    str | None,
    Header(
        alias=DEVICE_ID_HEADER,
        description="Signed-out callers: an id the app keeps per installation (8-128 of A-Z a-z 0-9 . _ : -), "
        "so their variant stays the same; stored hashed",
    ),
]


# ---------------------------------------------------------------------------------- GET


@app.get("/api/content/ab-testing", responses=errors(400, 401, 403, 404, 429))
async def read(
    request: Request,
    response: Response,
    caller: Caller_,
    device_id: DeviceId = None,
    content_type: Annotated[
        str | None, Query(max_length=64, description="Serve: the kind of content")
    ] = None,
    placement: Annotated[str | None, Query(max_length=64, description="Serve: where it is shown")] = None,
    device: Annotated[
        str | None, Query(max_length=16, description="Serve: mobile, tablet or desktop")
    ] = None,
    region: Annotated[
        str | None, Query(max_length=2, description="Serve: ISO 3166-1 alpha-2 country, when no CDN sets it")
    ] = None,
    test_id: Annotated[str | None, Query(max_length=64, description="One experiment")] = None,
    action: Annotated[service.AnalysisAction | None, Query(description="An analysis of test_id")] = None,
    phase: Annotated[int | None, Query(ge=1, description="Analysis: the phase (default the current)")] = None,
    method: Annotated[Method | None, Query(description="Analysis: override the experiment's method")] = None,
    status: Annotated[Status | None, Query(description="List: only experiments in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="List: page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=2048, description="List: next_cursor of the previous page")
    ] = None,
) -> Any:
    now = dt.datetime.now(dt.UTC)
    if content_type is not None or placement is not None:
        if content_type is None or placement is None:
            raise InvalidRequest("send both content_type and placement to be served a placement's content")
        if test_id is not None or action is not None:
            raise InvalidRequest("content_type and placement serve content: leave out test_id and action")
        charge_budget(EXPERIMENTS_SERVE, request, response, caller)
        context = caller_context(request, caller, device_id, device, region, now)
        return service.serve(
            store, placements.running, placements.default, context, content_type, placement, now
        )
    manage(request, response, caller)
    if test_id is None:
        if action is not None:
            raise InvalidRequest("an analysis needs the test_id of its experiment")
        page = store.list(status, limit, cursor)
        return {"items": [service.public(e) for e in page.items], "next_cursor": page.next_cursor}
    experiment = store.require(test_id)
    if action is None:
        return {"test": service.public(experiment)}
    return service.analyse(store, experiment, action, now, phase=phase, method=method)


# ---------------------------------------------------------------------------------- POST


@app.post("/api/content/ab-testing", responses=errors(400, 401, 403, 404, 409, 429), status_code=201)
async def create_or_track(
    request: Request,
    response: Response,
    caller: Caller_,
    body: Annotated[
        dict[str, Any], Body(description="An experiment, a placement's default content or events")
    ],
    device_id: DeviceId = None,
    action: Annotated[
        str,
        Query(
            pattern="^(create|track|default_content)$", description="create (default), track, default_content"
        ),
    ] = "create",
) -> Any:
    now = dt.datetime.now(dt.UTC)
    if action == "track":
        charge_budget(EVENTS_TRACK, request, response, caller)
        events = validated(service.TrackIn, body)
        subject = subject_for(caller.user_id if caller else None, device_id)
        if subject is None:
            raise Unauthorized(
                f"send the token, or the {DEVICE_ID_HEADER} header, of the caller that was served the content"
            )
        response.status_code = 200
        return service.track(store, events, subject, now)
    manager = manage(request, response, caller)
    if action == "default_content":
        default = validated(service.DefaultContentIn, body)
        stored = store.put_default(
            default.content_type, default.placement, default.content, manager.user_id, now
        )
        placements.forget(stored.content_type, stored.placement)
        response.status_code = 200
        return {
            "content_type": stored.content_type,
            "placement": stored.placement,
            "content": stored.content,
            "updated_by": stored.updated_by,
            "updated_at": stored.updated_at.isoformat() if stored.updated_at else None,
        }
    spec = validated(ExperimentIn, body, now=now)
    created = store.create(Experiment.create(spec, by=manager.user_id, now=now))
    placements.forget(created.content_type, created.placement)
    return {"test": service.public(created)}


# ---------------------------------------------------------------------------------- PATCH

_LIFECYCLE = {a.value: a for a in Action}


@app.patch("/api/content/ab-testing", responses=errors(400, 401, 403, 404, 409, 429))
async def change_or_analyse(
    request: Request,
    response: Response,
    caller: Caller_,
    test_id: Annotated[str, Query(min_length=1, max_length=64, description="The experiment")],
    action: Annotated[
        str,
        Query(
            description="update (default), start, pause, resume, complete, archive, or an analysis: "
            "results, statistical_analysis, segment_analysis, real_time_metrics"
        ),
    ] = "update",
    expected_version: Annotated[
        int | None, Query(ge=1, description="Refuse (409) unless the experiment is still at this version")
    ] = None,
    phase: Annotated[int | None, Query(ge=1, description="Analysis: the phase (default the current)")] = None,
    method: Annotated[Method | None, Query(description="Analysis: override the experiment's method")] = None,
    body: Annotated[dict[str, Any] | None, Body(description="update: the fields to change")] = None,
) -> Any:
    manager = manage(request, response, caller)
    now = dt.datetime.now(dt.UTC)
    analysis = {a.value: a for a in service.AnalysisAction}.get(action)
    if analysis is None and action != "update" and action not in _LIFECYCLE:
        names = ", ".join(["update", *_LIFECYCLE, *(a.value for a in service.AnalysisAction)])
        raise InvalidRequest(f"action must be one of {names}", details={"field": "action"})
    experiment = store.require(test_id)
    if analysis is not None:
        return service.analyse(store, experiment, analysis, now, phase=phase, method=method)
    if expected_version is not None and expected_version != experiment.version:
        raise Conflict(
            f"the experiment is at version {experiment.version}, not {expected_version}: read it again",
            details={"version": experiment.version},
        )
    if action == "update":
        if not body:
            raise InvalidRequest("update needs a body with the fields to change")
        changed = experiment.apply_patch(validated(ExperimentPatch, body), manager.user_id, now)
    else:
        changed = experiment.apply_action(_LIFECYCLE[action], manager.user_id, now)
    if changed == experiment:  # nothing to change: no new version, nothing written
        return {"test": service.public(experiment)}
    saved = store.save(changed, previous=experiment)
    placements.forget(saved.content_type, saved.placement)
    return {"test": service.public(saved)}


# ---------------------------------------------------------------------------------- helpers


def manage(request: Request, response: Response, caller: Caller | None) -> Caller:
    """Admins and content managers only (401 without a token, 403 with another role); then the
    request is charged to their ``experiments.manage`` budget."""
    if caller is None:
        raise Unauthorized("sign in: managing experiments needs an 'Authorization: Bearer <token>' header")
    if not caller.has_any(*MANAGERS):
        raise Forbidden("managing experiments needs one of these roles: admin, content_manager")
    charge_budget(EXPERIMENTS_MANAGE, request, response, caller)
    return caller


def validated[M: BaseModel](model: type[M], body: Any, *, now: dt.datetime | None = None) -> M:
    """``body`` as ``model``; a 422 in the API's validation format (field paths under ``body``)."""
    try:
        return model.model_validate(body, context={"now": now} if now is not None else None)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def caller_context(
    request: Request,
    caller: Caller | None,
    device_id: str | None,
    device: str | None,
    region: str | None,
    now: dt.datetime,
) -> AssignmentContext | None:
    """What targeting and segments know of the caller; None when it has no identity to keep an
    assignment sticky to (no token and no device id: it is served the default content).

    A signed-in caller's followed artists (those it has voted on a show of) are read for
    ``artist_followers`` targeting: cached for a few minutes and dropped when it becomes a new
    fan; empty when they cannot be read now. Anonymous callers follow no one."""
    subject = subject_for(caller.user_id if caller else None, device_id)
    if subject is None:
        return None
    created = cached_account_created_at(profiles, cache, caller.user_id) if caller else None
    return AssignmentContext(
        subject=subject,
        device=device or device_from_user_agent(request.headers.get("user-agent")),
        # A CDN in front (CloudFront) sets the viewer's country header and it wins over the
        # query; without one a client can send it as it can send ?region=. Either way it is a
        # targeting hint, never an access control.
        region=request.headers.get(COUNTRY_HEADER) or region or "",
        role=segment_role([r.value for r in caller.roles] if caller else None),
        user_type=user_type_for(created, now) if caller else "",
        follows=fans.artists_of(caller.user_id) if caller and fans else frozenset(),
    )


def device_from_user_agent(user_agent: str | None) -> str:
    """A coarse device class when the client does not say: tablets first (their agents often
    say "Mobile" too), then phones; any other agent is a desktop; no agent is unknown."""
    if not user_agent:
        return ""
    agent = user_agent.lower()
    if "ipad" in agent or "tablet" in agent or ("android" in agent and "mobile" not in agent):
        return "tablet"
    if "mobi" in agent or "iphone" in agent:
        return "mobile"
    return "desktop"


class _PlacementCache:
    """A placement's running experiments and default content through the shared cache (L1 +
    Valkey), for ``PLACEMENT_CACHE_SECONDS``: every page view reads them, admins change them
    rarely. A change made here forgets its placement at once."""

    def running(self, content_type: str, placement: str) -> list[Experiment]:
        raw = cache.get(
            self._key("running", content_type, placement),
            lambda: [e.model_dump(mode="json") for e in store.running(content_type, placement)],
            ttl=PLACEMENT_CACHE_SECONDS,
        )
        return [Experiment.model_validate(item) for item in raw]

    def default(self, content_type: str, placement: str) -> dict[str, Any] | None:
        def load() -> dict[str, Any]:
            found = store.get_default(content_type, placement)
            return {"content": found.content if found is not None else None}

        cached = cache.get(self._key("default", content_type, placement), load, ttl=PLACEMENT_CACHE_SECONDS)
        content: dict[str, Any] | None = cached["content"]
        return content

    def forget(self, content_type: str, placement: str) -> None:
        for kind in ("running", "default"):
            cache.delete(self._key(kind, content_type, placement))

    @staticmethod
    def _key(kind: str, content_type: str, placement: str) -> str:
        return f"experiments:{kind}:{content_type}:{placement}"


placements = _PlacementCache()

handler: Any = lambda_handler(app)
