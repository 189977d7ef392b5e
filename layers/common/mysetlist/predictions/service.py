"""The prediction pipeline: predictions on demand and precomputed, their scores, and training.

* :class:`Predictor` serves ``POST``/``GET /api/ml/predictions?show_id=`` and the hourly
  precompute. A show is predicted from the setlists dated before it only, with the newest model
  of its artist trained only on such setlists (a past show gets the model version that was
  current before it), and the show's fan votes. An artist without a model yet is predicted by
  the frequency baseline (``model_version`` "baseline"); a show with no earlier setlists gets no
  songs (``model_version`` None).
* :meth:`Predictor.score_show` scores a show's stored prediction when its actual setlist
  arrives (the ModelTrainer, from the catalogue's stream).
* :class:`Trainer` retrains an artist's model from its whole history and moves its pointer.

Degraded service, never lost data: when the model store fails the prediction comes from a
version this container holds, else from the baseline, and it never replaces a stored
prediction; when the table refuses a write the prediction is still returned (and counted).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.catalog_store import CatalogStore
from mysetlist.errors import DomainError, NotFound, Unavailable, Unprocessable
from mysetlist.models import Show as CatalogShow
from mysetlist.models import ShowStatus
from mysetlist.observability import logger, metrics
from mysetlist.predictions.backtest import score_prediction
from mysetlist.predictions.catalog_history import CatalogHistory, SetlistHistory
from mysetlist.predictions.features import FeatureState
from mysetlist.predictions.model import EnsembleWeights, ModelConfig
from mysetlist.predictions.predict import DEFAULT_LENGTH, predict_show, state_after
from mysetlist.predictions.registry import LoadedModel, ModelRegistry, ModelUnavailable
from mysetlist.predictions.store import (
    ModelPointer,
    PredictionsStore,
    ScoreRecord,
    StoredPrediction,
    WeightsVersion,
    expires_at_for,
)
from mysetlist.settings import Settings

BASELINE = "baseline"
# A show more than this many days past is not predicted any more (its prediction has expired).
MAX_PAST_DAYS = 30
# A stored prediction is served as is for this long (same versions and length).
FRESH_FOR = dt.timedelta(hours=1)
PRECOMPUTE_DAYS = 30
# Work of the precompute and the nightly training stops with this much time left (seconds).
TIME_RESERVE = 20.0
SOURCE_ON_DEMAND = "on_demand"
SOURCE_PRECOMPUTE = "precompute"

Clock = Callable[[], dt.datetime]
TimeLeft = Callable[[], float]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _no_limit() -> float:
    return float("inf")


class ShowTooOld(Unprocessable):
    code = "show_too_old"


@dataclass(frozen=True)
class PredictionView:
    """A prediction as served: ``stale`` when its model or weights version is no longer the
    one a new prediction of the show would use."""

    prediction: StoredPrediction
    stale: bool


@dataclass(frozen=True)
class _Model:
    """The model chosen for one show: its pointer, the loaded version (None: baseline), and
    whether the chosen version could not be loaded."""

    pointer: ModelPointer | None
    loaded: LoadedModel | None
    degraded: bool = False


def _model_matches(version: str | None, pointer: ModelPointer | None) -> bool:
    if pointer is None:
        return version in (BASELINE, None)
    return version == pointer.version


def is_stale(prediction: StoredPrediction, pointer: ModelPointer | None, weights: WeightsVersion) -> bool:
    """Whether a new prediction of the show would use another model or weights version."""
    return (
        not _model_matches(prediction.model_version, pointer) or prediction.weights_version != weights.version
    )


class Predictor:
    """Predictions of shows: on demand, stored, precomputed, and scored."""

    def __init__(
        self,
        catalog: CatalogStore,
        histories: CatalogHistory,
        store: PredictionsStore,
        registry: ModelRegistry,
        votes: Callable[[str], Mapping[str, float]] | None = None,
        *,
        clock: Clock = _utc_now,
        state_cache: int = 8,
    ) -> None:
        self.catalog = catalog
        self.histories = histories
        self.store = store
        self.registry = registry
        self._votes = votes
        self._clock = clock
        self._states: OrderedDict[tuple[str, str, str | None, int], FeatureState] = OrderedDict()
        self._state_cache = state_cache

    # ------------------------------------------------------------------ reading
    def stored(self, show_id: str) -> PredictionView | None:
        """The show's stored prediction (None when there is none)."""
        prediction = self.store.get_prediction(show_id)
        if prediction is None:
            return None
        pointer = self.store.model_before(prediction.artist_id, prediction.show_date)
        return PredictionView(prediction, is_stale(prediction, pointer, self.store.current_weights()))

    # ------------------------------------------------------------------ on demand
    def predict(
        self, show_id: str, *, setlist_length: int = DEFAULT_LENGTH, force_refresh: bool = False
    ) -> PredictionView:
        """The show's prediction: the stored one when it is current (same model and weights
        versions, same length, generated within the hour) unless ``force_refresh``, else a new
        one, stored. Raises :class:`NotFound` and :class:`ShowTooOld`."""
        show = self.catalog.get_show(show_id)
        if show is None:
            raise NotFound(f"show {show_id!r} not found")
        now = self._clock()
        oldest = now.date() - dt.timedelta(days=MAX_PAST_DAYS)
        if show.date < oldest:
            raise ShowTooOld(
                f"show {show_id!r} was played on {show.date.isoformat()}: predictions cover shows "
                f"up to {MAX_PAST_DAYS} days past (from {oldest.isoformat()})",
                details={"show_date": show.date.isoformat(), "max_past_days": MAX_PAST_DAYS},
            )
        unreadable = False
        try:
            stored = self.store.get_prediction(show_id)
        except Unavailable:
            logger.warning("stored prediction unreadable; predicting afresh", extra={"show_id": show_id})
            stored, unreadable = None, True
        weights = self.store.current_weights()
        pointer = self.store.model_before(show.artist_id, show.date)
        if (
            stored is not None
            and not force_refresh
            and stored.setlist_length == setlist_length
            and now - stored.generated_at < FRESH_FOR
            and not is_stale(stored, pointer, weights)
        ):
            return PredictionView(stored, False)
        chosen = self._model(show.artist_id, show.date, pointer)
        if chosen.degraded and stored is not None and stored.setlist_length == setlist_length:
            # The model cannot be loaded: the stored prediction (made with a model) beats a
            # degraded one, even when a fresh one was asked for.
            return PredictionView(stored, is_stale(stored, pointer, weights))
        fresh = self._predict(show, setlist_length, chosen, weights, SOURCE_ON_DEMAND, now)
        # A degraded prediction never replaces a stored one (nor one it could not read).
        if not (chosen.degraded and (stored is not None or unreadable)):
            self._save(fresh)
        return PredictionView(fresh, chosen.degraded or is_stale(fresh, pointer, weights))

    # ------------------------------------------------------------------ precompute
    def precompute(
        self,
        *,
        days: int = PRECOMPUTE_DAYS,
        setlist_length: int = DEFAULT_LENGTH,
        time_left: TimeLeft = _no_limit,
    ) -> PrecomputeReport:
        """A fresh prediction for every upcoming show in the next ``days`` days, artist by
        artist (each artist's model and history loaded once)."""
        now = self._clock()
        report = PrecomputeReport()
        by_artist: dict[str, list[CatalogShow]] = {}
        for show in self._upcoming(now.date(), now.date() + dt.timedelta(days=days)):
            by_artist.setdefault(show.artist_id, []).append(show)
        report.shows = sum(len(s) for s in by_artist.values())
        report.artists = len(by_artist)
        weights = self.store.current_weights()
        for artist_id, shows in sorted(by_artist.items()):
            if time_left() < TIME_RESERVE:
                report.not_reached += [s.show_id for s in shows]
                continue
            try:
                self._precompute_artist(artist_id, shows, weights, setlist_length, now, report)
            except (DomainError, ModelUnavailable) as exc:
                logger.warning(
                    "could not precompute an artist's shows",
                    extra={"artist_id": artist_id, "error": repr(exc)},
                )
                report.failed += [s.show_id for s in shows if s.show_id not in report.stored_ids]
        return report

    def _precompute_artist(
        self,
        artist_id: str,
        shows: Sequence[CatalogShow],
        weights: WeightsVersion,
        setlist_length: int,
        now: dt.datetime,
        report: PrecomputeReport,
    ) -> None:
        current = self.store.model_pointer(artist_id)
        bases: dict[str, SetlistHistory] = {}
        for show in sorted(shows, key=lambda s: (s.date, s.show_id)):
            pointer = current
            if pointer is not None and pointer.last_show_date >= show.date:
                pointer = self.store.model_before(artist_id, show.date)
            chosen = self._model(artist_id, show.date, pointer)
            prediction = self._predict(show, setlist_length, chosen, weights, SOURCE_PRECOMPUTE, now, bases)
            if chosen.degraded:
                report.degraded += 1
                if self.store.get_prediction(show.show_id) is not None:
                    continue  # a degraded prediction never replaces a stored one
            self.store.put_prediction(prediction)
            report.stored_ids.append(show.show_id)

    def _upcoming(self, start: dt.date, end: dt.date) -> Iterable[CatalogShow]:
        cursor: str | None = None
        while True:
            page = self.catalog.list_shows(
                artist_id=None,
                status=ShowStatus.UPCOMING,
                date_from=start,
                date_to=end,
                descending=False,
                limit=100,
                cursor=cursor,
            )
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # ------------------------------------------------------------------ scoring
    def score_show(
        self, show_id: str, played: Sequence[str], *, arrived_at: dt.datetime | None = None
    ) -> ScoreRecord | None:
        """Score the show's stored prediction against the songs ``played`` (song ids) and store
        the score (replacing an earlier one: scoring the same setlist again writes the same
        item). None when there is no stored prediction with songs, or nothing was played."""
        prediction = self.store.get_prediction(show_id, consistent=True)
        if prediction is None or not prediction.ranking:
            return None
        result = score_prediction(prediction.ranking, list(played))
        if result.get("p_at_k") is None:
            return None
        k = int(result["k"])
        expected = result.get("expected_hits")
        if expected is None:
            expected = sum(p for _, p in prediction.ranking[:k])
        score = ScoreRecord(
            show_id=show_id,
            artist_id=prediction.artist_id,
            show_date=prediction.show_date,
            k=k,
            hits=int(result["hits"]),
            p_at_k=round(float(result["p_at_k"]), 6),
            brier=round(float(result["brier"]), 6),
            expected_hits=round(float(expected), 6),
            bins=[
                {"n": int(b["n"]), "sum_p": round(float(b["sum_p"]), 6), "hits": int(b["hits"])}
                for b in result["bins"]
            ],
            model_version=prediction.model_version,
            weights_version=prediction.weights_version,
            scored_at=arrived_at or self._clock(),
            prediction_generated_at=prediction.generated_at,
            source=prediction.source,
        )
        self.store.put_score(score)
        return score

    # ------------------------------------------------------------------ internals
    def _model(self, artist_id: str, day: dt.date, pointer: ModelPointer | None) -> _Model:
        if pointer is None:
            return _Model(None, None)
        try:
            return _Model(pointer, self.registry.load(pointer))
        except ModelUnavailable as exc:
            logger.warning("model unavailable; serving without it", extra={"error": str(exc)})
            metrics.add_metric(name="PredictionDegraded", unit=MetricUnit.Count, value=1)
            return _Model(pointer, self.registry.cached_before(artist_id, day), degraded=True)

    def _history(
        self,
        artist_id: str,
        day: dt.date,
        chosen: _Model,
        bases: dict[str, SetlistHistory] | None = None,
    ) -> tuple[SetlistHistory, FeatureState]:
        """The history before ``day`` for the chosen model, and its feature state. ``bases``
        keeps each model's history up to now across the shows of one artist (the precompute):
        each show then only cuts it at its date."""
        version = chosen.loaded.pointer.version if chosen.loaded is not None else BASELINE
        if bases is not None:
            base = bases.get(version)
            if base is None:
                if chosen.loaded is not None:
                    base = self.histories.extend(chosen.loaded.history)
                else:
                    base = self.histories.full(artist_id)
                bases[version] = base
            history = base.before(day)
        elif chosen.loaded is not None:
            history = self.histories.extend(chosen.loaded.history, before=day)
        else:
            history = self.histories.full(artist_id, before=day)
        key = (artist_id, version, history.last_key, len(history.history.shows))
        state = self._states.get(key)
        if state is None:
            state = state_after(history.history)
            self._states[key] = state
            while len(self._states) > self._state_cache:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
        return history, state

    def _fan_votes(self, show_id: str) -> Mapping[str, float]:
        if self._votes is None:
            return {}
        try:
            return self._votes(show_id)
        except DomainError as exc:  # the tallies are a signal: predict without them
            logger.warning("fan votes unreadable; predicting without them", extra={"error": repr(exc)})
            return {}

    def _predict(
        self,
        show: CatalogShow,
        setlist_length: int,
        chosen: _Model,
        weights: WeightsVersion,
        source: str,
        now: dt.datetime,
        bases: dict[str, SetlistHistory] | None = None,
    ) -> StoredPrediction:
        history, state = self._history(show.artist_id, show.date, chosen, bases)
        target = self.histories.target_show(show)
        model = chosen.loaded.model if chosen.loaded else None
        result = predict_show(
            history.history,
            target,
            setlist_length=setlist_length,
            votes=self._fan_votes(show.show_id),
            model=model,
            titles=history.titles,
            state=state,
        )
        if not history.history.shows:
            version: str | None = None
            weights_version = weights.version
        elif chosen.loaded is not None:
            version = chosen.loaded.pointer.version
            weights_version = chosen.loaded.pointer.weights_version
        else:
            version = BASELINE
            weights_version = weights.version
        return StoredPrediction(
            show_id=show.show_id,
            artist_id=show.artist_id,
            show_date=show.date,
            setlist_length=setlist_length,
            songs=[_song(s) for s in result.songs],
            ranking=list(result.ranking),
            expected_correct=float(result.expected_correct),
            model_version=version,
            weights_version=weights_version,
            generated_at=now,
            source=source,
            shows_before=int(result.shows_before),
            expires_at=expires_at_for(show.date),
        )

    def _save(self, prediction: StoredPrediction) -> None:
        try:
            self.store.put_prediction(prediction)
        except Unavailable as exc:
            logger.warning(
                "prediction not stored; returned anyway",
                extra={"show_id": prediction.show_id, "error": repr(exc)},
            )
            metrics.add_metric(name="PredictionStoreFailed", unit=MetricUnit.Count, value=1)


