"""On-demand setlist prediction timings (``make bench-predictions``).

    python -m tests.bench.predictions_bench [--data FILE.jsonl] [--shows 2000] [--runs 30]

The show that follows the first ``--shows`` shows of the file (default: the Grateful Dead's
2,001st show, predicted from the 2,000 before it), with a model trained on those shows and
exported to the light (numpy-only) form, as the served path uses it. Each timing
is taken ``--runs`` times after one warm-up run, in this process, and printed as one JSON line
with p50, p95 and min in milliseconds:

- ``predict_from_history``: ``predict_show`` from the raw history: the feature state of 2,000
  shows is built (``FeatureState.after``), the candidates' features computed and scored by the
  light model, the top 20 ordered and explained.
- ``predict_with_cached_state``: the same with the feature state kept from an earlier call
  (what a warm container holding the artist's state does).
- ``absorb_one_by_one``: for comparison, the feature state built show by show (the back-test's
  walk), the way the first increment built it for every prediction.
- ``light_model_load``: ``LightModel.from_bytes`` of the stored artefact, with its size.
- ``history_snapshot_load``: the gzipped ``ArtistHistory`` snapshot stored beside the model,
  decompressed and parsed, with its size.
- ``memory``: the peak Python allocation (tracemalloc) of one prediction of each kind and of
  loading the model.

Training (scikit-learn, once, not timed as serving) is reported as ``train_seconds``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mysetlist.predictions.features import FeatureState
from mysetlist.predictions.history import ArtistHistory, load_jsonl
from mysetlist.predictions.light import LightModel, export
from mysetlist.predictions.model import train_history
from mysetlist.predictions.predict import DEFAULT_LENGTH, predict_show

# The Grateful Dead sample shipped with the repository (the shared data's file, MIT-licensed).
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "tests" / "local_stack" / "sample_data" / "grateful-dead.jsonl"
)


def _timings(fn: Callable[[], object], runs: int) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "runs": runs,
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))], 2),
        "min_ms": round(samples[0], 2),
    }


def _peak_kib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return round(peak / 1024, 1)


def run(data: Path, shows: int, runs: int) -> list[dict[str, Any]]:
    (full,) = load_jsonl([data]).values()
    if len(full.shows) <= shows:
        raise SystemExit(f"{data} has {len(full.shows)} shows: need more than {shows}")
    history = full.prefix(shows)
    target = full.shows[shows]
    started = time.perf_counter()
    trained = train_history(history)
    train_seconds = time.perf_counter() - started
    if trained is None:
        raise SystemExit("nothing to train on")
    artefact = export(trained).to_bytes()
    model = LightModel.from_bytes(artefact)
    snapshot = gzip.compress(json.dumps(history.to_json()).encode())
    state = FeatureState.after(history.shows)

    def from_history() -> object:
        return predict_show(history, target, setlist_length=DEFAULT_LENGTH, model=model)

    def with_state() -> object:
        return predict_show(history, target, setlist_length=DEFAULT_LENGTH, model=model, state=state)

    def one_by_one() -> object:
        walk = FeatureState()
        for show in history.shows:
            walk.absorb(show)
        return walk

    def load_model() -> object:
        return LightModel.from_bytes(artefact)

    def load_snapshot() -> object:
        return ArtistHistory.from_json(json.loads(gzip.decompress(snapshot)))

    prediction = predict_show(history, target, model=model)
    predicted = {song.song_id for song in prediction.songs}
    common = {"dataset": data.name, "shows_before": shows, "candidates": state.seen}
    return [
        {
            "bench": "predictions_setup",
            **common,
            "target_show": target.show_id,
            "train_seconds": round(train_seconds, 2),
            "hits_in_top_20": len(predicted & set(target.songs)),
            "expected_correct": prediction.expected_correct,
        },
        {"bench": "predict_from_history", **common, **_timings(from_history, runs)},
        {"bench": "predict_with_cached_state", **common, **_timings(with_state, runs)},
        {"bench": "absorb_one_by_one", **common, **_timings(one_by_one, max(5, runs // 6))},
        {"bench": "light_model_load", "bytes": len(artefact), **_timings(load_model, runs)},
        {"bench": "history_snapshot_load", "bytes_gzip": len(snapshot), **_timings(load_snapshot, runs)},
        {
            "bench": "memory",
            "peak_kib_predict_from_history": _peak_kib(from_history),
            "peak_kib_predict_with_cached_state": _peak_kib(with_state),
            "peak_kib_light_model_load": _peak_kib(load_model),
        },
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--shows", type=int, default=2000, help="earlier shows the prediction uses")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per figure (after a warm-up)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    for line in run(args.data, args.shows, args.runs):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
