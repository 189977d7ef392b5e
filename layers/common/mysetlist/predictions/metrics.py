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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mysetlist.predictions.api_models import (
    CALIBRATION_BINS,
    MAX_DATA_POINTS,
    CalibrationBin,
    DataPoint,
    Timeframe,
    TimeframeMetrics,
)
from mysetlist.timestamps import parse_utc

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
    """One calibration bin of a scored ranking: songs whose probability fell in it, the sum of
    their probabilities, and how many of them were played."""

    n: int
    sum_p: float
    hits: int


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """A SCORE item, as the metrics read it."""

    show_id: str
    artist_id: str
    show_date: dt.date
    scored_at: dt.datetime
    k: int
    hits: int
    p_at_k: float
    expected_hits: float | None
    brier: float | None
    bins: tuple[Bin, ...]
    model_version: str | None

    @property
    def ranked(self) -> int:
        """How many ranked songs were scored (the bins hold each once)."""
        return sum(b.n for b in self.bins)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ScoreRecord:
        """The record of a SCORE item (``mysetlist.dynamo.from_item`` form). ValueError when a
        field is missing or malformed, or the bins are not 10."""
        try:
            bins = tuple(
                Bin(int(b["n"]), float(b["sum_p"]), int(b["hits"])) for b in item.get("calibration") or ()
            )
            if len(bins) != CALIBRATION_BINS:
                raise ValueError(f"{len(bins)} calibration bins, not {CALIBRATION_BINS}")
            expected = item.get("expected_hits")
            brier = item.get("brier")
            model_version = item.get("model_version")
            return cls(
                show_id=str(item["show_id"]),
                artist_id=str(item["artist_id"]),
                show_date=dt.date.fromisoformat(str(item["show_date"])),
                scored_at=parse_utc(str(item["scored_at"])),
                k=int(item["k"]),
                hits=int(item["hits"]),
                p_at_k=float(item["p_at_k"]),
                expected_hits=None if expected is None else float(expected),
                brier=None if brier is None else float(brier),
                bins=bins,
                model_version=None if model_version is None else str(model_version),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a score item: {exc!r}") from exc


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
        for b, one in enumerate(record.bins):
            n[b] += one.n
            sum_p[b] += one.sum_p
            hits[b] += one.hits
    return [Bin(n[b], sum_p[b], hits[b]) for b in range(CALIBRATION_BINS)]


def ece_of(bins: Sequence[Bin]) -> float | None:
    """Expected calibration error: sum over bins of |mean p - hit rate| weighted by the bin's
    share of the songs, which is sum |sum_p - hits| / songs. None without songs."""
    total = sum(b.n for b in bins)
    if not total:
        return None
    return math.fsum(abs(b.sum_p - b.hits) for b in bins) / total


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
    brier_weight = sum(r.ranked for r in scored if r.brier is not None)
    brier_sum = math.fsum(r.brier * r.ranked for r in scored if r.brier is not None)
    ece = ece_of(bins)
    return TimeframeMetrics.model_validate(
        {
            "timeframe": timeframe,
            "from": start,
            "to": end,
            "shows_scored": len(scored),
            "p_at_k": _ratio(math.fsum(r.p_at_k for r in scored), len(scored)),
            "hits": sum(r.hits for r in scored),
            "expected_hits": _round(math.fsum(r.expected_hits or 0.0 for r in scored)),
            "ranked_songs": ranked,
            "ranked_hits": sum(b.hits for b in bins),
            "ranked_expected_hits": _round(math.fsum(b.sum_p for b in bins)),
            "brier": _ratio(brier_sum, brier_weight),
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
