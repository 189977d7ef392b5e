"""Live pushes: the WebSocket API's routes, its connections and subscriptions, and the
VoteProcessor's pushes of fresh tallies to the connections watching a show.

Clients connect to the WebSocket API with a token (``?token=``: browsers cannot set headers on
a WebSocket), ``subscribe`` to shows, and receive one ``tallies`` message per show per
VoteProcessor batch (not per vote): the show's whole board, read after the batch was counted.

Storage (the connections table, ephemeral, TTL ``expires_at``):

| item | PK | SK | attributes |
|---|---|---|---|
| connection | ``CONN#<connection id>`` | ``META`` | user_id, connected_at, shows (string set), expires_at |
| subscription | ``SHOW#<show id>#<shard>`` | ``CONN#<connection id>`` | user_id, subscribed_at, expires_at |

A show's watchers are one query per shard (``SUBSCRIPTION_SHARDS``, by connection id): a show
watched by tens of thousands spreads its subscribe writes over several partitions. API Gateway
closes a connection after two hours at most; every item expires ``CONNECTION_TTL_SECONDS``
after it was written, so a ``$disconnect`` that never ran leaves nothing behind for long, and
a push to such a connection answers ``GoneException``, which removes it at once.

Delivery is best effort and self-healing: a message carries the whole board, so a missed one is
repaired by the next. Clients keep the message with the latest ``processed_at`` (batches of
different stream shards are processed concurrently; ``sequence`` is per stream shard).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError
from pydantic import TypeAdapter, ValidationError

from mysetlist.auth import caller_from_claims
from mysetlist.dynamo import error_code, from_item, to_item, unavailable_on_throttle
from mysetlist.errors import DomainError, InvalidRequest, NotFound, Unauthorized, Unavailable
from mysetlist.keys import shard_of
from mysetlist.models import Id
from mysetlist.observability import logger, metrics
from mysetlist.settings import Settings, SettingsError

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient

    from mysetlist.models import Show
    from mysetlist.stream_batch import CountedBatch
    from mysetlist.tallies import SongTallyCount

# API Gateway closes a WebSocket connection after 2 hours; items outlive that by an hour.
CONNECTION_TTL_SECONDS = 3 * 3600
SUBSCRIPTION_SHARDS = 4
DEFAULT_MAX_SUBSCRIPTIONS = 10
# API Gateway's limit for one WebSocket message (post_to_connection's Data included).
MAX_MESSAGE_BYTES = 128 * 1024
# Concurrent post_to_connection calls of one container.
PUSH_WORKERS = 16
# Time kept back from the VoteProcessor's invocation: pushes never make it time out.
PUSH_RESERVE_MS = 3000
# At most this long on one batch's pushes: a slow management endpoint must not hold the stream
# (a connection skipped now gets the next batch's message, which carries the whole board).
PUSH_BUDGET_SECONDS = 5.0
ACTIONS = ("subscribe", "unsubscribe")
ACTIONS_HELP = (
    'send {"action": "subscribe", "show_id": "<show id>"} to receive a show\'s tallies as they '
    'change, {"action": "unsubscribe", "show_id": "<show id>"} to stop, and {"action": "ping"} '
    "to keep a quiet connection open"
)

CONNECTION_SK = "META"
_BATCH_WRITE_LIMIT = 25
_BATCH_WRITE_ATTEMPTS = 5
_show_id_adapter: TypeAdapter[str] = TypeAdapter(Id)


def connection_pk(connection_id: str) -> str:
    return f"CONN#{connection_id}"


def subscription_pk(show_id: str, connection_id: str) -> str:
    return f"SHOW#{show_id}#{shard_of(connection_id, SUBSCRIPTION_SHARDS)}"


def subscription_sk(connection_id: str) -> str:
    return f"CONN#{connection_id}"


def subscription_partitions(show_id: str) -> list[str]:
    return [f"SHOW#{show_id}#{shard}" for shard in range(SUBSCRIPTION_SHARDS)]


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """What live pushes need: the connections table, the WebSocket API's management endpoint
    (``https://<api>.execute-api.<region>.amazonaws.com/<stage>``; the VoteProcessor pushes
    through it), the subscriptions a connection may hold, and the origins a browser may connect
    from (empty: any)."""

    connections_table: str
    management_endpoint: str = ""
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    allowed_origins: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveConfig:
        """From ``CONNECTIONS_TABLE``, ``LIVE_MANAGEMENT_ENDPOINT``, ``LIVE_MAX_SUBSCRIPTIONS`` and
        ``WEB_CLIENT_ORIGIN`` (validated with the other settings at cold start)."""
        origins = settings.web_client_origin
        return cls(
            connections_table=settings.connections_table,
            management_endpoint=settings.live_management_endpoint.rstrip("/"),
            max_subscriptions=settings.live_max_subscriptions,
            allowed_origins=frozenset(o.strip().rstrip("/") for o in origins.split(",") if o.strip()),
        )


# ---------------------------------------------------------------------------------- storage


@dataclass(frozen=True, slots=True)
class Connection:
    connection_id: str
    user_id: str
    connected_at: str
    shows: frozenset[str] = frozenset()


class ConnectionUnknown(DomainError):
    """The connection is not registered (it was removed, or its $connect never completed)."""

    status = 410
    code = "connection_unknown"


class UnknownAction(InvalidRequest):
    code = "unknown_action"


class SubscriptionLimit(DomainError):
    status = 429
    code = "too_many_subscriptions"


class Connections(Protocol):
    """Connections and subscriptions (:class:`ConnectionStore`; in-memory fakes in unit tests)."""

    def connect(self, connection_id: str, user_id: str, now: dt.datetime) -> None: ...

    def get(self, connection_id: str) -> Connection | None: ...

    def subscribe(self, connection: Connection, show_id: str, now: dt.datetime, *, limit: int) -> None: ...

    def unsubscribe(self, connection_id: str, show_id: str) -> None: ...

    def disconnect(self, connection_id: str) -> int: ...

    def subscribers(self, show_id: str, now: dt.datetime) -> list[str]: ...


class ConnectionStore:
    """Connections and per-show subscriptions in the connections table (module docstring)."""

    def __init__(
        self, client: DynamoDBClient, table: str, *, ttl_seconds: int = CONNECTION_TTL_SECONDS
    ) -> None:
        if not table:
            raise SettingsError("missing settings: CONNECTIONS_TABLE")
        self._db = client
        self._table = table
        self._ttl = ttl_seconds

    def connect(self, connection_id: str, user_id: str, now: dt.datetime) -> None:
        item = {
            "PK": connection_pk(connection_id),
            "SK": CONNECTION_SK,
            "connection_id": connection_id,
            "user_id": user_id,
            "connected_at": _iso(now),
            "expires_at": int(now.timestamp()) + self._ttl,
        }
        with unavailable_on_throttle("the live connections"):
            self._db.put_item(TableName=self._table, Item=to_item(item))

    def get(self, connection_id: str) -> Connection | None:
        with unavailable_on_throttle("the live connections"):
            response = self._db.get_item(
                TableName=self._table,
                Key=to_item({"PK": connection_pk(connection_id), "SK": CONNECTION_SK}),
                ConsistentRead=True,
            )
        if "Item" not in response:
            return None
        item = from_item(response["Item"])
        return Connection(
            connection_id=connection_id,
            user_id=str(item.get("user_id", "")),
            connected_at=str(item.get("connected_at", "")),
            shows=frozenset(str(s) for s in item.get("shows") or ()),
        )

    def subscribe(self, connection: Connection, show_id: str, now: dt.datetime, *, limit: int) -> None:
        """Add ``show_id`` to the connection's subscriptions, atomically with its subscription
        item. Raises :class:`ConnectionUnknown` or :class:`SubscriptionLimit`."""
        connection_id = connection.connection_id
        expires_at = int(now.timestamp()) + self._ttl
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": to_item({"PK": connection_pk(connection_id), "SK": CONNECTION_SK}),
                    "UpdateExpression": "ADD shows :shows",
                    "ConditionExpression": "attribute_exists(PK) AND (attribute_not_exists(shows) "
                    "OR size(shows) < :limit OR contains(shows, :show))",
                    "ExpressionAttributeValues": {
                        ":shows": {"SS": [show_id]},
                        ":limit": {"N": str(limit)},
                        ":show": {"S": show_id},
                    },
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": to_item(
                        {
                            "PK": subscription_pk(show_id, connection_id),
                            "SK": subscription_sk(connection_id),
                            "show_id": show_id,
                            "connection_id": connection_id,
                            "user_id": connection.user_id,
                            "subscribed_at": _iso(now),
                            "expires_at": expires_at,
                        }
                    ),
                }
            },
        ]
        try:
            with unavailable_on_throttle("the live subscriptions"):
                self._db.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons: Any = exc.response.get("CancellationReasons") or []
            if not reasons or reasons[0].get("Code") != "ConditionalCheckFailed":
                raise Unavailable(
                    "the live subscriptions are busy; retry (nothing was changed)",
                    details={"retryable": True, "outcome": "unchanged"},
                ) from exc
            current = self.get(connection_id)
            if current is None:
                raise ConnectionUnknown("this connection is not registered: reconnect") from exc
            raise SubscriptionLimit(
                f"a connection may watch at most {limit} shows: unsubscribe from one first",
                details={"subscriptions": sorted(current.shows), "limit": limit},
            ) from exc

    def unsubscribe(self, connection_id: str, show_id: str) -> None:
        """Remove the subscription (idempotent)."""
        with unavailable_on_throttle("the live subscriptions"):
            self._db.delete_item(
                TableName=self._table,
                Key=to_item(
                    {"PK": subscription_pk(show_id, connection_id), "SK": subscription_sk(connection_id)}
                ),
            )
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=to_item({"PK": connection_pk(connection_id), "SK": CONNECTION_SK}),
                    UpdateExpression="DELETE shows :shows",
                    ConditionExpression="attribute_exists(PK)",
                    ExpressionAttributeValues={":shows": {"SS": [show_id]}},
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise  # an unknown connection has nothing to remove

    def disconnect(self, connection_id: str) -> int:
        """Remove the connection and its subscriptions (idempotent); how many items went."""
        connection = self.get(connection_id)
        if connection is None:
            return 0
        keys = [
            {"PK": subscription_pk(show, connection_id), "SK": subscription_sk(connection_id)}
            for show in sorted(connection.shows)
        ]
        keys.append({"PK": connection_pk(connection_id), "SK": CONNECTION_SK})
        for start in range(0, len(keys), _BATCH_WRITE_LIMIT):
            self._delete_batch(keys[start : start + _BATCH_WRITE_LIMIT])
        return len(keys)

    def _delete_batch(self, keys: Sequence[Mapping[str, str]]) -> None:
        requests: list[Any] = [{"DeleteRequest": {"Key": to_item(k)}} for k in keys]
        for attempt in range(_BATCH_WRITE_ATTEMPTS):
            with unavailable_on_throttle("the live connections"):
                response = self._db.batch_write_item(RequestItems={self._table: requests})
            requests = list((response.get("UnprocessedItems") or {}).get(self._table) or [])
            if not requests:
                return
            time.sleep(min(0.5, 0.02 * 2**attempt))
        raise Unavailable(
            "the live connections are throttled; some items were not removed (they expire by TTL)",
            details={"retryable": True, "outcome": "partial"},
        )

    def subscribers(self, show_id: str, now: dt.datetime) -> list[str]:
        """Connection ids subscribed to ``show_id`` (expired items, not yet swept, left out)."""
        found: list[str] = []
        for pk in subscription_partitions(show_id):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "PK = :pk",
                "FilterExpression": "expires_at > :now",
                "ProjectionExpression": "SK",
                "ExpressionAttributeValues": {":pk": {"S": pk}, ":now": {"N": str(int(now.timestamp()))}},
            }
            while True:
                with unavailable_on_throttle("the live subscriptions"):
                    response = self._db.query(**kwargs)
                found.extend(item["SK"]["S"].removeprefix("CONN#") for item in response.get("Items", []))
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found


# ---------------------------------------------------------------------------------- messages


def tallies_message(
    show_id: str,
    counts: Iterable[SongTallyCount],
    *,
    sequence: str | None,
    processed_at: dt.datetime,
    changed: Collection[str] = (),
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> dict[str, Any]:
    """A show's board as pushed: songs with votes, most wanted first (as ``GET /api/votes``),
    show totals and velocity. Over ``max_bytes`` the songs changed in the batch and then the
    best ranked are kept, and ``truncated`` is true (``GET /api/votes`` has the whole board)."""
    counts = list(counts)
    songs: list[dict[str, Any]] = [
        {
            "song_id": c.song_id,
            "upvotes": c.up,
            "downvotes": c.down,
            "net": c.up - c.down,
            "vote_velocity": round(c.vote_velocity, 3),
            "trending_score": round(c.trending_score, 4),
        }
        for c in counts
        if c.up or c.down
    ]
    songs.sort(key=lambda s: (-s["net"], -s["upvotes"], s["song_id"]))
    message: dict[str, Any] = {
        "type": "tallies",
        "show_id": show_id,
        "songs": songs,
        # The show's velocity counts songs whose standing votes cancelled out too.
        "vote_velocity": round(float(sum(c.vote_velocity for c in counts)), 3),
        "total_upvotes": sum(s["upvotes"] for s in songs),
        "total_downvotes": sum(s["downvotes"] for s in songs),
        "sequence": sequence,
        "processed_at": _iso(processed_at),
        "truncated": False,
    }
    if len(encode(message)) <= max_bytes:
        return message
    budget = max_bytes - len(encode({**message, "songs": [], "truncated": True}))
    ranked = [s for s in songs if s["song_id"] in changed] + [s for s in songs if s["song_id"] not in changed]
    kept: list[dict[str, Any]] = []
    for song in ranked:
        size = len(encode(song)) + 1  # and its comma
        if size > budget:
            break
        kept.append(song)
        budget -= size
    kept.sort(key=lambda s: (-s["net"], -s["upvotes"], s["song_id"]))
    return {**message, "songs": kept, "truncated": True}


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------------- pushes


@dataclass(slots=True)
class PushOutcome:
    """What one push did: connections tried, messages delivered, connections found gone (and
    removed), deliveries failed, and connections not tried because time ran out."""

    connections: int = 0
    sent: int = 0
    gone: int = 0
    failed: int = 0
    skipped: int = 0
    cleanup_failed: int = 0

    def add(self, other: PushOutcome) -> None:
        self.connections += other.connections
        self.sent += other.sent
        self.gone += other.gone
        self.failed += other.failed
        self.skipped += other.skipped
        self.cleanup_failed += other.cleanup_failed


class ManagementClient(Protocol):
    """What pushes need of the ``apigatewaymanagementapi`` client."""

    def post_to_connection(self, *, Data: bytes, ConnectionId: str) -> Any: ...


def management_client_factory(endpoint_url: str, region: str) -> Callable[[], ApiGatewayManagementApiClient]:
    """A factory of the container's management API client (made on first use: most batches
    have nobody to push to). Short timeouts: a slow push must not hold the stream."""

    @cache
    def make() -> ApiGatewayManagementApiClient:
        import boto3  # noqa: PLC0415 - loaded with the first push
        from botocore.config import Config  # noqa: PLC0415

        config = Config(
            connect_timeout=1,
            read_timeout=2,
            retries={"mode": "standard", "max_attempts": 2},
            max_pool_connections=PUSH_WORKERS,
        )
        return boto3.client(
            "apigatewaymanagementapi", region_name=region, endpoint_url=endpoint_url, config=config
        )

    return make


class LivePusher:
    """Sends one message to every connection watching a show, ``workers`` at a time. A
    connection that answers ``GoneException`` is removed; any other fault is counted. It never
    raises for a delivery fault."""

    def __init__(
        self,
        management_client_factory: Callable[[], ManagementClient],
        store: Connections,
        *,
        workers: int = PUSH_WORKERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_factory = management_client_factory
        self._store = store
        self._workers = workers
        self._clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="live-push")
            return self._pool

    def push(
        self, show_id: str, message: Mapping[str, Any], *, now: dt.datetime, deadline: float | None = None
    ) -> PushOutcome:
        """``message`` to every subscriber of ``show_id`` (a subscriber lookup that fails is
        logged and counted as one failure)."""
        try:
            connections = self._store.subscribers(show_id, now)
        except Exception:
            logger.exception("could not list a show's live subscribers", extra={"show_id": show_id})
            return PushOutcome(failed=1)
        return self.send(connections, message, deadline=deadline)

    def send(
        self, connection_ids: Sequence[str], message: Mapping[str, Any], *, deadline: float | None = None
    ) -> PushOutcome:
        """``message`` to each of ``connection_ids``; those not started by ``deadline``
        (``clock()`` seconds) are skipped."""
        outcome = PushOutcome(connections=len(connection_ids))
        if not connection_ids:
            return outcome
        data = encode(message)
        try:
            client = self._client_factory()
        except Exception:
            logger.exception("no management API client: live pushes are off")
            outcome.failed = len(connection_ids)
            return outcome
        futures = [self._executor().submit(self._deliver, client, c, data, deadline) for c in connection_ids]
        for future in futures:
            outcome.add(future.result())
        return outcome

    def _deliver(
        self, client: ManagementClient, connection_id: str, data: bytes, deadline: float | None
    ) -> PushOutcome:
        if deadline is not None and self._clock() >= deadline:
            return PushOutcome(skipped=1)
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            if error_code(exc) != "GoneException":
                logger.warning(
                    "live push failed", extra={"connection_id": connection_id, "error": error_code(exc)}
                )
                return PushOutcome(failed=1)
            try:
                self._store.disconnect(connection_id)
            except Exception:
                logger.exception("could not remove a gone connection", extra={"connection_id": connection_id})
                return PushOutcome(gone=1, cleanup_failed=1)
            return PushOutcome(gone=1)
        except Exception as exc:  # timeouts, refused connections (BotoCoreError): count, go on
            logger.warning("live push failed", extra={"connection_id": connection_id, "error": repr(exc)})
            return PushOutcome(failed=1)
        return PushOutcome(sent=1)


# ---------------------------------------------------------------------------------- observer


class TallyReader(Protocol):
    def read(
        self, show_id: str, *, consistent: bool = False, now: dt.datetime | None = None
    ) -> list[SongTallyCount]: ...


@dataclass(slots=True)
class _ShowChanges:
    sequence: str
    songs: set[str] = field(default_factory=set)


class LiveObserver:
    """The VoteProcessor's observer of counted batches: for each show with counted changes,
    one ``tallies`` message to its subscribers, built from a fresh (strongly consistent) read
    of its tallies. Shows nobody watches cost one small query per subscription shard. Pushes
    stop ``budget_seconds`` after the batch's start, or ``reserve_ms`` before the invocation's
    end, whichever comes first."""

    name = "live"

    def __init__(
        self,
        store: Connections,
        pusher: LivePusher,
        tallies: TallyReader,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        reserve_ms: int = PUSH_RESERVE_MS,
        budget_seconds: float = PUSH_BUDGET_SECONDS,
    ) -> None:
        self._store = store
        self._pusher = pusher
        self._tallies = tallies
        self._clock = clock
        self._wall_clock = wall_clock
        self._reserve_ms = reserve_ms
        self._budget = budget_seconds

    def observe(self, batch: CountedBatch) -> None:
        shows = changed_shows(batch.records)
        if not shows:
            return
        started = self._clock()
        remaining = batch.remaining_ms()
        deadline = started + self._budget
        if remaining is not None:
            deadline = min(deadline, started + (remaining - self._reserve_ms) / 1000)
        total = PushOutcome()
        pushed = errors = 0
        for show_id, changes in shows.items():
            if deadline is not None and self._clock() >= deadline:
                total.skipped += 1
                continue
            try:
                outcome = self._push_show(show_id, changes, deadline)
            except Exception:  # a derived view: degrade this show, go on with the next
                logger.exception("live push of a show failed", extra={"show_id": show_id})
                errors += 1
                continue
            if outcome is not None:
                pushed += 1
                total.add(outcome)
        self._record(total, pushed, errors)

    def _push_show(self, show_id: str, changes: _ShowChanges, deadline: float | None) -> PushOutcome | None:
        connections = self._store.subscribers(show_id, self._wall_clock())
        if not connections:
            return None
        processed_at = self._wall_clock()
        counts = self._tallies.read(show_id, consistent=True, now=processed_at)
        message = tallies_message(
            show_id, counts, sequence=changes.sequence, processed_at=processed_at, changed=changes.songs
        )
        return self._pusher.send(connections, message, deadline=deadline)

    @staticmethod
    def _record(total: PushOutcome, pushed: int, errors: int) -> None:
        for name, value in (
            ("LiveShowsPushed", pushed),
            ("LiveMessagesSent", total.sent),
            ("LiveConnectionsGone", total.gone),
            ("LivePushFailures", total.failed + total.cleanup_failed + errors),
            ("LivePushesSkipped", total.skipped),
        ):
            if value:
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        if total.failed or total.skipped or errors:
            logger.warning(
                "some live pushes were not delivered",
                extra={"failed": total.failed, "skipped": total.skipped, "show_errors": errors},
            )


def changed_shows(records: Iterable[tuple[Mapping[str, Any], Any]]) -> dict[str, _ShowChanges]:
    """Per show with counted changes, in stream order: the last sequence number and the songs."""
    shows: dict[str, _ShowChanges] = {}
    for _, change in records:
        delta = change.delta
        if delta is None:
            continue
        entry = shows.setdefault(delta.show_id, _ShowChanges(change.sequence_number))
        entry.sequence = change.sequence_number
        entry.songs.add(delta.song_id)
    return shows


def live_observer(settings: Settings, tallies: TallyReader, client: DynamoDBClient) -> LiveObserver | None:
    """The VoteProcessor's observer, or None (logged) when live pushes are not configured."""
    config = LiveConfig.from_settings(settings)
    if not config.connections_table or not config.management_endpoint:
        logger.warning("CONNECTIONS_TABLE or LIVE_MANAGEMENT_ENDPOINT is not set: no live pushes")
        return None
    store = ConnectionStore(client, config.connections_table)
    pusher = LivePusher(management_client_factory(config.management_endpoint, settings.aws_region), store)
    return LiveObserver(store, pusher, tallies)


