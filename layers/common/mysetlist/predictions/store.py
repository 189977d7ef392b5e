"""DynamoDB access for the predictions table: stored predictions, their scores, the ensemble's
weights (versioned) and each artist's model pointer. Only this module and :mod:`mysetlist.keys`
know the item shapes (docs/data-model.md, "PredictionsTable").

* prediction: ``SHOW#<show_id>`` / ``PREDICTION``, one per show, replaced by each new prediction;
  ``expires_at`` (TTL) 30 days after the show.
* score: ``SHOW#<show_id>`` / ``SCORE``, written when the show's actual setlist arrives (a
  re-recorded setlist replaces it); GSI1 ``SCORES#<yyyy-mm>`` / ``<scored_at>#<show_id>`` lists a
  month's scores in time order. No TTL.
* weights: ``CONFIG#weights`` / ``v<000001>`` (history) and ``CURRENT``; a change writes both in
  one transaction conditioned on CURRENT's version (optimistic concurrency).
* model pointer: ``MODEL#<artist_id>`` / ``CURRENT`` and ``v#<version>`` (history): which files
  in the model bucket hold the artist's model, and what it was trained on.

Throttling and server errors become :class:`~mysetlist.errors.Unavailable` (retryable).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.breaker import CircuitOpenError
from mysetlist.dynamo import (
    from_item,
    raise_unavailable_for,
    to_item,
    unavailable_for_open_circuit,
    unavailable_on_throttle,
)
from mysetlist.errors import Conflict, Unavailable
from mysetlist.timestamps import parse_utc

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

WHAT = "the predictions store"
SCORES_INDEX = "GSI1"
# A stored prediction outlives its show by this long (TTL), so a late setlist can still score it.
PREDICTION_RETENTION = dt.timedelta(days=30)
# The original's named weights and their defaults (version 0: never written).
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "artist": 0.35,
    "venue": 0.15,
    "genre": 0.20,
    "popularity": 0.15,
    "historical": 0.10,
    "recentTrends": 0.05,
}


def iso(moment: dt.datetime) -> str:
    """A stored timestamp: ISO 8601 in UTC with microseconds (sorts as text)."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def expires_at_for(show_date: dt.date) -> int:
    """The TTL of a show's prediction: epoch seconds of the show's date (00:00 UTC) + 30 days."""
    moment = dt.datetime.combine(show_date, dt.time(), tzinfo=dt.UTC) + PREDICTION_RETENTION
    return int(moment.timestamp())


