"""Calibration metrics, the weighted member and the reasons text."""

from __future__ import annotations

import numpy as np
import pytest

from mysetlist.predictions.backtest import (
    brier,
    calibration_bins,
    ece,
    ece_from_bins,
    kendall_tau_a,
    merge_bins,
    score_prediction,
)
from mysetlist.predictions.features import FEATURE_NAMES
from mysetlist.predictions.model import EnsembleWeights, family_scores, weighted_score


def test_ece_perfect_and_biased() -> None:
    prob = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=float)
    assert ece(prob, y) == pytest.approx(0.0)
    assert ece(np.full(4, 0.9), np.zeros(4)) == pytest.approx(0.9)
    # Two bins of 2: |0.1 - 0.5| and |0.9 - 0.5|, weighted equally.
    assert ece(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0, 1, 0, 1.0])) == pytest.approx(0.4)
    # 1.0 falls in the last bin, not an eleventh.
    assert ece(np.array([1.0]), np.array([1.0])) == pytest.approx(0.0)


def test_brier_and_tau() -> None:
    assert brier(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0
    assert brier(np.array([0.5]), np.array([1.0])) == 0.25
    assert kendall_tau_a([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau_a([3, 2, 1], [1, 2, 3]) == -1.0
    assert kendall_tau_a([1], [1]) is None


def test_every_named_weight_is_used() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((20, len(FEATURE_NAMES)))
    base = weighted_score(X, EnsembleWeights())
    for name in EnsembleWeights().as_dict():
        weights = EnsembleWeights(**{**EnsembleWeights().as_dict(), name: 5.0})
        assert not np.allclose(weighted_score(X, weights), base), name
    assert set(family_scores(X)) == set(EnsembleWeights().as_dict())
    with pytest.raises(ValueError, match="weights"):
        EnsembleWeights(artist=-1.0)


def test_score_prediction_and_bins() -> None:
    ranking = [("a", 0.95), ("b", 0.85), ("c", 0.15), ("d", 0.05), ("e", 1.0)]
    score = score_prediction(ranking, ["b", "x", "a", "b"])
    assert score["k"] == 3  # distinct songs played
    assert score["hits"] == 2  # a and b among the first three; x was not predicted
    assert score["p_at_k"] == pytest.approx(2 / 3)
    assert score["expected_hits"] == pytest.approx(0.95 + 0.85 + 0.15)
    prob = np.array([0.95, 0.85, 0.15, 0.05, 1.0])
    y = np.array([1, 1, 0, 0, 0.0])
    assert score["brier"] == pytest.approx(float(np.mean((prob - y) ** 2)))
    bins = score["bins"]
    assert len(bins) == 10
    assert [b["n"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 1, 2]
    assert bins[9]["hits"] == 1.0
    assert bins[9]["sum_p"] == pytest.approx(1.95)
    assert ece_from_bins(bins) == pytest.approx(ece(prob, y))
    merged = merge_bins([bins, bins])
    assert merged[9]["n"] == 4
    assert ece_from_bins(merged) == pytest.approx(ece_from_bins(bins))
    assert ece_from_bins(calibration_bins(np.zeros(0), np.zeros(0))) is None
    empty = score_prediction([], ["a"])
    assert empty["hits"] == 0
    assert empty["brier"] is None
    assert score_prediction(ranking, [])["p_at_k"] is None
