"""The model registry with an in-memory object store: versions named by time and content, files
written before the pointer moves, loads checked against their hashes and cached by version."""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from mysetlist.breaker import CircuitBreaker
from mysetlist.predictions.catalog_history import SetlistHistory
from mysetlist.predictions.history import ArtistHistory, Show
from mysetlist.predictions.light import LightModel, export
from mysetlist.predictions.model import ModelConfig, train_history
from mysetlist.predictions.registry import (
    HISTORY_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    ModelRegistry,
    ModelUnavailable,
)
from mysetlist.predictions.store import ModelPointer

TRAINED_AT = dt.datetime(2026, 3, 1, 4, 30, 12, tzinfo=dt.UTC)


@dataclass
class MemoryS3:
    objects: dict[str, bytes] = field(default_factory=dict)
    gets: int = 0

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.objects[f"{Bucket}/{Key}"] = bytes(Body)
        return {}

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.gets += 1
        return {"Body": io.BytesIO(self.objects[f"{Bucket}/{Key}"])}


@dataclass
class MemoryPointers:
    current: dict[str, str] = field(default_factory=dict)
    moved: list[ModelPointer] = field(default_factory=list)

    def move_model_pointer(self, pointer: ModelPointer, *, previous: str | None) -> bool:
        if self.current.get(pointer.artist_id) != previous:
            return False
        self.current[pointer.artist_id] = pointer.version
        self.moved.append(pointer)
        return True


@pytest.fixture(scope="module")
def trained() -> tuple[LightModel, SetlistHistory]:
    shows = []
    for i in range(24):
        songs = tuple(f"band:s{j}" for j in range(6)) + tuple(f"band:r{(i + j) % 9}" for j in range(4))
        shows.append(Show(f"band:{i}", "band", dt.date(2025, 1, 1) + dt.timedelta(days=3 * i), songs=songs))
    history = ArtistHistory.build("band", shows)
    model = train_history(history, ModelConfig())
    assert model is not None
    last = history.shows[-1]
    return (
        export(model),
        SetlistHistory(
            "band", history, {k: k.upper() for k in history.titles}, f"{last.date}#{last.show_id}"
        ),
    )


def _registry(s3: MemoryS3, pointers: MemoryPointers) -> ModelRegistry:
    return ModelRegistry(s3, "models-bucket", pointers, breaker=lambda: CircuitBreaker("test"))  # type: ignore[arg-type]


def test_a_version_is_named_by_time_and_content_and_written_before_the_pointer(
    trained: tuple[LightModel, SetlistHistory],
) -> None:
    model, history = trained
    s3, pointers = MemoryS3(), MemoryPointers()
    pointer = _registry(s3, pointers).save(
        "band", model, history, weights_version=2, trained_at=TRAINED_AT, previous=None
    )
    assert pointer is not None
    assert re.fullmatch(r"20260301T043012Z-[0-9a-f]{8}", pointer.version)
    assert pointer.prefix == f"models/band/{pointer.version}/"
    assert sorted(s3.objects) == sorted(
        f"models-bucket/{pointer.prefix}{name}" for name in (MODEL_FILE, HISTORY_FILE, MANIFEST_FILE)
    )
    assert (pointer.last_show_date, pointer.last_show_id) == (history.history.shows[-1].date, "band:23")
    assert pointer.weights_version == 2
    assert pointers.moved == [pointer]
    # The same content at the same time is the same version; other content another one.
    again = _registry(MemoryS3(), MemoryPointers()).save(
        "band", model, history, weights_version=2, trained_at=TRAINED_AT, previous=None
    )
    assert again is not None
    assert again.version == pointer.version
    shorter = SetlistHistory("band", history.history.prefix(20), history.titles, "2025-03-02#band:19")
    other = _registry(MemoryS3(), MemoryPointers()).save(
        "band", model, shorter, weights_version=2, trained_at=TRAINED_AT, previous=None
    )
    assert other is not None
    assert other.version != pointer.version


def test_a_version_loads_once_per_container_and_equals_what_was_saved(
    trained: tuple[LightModel, SetlistHistory],
) -> None:
    model, history = trained
    s3, pointers = MemoryS3(), MemoryPointers()
    pointer = _registry(s3, pointers).save(
        "band", model, history, weights_version=0, trained_at=TRAINED_AT, previous=None
    )
    assert pointer is not None
    reader = _registry(s3, pointers)
    loaded = reader.load(pointer)
    assert s3.gets == 2
    assert loaded.model.to_bytes() == model.to_bytes()
    assert loaded.history.history.shows == history.history.shows
    assert loaded.history.titles == history.titles
    assert loaded.history.last_key == history.last_key
    assert reader.load(pointer) is loaded
    assert s3.gets == 2


def test_a_file_that_does_not_match_its_hash_is_not_loaded(
    trained: tuple[LightModel, SetlistHistory],
) -> None:
    model, history = trained
    s3, pointers = MemoryS3(), MemoryPointers()
    pointer = _registry(s3, pointers).save(
        "band", model, history, weights_version=0, trained_at=TRAINED_AT, previous=None
    )
    assert pointer is not None
    key = f"models-bucket/{pointer.prefix}{MODEL_FILE}"
    s3.objects[key] = s3.objects[key][:-1] + bytes([s3.objects[key][-1] ^ 1])
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        _registry(s3, pointers).load(pointer)


def test_a_lost_race_leaves_the_pointer_to_the_winner(trained: tuple[LightModel, SetlistHistory]) -> None:
    model, history = trained
    pointers = MemoryPointers(current={"band": "someone-else"})
    registry = _registry(MemoryS3(), pointers)
    assert (
        registry.save("band", model, history, weights_version=0, trained_at=TRAINED_AT, previous=None) is None
    )
    assert pointers.current == {"band": "someone-else"}
    assert registry.cached_before("band", dt.date(2030, 1, 1)) is None
