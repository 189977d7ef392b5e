"""The prediction pipeline against moto (tables from template.yaml, the model bucket in S3): the
ModelTrainer's handler (asynchronous retrain, the catalogue's stream), the PredictionPrecompute's
handler, and the Predictor the HTTP API serves, on a small synthetic artist so the models train
in about a second. Failure paths: the model store down or missing a file, a throttled
predictions table, a show without history, a show too old, an unknown show."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import random
from collections.abc import Iterator
from typing import Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.breaker import Dependency, breaker_for, reset_all
from mysetlist.catalog_store import CatalogStore, setlist_item
from mysetlist.errors import NotFound
from mysetlist.importer import import_lines
from mysetlist.models import Setlist, SetlistEntry, SetlistSet, ShowStatus
from mysetlist.predictions.backtest import score_prediction
from mysetlist.predictions.catalog_history import CatalogHistory
from mysetlist.predictions.registry import (
    HISTORY_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    ModelRegistry,
    ModelUnavailable,
)
from mysetlist.predictions.service import BASELINE, Predictor, ShowTooOld, Trainer, build_pipeline
from mysetlist.predictions.store import PredictionsStore, expires_at_for
from tests.harness.events import LambdaContext
from tests.harness.streams import StreamReader
from tests.support.template import load_handler

TODAY = dt.datetime.now(dt.UTC).date()
ARTIST = "Pipeline Band"
ARTIST_ID = keys.artist_id_for(ARTIST)
CORE = [f"Core Song {i}" for i in range(8)]
ROTATION = [f"Rotation Song {i}" for i in range(24)]
PAST_SHOWS = 60
# Show dates: every 4 days, the last played show 6 days ago; upcoming shows every 5 days from
# tomorrow, one past the 30-day window.
FIRST_DATE = TODAY - dt.timedelta(days=6 + 4 * (PAST_SHOWS - 1))
UPCOMING = [TODAY + dt.timedelta(days=d) for d in (1, 6, 11, 16, 21, 26, 45)]


def _setlist_lines(rng: random.Random) -> list[dict[str, Any]]:
    """A band that plays its core songs nearly every night and rotates the rest (a song played
    last night is rarely played again): something a model can learn."""
    lines = []
    last: set[str] = set()
    for i in range(PAST_SHOWS):
        day = FIRST_DATE + dt.timedelta(days=4 * i)
        core = [s for s in CORE if rng.random() < 0.9]
        fresh = [s for s in ROTATION if s not in last]
        rotation = rng.sample(fresh, 8)
        last = set(rotation)
        encore = [core.pop()] if core else [rotation.pop()]
        lines.append(
            {
                "artist": ARTIST,
                "date": day.isoformat(),
                "venue": f"Hall {i % 5}",
                "city": f"City {i % 5}",
                "country": "US",
                "tour": f"Tour {i // 20}",
                "sets": [{"name": "Set 1", "songs": core + rotation}, {"name": "Encore", "songs": encore}],
            }
        )
    for day in UPCOMING:
        lines.append(
            {"artist": ARTIST, "date": day.isoformat(), "venue": "Hall 1", "city": "City 1", "sets": []}
        )
    return lines


def show_id(day: dt.date, artist_id: str = ARTIST_ID) -> str:
    return keys.show_id_for(artist_id, day.isoformat())


PAST_DAYS = [FIRST_DATE + dt.timedelta(days=4 * i) for i in range(PAST_SHOWS)]


@pytest.fixture(scope="module", autouse=True)
def one_training_thread() -> Iterator[None]:
    """Gradient boosting trains with OpenMP threads, which spin for a CPU: on a busy test
    machine (xdist workers, other jobs) one thread trains in seconds where several take minutes."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def env(aws: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The settings the pipeline's functions need, the synthetic artist imported, the
    catalogue stream read up to now (so a test sees only its own records)."""
    from mysetlist.settings import load_settings

    if os.environ.get("PREDICTIONS_TABLE") != aws["PredictionsTable"]:
        os.environ["PREDICTIONS_TABLE"] = aws["PredictionsTable"]
        load_settings.cache_clear()
    settings = load_settings()
    dynamodb = boto3.client("dynamodb")
    catalog = CatalogStore(dynamodb, settings.catalog_table)
    report = import_lines(
        catalog, [json.dumps(line) for line in _setlist_lines(random.Random(6))], warn=print
    )
    assert not report.skipped
    arn = dynamodb.describe_table(TableName=settings.catalog_table)["Table"]["LatestStreamArn"]
    reader = StreamReader(boto3.client("dynamodbstreams"), arn)
    reader.new_records()
    reset_all()
    yield {
        "settings": settings,
        "dynamodb": dynamodb,
        "catalog": catalog,
        "store": PredictionsStore(dynamodb, settings.predictions_table),
        "s3": boto3.client("s3"),
        "reader": reader,
    }
    reset_all()


@pytest.fixture(scope="module")
def trainer_handler(env: dict[str, Any]) -> Any:
    return load_handler("ModelTrainer")


@pytest.fixture(scope="module")
def precompute_handler(env: dict[str, Any]) -> Any:
    return load_handler("PredictionPrecompute")


@pytest.fixture(scope="module")
def trained(env: dict[str, Any], trainer_handler: Any) -> dict[str, Any]:
    """The synthetic artist trained once through the handler's asynchronous event."""
    summary = trainer_handler({"retrain": [ARTIST_ID], "reason": "test"}, LambdaContext(remaining_ms=600_000))
    return cast(dict[str, Any], summary)


