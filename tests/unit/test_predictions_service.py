"""The pipeline's pure parts: reading setlist stream records, the batch's failure reporting
(scoring failures, training failures, unreadable records), the nightly run's time budget, and
staleness."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from mysetlist import keys
from mysetlist.catalog_store import setlist_item
from mysetlist.dynamo import to_item
from mysetlist.errors import Unavailable
from mysetlist.models import Setlist, SetlistEntry, SetlistSet, Show, ShowStatus
from mysetlist.predictions.service import (
    BASELINE,
    TIME_RESERVE,
    Trainer,
    TrainOutcome,
    arrived_setlist,
    is_stale,
    process_setlist_batch,
)
from mysetlist.predictions.store import ModelPointer, StoredPrediction, WeightsVersion

RECORDED = dt.datetime(2026, 3, 1, 23, 0, tzinfo=dt.UTC)


def _record(
    sequence: str, show_id: str, artist_id: str, songs: Sequence[str], *, event: str = "INSERT"
) -> dict[str, Any]:
    show = Show(show_id=show_id, artist_id=artist_id, date=dt.date(2026, 3, 1), status=ShowStatus.COMPLETED)
    setlist = Setlist(
        show_id=show_id,
        sets=[
            SetlistSet(
                name="Set 1",
                songs=[SetlistEntry(position=i + 1, song_id=s, title=s) for i, s in enumerate(songs)],
            )
        ],
        recorded_at=RECORDED,
    )
    item = setlist_item(show, setlist)
    return {
        "eventName": event,
        "dynamodb": {
            "SequenceNumber": sequence,
            "Keys": to_item({"PK": item["PK"], "SK": item["SK"]}),
            "NewImage": to_item(item),
            "ApproximateCreationDateTime": 1772406000,
        },
    }


def test_a_setlist_record_is_read_with_its_arrival_time() -> None:
    arrived = arrived_setlist(_record("7", "band:2026-03-01", "band", ["a", "b", "a"]))
    assert arrived is not None
    assert (arrived.sequence, arrived.show_id, arrived.artist_id) == ("7", "band:2026-03-01", "band")
    assert arrived.song_ids == ("a", "b", "a")
    assert arrived.arrived_at == RECORDED


def test_other_records_are_not_setlists() -> None:
    removed = _record("1", "s", "band", ["a"], event="REMOVE")
    assert arrived_setlist(removed) is None
    meta = _record("2", "s", "band", ["a"])
    meta["dynamodb"]["Keys"]["SK"] = {"S": keys.META}
    assert arrived_setlist(meta) is None


@dataclass
class FakePredictor:
    fail_for: set[str] = field(default_factory=set)
    scored: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def score_show(
        self, show_id: str, played: Sequence[str], *, arrived_at: dt.datetime | None = None
    ) -> Any:
        if show_id in self.fail_for:
            raise Unavailable("the predictions store is busy")
        self.scored.append((show_id, tuple(played)))
        return object()


@dataclass
class FakeTrainer:
    fail_for: set[str] = field(default_factory=set)
    calls: list[tuple[str, bool, dt.datetime | None]] = field(default_factory=list)

    def train_artist(
        self, artist_id: str, *, force: bool = False, since: dt.datetime | None = None
    ) -> TrainOutcome:
        self.calls.append((artist_id, force, since))
        if artist_id in self.fail_for:
            raise RuntimeError("fit failed")
        return TrainOutcome(artist_id, "trained", "v1")


class Quarantine:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[str] = []
        self.fail = fail

    def send(self, record: Any, reason: str) -> None:
        if self.fail:
            raise RuntimeError("queue down")
        self.sent.append(reason)


def test_each_touched_artist_is_trained_once_after_scoring() -> None:
    predictor, trainer = FakePredictor(), FakeTrainer()
    records = [
        _record("1", "a:1", "a", ["x"]),
        _record("2", "b:1", "b", ["y"]),
        _record("3", "a:2", "a", ["z"], event="MODIFY"),
    ]
    report = process_setlist_batch(records, cast(Any, predictor), cast(Any, trainer), Quarantine())
    assert report.failures == []
    assert report.scored == 3
    assert [s for s, _ in predictor.scored] == ["a:1", "b:1", "a:2"]
    assert trainer.calls == [("a", False, RECORDED), ("b", False, RECORDED)]


def test_a_scoring_failure_fails_its_record_and_holds_back_its_artist() -> None:
    predictor, trainer = FakePredictor(fail_for={"a:2"}), FakeTrainer()
    records = [
        _record("1", "a:1", "a", ["x"]),
        _record("2", "a:2", "a", ["y"]),
        _record("3", "b:1", "b", ["z"]),
    ]
    report = process_setlist_batch(records, cast(Any, predictor), cast(Any, trainer), Quarantine())
    assert report.failures == ["2"]
    assert [c[0] for c in trainer.calls] == ["b"]
    assert report.response() == {"batchItemFailures": [{"itemIdentifier": "2"}]}


def test_a_training_failure_fails_every_record_of_the_artist() -> None:
    predictor, trainer = FakePredictor(), FakeTrainer(fail_for={"a"})
    records = [
        _record("1", "a:1", "a", ["x"]),
        _record("2", "b:1", "b", ["y"]),
        _record("3", "a:2", "a", ["z"]),
    ]
    report = process_setlist_batch(records, cast(Any, predictor), cast(Any, trainer), Quarantine())
    assert report.failures == ["1", "3"]
    assert [o.artist_id for o in report.trained] == ["b"]


def test_unreadable_records_are_quarantined_or_failed_when_the_queue_is_down() -> None:
    broken = _record("5", "a:1", "a", ["x"])
    del broken["dynamodb"]["NewImage"]["artist_id"]
    quarantine = Quarantine()
    report = process_setlist_batch([broken], cast(Any, FakePredictor()), cast(Any, FakeTrainer()), quarantine)
    assert report.quarantined == 1
    assert report.failures == []
    assert "artist_id" in quarantine.sent[0]
    down = process_setlist_batch(
        [broken], cast(Any, FakePredictor()), cast(Any, FakeTrainer()), Quarantine(fail=True)
    )
    assert down.failures == ["5"]


def test_a_record_without_an_arrival_time_forces_training() -> None:
    record = _record("1", "a:1", "a", ["x"])
    image = record["dynamodb"]["NewImage"]
    del image["recorded_at"]
    del record["dynamodb"]["ApproximateCreationDateTime"]
    trainer = FakeTrainer()
    process_setlist_batch([record], cast(Any, FakePredictor()), cast(Any, trainer), Quarantine())
    assert trainer.calls == [("a", True, None)]


class TimedTrainer(Trainer):
    """The real ``train_all`` over a ``train_artist`` that takes the given seconds per artist."""

    def __init__(self, seconds: dict[str, float], clock: list[float], fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.seconds = seconds
        self.clock = clock
        self.fail = fail

    def train_artist(
        self, artist_id: str, *, force: bool = False, since: dt.datetime | None = None
    ) -> TrainOutcome:
        self.clock[0] += self.seconds[artist_id]
        if artist_id in self.fail:
            raise RuntimeError("fit failed")
        return TrainOutcome(artist_id, "trained", "v", self.seconds[artist_id])


def test_the_nightly_run_stops_while_there_is_time_for_the_longest_training() -> None:
    clock = [0.0]
    budget = TIME_RESERVE + 100.0
    trainer = TimedTrainer({"a": 30.0, "b": 10.0, "c": 10.0, "d": 10.0}, clock, fail={"b"})
    report = trainer.train_all(["a", "b", "c", "d"], time_left=lambda: budget - clock[0])
    # Each start needs the reserve plus twice the longest training so far (a: 30 s), 80 s: after
    # a and b (which fails) 80 s are left and c starts; after c 70 s: d waits for the next run.
    assert [o.artist_id for o in report.outcomes] == ["a", "c"]
    assert report.failed == ["b"]
    assert report.not_reached == 1
    assert report.summary()["by_status"] == {"trained": 2}


def _prediction(model_version: str | None, weights_version: int) -> StoredPrediction:
    return StoredPrediction(
        show_id="s",
        artist_id="a",
        show_date=dt.date(2026, 3, 1),
        setlist_length=20,
        songs=[],
        ranking=[],
        expected_correct=0.0,
        model_version=model_version,
        weights_version=weights_version,
        generated_at=RECORDED,
        source="on_demand",
        shows_before=0,
        expires_at=0,
    )


@pytest.mark.parametrize(
    ("model_version", "weights_version", "pointer_version", "current_weights", "stale"),
    [
        ("v1", 2, "v1", 2, False),
        ("v1", 2, "v2", 2, True),  # retrained since
        ("v1", 1, "v1", 2, True),  # weights changed since
        (BASELINE, 2, None, 2, False),
        (None, 2, None, 2, False),  # no history then, no model now
        (BASELINE, 2, "v1", 2, True),  # a model exists now
    ],
)
def test_staleness(
    model_version: str | None,
    weights_version: int,
    pointer_version: str | None,
    current_weights: int,
    stale: bool,
) -> None:
    pointer = None
    if pointer_version:
        pointer = ModelPointer(
            "a", pointer_version, "p/", RECORDED, 10, dt.date(2026, 2, 1), "a:x", current_weights
        )
    weights = WeightsVersion(current_weights, {})
    assert is_stale(_prediction(model_version, weights_version), pointer, weights) is stale