def _song(song: Any) -> dict[str, Any]:
    data = asdict(song)
    return {
        "song_id": data["song_id"],
        "title": data["song"],
        "probability": data["probability"],
        "position": data["position"],
        "set": data["set"],
        "historical_frequency": data["historical_frequency"],
        "trending_score": data["trending_score"],
        "reasons": list(data["reasons"]),
    }


@dataclass
class PrecomputeReport:
    shows: int = 0
    artists: int = 0
    stored_ids: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)
    degraded: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "shows": self.shows,
            "artists": self.artists,
            "stored": len(self.stored_ids),
            "failed": self.failed[:20],
            "failed_count": len(self.failed),
            "not_reached": len(self.not_reached),
            "degraded": self.degraded,
        }


# ---------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainOutcome:
    artist_id: str
    status: str  # trained | current | no_setlists | nothing_to_learn | raced
    version: str | None = None
    seconds: float = 0.0


@dataclass
class TrainReport:
    outcomes: list[TrainOutcome] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_reached: int = 0

    @property
    def trained(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "trained")

    def summary(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for outcome in self.outcomes:
            by_status[outcome.status] = by_status.get(outcome.status, 0) + 1
        return {
            "artists": len(self.outcomes) + len(self.failed),
            "by_status": by_status,
            "failed": self.failed[:20],
            "not_reached": self.not_reached,
            "versions": {o.artist_id: o.version for o in self.outcomes if o.status == "trained"},
        }


Train = Callable[[Any, ModelConfig], Any]
Export = Callable[[Any], Any]


def _train_history(history: Any, config: ModelConfig) -> Any:
    from mysetlist.predictions.model import train_history  # noqa: PLC0415 - scikit-learn, trainer only

    return train_history(history, config)


def _export(trained: Any) -> Any:
    from mysetlist.predictions.light import export  # noqa: PLC0415

    return export(trained)


class Trainer:
    """Trains artists' models from their whole catalogue history (scikit-learn), exports them
    and moves their pointers. An artist whose current model covers its newest setlist with the
    current weights is skipped unless forced."""

    def __init__(
        self,
        histories: CatalogHistory,
        store: PredictionsStore,
        registry: ModelRegistry,
        *,
        clock: Clock = _utc_now,
        train: Train = _train_history,
        export: Export = _export,
    ) -> None:
        self.histories = histories
        self.store = store
        self.registry = registry
        self._clock = clock
        self._train = train
        self._export = export

    def train_artist(
        self, artist_id: str, *, force: bool = False, since: dt.datetime | None = None
    ) -> TrainOutcome:
        """Train the artist's model unless it is current: it covers the newest setlist with the
        current weights and, when ``since`` is given (setlists arrived then), was trained after
        it (a replayed stream batch does not train again). ``force`` trains regardless."""
        started = time.perf_counter()
        newest = self.histories.newest_setlist_key(artist_id)
        if newest is None:
            return TrainOutcome(artist_id, "no_setlists")
        pointer = self.store.model_pointer(artist_id, consistent=True)
        weights = self.store.current_weights(consistent=True)
        if (
            not force
            and pointer is not None
            and pointer.last_key == newest
            and pointer.weights_version == weights.version
            and (since is None or pointer.trained_at >= since)
        ):
            return TrainOutcome(artist_id, "current", pointer.version)
        history = self.histories.full(artist_id)
        config = ModelConfig(weights=EnsembleWeights(**weights.weights))
        trained = self._train(history.history, config)
        if trained is None:
            return TrainOutcome(artist_id, "nothing_to_learn", seconds=time.perf_counter() - started)
        saved = self.registry.save(
            artist_id,
            self._export(trained),
            history,
            weights_version=weights.version,
            trained_at=self._clock(),
            previous=pointer.version if pointer else None,
        )
        seconds = round(time.perf_counter() - started, 3)
        if saved is None:
            return TrainOutcome(artist_id, "raced", seconds=seconds)
        try:
            pruned = self.registry.prune(artist_id, self._clock().date(), past_days=MAX_PAST_DAYS)
        except Exception as exc:  # old files cost cents: never fail a training for them
            logger.warning(
                "old model versions not pruned", extra={"artist_id": artist_id, "error": repr(exc)}
            )
            pruned = []
        logger.info(
            "model trained",
            extra={
                "artist_id": artist_id,
                "version": saved.version,
                "shows": len(history.history.shows),
                "trained_on": saved.trained_on_shows,
                "seconds": seconds,
                "pruned_versions": pruned,
            },
        )
        return TrainOutcome(artist_id, "trained", saved.version, seconds)

    def train_all(self, artist_ids: Iterable[str], *, time_left: TimeLeft = _no_limit) -> TrainReport:
        """Train each artist in turn (skipping current ones) while time remains: an artist is
        started only when the time left exceeds the reserve plus twice the longest training so
        far. Artists not reached are counted; the next run picks them up."""
        report = TrainReport()
        longest = 0.0
        pending = list(artist_ids)
        for index, artist_id in enumerate(pending):
            if time_left() < TIME_RESERVE + 2 * longest:
                report.not_reached = len(pending) - index
                break
            try:
                outcome = self.train_artist(artist_id)
            except Exception as exc:  # one artist's failure (a store, a fit) must not stop the others
                logger.exception("training failed", extra={"artist_id": artist_id, "error": repr(exc)})
                report.failed.append(artist_id)
                continue
            longest = max(longest, outcome.seconds)
            report.outcomes.append(outcome)
        return report


def all_artist_ids(catalog: CatalogStore) -> Iterable[str]:
    """Every artist of the catalogue (the ARTISTS index, by name)."""
    cursor: str | None = None
    while True:
        page = catalog.search_artists("", 100, cursor)
        yield from (a.artist_id for a in page.items)
        if not page.next_cursor:
            return
        cursor = page.next_cursor


# ---------------------------------------------------------------------------------- wiring


def tally_votes(tallies: Any) -> Callable[[str], Mapping[str, float]]:
    """Fan votes of a show from its tallies: net up votes per song id (songs with any)."""

    def read(show_id: str) -> Mapping[str, float]:
        return {c.song_id: float(c.up - c.down) for c in tallies.read(show_id) if c.up or c.down}

    return read


def build_predictor(settings: Settings) -> Predictor:
    """The container's predictor for ``settings`` (clients are created here)."""
    predictor, _ = build_pipeline(settings)
    return predictor


def build_pipeline(settings: Settings) -> tuple[Predictor, Trainer]:
    """The predictor and the trainer sharing one store, registry and history source."""
    from mysetlist.aws import service_client  # noqa: PLC0415
    from mysetlist.dynamo import client_for  # noqa: PLC0415
    from mysetlist.tallies import TallyStore  # noqa: PLC0415

    settings.require("catalog_table", "predictions_table", "model_bucket")
    db = client_for(settings)
    catalog = CatalogStore(db, settings.catalog_table)
    histories = CatalogHistory(catalog, db, settings.catalog_table)
    store = PredictionsStore(db, settings.predictions_table)
    registry = ModelRegistry(service_client("s3", settings, read_timeout=10.0), settings.model_bucket, store)
    votes = None
    if settings.tallies_table:
        votes = tally_votes(
            TallyStore(db, settings.tallies_table, marker_ttl_seconds=settings.stream_marker_ttl_seconds)
        )
    return (
        Predictor(catalog, histories, store, registry, votes),
        Trainer(histories, store, registry),
    )


# ---------------------------------------------------------------------------------- the stream


@dataclass(frozen=True)
class ArrivedSetlist:
    """An actual setlist recorded in the catalogue (one stream record)."""

    sequence: str
    show_id: str
    artist_id: str
    song_ids: tuple[str, ...]
    arrived_at: dt.datetime | None


@dataclass
class BatchReport:
    scored: int = 0
    unscored: int = 0
    trained: list[TrainOutcome] = field(default_factory=list)
    ignored: int = 0
    quarantined: int = 0
    failures: list[str] = field(default_factory=list)

    def response(self) -> dict[str, Any]:
        """The partial batch response Lambda expects (ReportBatchItemFailures)."""
        return {"batchItemFailures": [{"itemIdentifier": s} for s in self.failures]}

    def summary(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "unscored": self.unscored,
            "trained": {o.artist_id: o.status for o in self.trained},
            "ignored": self.ignored,
            "quarantined": self.quarantined,
            "failed_records": len(self.failures),
        }


class UnreadableRecord(ValueError):
    """A stream record that is an actual setlist but cannot be read."""


def arrived_setlist(record: Mapping[str, Any]) -> ArrivedSetlist | None:
    """The setlist of a catalogue stream record; None for any other record (the mapping's
    filter lets only actual setlists through in AWS; the local stack delivers every record).
    Raises :class:`UnreadableRecord` for a setlist record that cannot be read."""
    from mysetlist import keys  # noqa: PLC0415
    from mysetlist.catalog_store import setlist_from_item  # noqa: PLC0415
    from mysetlist.dynamo import from_item  # noqa: PLC0415

    body = record.get("dynamodb") or {}
    sk = ((body.get("Keys") or {}).get("SK") or {}).get("S")
    if record.get("eventName") not in ("INSERT", "MODIFY") or sk != keys.ACTUAL_SETLIST_SK:
        return None
    sequence = str(body.get("SequenceNumber") or "")
    try:
        item = from_item(body["NewImage"])
        setlist = setlist_from_item(item)
        created = body.get("ApproximateCreationDateTime")
        arrived = setlist.recorded_at
        if arrived is None and created is not None:
            arrived = dt.datetime.fromtimestamp(float(created), dt.UTC)
        return ArrivedSetlist(
            sequence=sequence,
            show_id=setlist.show_id,
            artist_id=str(item["artist_id"]),
            song_ids=tuple(setlist.song_ids),
            arrived_at=arrived.astimezone(dt.UTC) if arrived else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UnreadableRecord(f"{type(exc).__name__}: {exc}") from exc


def process_setlist_batch(
    records: Sequence[Mapping[str, Any]],
    predictor: Predictor,
    trainer: Trainer,
    quarantine: Any,
) -> BatchReport:
    """Score the stored prediction of each show whose actual setlist arrived, then retrain each
    touched artist once. A record whose scoring failed, and every record of an artist whose
    training failed, is reported as failed (Lambda replays from the first failure; scoring and
    training again are idempotent). Unreadable setlist records go to ``quarantine``."""
    report = BatchReport()
    touched: dict[str, list[str]] = {}  # artist -> sequences, in stream order
    arrivals: dict[str, dt.datetime | None] = {}  # artist -> when its newest setlist arrived
    blocked: set[str] = set()  # artists with a record that failed: not trained in this batch
    for record in records:
        sequence = str((record.get("dynamodb") or {}).get("SequenceNumber") or "")
        try:
            arrived = arrived_setlist(record)
        except UnreadableRecord as exc:
            try:
                quarantine.send(record, str(exc))
            except Exception:
                logger.exception("could not quarantine an unreadable record")
                report.failures.append(sequence)
                continue
            logger.error("unreadable setlist record quarantined", extra={"reason": str(exc)})
            report.quarantined += 1
            continue
        if arrived is None:
            report.ignored += 1
            continue
        touched.setdefault(arrived.artist_id, []).append(sequence)
        known = arrivals.get(arrived.artist_id, arrived.arrived_at)
        arrivals[arrived.artist_id] = (
            max(known, arrived.arrived_at) if known is not None and arrived.arrived_at is not None else None
        )
        try:
            score = predictor.score_show(arrived.show_id, arrived.song_ids, arrived_at=arrived.arrived_at)
        except Exception as exc:
            logger.exception("scoring failed", extra={"show_id": arrived.show_id, "error": repr(exc)})
            report.failures.append(sequence)
            blocked.add(arrived.artist_id)
            continue
        if score is None:
            report.unscored += 1
        else:
            report.scored += 1
    for artist_id, sequences in touched.items():
        if artist_id in blocked:
            continue
        try:
            since = arrivals.get(artist_id)
            # Without an arrival time, a correction of the newest setlist is only seen by training.
            report.trained.append(trainer.train_artist(artist_id, force=since is None, since=since))
        except Exception as exc:
            logger.exception("training failed", extra={"artist_id": artist_id, "error": repr(exc)})
            report.failures.extend(sequences)
    return report