@pytest.fixture
def pipeline(env: dict[str, Any]) -> tuple[Predictor, Trainer]:
    """A fresh predictor and trainer (empty container caches) on the module's settings."""
    return build_pipeline(env["settings"])


def _object(env: dict[str, Any], key: str) -> bytes:
    return cast(bytes, env["s3"].get_object(Bucket=env["settings"].model_bucket, Key=key)["Body"].read())


# ---------------------------------------------------------------------------------- training


def test_trainer_saves_a_versioned_model_and_moves_the_pointer(
    env: dict[str, Any], trained: dict[str, Any]
) -> None:
    assert trained["by_status"] == {"trained": 1}
    pointer = env["store"].model_pointer(ARTIST_ID)
    assert pointer is not None
    assert trained["versions"][ARTIST_ID] == pointer.version
    assert pointer.last_show_date == PAST_DAYS[-1]
    assert pointer.last_show_id == show_id(PAST_DAYS[-1])
    assert pointer.weights_version == 0
    assert pointer.prefix == f"models/{ARTIST_ID}/{pointer.version}/"
    model = _object(env, pointer.prefix + MODEL_FILE)
    history = _object(env, pointer.prefix + HISTORY_FILE)
    manifest = json.loads(_object(env, pointer.prefix + MANIFEST_FILE))
    assert (
        manifest["files"][MODEL_FILE]["sha256"]
        == hashlib.sha256(model).hexdigest()
        == pointer.sha256[MODEL_FILE]
    )
    assert manifest["files"][HISTORY_FILE]["sha256"] == hashlib.sha256(history).hexdigest()
    assert model[:2] == b"PK"  # an .npz (zip) file: numpy arrays and a JSON header, no pickle
    snapshot = json.loads(gzip.decompress(history))
    assert len(snapshot["history"]["shows"]) == PAST_SHOWS == manifest["history_shows"]
    assert snapshot["titles"][f"{ARTIST_ID}:core-song-0"] == "Core Song 0"
    # The version is listed in the pointer's history.
    assert next(p.version for p in env["store"].model_versions(ARTIST_ID)) == pointer.version


def test_trainer_skips_an_artist_whose_model_is_current(
    env: dict[str, Any], trained: dict[str, Any], trainer_handler: Any
) -> None:
    before = env["store"].model_pointer(ARTIST_ID)
    summary = trainer_handler({"retrain": [ARTIST_ID]}, LambdaContext(remaining_ms=600_000))
    assert summary["by_status"] == {"current": 1}
    assert env["store"].model_pointer(ARTIST_ID) == before