# ---------------------------------------------------------------------------------- routes


class TokenVerifier(Protocol):
    def verify(self, authorization: str | None) -> dict[str, Any]: ...


class ShowLookup(Protocol):
    def get_show(self, show_id: str) -> Show | None: ...


def _response(status: int, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"statusCode": status}
    if body is not None:
        result["body"] = json.dumps(body)
    return result


def _error(exc: DomainError, action: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": exc.code, "message": exc.message, "action": action}
    if exc.details:
        body["details"] = exc.details
    return _response(exc.status, body)


class LiveApi:
    """The WebSocket API's routes (API Gateway WebSocket events in, Lambda proxy results out).

    * ``$connect``: the ``token`` query parameter is verified as the HTTP APIs' JWT authorizer
      would (401 refuses the connection; 403 for a browser from another origin); the connection
      is stored.
    * ``subscribe`` / ``unsubscribe`` ``{"action", "show_id"}``: the answer (through the route
      response) is an ack, with the show's current board on subscribe, or an error.
    * ``$disconnect``: the connection and its subscriptions are removed.
    * ``$default``: ``{"action": "ping"}`` answers ``{"type": "pong"}`` (a keep-alive: API
      Gateway closes connections idle for 10 minutes); anything else, an error naming the actions.
    """

    def __init__(
        self,
        *,
        store: Connections,
        verifier: TokenVerifier,
        catalog: ShowLookup,
        tallies: TallyReader,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        allowed_origins: Collection[str] = (),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._catalog = catalog
        self._tallies = tallies
        self._max_subscriptions = max_subscriptions
        self._origins = frozenset(allowed_origins)
        self._clock = clock

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        context = event.get("requestContext") or {}
        route = str(context.get("routeKey") or "")
        connection_id = str(context.get("connectionId") or "")
        if not connection_id:
            return _error(InvalidRequest("not an API Gateway WebSocket event (no connectionId)"), None)
        try:
            return self._route(route, event, connection_id)
        except DomainError as exc:
            return _error(exc, route if route in ACTIONS else None)

    def _route(self, route: str, event: Mapping[str, Any], connection_id: str) -> dict[str, Any]:
        if route == "$connect":
            return self._connect(event, connection_id)
        if route == "$disconnect":
            removed = self._store.disconnect(connection_id)
            logger.info("disconnected", extra={"connection_id": connection_id, "items_removed": removed})
            return _response(200)
        if route == "subscribe":
            return self._subscribe(connection_id, self._show_id(event, route))
        if route == "unsubscribe":
            return self._unsubscribe(connection_id, self._show_id(event, route))
        return self._unknown_action(event)

    def _connect(self, event: Mapping[str, Any], connection_id: str) -> dict[str, Any]:
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        origin = headers.get("origin")
        if origin is not None and self._origins and origin.rstrip("/") not in self._origins:
            logger.info("connection refused: origin not allowed", extra={"origin": origin})
            return _response(403, {"message": f"origin {origin} may not connect"})
        token = (event.get("queryStringParameters") or {}).get("token")
        if not token:
            return _response(
                401, {"message": "connect with ?token=<access token> (a signed-in user's token)"}
            )
        try:
            caller = caller_from_claims(self._verifier.verify(str(token)))
        except Unauthorized as exc:
            logger.info("connection refused", extra={"reason": exc.message})
            return _response(401, {"message": exc.message})
        if caller is None:
            return _response(401, {"message": "the token names no user"})
        try:
            self._store.connect(connection_id, caller.user_id, self._clock())
        except Unavailable as exc:
            return _response(503, {"message": exc.message})
        logger.info("connected", extra={"connection_id": connection_id, "user_id": caller.user_id})
        return _response(200)

    @staticmethod
    def _body(event: Mapping[str, Any]) -> Any:
        raw = event.get("body")
        if raw is None:
            return None
        try:
            return json.loads(str(raw))
        except ValueError:
            return None

    def _show_id(self, event: Mapping[str, Any], action: str) -> str:
        body = self._body(event)
        if not isinstance(body, dict):
            raise InvalidRequest(
                f'{action} needs a JSON object: {{"action": "{action}", "show_id": "<show id>"}}'
            )
        show_id = body.get("show_id")
        if show_id is None:
            raise InvalidRequest(
                f'{action} needs a show_id: {{"action": "{action}", "show_id": "<show id>"}}'
            )
        try:
            return _show_id_adapter.validate_python(show_id)
        except ValidationError as exc:
            raise InvalidRequest(
                "show_id must be 1 to 200 letters, digits and ':._-', starting with a letter or digit",
                details={"show_id": str(show_id)[:200]},
            ) from exc

    def _subscribe(self, connection_id: str, show_id: str) -> dict[str, Any]:
        with unavailable_on_throttle("the catalogue"):
            show = self._catalog.get_show(show_id)
        if show is None:
            raise NotFound(f"no show with id '{show_id}'")
        connection = self._store.get(connection_id)
        if connection is None:
            raise ConnectionUnknown("this connection is not registered: reconnect")
        now = self._clock()
        if show_id not in connection.shows:
            self._store.subscribe(connection, show_id, now, limit=self._max_subscriptions)
        with unavailable_on_throttle("the tallies"):
            counts = self._tallies.read(show_id, now=now)
        board = tallies_message(show_id, counts, sequence=None, processed_at=now)
        return _response(
            200,
            {
                "type": "subscribed",
                "show_id": show_id,
                "subscriptions": sorted(connection.shows | {show_id}),
                "board": board,
            },
        )

    def _unsubscribe(self, connection_id: str, show_id: str) -> dict[str, Any]:
        self._store.unsubscribe(connection_id, show_id)
        connection = self._store.get(connection_id)
        remaining = sorted(connection.shows) if connection else []
        return _response(200, {"type": "unsubscribed", "show_id": show_id, "subscriptions": remaining})

    def _unknown_action(self, event: Mapping[str, Any]) -> dict[str, Any]:
        body = self._body(event)
        if isinstance(body, dict) and body.get("action") == "ping":
            # API Gateway closes a connection idle for 10 minutes: a quiet show's watcher pings.
            return _response(200, {"type": "pong"})
        if isinstance(body, dict) and "action" in body:
            problem = f"unknown action {str(body['action'])[:50]!r}"
        elif isinstance(body, dict):
            problem = "the message has no action"
        else:
            problem = "messages must be JSON objects"
        return _error(UnknownAction(f"{problem}: {ACTIONS_HELP}", details={"actions": list(ACTIONS)}), None)