# ---------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class StoredPrediction:
    """A show's stored prediction (see the HTTP contract in docs/api.md)."""

    show_id: str
    artist_id: str
    show_date: dt.date
    setlist_length: int
    songs: list[dict[str, Any]]
    ranking: list[tuple[str, float]]
    expected_correct: float
    model_version: str | None
    weights_version: int
    generated_at: dt.datetime
    source: str
    shows_before: int
    expires_at: int

    def item(self) -> dict[str, Any]:
        return {
            "PK": keys.show_pk(self.show_id),
            "SK": keys.PREDICTION_SK,
            "type": "prediction",
            "show_id": self.show_id,
            "artist_id": self.artist_id,
            "show_date": self.show_date.isoformat(),
            "setlist_length": self.setlist_length,
            "songs": self.songs,
            "ranking": [{"song_id": s, "probability": p} for s, p in self.ranking],
            "expected_correct": self.expected_correct,
            "model_version": self.model_version,
            "weights_version": self.weights_version,
            "generated_at": iso(self.generated_at),
            "source": self.source,
            "shows_before": self.shows_before,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> StoredPrediction:
        return cls(
            show_id=str(item["show_id"]),
            artist_id=str(item["artist_id"]),
            show_date=dt.date.fromisoformat(str(item["show_date"])),
            setlist_length=int(item["setlist_length"]),
            songs=[dict(s) for s in item.get("songs") or []],
            ranking=[(str(r["song_id"]), float(r["probability"])) for r in item.get("ranking") or []],
            expected_correct=float(item.get("expected_correct", 0)),
            model_version=item.get("model_version"),
            weights_version=int(item.get("weights_version", 0)),
            generated_at=parse_utc(str(item["generated_at"])),
            source=str(item.get("source", "")),
            shows_before=int(item.get("shows_before", 0)),
            expires_at=int(item.get("expires_at", 0)),
        )


@dataclass(frozen=True)
class ScoreRecord:
    """How a stored prediction did once the show's actual setlist arrived."""

    show_id: str
    artist_id: str
    show_date: dt.date
    k: int
    hits: int
    p_at_k: float
    brier: float
    expected_hits: float
    bins: list[dict[str, float]]
    model_version: str | None
    weights_version: int
    scored_at: dt.datetime
    prediction_generated_at: dt.datetime
    source: str

    def item(self) -> dict[str, Any]:
        scored = iso(self.scored_at)
        return {
            "PK": keys.show_pk(self.show_id),
            "SK": keys.SCORE_SK,
            "type": "score",
            "GSI1PK": keys.scores_gsi1pk(scored[:7]),
            "GSI1SK": f"{scored}#{self.show_id}",
            "show_id": self.show_id,
            "artist_id": self.artist_id,
            "show_date": self.show_date.isoformat(),
            "k": self.k,
            "hits": self.hits,
            "p_at_k": self.p_at_k,
            "brier": self.brier,
            "expected_hits": self.expected_hits,
            "bins": self.bins,
            "model_version": self.model_version,
            "weights_version": self.weights_version,
            "scored_at": scored,
            "prediction_generated_at": iso(self.prediction_generated_at),
            "source": self.source,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ScoreRecord:
        return cls(
            show_id=str(item["show_id"]),
            artist_id=str(item["artist_id"]),
            show_date=dt.date.fromisoformat(str(item["show_date"])),
            k=int(item["k"]),
            hits=int(item["hits"]),
            p_at_k=float(item["p_at_k"]),
            brier=float(item["brier"]),
            expected_hits=float(item.get("expected_hits", 0)),
            bins=[{k: float(v) for k, v in b.items()} for b in item.get("bins") or []],
            model_version=item.get("model_version"),
            weights_version=int(item.get("weights_version", 0)),
            scored_at=parse_utc(str(item["scored_at"])),
            prediction_generated_at=parse_utc(str(item["prediction_generated_at"])),
            source=str(item.get("source", "")),
        )


@dataclass(frozen=True)
class WeightsVersion:
    """One version of the ensemble's named weights (version 0: the defaults, never written)."""

    version: int
    weights: dict[str, float]
    changed_by: str | None = None
    changed_at: dt.datetime | None = None
    note: str | None = None

    @classmethod
    def defaults(cls) -> WeightsVersion:
        return cls(0, dict(DEFAULT_WEIGHTS))

    def item(self, sk: str) -> dict[str, Any]:
        return {
            "PK": keys.WEIGHTS_PK,
            "SK": sk,
            "type": "weights",
            "version": self.version,
            "weights": self.weights,
            "changed_by": self.changed_by,
            "changed_at": iso(self.changed_at) if self.changed_at else None,
            "note": self.note,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> WeightsVersion:
        changed_at = item.get("changed_at")
        return cls(
            version=int(item["version"]),
            weights={str(k): float(v) for k, v in (item.get("weights") or {}).items()},
            changed_by=item.get("changed_by"),
            changed_at=parse_utc(str(changed_at)) if changed_at else None,
            note=item.get("note"),
        )


@dataclass(frozen=True)
class ModelPointer:
    """Which model files serve an artist, and what the model was trained on.

    ``last_key`` is the catalogue's sort key of the newest setlist in the training history
    (``<date>#<show_id>``): setlists after it are added from the catalogue when serving.
    """

    artist_id: str
    version: str
    prefix: str
    trained_at: dt.datetime
    trained_on_shows: int
    last_show_date: dt.date
    last_show_id: str
    weights_version: int
    feature_names: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def last_key(self) -> str:
        return keys.dated_sk(self.last_show_date.isoformat(), self.last_show_id)

    def item(self, sk: str) -> dict[str, Any]:
        return {
            "PK": keys.model_pk(self.artist_id),
            "SK": sk,
            "type": "model",
            "artist_id": self.artist_id,
            "version": self.version,
            "prefix": self.prefix,
            "trained_at": iso(self.trained_at),
            "trained_on_shows": self.trained_on_shows,
            "last_show_date": self.last_show_date.isoformat(),
            "last_show_id": self.last_show_id,
            "weights_version": self.weights_version,
            "feature_names": self.feature_names,
            "sha256": self.sha256,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ModelPointer:
        return cls(
            artist_id=str(item["artist_id"]),
            version=str(item["version"]),
            prefix=str(item["prefix"]),
            trained_at=parse_utc(str(item["trained_at"])),
            trained_on_shows=int(item.get("trained_on_shows", 0)),
            last_show_date=dt.date.fromisoformat(str(item["last_show_date"])),
            last_show_id=str(item["last_show_id"]),
            weights_version=int(item.get("weights_version", 0)),
            feature_names=[str(n) for n in item.get("feature_names") or []],
            sha256={str(k): str(v) for k, v in (item.get("sha256") or {}).items()},
        )


def months_between(start: dt.datetime, end: dt.datetime) -> list[str]:
    """The ``yyyy-mm`` of every month from ``start``'s to ``end``'s (UTC), newest first."""
    first = start.astimezone(dt.UTC)
    last = end.astimezone(dt.UTC)
    year, month = last.year, last.month
    out: list[str] = []
    while (year, month) >= (first.year, first.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


# ---------------------------------------------------------------------------------- the store


class PredictionsStore:
    """Reads and writes the predictions table."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    # ------------------------------------------------------------------ predictions
    def get_prediction(self, show_id: str, *, consistent: bool = False) -> StoredPrediction | None:
        item = self._get(keys.show_pk(show_id), keys.PREDICTION_SK, consistent=consistent)
        return StoredPrediction.from_item(item) if item else None

    def put_prediction(self, prediction: StoredPrediction) -> None:
        with unavailable_on_throttle(WHAT):
            self._db.put_item(TableName=self._table, Item=to_item(prediction.item()))

    # ------------------------------------------------------------------ scores
    def get_score(self, show_id: str) -> ScoreRecord | None:
        item = self._get(keys.show_pk(show_id), keys.SCORE_SK, consistent=True)
        return ScoreRecord.from_item(item) if item else None

    def put_score(self, score: ScoreRecord) -> None:
        """Write (or replace) the show's score; a replay of the same score writes the same item."""
        with unavailable_on_throttle(WHAT):
            self._db.put_item(TableName=self._table, Item=to_item(score.item()))

    def scores_between(
        self, start: dt.datetime, end: dt.datetime, *, limit: int | None = None
    ) -> list[ScoreRecord]:
        """Scores with ``start <= scored_at < end``, newest first (at most ``limit``)."""
        low, high = iso(start), iso(end)
        out: list[ScoreRecord] = []
        for month in months_between(start, end):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": SCORES_INDEX,
                "KeyConditionExpression": "GSI1PK = :pk AND GSI1SK BETWEEN :low AND :high",
                # Sort keys are "<scored_at>#<show_id>": "<start>" sorts before every score at
                # or after start, "<end>" before every score at end.
                "ExpressionAttributeValues": to_item(
                    {":pk": keys.scores_gsi1pk(month), ":low": low, ":high": high}
                ),
                "ScanIndexForward": False,
            }
            for item in self._query(kwargs):
                score = ScoreRecord.from_item(item)
                if start <= score.scored_at < end:
                    out.append(score)
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    # ------------------------------------------------------------------ weights
    def current_weights(self, *, consistent: bool = False) -> WeightsVersion:
        item = self._get(keys.WEIGHTS_PK, keys.CURRENT_SK, consistent=consistent)
        return WeightsVersion.from_item(item) if item else WeightsVersion.defaults()

    def weights_history(self, limit: int = 20) -> list[WeightsVersion]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :v)",
            "ExpressionAttributeValues": to_item({":pk": keys.WEIGHTS_PK, ":v": "v"}),
            "ScanIndexForward": False,
        }
        out: list[WeightsVersion] = []
        for item in self._query(kwargs):
            out.append(WeightsVersion.from_item(item))
            if len(out) >= limit:
                break
        return out

    def put_weights(
        self,
        weights: Mapping[str, float],
        *,
        changed_by: str,
        note: str | None = None,
        expected_version: int | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[WeightsVersion, int]:
        """Write the next version of the weights and make it current, in one transaction.

        Returns the new version and the number of the one it replaced. Raises
        :class:`Conflict` when ``expected_version`` is not the current version, or when another
        change won the race (nothing is written then).
        """
        unknown = set(weights) - set(DEFAULT_WEIGHTS)
        missing = set(DEFAULT_WEIGHTS) - set(weights)
        if unknown or missing:
            raise ValueError(f"weights must name exactly {sorted(DEFAULT_WEIGHTS)}")
        current = self.current_weights(consistent=True)
        if expected_version is not None and expected_version != current.version:
            raise _weights_conflict(current.version, expected_version)
        new = WeightsVersion(
            version=current.version + 1,
            weights={k: float(weights[k]) for k in DEFAULT_WEIGHTS},
            changed_by=changed_by,
            changed_at=now or dt.datetime.now(dt.UTC),
            note=note,
        )
        put_current: dict[str, Any] = {"TableName": self._table, "Item": to_item(new.item(keys.CURRENT_SK))}
        if current.version == 0:
            put_current["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            put_current["ConditionExpression"] = "version = :seen"
            put_current["ExpressionAttributeValues"] = to_item({":seen": current.version})
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": to_item(new.item(keys.weights_version_sk(new.version))),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {"Put": put_current},
        ]
        self._transact(actions, on_condition=lambda: _weights_conflict(None, expected_version))
        return new, current.version

    # ------------------------------------------------------------------ model pointers
    def model_pointer(self, artist_id: str, *, consistent: bool = False) -> ModelPointer | None:
        item = self._get(keys.model_pk(artist_id), keys.CURRENT_SK, consistent=consistent)
        return ModelPointer.from_item(item) if item else None

    def model_versions(self, artist_id: str) -> Iterator[ModelPointer]:
        """The artist's model versions, newest first (versions sort by their training time)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :v)",
            "ExpressionAttributeValues": to_item({":pk": keys.model_pk(artist_id), ":v": "v#"}),
            "ScanIndexForward": False,
        }
        for item in self._query(kwargs):
            yield ModelPointer.from_item(item)

    def model_before(self, artist_id: str, day: dt.date) -> ModelPointer | None:
        """The newest model trained only on shows before ``day`` (None: there is none).

        A prediction for a show must not come from a model that learned from that show's setlist
        or later ones: the current model serves the shows after its newest setlist, earlier
        shows get the version that was current before their date.
        """
        current = self.model_pointer(artist_id)
        if current is None:
            return None
        if current.last_show_date < day:
            return current
        for pointer in self.model_versions(artist_id):
            if pointer.last_show_date < day:
                return pointer
        return None

    def move_model_pointer(self, pointer: ModelPointer, *, previous: str | None) -> bool:
        """Record ``pointer``'s version and make it the artist's current model, in one
        transaction, if the current version is still ``previous`` (None: there was none).
        False when another trainer moved the pointer first (nothing is written then)."""
        put_current: dict[str, Any] = {
            "TableName": self._table,
            "Item": to_item(pointer.item(keys.CURRENT_SK)),
        }
        if previous is None:
            put_current["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            put_current["ConditionExpression"] = "version = :seen"
            put_current["ExpressionAttributeValues"] = to_item({":seen": previous})
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": to_item(pointer.item(keys.model_version_sk(pointer.version))),
                }
            },
            {"Put": put_current},
        ]
        try:
            self._transact(actions, on_condition=_PointerMoved)
        except _PointerMoved:
            return False
        return True

    def delete_model_version(self, artist_id: str, version: str) -> None:
        """Forget one version of the artist's model (never the current one: conditioned on it
        not being CURRENT's version is the caller's job, see ``ModelRegistry.prune``)."""
        with unavailable_on_throttle(WHAT):
            self._db.delete_item(
                TableName=self._table,
                Key=to_item({"PK": keys.model_pk(artist_id), "SK": keys.model_version_sk(version)}),
            )

    # ------------------------------------------------------------------ plumbing
    def _get(self, pk: str, sk: str, *, consistent: bool = False) -> dict[str, Any] | None:
        with unavailable_on_throttle(WHAT):
            response = self._db.get_item(
                TableName=self._table, Key=to_item({"PK": pk, "SK": sk}), ConsistentRead=consistent
            )
        item = response.get("Item")
        return from_item(item) if item else None

    def _query(self, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            with unavailable_on_throttle(WHAT):
                response = self._db.query(**kwargs)
            yield from (from_item(i) for i in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _transact(self, actions: Sequence[dict[str, Any]], *, on_condition: Callable[[], Exception]) -> None:
        try:
            self._db.transact_write_items(TransactItems=list(actions))  # type: ignore[arg-type]
        except CircuitOpenError as exc:
            raise unavailable_for_open_circuit(exc, WHAT) from exc
        except ClientError as exc:
            response: Any = exc.response
            reasons = {str(r.get("Code")) for r in response.get("CancellationReasons") or []}
            if "ConditionalCheckFailed" in reasons:
                raise on_condition() from exc
            if {"ThrottlingError", "TransactionConflict"} & reasons:
                raise Unavailable(
                    f"{WHAT} is busy; retry shortly (nothing was changed)",
                    details={"retryable": True, "outcome": "unchanged"},
                ) from exc
            raise_unavailable_for(exc, WHAT)
            raise


class _PointerMoved(Exception):
    """Another trainer moved the model pointer first."""


def _weights_conflict(current: int | None, expected: int | None) -> Conflict:
    if current is None:
        message = "the weights were changed by someone else at the same time; read them and try again"
    else:
        message = f"the weights are at version {current}, not {expected}; read them and try again"
    details: dict[str, Any] = {"expected_version": expected}
    if current is not None:
        details["current_version"] = current
    return Conflict(message, details=details)