def test_trainer_reports_artists_without_setlists(
    env: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    _, trainer = pipeline
    assert trainer.train_artist("nobody-ever-recorded").status == "no_setlists"


# ---------------------------------------------------------------------------------- precompute


def test_precompute_stores_every_show_of_the_next_30_days(
    env: dict[str, Any], trained: dict[str, Any], precompute_handler: Any
) -> None:
    summary = precompute_handler({"scheduled_time": "now"}, LambdaContext(remaining_ms=600_000))
    assert summary["failed_count"] == 0
    pointer = env["store"].model_pointer(ARTIST_ID)
    for day in UPCOMING:
        stored = env["store"].get_prediction(show_id(day))
        if (day - TODAY).days > 30:
            assert stored is None
            continue
        assert stored is not None, day
        assert stored.source == "precompute"
        assert stored.model_version == pointer.version
        assert stored.setlist_length == 20
        assert len(stored.songs) == 20
        assert stored.shows_before == PAST_SHOWS
        assert stored.expires_at == expires_at_for(day)
        assert dt.datetime.fromtimestamp(stored.expires_at, dt.UTC).date() == day + dt.timedelta(days=30)
        assert [s["position"] for s in stored.songs] == list(range(1, 21))
        assert len(stored.ranking) == len({s for s, _ in stored.ranking}) == len(CORE) + len(ROTATION)
        assert 0 < stored.expected_correct <= 20
        # The core songs are nearly always played: the model puts them first.
        top = {s for s, _ in stored.ranking[: len(CORE)]}
        assert len(top & {f"{ARTIST_ID}:{keys.slugify(c)}" for c in CORE}) >= len(CORE) - 2
        assert all(s["title"] and s["reasons"] for s in stored.songs)


# ---------------------------------------------------------------------------------- on demand


def test_on_demand_serves_the_stored_prediction_while_it_is_current(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    predictor, _ = pipeline
    target = show_id(UPCOMING[0])
    first = predictor.predict(target, setlist_length=20, force_refresh=True)
    assert first.prediction.source == "on_demand"
    assert not first.stale
    again = predictor.predict(target, setlist_length=20)
    assert again.prediction.generated_at == first.prediction.generated_at
    forced = predictor.predict(target, setlist_length=20, force_refresh=True)
    assert forced.prediction.generated_at > first.prediction.generated_at
    shorter = predictor.predict(target, setlist_length=5)
    assert len(shorter.prediction.songs) == 5
    assert shorter.prediction.generated_at > forced.prediction.generated_at
    assert env["store"].get_prediction(target).setlist_length == 5
    # Same model, same history: the same songs in the same order, whatever the length.
    assert [s for s, _ in shorter.prediction.ranking] == [s for s, _ in forced.prediction.ranking]


def test_a_past_show_is_predicted_without_its_own_or_later_setlists(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    """The show of 10 days ago has a setlist, and the current model learned from it: the
    prediction uses the shows before it only, and no model trained on it (here: none, so the
    baseline)."""
    predictor, _ = pipeline
    day = PAST_DAYS[-2]
    view = predictor.predict(show_id(day), force_refresh=True)
    assert view.prediction.shows_before == PAST_SHOWS - 2
    assert view.prediction.model_version == BASELINE
    # Changing every setlist from that day on changes nothing in it.
    history = CatalogHistory(env["catalog"], env["dynamodb"], env["settings"].catalog_table)
    assert history.full(ARTIST_ID, before=day).history.shows[-1].date == PAST_DAYS[-3]
    original = env["catalog"].get_show_and_setlist(show_id(day))
    assert original is not None
    assert original[1] is not None
    scrambled = Setlist(
        show_id=show_id(day),
        sets=[
            SetlistSet(name="Set 1", songs=[SetlistEntry(position=1, song_id=f"{ARTIST_ID}:x", title="X")])
        ],
    )
    env["catalog"].put_many([setlist_item(original[0], scrambled)])
    try:
        again = predictor.predict(show_id(day), force_refresh=True)
    finally:
        env["catalog"].put_many([setlist_item(original[0], original[1])])
    assert again.prediction.ranking == view.prediction.ranking


def test_unknown_and_too_old_shows(env: dict[str, Any], pipeline: tuple[Predictor, Trainer]) -> None:
    predictor, _ = pipeline
    with pytest.raises(NotFound):
        predictor.predict("no-such-show")
    with pytest.raises(ShowTooOld) as raised:
        predictor.predict(show_id(PAST_DAYS[0]))
    assert raised.value.code == "show_too_old"
    assert raised.value.status == 422
    assert "30 days" in raised.value.message


def test_a_show_without_artist_history_gets_no_songs(
    env: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    day = TODAY + dt.timedelta(days=3)
    import_lines(
        env["catalog"], [json.dumps({"artist": "Brand New Act", "date": day.isoformat(), "sets": []})]
    )
    predictor, _ = pipeline
    view = predictor.predict(show_id(day, "brand-new-act"))
    assert view.prediction.songs == []
    assert view.prediction.expected_correct == 0
    assert view.prediction.model_version is None
    assert view.prediction.shows_before == 0
    assert not view.stale


def test_an_artist_without_a_model_gets_the_baseline(
    env: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    past = TODAY - dt.timedelta(days=40)
    lines = [
        {
            "artist": "Untrained Act",
            "date": (past + dt.timedelta(days=i)).isoformat(),
            "sets": [{"name": "Set 1", "songs": ["A", "B", "C", "D", "E", "F"][: 3 + i % 4]}],
        }
        for i in range(6)
    ]
    upcoming = TODAY + dt.timedelta(days=2)
    lines.append({"artist": "Untrained Act", "date": upcoming.isoformat(), "sets": []})
    import_lines(env["catalog"], [json.dumps(line) for line in lines])
    predictor, _ = pipeline
    view = predictor.predict(show_id(upcoming, "untrained-act"), setlist_length=5)
    assert view.prediction.model_version == BASELINE
    assert not view.stale
    assert [s["song_id"] for s in view.prediction.songs][:1]
    assert len(view.prediction.songs) == 5
    assert view.prediction.shows_before == 6


# ---------------------------------------------------------------------------------- failures


class _Throttled:
    """A DynamoDB client whose listed operations are throttled (the rest reach moto)."""

    def __init__(self, real: Any, *operations: str) -> None:
        self._real = real
        self._operations = operations

    def __getattr__(self, name: str) -> Any:
        if name in self._operations:

            def refuse(**_: Any) -> Any:
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, name)

            return refuse
        return getattr(self._real, name)


class _PredictionReadsThrottled:
    """A DynamoDB client whose reads of stored predictions are throttled (the rest reach moto)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def get_item(self, **kwargs: Any) -> Any:
        if kwargs["Key"]["SK"] == {"S": keys.PREDICTION_SK}:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "GetItem")
        return self._real.get_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_an_unreadable_stored_prediction_is_never_overwritten_by_a_degraded_one(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    predictor, _ = pipeline
    target = show_id(UPCOMING[3])
    predictor.predict(target, force_refresh=True)
    stored = env["store"].get_prediction(target)
    assert stored is not None
    predictor.store = PredictionsStore(
        cast(Any, _PredictionReadsThrottled(env["dynamodb"])), env["settings"].predictions_table
    )
    predictor.registry.forget()
    breaker_for(Dependency.MODEL_STORE).force_open(60)
    try:
        degraded = predictor.predict(target)
    finally:
        reset_all()
    assert degraded.prediction.model_version == BASELINE
    assert degraded.stale
    assert env["store"].get_prediction(target) == stored
    # With the model store back, a fresh prediction (not degraded) is stored as usual.
    fresh = predictor.predict(target)
    assert fresh.prediction.model_version == stored.model_version
    assert env["store"].get_prediction(target) == fresh.prediction


def test_a_throttled_write_still_returns_the_prediction(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    predictor, _ = pipeline
    target = show_id(UPCOMING[1])
    predictor.predict(target, force_refresh=True)
    stored = env["store"].get_prediction(target)
    assert stored is not None
    predictor.store = PredictionsStore(
        cast(Any, _Throttled(env["dynamodb"], "put_item")), env["settings"].predictions_table
    )
    view = predictor.predict(target, force_refresh=True)
    assert view.prediction.generated_at > stored.generated_at
    assert len(view.prediction.songs) == 20
    assert env["store"].get_prediction(target) == stored  # nothing was lost or half-written


def test_model_store_down_serves_the_stored_prediction_or_the_baseline(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    """With the model store's circuit open and no model in the container: the stored prediction
    when it has the asked length (even on force_refresh), else the baseline, marked stale and
    not stored."""
    predictor, _ = pipeline
    target = show_id(UPCOMING[2])
    predictor.predict(target, force_refresh=True)
    predictor.registry.forget()  # as in a new container
    stored = env["store"].get_prediction(target)
    assert stored is not None
    assert stored.model_version not in (None, BASELINE)
    breaker_for(Dependency.MODEL_STORE).force_open(60)
    try:
        same = predictor.predict(target, setlist_length=stored.setlist_length, force_refresh=True)
        other = predictor.predict(target, setlist_length=10)
    finally:
        reset_all()
    assert same.prediction == stored
    assert not same.stale
    assert other.prediction.model_version == BASELINE
    assert other.stale
    assert len(other.prediction.songs) == 10
    assert env["store"].get_prediction(target) == stored


def test_a_missing_model_file_degrades_to_a_version_this_container_holds(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    predictor, trainer = pipeline
    pointer = env["store"].model_pointer(ARTIST_ID)
    target = show_id(UPCOMING[3])
    predictor.predict(target, force_refresh=True)  # loads the current version into the cache
    retrained = trainer.train_artist(ARTIST_ID, force=True)
    assert retrained.status == "trained"
    assert retrained.version != pointer.version
    fresh_registry = ModelRegistry(env["s3"], env["settings"].model_bucket, env["store"])
    new_pointer = env["store"].model_pointer(ARTIST_ID)
    env["s3"].delete_object(Bucket=env["settings"].model_bucket, Key=new_pointer.prefix + MODEL_FILE)
    predictor.registry.forget()
    predictor.registry.load(pointer)  # the container still holds the previous version
    view = predictor.predict(target, force_refresh=True)
    assert view.prediction.model_version == pointer.version
    assert view.stale
    with pytest.raises(ModelUnavailable):
        fresh_registry.load(new_pointer)


# ---------------------------------------------------------------------------------- the stream


def _record_setlist(env: dict[str, Any], day: dt.date, titles: list[str], revision: int = 1) -> Setlist:
    """Record an actual setlist as the catalogue API does (setlist and completed show); the
    stream records of earlier tests are skipped first."""
    env["reader"].new_records()
    show = env["catalog"].get_show(show_id(day))
    assert show is not None
    setlist = Setlist(
        show_id=show.show_id,
        sets=[
            SetlistSet(
                name="Set 1",
                songs=[
                    SetlistEntry(position=i, song_id=f"{ARTIST_ID}:{keys.slugify(t)}", title=t)
                    for i, t in enumerate(titles, start=1)
                ],
            )
        ],
        recorded_by="moderator-1",
        recorded_at=dt.datetime.now(dt.UTC),
        revision=revision,
    )
    from mysetlist.catalog_store import show_item

    env["catalog"].put_many(
        [setlist_item(show, setlist), show_item(show.model_copy(update={"status": ShowStatus.COMPLETED}))]
    )
    return setlist


def test_an_arriving_setlist_is_scored_then_the_artist_retrained(
    env: dict[str, Any], trained: dict[str, Any], trainer_handler: Any, precompute_handler: Any
) -> None:
    precompute_handler({}, LambdaContext(remaining_ms=600_000))
    day = UPCOMING[0]
    stored = env["store"].get_prediction(show_id(day))
    assert stored is not None
    played = CORE[:6] + ROTATION[:10]
    setlist = _record_setlist(env, day, played)
    records = env["reader"].new_records()
    assert any(r["dynamodb"]["Keys"]["SK"]["S"] == keys.ACTUAL_SETLIST_SK for r in records)
    before = env["store"].model_pointer(ARTIST_ID)
    response = trainer_handler({"Records": records}, LambdaContext(remaining_ms=600_000))
    assert response == {"batchItemFailures": []}
    score = env["store"].get_score(show_id(day))
    assert score is not None
    expected = score_prediction(stored.ranking, setlist.song_ids)
    assert (score.k, score.hits) == (len(played), expected["hits"])
    assert score.p_at_k == pytest.approx(expected["hits"] / len(played))
    assert score.model_version == stored.model_version
    assert score.scored_at == setlist.recorded_at
    assert sum(int(b["n"]) for b in score.bins) == len(stored.ranking)
    window = env["store"].scores_between(
        score.scored_at - dt.timedelta(minutes=1), score.scored_at + dt.timedelta(minutes=1)
    )
    assert [s.show_id for s in window] == [show_id(day)]
    after = env["store"].model_pointer(ARTIST_ID)
    assert after.version != before.version
    assert after.last_show_date == day
    # The same records again (Lambda retries): the same score item, and no second training.
    trainer_handler({"Records": records}, LambdaContext(remaining_ms=600_000))
    assert env["store"].get_score(show_id(day)) == score
    assert env["store"].model_pointer(ARTIST_ID) == after


def test_a_throttled_score_write_fails_its_record_and_trains_nothing(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    from mysetlist.predictions.service import process_setlist_batch

    predictor, trainer = pipeline
    day = UPCOMING[1]
    predictor.predict(show_id(day), force_refresh=True)  # the stored prediction to score
    setlist = _record_setlist(env, day, CORE[:5] + ROTATION[5:12])
    records = env["reader"].new_records()
    setlist_records = [r for r in records if r["dynamodb"]["Keys"]["SK"]["S"] == keys.ACTUAL_SETLIST_SK]
    assert setlist_records
    before = env["store"].model_pointer(ARTIST_ID)
    predictor.store = PredictionsStore(
        cast(Any, _Throttled(env["dynamodb"], "put_item")), env["settings"].predictions_table
    )

    class Quarantine:
        def send(self, record: Any, reason: str) -> None:
            raise AssertionError(f"nothing here is unreadable: {reason}")

    report = process_setlist_batch(records, predictor, trainer, Quarantine())
    assert report.failures == [setlist_records[-1]["dynamodb"]["SequenceNumber"]]
    assert env["store"].get_score(show_id(day)) is None
    assert env["store"].model_pointer(ARTIST_ID) == before
    # The replay, with the table back, scores and trains.
    predictor.store = env["store"]
    replay = process_setlist_batch(records, predictor, trainer, Quarantine())
    assert replay.failures == []
    assert replay.scored == 1
    assert env["store"].get_score(show_id(day)).k == len(set(setlist.song_ids))


def test_unreadable_setlist_records_are_quarantined(
    env: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    from mysetlist.predictions.service import process_setlist_batch

    predictor, trainer = pipeline
    record = {
        "eventName": "INSERT",
        "dynamodb": {
            "SequenceNumber": "1",
            "Keys": {"PK": {"S": "SHOW#x"}, "SK": {"S": keys.ACTUAL_SETLIST_SK}},
            "NewImage": {"PK": {"S": "SHOW#x"}},
        },
    }
    other = {
        "eventName": "INSERT",
        "dynamodb": {"SequenceNumber": "2", "Keys": {"PK": {"S": "SHOW#x"}, "SK": {"S": "META"}}},
    }
    sent: list[str] = []

    class Quarantine:
        def send(self, record: Any, reason: str) -> None:
            sent.append(reason)

    report = process_setlist_batch([record, other], predictor, trainer, Quarantine())
    assert report.quarantined == 1
    assert report.ignored == 1
    assert report.failures == []
    assert len(sent) == 1


# ---------------------------------------------------------------------------------- serving inputs


def test_fan_votes_of_the_show_move_a_song_and_are_explained(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    """Net up-votes from the show's tally items reach the features: the voted song's
    probability rises, its trending_score shows the votes and its first reason says where fans
    put it."""
    from mysetlist.tallies import TallyDelta, TallyStore

    predictor, _ = pipeline
    target = show_id(UPCOMING[4])
    before = predictor.predict(target, force_refresh=True).prediction
    rotation = [f"{ARTIST_ID}:{keys.slugify(t)}" for t in ROTATION]
    # The predicted song the model likes least gets the fans' votes, a rotation song a net down-vote.
    least = min((s["song_id"] for s in before.songs), key=lambda s: dict(before.ranking)[s])
    tallies = TallyStore(env["dynamodb"], env["settings"].tallies_table, marker_ttl_seconds=3600)
    tallies.commit(
        stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/votes/stream/test",
        first_sequence="1",
        marker=None,
        sequences=["1"],
        deltas=[TallyDelta(target, least, 40, 2), TallyDelta(target, rotation[0], 3, 5)],
        lane=0,
        now=dt.datetime.now(dt.UTC),
    )
    after = predictor.predict(target, force_refresh=True).prediction
    voted = {s["song_id"]: s for s in after.songs}
    assert least in voted
    assert voted[least]["trending_score"] > 0
    assert voted[least]["reasons"][0] == "Fans voted it #1 for this show"
    assert dict(after.ranking)[least] > dict(before.ranking).get(least, 0.0)


def test_setlists_recorded_after_the_snapshot_are_read_from_the_catalogue(
    env: dict[str, Any], trained: dict[str, Any], pipeline: tuple[Predictor, Trainer]
) -> None:
    """The model's history snapshot ends at its newest setlist; a setlist recorded since (no
    retrain yet) is added from the catalogue for the shows after it, not for the shows before."""
    predictor, _ = pipeline
    pointer = env["store"].model_pointer(ARTIST_ID)
    assert pointer is not None
    recorded = next(d for d in UPCOMING if d > pointer.last_show_date)
    later = next(d for d in UPCOMING if d > recorded)
    _record_setlist(env, recorded, [*CORE, "A Brand New Song"])
    env["reader"].new_records()  # not delivered to the trainer: the model stays as it is
    assert env["store"].model_pointer(ARTIST_ID) == pointer
    view = predictor.predict(show_id(later), force_refresh=True)
    assert view.prediction.model_version == pointer.version
    assert not view.stale
    snapshot_shows = len(predictor.registry.load(pointer).history.history.shows)
    assert view.prediction.shows_before == snapshot_shows + 1
    # The new song is a candidate now: it was played in the last show.
    assert f"{ARTIST_ID}:a-brand-new-song" in dict(view.prediction.ranking)
    earlier = predictor.predict(show_id(recorded), force_refresh=True)
    assert earlier.prediction.shows_before == snapshot_shows
    assert f"{ARTIST_ID}:a-brand-new-song" not in dict(earlier.prediction.ranking)


def test_a_re_recorded_setlist_rescores_the_prediction(
    env: dict[str, Any], trained: dict[str, Any], trainer_handler: Any, pipeline: tuple[Predictor, Trainer]
) -> None:
    day = UPCOMING[5]
    pipeline[0].predict(show_id(day), force_refresh=True)  # the stored prediction to score
    stored = env["store"].get_prediction(show_id(day))
    assert stored is not None
    _record_setlist(env, day, ROTATION[:12])
    trainer_handler({"Records": env["reader"].new_records()}, LambdaContext(remaining_ms=600_000))
    first = env["store"].get_score(show_id(day))
    assert first is not None
    # A moderator corrects it: the core songs were played too.
    corrected = _record_setlist(env, day, CORE + ROTATION[:12], revision=2)
    trainer_handler({"Records": env["reader"].new_records()}, LambdaContext(remaining_ms=600_000))
    second = env["store"].get_score(show_id(day))
    assert second is not None
    assert (first.k, second.k) == (12, len(CORE) + 12)
    assert second.hits == score_prediction(stored.ranking, corrected.song_ids)["hits"]
    assert second.scored_at == corrected.recorded_at
    assert second.scored_at > first.scored_at


def test_operators_rescore_shows_by_id(
    env: dict[str, Any], trained: dict[str, Any], trainer_handler: Any, pipeline: tuple[Predictor, Trainer]
) -> None:
    """{"score": [...]}: the runbook's replay after the dead-letter queue (no stream record)."""
    day = UPCOMING[6]
    stored = pipeline[0].predict(show_id(day)).prediction
    assert stored.ranking
    setlist = _record_setlist(env, day, CORE[:4] + ROTATION[:4])
    env["reader"].new_records()  # the stream's records are not delivered: they were given up on
    assert env["store"].get_score(show_id(day)) is None
    before = env["store"].model_pointer(ARTIST_ID)

    summary = trainer_handler(
        {"score": [show_id(day), show_id(day), "no-such-show"]},
        LambdaContext(remaining_ms=600_000),
    )

    assert summary == {
        "scored": 1,
        "shows": {show_id(day): "scored", "no-such-show": "no_setlist"},
    }
    score = env["store"].get_score(show_id(day))
    assert score is not None
    assert score.hits == score_prediction(stored.ranking, setlist.song_ids)["hits"]
    assert score.scored_at == setlist.recorded_at
    assert env["store"].model_pointer(ARTIST_ID) == before  # scoring never trains
    with pytest.raises(ValueError, match="non-empty list of show ids"):
        trainer_handler({"score": "not-a-list"}, LambdaContext(remaining_ms=600_000))
