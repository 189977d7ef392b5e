"""Chronological back-test, the protocol of ``setlist_baselines.py``.

The last ``test_frac`` of an artist's shows are tested, each predicted from the shows before it
only; shows with fewer than ``min_songs`` distinct songs are skipped; k is the show's true number
of distinct songs. The model is retrained every ``retrain_every`` tested shows on the shows before
the current one (as a nightly job would), never on the show itself or later ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mysetlist.predictions.features import F, FloatArray, IntArray, all_show_features, labels
from mysetlist.predictions.history import ArtistHistory
from mysetlist.predictions.model import ModelConfig, TrainedModel, train


def kendall_tau_a(pred: Sequence[float], true: Sequence[float]) -> float | None:
    n = len(true)
    if n < 2:
        return None
    p = np.asarray(pred, dtype=float)
    q = np.asarray(true, dtype=float)
    iu = np.triu_indices(n, 1)
    sp = np.sign(p[:, None] - p[None, :])[iu]
    sq = np.sign(q[:, None] - q[None, :])[iu]
    return float((sp * sq).sum() / (n * (n - 1) / 2))


def brier(prob: FloatArray, y: FloatArray) -> float:
    return float(np.mean((prob - y) ** 2)) if len(y) else math.nan


CALIBRATION_BINS = 10


def calibration_bins(prob: FloatArray, y: FloatArray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Equal-width probability bins (1.0 falls in the last): count ``n``, summed probability
    ``sum_p`` and ``hits`` per bin. Bins of several shows add up field by field."""
    which = np.minimum((np.asarray(prob) * bins).astype(np.int64), bins - 1)
    n = np.bincount(which, minlength=bins)
    sum_p = np.bincount(which, weights=prob, minlength=bins)
    hits = np.bincount(which, weights=y, minlength=bins)
    return [{"n": int(n[b]), "sum_p": float(sum_p[b]), "hits": float(hits[b])} for b in range(bins)]


def merge_bins(many: Sequence[Sequence[Mapping[str, float]]]) -> list[dict[str, float]]:
    """The field-by-field sum of several shows' :func:`calibration_bins`."""
    out = [{"n": 0, "sum_p": 0.0, "hits": 0.0} for _ in range(CALIBRATION_BINS)]
    for bins in many:
        for total, b in zip(out, bins, strict=True):
            total["n"] += int(b["n"])
            total["sum_p"] += float(b["sum_p"])
            total["hits"] += float(b["hits"])
    return out


def ece_from_bins(bins: Sequence[Mapping[str, float]]) -> float | None:
    """Expected calibration error of binned predictions: |mean p - hit rate| per bin, weighted by
    the bin's count. None when the bins are empty."""
    total = sum(int(b["n"]) for b in bins)
    if not total:
        return None
    return float(sum(abs(float(b["sum_p"]) - float(b["hits"])) for b in bins) / total)


