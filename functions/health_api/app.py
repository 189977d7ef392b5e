"""HealthApi: GET /api/monitoring/health (anonymous status; admin detail) and POST (admin actions).

GET is anonymous at the gateway: a token sent with it is verified here (as VotesApi does), and
only an admin's token opens ``?detailed=true`` and ``?service=``. POST is behind the gateway's
JWT authorizer and needs the admin role. Bodies of GET are in the health-check response format
for HTTP APIs (``application/health+json``): 200 for pass and warn, 503 for fail.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Body, Depends, Query, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from mysetlist.alerts import PlatformStore
from mysetlist.api import (
    create_app,
    errors,
    lambda_handler,
    rate_limited,
    require_roles,
    token_caller,
)
from mysetlist.auth import Caller, Role
from mysetlist.breaker import all_breakers
from mysetlist.cache import shared_cache
from mysetlist.dynamo import client_for
from mysetlist.errors import Forbidden, NotFound, Unauthorized
from mysetlist.health import (
    HEALTH_MEDIA_TYPE,
    SERVICES,
    ActionOut,
    HealthDocument,
    HealthReporter,
    MonitoringAction,
    default_checks,
    perform,
)
from mysetlist.jwt_verify import JwtVerifier
from mysetlist.ratelimit import MONITORING_ADMIN, MONITORING_READ
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("platform_table", "jwt_issuer", "jwt_audience")
store = PlatformStore(client_for(settings), settings.platform_table)
verifier = JwtVerifier(settings.jwt_issuer, [settings.jwt_audience])
reporter = HealthReporter(
    store,
    default_checks(settings),
    settings,
    breakers=all_breakers,
    cache_stats=lambda: shared_cache().stats(),
    cache_hot_keys=lambda: shared_cache().hot_keys(),
)

app = create_app("MySetlist health API")
admin = require_roles(Role.ADMIN)

_HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "pass or warn: {'status': ...} for anonymous callers, every section for admins",
        "content": {HEALTH_MEDIA_TYPE: {"schema": {"type": "object"}}},
    },
    503: {
        "description": "fail (a critical dependency is failing), in the same format",
        "content": {HEALTH_MEDIA_TYPE: {"schema": {"type": "object"}}},
    },
}


# The route is anonymous at the gateway: a token sent to it is verified here.
token_holder = token_caller(verifier)


def _health_response(document: HealthDocument, response: Response) -> JSONResponse:
    """The document in its media type, with the headers dependencies set (RateLimit-*)."""
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return JSONResponse(
        jsonable_encoder(document.body),
        status_code=document.http_status,
        media_type=HEALTH_MEDIA_TYPE,
        headers={**headers, "cache-control": "no-store"},
    )


@app.get(
    "/api/monitoring/health",
    responses={**_HEALTH_RESPONSES, **errors(401, 403, 404, 429)},
    dependencies=[Depends(rate_limited(MONITORING_READ))],
)
async def health(
    response: Response,
    caller: Annotated[Caller | None, Depends(token_holder)],
    detailed: Annotated[bool, Query(description="Every section (admins only)")] = False,
    service: Annotated[
        str | None, Query(description=f"One dependency (admins only): {', '.join(SERVICES)}")
    ] = None,
) -> JSONResponse:
    now = dt.datetime.now(dt.UTC)
    if not detailed and service is None:
        return _health_response(reporter.public(now), response)
    if caller is None:
        raise Unauthorized("the detailed health view needs an admin's token: 'Authorization: Bearer <token>'")
    if not caller.has_any(Role.ADMIN):
        raise Forbidden("the detailed health view needs the admin role")
    if service is not None:
        if service not in SERVICES:
            raise NotFound(
                f"no service {service!r}; the services are: {', '.join(SERVICES)}",
                details={"services": list(SERVICES)},
            )
        return _health_response(reporter.service(service, now), response)
    return _health_response(reporter.detailed(now), response)


@app.post(
    "/api/monitoring/health",
    response_model=ActionOut,
    responses=errors(401, 403, 429),
    dependencies=[Depends(rate_limited(MONITORING_ADMIN, admin))],
)
async def act(
    body: Annotated[MonitoringAction, Body(description="One action, chosen by 'action'")],
    _caller: Annotated[Caller, Depends(admin)],
) -> ActionOut:
    return perform(body, reporter, shared_cache, dt.datetime.now(dt.UTC))


handler: Any = lambda_handler(app)
