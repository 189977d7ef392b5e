"""LiveUpdates: the live WebSocket API's routes ($connect with ``?token=``, subscribe,
unsubscribe, $disconnect, $default). The logic is :class:`mysetlist.live.LiveApi`; the
VoteProcessor pushes the tallies (:class:`mysetlist.live.LiveObserver`)."""

from __future__ import annotations

from typing import Any

from mysetlist.activity import ActivityConfig
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import client_for
from mysetlist.jwt_verify import JwtVerifier
from mysetlist.live import ConnectionStore, LiveApi, LiveConfig
from mysetlist.observability import entrypoint
from mysetlist.settings import SettingsError, load_settings
from mysetlist.tallies import TallyStore

settings = load_settings()
settings.require("catalog_table", "tallies_table", "jwt_issuer", "jwt_audience")
config = LiveConfig.from_settings(settings)
if not config.connections_table:
    raise SettingsError("missing settings: CONNECTIONS_TABLE")
_db = client_for(settings)
api = LiveApi(
    store=ConnectionStore(_db, config.connections_table),
    verifier=JwtVerifier(settings.jwt_issuer, [settings.jwt_audience]),
    catalog=CatalogStore(_db, settings.catalog_table),
    tallies=TallyStore(
        _db,
        settings.tallies_table,
        marker_ttl_seconds=settings.stream_marker_ttl_seconds,
        activity=ActivityConfig.from_settings(settings),
    ),
    max_subscriptions=config.max_subscriptions,
    allowed_origins=config.allowed_origins,
)


@entrypoint(correlation_id_path="requestContext.requestId")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return api.handle(event)