def ece(prob: FloatArray, y: FloatArray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: 10 equal-width bins, |mean p - hit rate| weighted by count."""
    value = ece_from_bins(calibration_bins(prob, y, bins))
    return math.nan if value is None else value


def score_prediction(ranking: Sequence[tuple[str, float]], actual: Sequence[str]) -> dict[str, Any]:
    """A stored prediction scored against the show's actual setlist.

    ``ranking`` is the prediction's songs by score, best first, with their probability;
    ``actual`` the song keys played. k is the number of distinct songs played; ``hits`` counts
    them among the first k of the ranking and ``expected_hits`` sums those k songs'
    probabilities (what the model expected to get right); ``p_at_k`` is hits / k (None when
    nothing was played); ``brier`` and the calibration ``bins`` are over the ranking's songs (None/empty
    bins when the ranking is empty).
    """
    played = set(actual)
    k = len(played)
    hits = sum(1 for key, _ in ranking[:k] if key in played)
    prob = np.array([p for _, p in ranking], dtype=np.float64)
    y = np.array([1.0 if key in played else 0.0 for key, _ in ranking])
    return {
        "k": k,
        "hits": hits,
        "expected_hits": float(sum(p for _, p in ranking[:k])),
        "p_at_k": hits / k if k else None,
        "brier": brier(prob, y) if len(y) else None,
        "bins": calibration_bins(prob, y),
    }


def order_key(X: FloatArray) -> FloatArray:
    """Predicted order within the show: usual relative position, encore songs last."""
    return np.asarray(X[:, F["mean_pos"]] + (X[:, F["encore_share"]] >= 0.5), dtype=np.float64)


def rank(raw: FloatArray, X: FloatArray) -> IntArray:
    """Candidates by score, ties broken by recent then overall frequency."""
    return np.lexsort((-X[:, F["rate_all"]], -X[:, F["decay_h5"]], -raw))


@dataclass
class BacktestResult:
    dataset: str
    shows_tested: int = 0
    p_at_k: list[float] = field(default_factory=list)
    jaccard: list[float] = field(default_factory=list)
    tau: list[float] = field(default_factory=list)
    pos_mae: list[float] = field(default_factory=list)
    probs: list[FloatArray] = field(default_factory=list)
    ys: list[FloatArray] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        def mean(values: list[float]) -> float | None:
            return round(float(np.mean(values)), 4) if values else None

        prob = np.concatenate(self.probs) if self.probs else np.zeros(0)
        y = np.concatenate(self.ys) if self.ys else np.zeros(0)
        return {
            "dataset": self.dataset,
            "shows_tested": self.shows_tested,
            "p_at_k": mean(self.p_at_k),
            "jaccard": mean(self.jaccard),
            "kendall_tau": mean(self.tau),
            "pos_mae": mean(self.pos_mae),
            "brier": round(brier(prob, y), 4) if len(y) else None,
            "ece": round(ece(prob, y), 4) if len(y) else None,
            "seconds": round(self.seconds, 2),
        }


def backtest_artist(
    history: ArtistHistory,
    config: ModelConfig | None = None,
    *,
    dataset: str = "",
    test_frac: float = 0.2,
) -> BacktestResult:
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: PLC0415  (ships with scikit-learn)

    with threadpool_limits(limits=1):  # the trees' scoring too: see model.train
        return _backtest_artist(history, config or ModelConfig(), dataset=dataset, test_frac=test_frac)


def _backtest_artist(
    history: ArtistHistory, config: ModelConfig, *, dataset: str, test_frac: float
) -> BacktestResult:
    started = time.perf_counter()
    result = BacktestResult(dataset or history.artist)
    features = all_show_features(history)
    ys = [labels(history, i, f.song_ids) for i, f in enumerate(features)]
    usable = [len(s.songs) >= config.min_songs for s in history.shows]
    n = len(history.shows)
    split = math.floor(n * (1 - test_frac))
    model: TrainedModel | None = None
    trained_at = -(10**9)
    for t in range(max(split, 1), n):
        show = history.shows[t]
        if not usable[t]:
            continue
        if model is None or t - trained_at >= config.retrain_every:
            lo = max(0, t - config.max_train_shows)
            model = train(config, [(features[i].X, ys[i]) for i in range(lo, t) if usable[i]])
            trained_at = t
        f = features[t]
        if not len(f.song_ids):
            continue
        k = len(show.songs)
        if model is None:
            raw = f.X[:, F["decay_h20"]]
            prob = np.clip(raw, 0.0, 1.0)
        else:
            raw = model.raw(f.X)
            prob = model.probability(raw)
        top = rank(raw, f.X)[:k]
        true_rank = {history.song_ids[s]: i for i, s in enumerate(show.songs)}
        predicted = [int(f.song_ids[i]) for i in top]
        hits = [s for s in predicted if s in true_rank]
        h = len(hits)
        result.shows_tested += 1
        result.p_at_k.append(h / k)
        result.jaccard.append(h / (len(predicted) + k - h))
        key = order_key(f.X[top])
        porder = np.argsort(np.argsort(key, kind="stable"), kind="stable")
        prank = dict(zip(predicted, porder.tolist(), strict=True))
        if h:
            tau = kendall_tau_a([prank[s] for s in hits], [true_rank[s] for s in hits])
            if tau is not None:
                result.tau.append(tau)
            den_p = max(len(predicted) - 1, 1)
            den_t = max(k - 1, 1)
            result.pos_mae.append(
                float(np.mean([abs(prank[s] / den_p - true_rank[s] / den_t) for s in hits]))
            )
        result.probs.append(prob)
        result.ys.append(ys[t])
    result.seconds = time.perf_counter() - started
    return result
