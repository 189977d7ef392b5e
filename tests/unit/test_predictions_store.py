"""The predictions store's pure parts: item shapes and their round trips, the TTL, the months a
scores window reads, the weights' names."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest

from mysetlist import keys
from mysetlist.dynamo import from_item, to_item
from mysetlist.predictions.model import EnsembleWeights
from mysetlist.predictions.store import (
    DEFAULT_WEIGHTS,
    ModelPointer,
    PredictionsStore,
    ScoreRecord,
    StoredPrediction,
    WeightsVersion,
    expires_at_for,
    months_between,
)

NOW = dt.datetime(2026, 3, 1, 0, 0, 5, 123456, tzinfo=dt.UTC)


def _through_dynamodb(item: dict[str, Any]) -> dict[str, Any]:
    """An item as DynamoDB stores and returns it (floats as decimals, Nones dropped)."""
    return from_item(to_item(item))


def test_a_prediction_survives_the_table() -> None:
    prediction = StoredPrediction(
        show_id="band:2026-03-10",
        artist_id="band",
        show_date=dt.date(2026, 3, 10),
        setlist_length=5,
        songs=[
            {
                "song_id": "band:a",
                "title": "A",
                "probability": 0.8123,
                "position": 1,
                "set": "opener",
                "historical_frequency": 0.5,
                "trending_score": 0.0,
                "reasons": ["Played in 9 of the last 10 shows"],
            }
        ],
        ranking=[("band:a", 0.812345), ("band:b", 0.1)],
        expected_correct=0.912,
        model_version=None,
        weights_version=3,
        generated_at=NOW,
        source="on_demand",
        shows_before=0,
        expires_at=expires_at_for(dt.date(2026, 3, 10)),
    )
    item = prediction.item()
    assert (item["PK"], item["SK"]) == ("SHOW#band:2026-03-10", keys.PREDICTION_SK)
    assert "model_version" in item
    assert StoredPrediction.from_item(_through_dynamodb(item)) == prediction


def test_the_ttl_is_the_show_date_plus_30_days_at_midnight_utc() -> None:
    assert expires_at_for(dt.date(2026, 1, 31)) == int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp())


def test_a_score_is_listed_under_its_month_in_time_order() -> None:
    score = ScoreRecord(
        show_id="band:2026-02-27",
        artist_id="band",
        show_date=dt.date(2026, 2, 27),
        k=12,
        hits=7,
        p_at_k=7 / 12,
        brier=0.11,
        expected_hits=6.5,
        bins=[{"n": 3, "sum_p": 0.15, "hits": 0} for _ in range(10)],
        model_version="20260227T040000Z-0123abcd",
        weights_version=0,
        scored_at=NOW,
        prediction_generated_at=NOW - dt.timedelta(days=2),
        source="precompute",
    )
    item = score.item()
    assert item["GSI1PK"] == "SCORES#2026-03"
    assert item["GSI1SK"] == "2026-03-01T00:00:05.123456+00:00#band:2026-02-27"
    assert ScoreRecord.from_item(_through_dynamodb(item)) == score


def test_a_score_window_reads_every_month_it_touches_newest_first() -> None:
    start = dt.datetime(2025, 11, 20, tzinfo=dt.UTC)
    assert months_between(start, dt.datetime(2026, 2, 1, tzinfo=dt.UTC)) == [
        "2026-02",
        "2026-01",
        "2025-12",
        "2025-11",
    ]
    assert months_between(start, start + dt.timedelta(days=1)) == ["2025-11"]
    # Offsets are read in UTC: 23:30 at -02:00 on the 31st is already the next month.
    late = dt.datetime(2026, 1, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))
    assert months_between(late, late) == ["2026-02"]


def test_the_default_weights_are_the_models_and_version_zero() -> None:
    defaults = WeightsVersion.defaults()
    assert defaults.version == 0
    assert defaults.weights == EnsembleWeights().as_dict() == dict(DEFAULT_WEIGHTS)


def test_a_weights_version_and_a_model_pointer_survive_the_table() -> None:
    weights = WeightsVersion(4, {**DEFAULT_WEIGHTS, "venue": 0.5}, "admin-1", NOW, "more venue")
    assert WeightsVersion.from_item(_through_dynamodb(weights.item(keys.CURRENT_SK))) == weights
    pointer = ModelPointer(
        artist_id="band",
        version="20260301T000005Z-0123abcd",
        prefix="models/band/20260301T000005Z-0123abcd/",
        trained_at=NOW,
        trained_on_shows=250,
        last_show_date=dt.date(2026, 2, 27),
        last_show_id="band:2026-02-27",
        weights_version=4,
        feature_names=["rate_all"],
        sha256={"model.npz": "ab" * 32},
    )
    item = pointer.item(keys.model_version_sk(pointer.version))
    assert item["SK"] == "v#20260301T000005Z-0123abcd"
    assert ModelPointer.from_item(_through_dynamodb(item)) == pointer
    assert pointer.last_key == "2026-02-27#band:2026-02-27"


@pytest.mark.parametrize(
    "weights",
    [
        {k: v for k, v in DEFAULT_WEIGHTS.items() if k != "genre"},
        {**DEFAULT_WEIGHTS, "mood": 0.1},
    ],
)
def test_weights_must_name_exactly_the_six(weights: dict[str, float]) -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"{name} must not be called for invalid weights")

    store = PredictionsStore(cast(Any, NoCalls()), "table")
    with pytest.raises(ValueError, match="exactly"):
        store.put_weights(weights, changed_by="admin-1")
