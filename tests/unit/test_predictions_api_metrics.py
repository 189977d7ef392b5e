"""The timeframe metrics against a direct computation over the songs behind the score items."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import numpy as np
import pytest

from mysetlist.predictions import backtest
from mysetlist.predictions.api_models import Timeframe
from mysetlist.predictions.metrics import (
    NO_MODEL,
    summed_bins,
    timeframe_metrics,
    window,
)
from mysetlist.predictions.store import ScoreRecord

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def score_item(
    rng: random.Random, show: int, scored_at: dt.datetime, model: str | None = "v1"
) -> tuple[dict[str, Any], list[float], list[int]]:
    """A SCORE item made from a random ranking and outcome, with the songs behind it."""
    ranked = rng.randint(8, 50)
    probs = sorted((rng.random() ** 2 for _ in range(ranked)), reverse=True)
    played = [1 if rng.random() < p else 0 for p in probs]
    k = max(1, sum(played) + rng.randint(0, 3))  # some played songs were never ranked
    top = min(k, ranked)
    bins = [{"n": 0, "sum_p": 0.0, "hits": 0} for _ in range(10)]
    for p, y in zip(probs, played, strict=True):
        b = min(int(p * 10), 9)
        bins[b]["n"] += 1
        bins[b]["sum_p"] += p
        bins[b]["hits"] += y
    hits = sum(played[:top])
    item: dict[str, Any] = {
        "show_id": f"artist-{show % 3}:2026-10-{show % 28 + 1:02d}-{show}",
        "artist_id": f"artist-{show % 3}",
        "show_date": (scored_at.date() - dt.timedelta(days=1)).isoformat(),
        "k": k,
        "hits": hits,
        "p_at_k": hits / k,
        "expected_hits": sum(probs[:top]),
        "brier": float(np.mean([(p - y) ** 2 for p, y in zip(probs, played, strict=True)])),
        "bins": bins,
        "model_version": model,
        "weights_version": 0,
        "scored_at": scored_at.isoformat(),
        "prediction_generated_at": (scored_at - dt.timedelta(days=2)).isoformat(),
        "source": "precompute",
    }
    return item, probs, played


def direct_ece(probs: Any, played: Any) -> float:
    """|mean probability - hit rate| per bin of [b/10, (b+1)/10), weighted by the bin's songs."""
    total = 0.0
    for b in range(10):
        members = [i for i, p in enumerate(probs) if b / 10 <= p < (b + 1) / 10 or (b == 9 and p == 1.0)]
        if members:
            mean_p = sum(probs[i] for i in members) / len(members)
            rate = sum(played[i] for i in members) / len(members)
            total += len(members) * abs(mean_p - rate)
    return total / len(probs)


def test_the_api_bins_are_the_models() -> None:
    from mysetlist.predictions.api_models import CALIBRATION_BINS

    assert CALIBRATION_BINS == backtest.CALIBRATION_BINS
    # A score's bins as the model makes them are the bins the metrics read.
    bins = backtest.score_prediction([("a", 0.95), ("b", 0.42), ("c", 0.05)], ["a", "c"])["bins"]
    assert len(bins) == CALIBRATION_BINS
    assert [(b["n"], b["hits"]) for b in bins if b["n"]] == [(1, 1), (1, 0), (1, 1)]


