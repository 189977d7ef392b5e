"""How the stored predictions did: the timeframe metrics of GET /api/ml/predictions?timeframe=.

Each show whose actual setlist arrived was scored once (a SCORE item: k, hits in the top k, its
ranking's Brier score and 10 calibration bins, see docs/predictions.md). A timeframe's figures
are aggregated from those items and nothing else, so they can be recomputed by anyone who reads
the table:

- ``p_at_k``: the mean over shows of hits / k (each show counts once, as in the back-test);
- ``hits`` vs ``expected_hits``: songs played among the top k, and the sum of the model's
  probabilities for them;
- ``brier``: the mean squared error over every ranked song of every show (a show's Brier score
  weighted by its number of ranked songs);
- ``ece``: expected calibration error of the summed bins, sum |sum_p - hits| / songs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mysetlist.predictions.api_models import (
    CALIBRATION_BINS,
    MAX_DATA_POINTS,
    CalibrationBin,
    DataPoint,
    Timeframe,
    TimeframeMetrics,
)
from mysetlist.predictions.backtest import ece_from_bins
from mysetlist.predictions.store import ScoreRecord

WINDOWS: Mapping[Timeframe, dt.timedelta] = {
    Timeframe.DAY: dt.timedelta(days=1),
    Timeframe.WEEK: dt.timedelta(days=7),
    Timeframe.MONTH: dt.timedelta(days=30),
}
# The key of model_versions for shows predicted without any model (no history at the time).
NO_MODEL = "none"
# Figures are rounded to this many decimals in the response.
DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Bin:
    """One calibration bin: songs whose probability fell in it, the sum of their probabilities,
    and how many of them were played."""

    n: int
    sum_p: float
    hits: int


def bins_of(record: ScoreRecord) -> list[Bin]:
    """A score's 10 bins (ValueError naming the show when it holds another number)."""
    if len(record.bins) != CALIBRATION_BINS:
        raise ValueError(
            f"the score of {record.show_id} has {len(record.bins)} calibration bins, not {CALIBRATION_BINS}"
        )
    return [Bin(round(b["n"]), float(b["sum_p"]), round(b["hits"])) for b in record.bins]


def window(timeframe: Timeframe, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The window ``[from, to)`` of ``timeframe`` ending at ``now``: the last 1, 7 or 30 days."""
    return now - WINDOWS[timeframe], now


def _round(value: float) -> float:
    return round(value, DECIMALS)


def _ratio(numerator: float, denominator: float) -> float | None:
    return _round(numerator / denominator) if denominator else None


def summed_bins(records: Iterable[ScoreRecord]) -> list[Bin]:
    """The 10 bins of ``records`` added up bin by bin."""
    n = [0] * CALIBRATION_BINS
    sum_p = [0.0] * CALIBRATION_BINS
    hits = [0] * CALIBRATION_BINS
    for record in records:
        for b, one in enumerate(bins_of(record)):
            n[b] += one.n
            sum_p[b] += one.sum_p
            hits[b] += one.hits
    return [Bin(n[b], sum_p[b], hits[b]) for b in range(CALIBRATION_BINS)]


def timeframe_metrics(
    records: Iterable[ScoreRecord],
    *,
    timeframe: Timeframe,
    start: dt.datetime,
    end: dt.datetime,
    current_weights_version: int,
    max_points: int = MAX_DATA_POINTS,
) -> TimeframeMetrics:
    """The metrics of the records scored in ``[start, end)`` (others are ignored), with at most
    ``max_points`` data points, newest first; the aggregates always cover every record."""
    scored = sorted(
        (r for r in records if start <= r.scored_at < end),
        key=lambda r: (r.scored_at, r.show_id),
        reverse=True,
    )
    bins = summed_bins(scored)
    ranked = sum(b.n for b in bins)
    # Each show's Brier score is a mean over its ranked songs: weighted by their number, the
    # result is the mean over every ranked song of the window.
    sizes = [sum(b.n for b in bins_of(r)) for r in scored]
    brier_sum = math.fsum(r.brier * size for r, size in zip(scored, sizes, strict=True))
    ece = ece_from_bins([{"n": b.n, "sum_p": b.sum_p, "hits": b.hits} for b in bins])
    return TimeframeMetrics.model_validate(
        {
            "timeframe": timeframe,
            "from": start,
            "to": end,
            "shows_scored": len(scored),
            "p_at_k": _ratio(math.fsum(r.p_at_k for r in scored), len(scored)),
            "hits": sum(r.hits for r in scored),
            "expected_hits": _round(math.fsum(r.expected_hits for r in scored)),
            "ranked_songs": ranked,
            "ranked_hits": sum(b.hits for b in bins),
            "ranked_expected_hits": _round(math.fsum(b.sum_p for b in bins)),
            "brier": _ratio(brier_sum, sum(sizes)),
            "ece": None if ece is None else _round(ece),
            "calibration": [
                CalibrationBin(
                    p_low=b / CALIBRATION_BINS,
                    p_high=(b + 1) / CALIBRATION_BINS,
                    n=one.n,
                    mean_probability=_ratio(one.sum_p, one.n),
                    hit_rate=_ratio(one.hits, one.n),
                )
                for b, one in enumerate(bins)
            ],
            "data_points": [
                DataPoint(
                    show_id=r.show_id,
                    artist_id=r.artist_id,
                    show_date=r.show_date,
                    scored_at=r.scored_at,
                    k=r.k,
                    hits=r.hits,
                    p_at_k=_round(r.p_at_k),
                    model_version=r.model_version,
                )
                for r in scored[:max_points]
            ],
            "model_versions": dict(Counter(r.model_version or NO_MODEL for r in scored)),
            "current_weights_version": current_weights_version,
        }
    )
