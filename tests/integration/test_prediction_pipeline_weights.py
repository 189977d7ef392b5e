"""Weights changes through the pipeline (moto): a new version makes stored predictions stale,
the retrain uses the new weights and makes them current again; a stale expected version is a
conflict. Also: the scores of a window that spans two months, the nightly run out of time, and
the precompute while the model store is down."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from mysetlist import keys
from mysetlist.breaker import Dependency, breaker_for, reset_all
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import to_item
from mysetlist.errors import Conflict
from mysetlist.importer import import_lines
from mysetlist.predictions.registry import HISTORY_FILE, MANIFEST_FILE, MODEL_FILE
from mysetlist.predictions.service import BASELINE, build_pipeline
from mysetlist.predictions.store import DEFAULT_WEIGHTS, PredictionsStore, ScoreRecord
from tests.harness.events import LambdaContext
from tests.support.template import load_handler

TODAY = dt.datetime.now(dt.UTC).date()
ARTIST = "Weights Band"
ARTIST_ID = keys.artist_id_for(ARTIST)
SONGS = [f"Tune {i}" for i in range(14)]
UPCOMING = [TODAY + dt.timedelta(days=d) for d in (2, 9)]


def _lines() -> list[str]:
    lines = []
    for i in range(30):
        day = TODAY - dt.timedelta(days=3 * (30 - i))
        # Tunes 0-5 every night; 6-13 in a fixed rotation of four per show.
        rotation = [SONGS[6 + (i * 4 + j) % 8] for j in range(4)]
        lines.append(
            {
                "artist": ARTIST,
                "date": day.isoformat(),
                "sets": [{"name": "Set 1", "songs": SONGS[:6] + rotation}],
            }
        )
    lines += [{"artist": ARTIST, "date": day.isoformat(), "sets": []} for day in UPCOMING]
    return [json.dumps(line) for line in lines]


@pytest.fixture(scope="module", autouse=True)
def one_training_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def world(aws: dict[str, str]) -> Iterator[dict[str, Any]]:
    from mysetlist.settings import load_settings

    if os.environ.get("PREDICTIONS_TABLE") != aws["PredictionsTable"]:
        os.environ["PREDICTIONS_TABLE"] = aws["PredictionsTable"]
        load_settings.cache_clear()
    settings = load_settings()
    dynamodb = boto3.client("dynamodb")
    report = import_lines(CatalogStore(dynamodb, settings.catalog_table), _lines(), warn=print)
    assert not report.skipped
    store = PredictionsStore(dynamodb, settings.predictions_table)
    yield {"settings": settings, "dynamodb": dynamodb, "store": store}
    # The weights are the whole table's: leave the defaults to the next module.
    for version in store.weights_history(limit=1000):
        dynamodb.delete_item(
            TableName=settings.predictions_table,
            Key=to_item({"PK": keys.WEIGHTS_PK, "SK": keys.weights_version_sk(version.version)}),
        )
    dynamodb.delete_item(
        TableName=settings.predictions_table, Key=to_item({"PK": keys.WEIGHTS_PK, "SK": keys.CURRENT_SK})
    )


def test_a_weights_change_makes_predictions_stale_until_the_retrain(world: dict[str, Any]) -> None:
    store = world["store"]
    predictor, trainer = build_pipeline(world["settings"])
    target = keys.show_id_for(ARTIST_ID, UPCOMING[0].isoformat())
    assert trainer.train_artist(ARTIST_ID).status in ("trained", "current")
    before = store.current_weights(consistent=True)
    first = predictor.predict(target)
    assert not first.stale
    assert first.prediction.weights_version == before.version

    changed = {**DEFAULT_WEIGHTS, "venue": 0.4, "historical": 0.3}
    new, previous = store.put_weights(
        changed, changed_by="admin-1", note="more venue", expected_version=before.version
    )
    assert (new.version, previous) == (before.version + 1, before.version)
    assert store.current_weights(consistent=True) == new
    assert [v.version for v in store.weights_history()][:2] == [new.version, before.version][
        : 1 + (before.version > 0)
    ]
    stored = predictor.stored(target)
    assert stored is not None
    assert stored.stale
    # Until the retrain, a new prediction still comes from the old model: stale as well.
    assert predictor.predict(target, force_refresh=True).stale

    # Someone who read the old version loses.
    with pytest.raises(Conflict) as lost:
        store.put_weights(DEFAULT_WEIGHTS, changed_by="admin-2", expected_version=before.version)
    assert lost.value.details["current_version"] == new.version
    assert store.current_weights(consistent=True) == new

    # The asynchronous retrain (a list of artists here: "all" would train the whole session's).
    handler = load_handler("ModelTrainer")
    summary = handler(
        {"retrain": [ARTIST_ID], "reason": f"weights v{new.version}"}, LambdaContext(remaining_ms=600_000)
    )
    assert summary["by_status"] == {"trained": 1}
    pointer = store.model_pointer(ARTIST_ID)
    assert pointer is not None
    assert pointer.weights_version == new.version
    assert predictor.registry.load(pointer).model.config.weights.as_dict() == changed
    fresh = predictor.predict(target)
    assert not fresh.stale
    assert (fresh.prediction.model_version, fresh.prediction.weights_version) == (
        pointer.version,
        new.version,
    )
    again = handler({"retrain": ARTIST_ID}, LambdaContext(remaining_ms=600_000))  # one artist, by name
    assert again["by_status"] == {"current": 1}


def test_the_nightly_run_out_of_time_fails_and_leaves_the_rest_to_the_next(world: dict[str, Any]) -> None:
    handler = load_handler("ModelTrainer")
    with pytest.raises(Exception, match="training left artists undone") as failed:
        handler({"scheduled_time": "2026-01-01T04:30:00Z"}, LambdaContext(remaining_ms=1_000))
    assert "'not_reached': 0" not in str(failed.value)


def test_a_window_over_two_months_reads_both(world: dict[str, Any]) -> None:
    store = world["store"]
    stamps = [dt.datetime(2025, 1, 31, 23, 0, tzinfo=dt.UTC), dt.datetime(2025, 2, 1, 1, 0, tzinfo=dt.UTC)]
    for n, scored_at in enumerate(stamps):
        store.put_score(
            ScoreRecord(
                show_id=f"{ARTIST_ID}:window-{n}",
                artist_id=ARTIST_ID,
                show_date=scored_at.date(),
                k=10,
                hits=n + 5,
                p_at_k=(n + 5) / 10,
                brier=0.1,
                expected_hits=5.5,
                bins=[{"n": 1, "sum_p": 0.5, "hits": 1} for _ in range(10)],
                model_version="v",
                weights_version=0,
                scored_at=scored_at,
                prediction_generated_at=scored_at - dt.timedelta(days=1),
                source="precompute",
            )
        )
    start, end = dt.datetime(2025, 1, 31, 12, tzinfo=dt.UTC), dt.datetime(2025, 2, 1, 12, tzinfo=dt.UTC)
    assert [s.show_id for s in store.scores_between(start, end)] == [
        f"{ARTIST_ID}:window-1",
        f"{ARTIST_ID}:window-0",
    ]
    assert [s.hits for s in store.scores_between(start, end, limit=1)] == [6]
    # The end is excluded, the start included.
    assert [s.show_id for s in store.scores_between(stamps[1], end)] == [f"{ARTIST_ID}:window-1"]
    assert [s.show_id for s in store.scores_between(start, stamps[1])] == [f"{ARTIST_ID}:window-0"]


def test_the_precompute_with_the_model_store_down_keeps_stored_predictions(world: dict[str, Any]) -> None:
    store = world["store"]
    predictor, trainer = build_pipeline(world["settings"])
    trainer.train_artist(ARTIST_ID)
    first, second = (keys.show_id_for(ARTIST_ID, d.isoformat()) for d in UPCOMING)
    kept = predictor.predict(first, force_refresh=True).prediction
    assert kept.model_version not in (None, BASELINE)
    world["dynamodb"].delete_item(
        TableName=world["settings"].predictions_table,
        Key=to_item({"PK": keys.show_pk(second), "SK": keys.PREDICTION_SK}),
    )
    predictor.registry.forget()  # a new container: the model must come from the store
    breaker_for(Dependency.MODEL_STORE).force_open(60)
    try:
        report = predictor.precompute()
    finally:
        reset_all()
    assert report.degraded >= 2
    assert store.get_prediction(first) == kept
    replaced = store.get_prediction(second)
    assert replaced is not None
    assert replaced.model_version == BASELINE
    assert second in report.stored_ids
    assert first not in report.stored_ids


def test_a_training_prunes_the_versions_no_prediction_can_use(world: dict[str, Any]) -> None:
    """Kept: the 3 newest, every version whose newest show is within the 30-day window (+1 day),
    and the newest one before it (it serves the window's first shows); the rest go, items and
    files."""
    store, s3 = world["store"], boto3.client("s3")
    bucket = world["settings"].model_bucket
    _, trainer = build_pipeline(world["settings"])
    trainer.train_artist(ARTIST_ID)
    current = store.model_pointer(ARTIST_ID)
    assert current is not None
    ages = {"1": 200, "2": 150, "3": 100, "4": 60, "5": 20}  # days before today of each one's newest show
    old = {}
    for n, age in ages.items():
        version = f"2020010{n}T000000Z-0000000{n}"
        pointer = dataclasses.replace(
            current,
            version=version,
            prefix=f"models/{ARTIST_ID}/{version}/",
            last_show_date=TODAY - dt.timedelta(days=age),
        )
        world["dynamodb"].put_item(
            TableName=world["settings"].predictions_table,
            Item=to_item(pointer.item(keys.model_version_sk(version))),
        )
        for name in (MODEL_FILE, HISTORY_FILE, MANIFEST_FILE):
            s3.put_object(Bucket=bucket, Key=pointer.prefix + name, Body=b"old")
        old[n] = pointer
    assert trainer.train_artist(ARTIST_ID, force=True).status == "trained"
    left = {p.version for p in store.model_versions(ARTIST_ID)}
    assert {old[n].version for n in ("4", "5")} <= left
    assert not {old[n].version for n in ("1", "2", "3")} & left
    assert store.model_pointer(ARTIST_ID).version in left
    for n in ("1", "2", "3"):
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=old[n].prefix)
        assert listed.get("KeyCount", 0) == 0
    assert s3.list_objects_v2(Bucket=bucket, Prefix=old["4"].prefix)["KeyCount"] == 3
