"""The pipeline on a slice of the Grateful Dead sample: 150 shows imported (dates moved so the
last one is next week, without its setlist), the artist trained by the ModelTrainer, the show
predicted by the Predictor, then its actual setlist recorded and scored from the stream.

The served prediction must agree with the file path (``make predict``: the same shows read from
the JSON lines, trained and predicted in memory): the catalogue path adds nothing and loses
nothing on the way."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from mysetlist import keys
from mysetlist.catalog_store import CatalogStore, setlist_item, show_item
from mysetlist.importer import import_lines
from mysetlist.models import Setlist, SetlistEntry, SetlistSet, ShowStatus
from mysetlist.predictions.backtest import score_prediction
from mysetlist.predictions.history import histories_from_records
from mysetlist.predictions.model import train_history
from mysetlist.predictions.predict import predict_show
from mysetlist.predictions.service import build_pipeline
from mysetlist.predictions.store import PredictionsStore
from tests.harness.events import LambdaContext
from tests.harness.streams import StreamReader
from tests.support.template import load_handler

SAMPLE = Path(__file__).resolve().parents[1] / "local_stack" / "sample_data" / "grateful-dead.jsonl"
SHOWS = 150
ARTIST = "Dead Slice"
ARTIST_ID = keys.artist_id_for(ARTIST)
TODAY = dt.datetime.now(dt.UTC).date()


def _slice() -> list[dict[str, Any]]:
    """The first SHOWS shows, renamed and moved in time so the last one is in 7 days."""
    with SAMPLE.open(encoding="utf-8") as handle:
        lines = [json.loads(line) for _, line in zip(range(SHOWS), handle, strict=False)]
    shift = TODAY + dt.timedelta(days=7) - dt.date.fromisoformat(lines[-1]["date"])
    out = []
    for line in lines:
        day = dt.date.fromisoformat(line["date"]) + shift
        out.append(
            {
                **{k: v for k, v in line.items() if k not in ("show_id", "source_id")},
                "show_id": f"{ARTIST_ID}:{line['show_id'].split(':', 1)[1]}",
                "artist": ARTIST,
                "date": day.isoformat(),
            }
        )
    return out


@pytest.fixture(scope="module", autouse=True)
def one_training_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def world(aws: dict[str, str]) -> dict[str, Any]:
    from mysetlist.settings import load_settings

    if os.environ.get("PREDICTIONS_TABLE") != aws["PredictionsTable"]:
        os.environ["PREDICTIONS_TABLE"] = aws["PredictionsTable"]
        load_settings.cache_clear()
    settings = load_settings()
    dynamodb = boto3.client("dynamodb")
    catalog = CatalogStore(dynamodb, settings.catalog_table)
    lines = _slice()
    upcoming = {**lines[-1], "sets": []}
    report = import_lines(catalog, [json.dumps(line) for line in [*lines[:-1], upcoming]], warn=print)
    assert not report.skipped
    arn = dynamodb.describe_table(TableName=settings.catalog_table)["Table"]["LatestStreamArn"]
    reader = StreamReader(boto3.client("dynamodbstreams"), arn)
    reader.new_records()
    return {
        "settings": settings,
        "catalog": catalog,
        "store": PredictionsStore(dynamodb, settings.predictions_table),
        "lines": lines,
        "reader": reader,
    }


def test_a_slice_of_the_grateful_dead_trained_served_and_scored(world: dict[str, Any]) -> None:
    trainer_handler = load_handler("ModelTrainer")
    summary = trainer_handler({"retrain": [ARTIST_ID]}, LambdaContext(remaining_ms=600_000))
    assert summary["by_status"] == {"trained": 1}
    pointer = world["store"].model_pointer(ARTIST_ID)
    assert pointer is not None
    target = world["lines"][-1]
    predictor, _ = build_pipeline(world["settings"])
    view = predictor.predict(target["show_id"], setlist_length=20)
    prediction = view.prediction
    assert prediction.model_version == pointer.version
    assert not view.stale
    assert prediction.shows_before == SHOWS - 1

    # The file path: the same shows from the JSON lines, keyed by title.
    history = histories_from_records(world["lines"][:-1])[ARTIST]
    model = train_history(history, pointer_config(pointer, predictor))
    assert model is not None
    expected = predict_show(history, _target_show(target), setlist_length=20, model=model)
    served_titles = [s["title"] for s in prediction.songs]
    file_titles = [s.song for s in expected.songs]
    assert served_titles == file_titles
    assert [s["probability"] for s in prediction.songs] == [s.probability for s in expected.songs]
    assert prediction.expected_correct == expected.expected_correct

    # The actual setlist arrives: the stored prediction is scored from the stream.
    show = world["catalog"].get_show(target["show_id"])
    assert show is not None
    titles = [t for s in target["sets"] for t in s["songs"]]
    setlist = Setlist(
        show_id=show.show_id,
        sets=[
            SetlistSet(
                name=s["name"],
                songs=[
                    SetlistEntry(position=i + 1, song_id=keys.song_id_for(ARTIST_ID, t), title=t)
                    for i, t in enumerate(s["songs"])
                ],
            )
            for s in target["sets"]
        ],
        recorded_by="moderator-1",
        recorded_at=dt.datetime.now(dt.UTC),
    )
    world["catalog"].put_many(
        [setlist_item(show, setlist), show_item(show.model_copy(update={"status": ShowStatus.COMPLETED}))]
    )
    response = trainer_handler(
        {"Records": world["reader"].new_records()}, LambdaContext(remaining_ms=600_000)
    )
    assert response == {"batchItemFailures": []}
    score = world["store"].get_score(show.show_id)
    assert score is not None
    played = {keys.song_id_for(ARTIST_ID, t) for t in titles}
    assert score.k == len(played)
    top_k = [song for song, _ in prediction.ranking[: score.k]]
    assert score.hits == len(played & set(top_k))
    assert score.hits == score_prediction(prediction.ranking, sorted(played))["hits"]
    assert score.model_version == pointer.version
    # And the artist was retrained on the new setlist.
    assert world["store"].model_pointer(ARTIST_ID).last_show_id == show.show_id


def pointer_config(pointer: Any, predictor: Any) -> Any:
    """The configuration the served model was trained with (its manifest's)."""
    return predictor.registry.load(pointer).model.config


def _target_show(line: dict[str, Any]) -> Any:
    from mysetlist.predictions.history import Show

    return Show(
        show_id=line["show_id"],
        artist=ARTIST,
        date=dt.date.fromisoformat(line["date"]),
        venue=line.get("venue"),
        city=line.get("city"),
        country=line.get("country"),
        tour=line.get("tour"),
    )
