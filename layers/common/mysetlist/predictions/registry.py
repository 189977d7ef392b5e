"""Versioned model files in S3, the artists' model pointers, and the container's cache.

A model version is three immutable objects under ``models/<artist_id>/<version>/``:

* ``model.npz``: the exported numpy model (:meth:`LightModel.to_bytes`; ``allow_pickle=False``,
  nothing here ever unpickles);
* ``history.json.gz``: the history it was trained on (:meth:`SetlistHistory.snapshot`), so a
  prediction reads only the setlists recorded since instead of the artist's whole history;
* ``manifest.json``: what the version is (artist, files with their SHA-256 and size, the
  model's configuration, feature names, shows trained on, newest setlist, weights version).

``version`` is ``<yyyymmddThhmmssZ>-<first 8 hex of the SHA-256 of both files>``: it sorts by
training time and names its content. The files are written first, then the artist's pointer
moves to the version (:meth:`PredictionsStore.move_model_pointer`), so a reader never sees a
pointer to files that are not all there. A loaded version is checked against the pointer's
hashes and kept in the container (it never changes), a handful of versions at most.

Every S3 call goes through the MODEL_STORE circuit breaker (15 s call timeout): a failing model
store costs a prediction a few milliseconds once the circuit is open, and the caller falls back
(:class:`ModelUnavailable`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mysetlist.breaker import CircuitBreaker, Dependency, breaker_for
from mysetlist.observability import logger
from mysetlist.predictions.catalog_history import SetlistHistory
from mysetlist.predictions.features import FEATURE_NAMES
from mysetlist.predictions.light import LightModel
from mysetlist.predictions.store import ModelPointer, PredictionsStore, iso

MODEL_FILE = "model.npz"
HISTORY_FILE = "history.json.gz"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
CACHE_VERSIONS = 8
# Versions of an artist kept whatever their age (rollbacks): the current one and two before it.
KEEP_NEWEST = 3


class ModelUnavailable(Exception):
    """A model version's files could not be read (the store is down, a file is missing or does
    not match its pointer). The caller serves without it."""


@dataclass(frozen=True)
class LoadedModel:
    pointer: ModelPointer
    model: LightModel
    history: SetlistHistory


def version_name(trained_at: dt.datetime, *contents: bytes) -> str:
    digest = hashlib.sha256()
    for content in contents:
        digest.update(hashlib.sha256(content).digest())
    return f"{trained_at.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:8]}"


def model_prefix(artist_id: str, version: str) -> str:
    return f"models/{artist_id}/{version}/"


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _model_store_breaker() -> CircuitBreaker:
    return breaker_for(Dependency.MODEL_STORE)


class ModelRegistry:
    """Saves and loads model versions (S3 files + pointer items)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        store: PredictionsStore,
        *,
        breaker: Callable[[], CircuitBreaker] = _model_store_breaker,
        cache_versions: int = CACHE_VERSIONS,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._store = store
        self._breaker = breaker
        self._cache: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._cache_versions = cache_versions
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ saving
    def save(
        self,
        artist_id: str,
        model: LightModel,
        history: SetlistHistory,
        *,
        weights_version: int,
        trained_at: dt.datetime,
        previous: str | None,
    ) -> ModelPointer | None:
        """Write a new version's files, then make it the artist's current model if the current
        version is still ``previous``. None when another trainer moved the pointer first (the
        files stay, unreferenced). Raises whatever S3 or DynamoDB raised (nothing is pointed at
        files that were not all written)."""
        if history.last_show is None or history.last_key is None:
            raise ValueError("a model needs a history with at least one show")
        # Where the catalogue read ended (an empty newest setlist is not a show of the history,
        # but the snapshot covers it: the trainer compares this key with the newest setlist's).
        last_date, last_show_id = history.last_key.split("#", 1)
        last_show_date = dt.date.fromisoformat(last_date)
        model_bytes = model.to_bytes()
        history_bytes = gzip.compress(
            json.dumps(history.snapshot(), separators=(",", ":"), ensure_ascii=False).encode("utf-8"), mtime=0
        )
        version = version_name(trained_at, model_bytes, history_bytes)
        prefix = model_prefix(artist_id, version)
        hashes = {MODEL_FILE: _sha256(model_bytes), HISTORY_FILE: _sha256(history_bytes)}
        pointer = ModelPointer(
            artist_id=artist_id,
            version=version,
            prefix=prefix,
            trained_at=trained_at,
            trained_on_shows=model.trained_on,
            last_show_date=last_show_date,
            last_show_id=last_show_id,
            weights_version=weights_version,
            feature_names=list(FEATURE_NAMES),
            sha256=hashes,
        )
        manifest = {
            "format": MANIFEST_FORMAT,
            "artist_id": artist_id,
            "version": version,
            "trained_at": iso(trained_at),
            "trained_on_shows": model.trained_on,
            "history_shows": len(history.history.shows),
            "last_show_date": last_show_date.isoformat(),
            "last_show_id": last_show_id,
            "weights_version": weights_version,
            "feature_names": list(FEATURE_NAMES),
            "config": model.config.as_dict(),
            "files": {
                MODEL_FILE: {"sha256": hashes[MODEL_FILE], "bytes": len(model_bytes)},
                HISTORY_FILE: {"sha256": hashes[HISTORY_FILE], "bytes": len(history_bytes)},
            },
        }
        self._put(prefix + MODEL_FILE, model_bytes, "application/octet-stream")
        self._put(prefix + HISTORY_FILE, history_bytes, "application/gzip")
        self._put(prefix + MANIFEST_FILE, json.dumps(manifest, indent=1).encode("utf-8"), "application/json")
        if not self._store.move_model_pointer(pointer, previous=previous):
            logger.warning(
                "another trainer moved the model pointer first; this version stays unreferenced",
                extra={"artist_id": artist_id, "version": version, "previous": previous},
            )
            return None
        self._remember(LoadedModel(pointer, model, history))
        return pointer

    # ------------------------------------------------------------------ loading
    def load(self, pointer: ModelPointer) -> LoadedModel:
        """The model and history of ``pointer``'s version (from the container's cache when it
        was loaded before). Raises :class:`ModelUnavailable`."""
        key = (pointer.artist_id, pointer.version)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        try:
            model_bytes = self._get(pointer.prefix + MODEL_FILE)
            history_bytes = self._get(pointer.prefix + HISTORY_FILE)
            for name, content in ((MODEL_FILE, model_bytes), (HISTORY_FILE, history_bytes)):
                expected = pointer.sha256.get(name)
                if expected and _sha256(content) != expected:
                    raise ValueError(f"{name} of {pointer.version} does not match its SHA-256")
            model = LightModel.from_bytes(model_bytes)
            history = SetlistHistory.from_snapshot(json.loads(gzip.decompress(history_bytes)))
        except Exception as exc:
            raise ModelUnavailable(
                f"model {pointer.artist_id}/{pointer.version} could not be loaded: {exc!r}"
            ) from exc
        loaded = LoadedModel(pointer, model, history)
        self._remember(loaded)
        return loaded

    def cached_before(self, artist_id: str, day: dt.date) -> LoadedModel | None:
        """The newest version of the artist this container holds that was trained only on
        shows before ``day`` (the fallback while the model store is away)."""
        with self._lock:
            candidates = [
                m for (a, _), m in self._cache.items() if a == artist_id and m.pointer.last_show_date < day
            ]
        return max(candidates, key=lambda m: m.pointer.version, default=None)

    def prune(
        self, artist_id: str, today: dt.date, *, past_days: int, keep_newest: int = KEEP_NEWEST
    ) -> list[str]:
        """Delete the versions no prediction can use any more; returns their names.

        A show at most ``past_days`` old is predicted with the newest version trained only on
        shows before it (``PredictionsStore.model_before``): every version whose newest show is
        on or after the cut-off can be that one, and of the older versions only the newest can.
        Those are kept, with the ``keep_newest`` newest (the current one among them) for
        rollbacks. A version's item goes first, then its files (a reader that already holds the
        item fails to load them and degrades for that one request).
        """
        cutoff = today - dt.timedelta(days=past_days + 1)
        versions = list(self._store.model_versions(artist_id))
        keep: set[str] = {p.version for p in versions[:keep_newest]}
        keep |= {p.version for p in versions if p.last_show_date >= cutoff}
        older = next((p for p in versions if p.last_show_date < cutoff), None)
        if older is not None:
            keep.add(older.version)
        current = self._store.model_pointer(artist_id, consistent=True)
        if current is not None:
            keep.add(current.version)
        pruned: list[str] = []
        for pointer in versions:
            if pointer.version in keep:
                continue
            self._store.delete_model_version(artist_id, pointer.version)
            for name in (MODEL_FILE, HISTORY_FILE, MANIFEST_FILE):
                self._breaker().call(self._s3.delete_object, Bucket=self._bucket, Key=pointer.prefix + name)
            with self._lock:
                self._cache.pop((artist_id, pointer.version), None)
            pruned.append(pointer.version)
        return pruned

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------------------ plumbing
    def _remember(self, loaded: LoadedModel) -> None:
        key = (loaded.pointer.artist_id, loaded.pointer.version)
        with self._lock:
            self._cache[key] = loaded
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_versions:
                self._cache.popitem(last=False)

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        self._breaker().call(
            self._s3.put_object,
            Bucket=self._bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            ChecksumAlgorithm="SHA256",
        )

    def _get(self, key: str) -> bytes:
        def read() -> bytes:
            response = self._s3.get_object(Bucket=self._bucket, Key=key)
            return bytes(response["Body"].read())

        return self._breaker().call(read)