def test_metrics_match_a_direct_computation_over_the_songs() -> None:
    rng = random.Random(7)
    start, end = window(Timeframe.WEEK, NOW)
    inside: list[tuple[dict[str, Any], list[float], list[int]]] = []
    outside: list[tuple[dict[str, Any], list[float], list[int]]] = []
    for show in range(40):
        when = NOW - dt.timedelta(hours=rng.uniform(0, 24 * 10))
        made = score_item(rng, show, when, model=rng.choice(["v1", "v2", None]))
        (inside if start <= when < end else outside).append(made)
    assert inside
    assert outside

    metrics = timeframe_metrics(
        [ScoreRecord.from_item(item) for item, _, _ in inside + outside],
        timeframe=Timeframe.WEEK,
        start=start,
        end=end,
        current_weights_version=3,
    )

    probs = np.array([p for _, ps, _ in inside for p in ps])
    played = np.array([y for _, _, ys in inside for y in ys], dtype=float)
    assert metrics.shows_scored == len(inside)
    assert metrics.p_at_k == pytest.approx(np.mean([i["hits"] / i["k"] for i, _, _ in inside]), abs=1e-6)
    assert metrics.hits == sum(i["hits"] for i, _, _ in inside)
    assert metrics.expected_hits == pytest.approx(sum(i["expected_hits"] for i, _, _ in inside), abs=1e-6)
    assert metrics.ranked_songs == len(probs)
    assert metrics.ranked_hits == int(played.sum())
    assert metrics.ranked_expected_hits == pytest.approx(probs.sum(), abs=1e-6)
    assert metrics.brier == pytest.approx(np.mean((probs - played) ** 2), abs=1e-6)
    assert metrics.ece == pytest.approx(direct_ece(probs, played), abs=1e-6)
    for b, got in enumerate(metrics.calibration):
        members = (np.minimum((probs * 10).astype(int), 9)) == b
        assert (got.p_low, got.p_high) == pytest.approx((b / 10, (b + 1) / 10))
        assert got.n == int(members.sum())
        if got.n:
            assert got.mean_probability == pytest.approx(probs[members].mean(), abs=1e-6)
            assert got.hit_rate == pytest.approx(played[members].mean(), abs=1e-6)
        else:
            assert (got.mean_probability, got.hit_rate) == (None, None)
    versions: dict[str, int] = {}
    for item, _, _ in inside:
        key = item["model_version"] or NO_MODEL
        versions[key] = versions.get(key, 0) + 1
    assert metrics.model_versions == versions
    assert metrics.current_weights_version == 3
    stamps = [p.scored_at for p in metrics.data_points]
    assert stamps == sorted(stamps, reverse=True)
    assert {p.show_id for p in metrics.data_points} == {i["show_id"] for i, _, _ in inside}
    assert (metrics.from_, metrics.to) == (start, end)
    assert metrics.model_dump(by_alias=True)["from"] == start


def test_data_points_are_capped_but_the_aggregates_are_not() -> None:
    rng = random.Random(1)
    items = [score_item(rng, s, NOW - dt.timedelta(minutes=s + 1))[0] for s in range(30)]
    start, end = window(Timeframe.DAY, NOW)
    metrics = timeframe_metrics(
        [ScoreRecord.from_item(i) for i in items],
        timeframe=Timeframe.DAY,
        start=start,
        end=end,
        current_weights_version=0,
        max_points=5,
    )
    assert metrics.shows_scored == 30
    assert [p.show_id for p in metrics.data_points] == [i["show_id"] for i in items[:5]]
    assert metrics.hits == sum(i["hits"] for i in items)


def test_an_empty_window_has_no_rates() -> None:
    start, end = window(Timeframe.MONTH, NOW)
    assert end - start == dt.timedelta(days=30)
    metrics = timeframe_metrics(
        [], timeframe=Timeframe.MONTH, start=start, end=end, current_weights_version=0
    )
    assert metrics.shows_scored == 0
    assert (metrics.p_at_k, metrics.brier, metrics.ece) == (None, None, None)
    assert (metrics.hits, metrics.expected_hits, metrics.ranked_songs) == (0, 0.0, 0)
    assert len(metrics.calibration) == 10
    assert all(b.n == 0 and b.hit_rate is None for b in metrics.calibration)
    assert (metrics.data_points, metrics.model_versions) == ([], {})


def test_window_edges_start_inclusive_end_exclusive() -> None:
    rng = random.Random(2)
    start, end = window(Timeframe.DAY, NOW)
    at_start = score_item(rng, 1, start)[0]
    at_end = score_item(rng, 2, end)[0]
    metrics = timeframe_metrics(
        [ScoreRecord.from_item(i) for i in (at_start, at_end)],
        timeframe=Timeframe.DAY,
        start=start,
        end=end,
        current_weights_version=0,
    )
    assert [p.show_id for p in metrics.data_points] == [at_start["show_id"]]


def test_summed_bins_add_up_bin_by_bin() -> None:
    records = [ScoreRecord.from_item(score_item(random.Random(s), s, NOW)[0]) for s in range(3)]
    total = summed_bins(records)
    for b in range(10):
        assert total[b].n == sum(r.bins[b]["n"] for r in records)
        assert total[b].hits == sum(r.bins[b]["hits"] for r in records)
        assert total[b].sum_p == pytest.approx(sum(r.bins[b]["sum_p"] for r in records))


def test_a_score_without_its_10_bins_is_refused_by_name() -> None:
    item = score_item(random.Random(3), 1, NOW)[0] | {"bins": [{"n": 1, "sum_p": 0.5, "hits": 1}]}
    with pytest.raises(ValueError, match=f"the score of {item['show_id']} has 1 calibration bins"):
        timeframe_metrics(
            [ScoreRecord.from_item(item)],
            timeframe=Timeframe.DAY,
            start=NOW - dt.timedelta(days=1),
            end=NOW + dt.timedelta(seconds=1),
            current_weights_version=0,
        )
