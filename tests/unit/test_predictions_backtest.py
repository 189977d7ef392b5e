"""The back-test protocol on a small synthetic artist."""

from __future__ import annotations

import datetime as dt

import numpy as np

from mysetlist.predictions.backtest import backtest_artist
from mysetlist.predictions.history import ArtistHistory, show_from_record
from mysetlist.predictions.model import ModelConfig

SMALL = ModelConfig(hgb_max_iter=15, max_train_shows=40, retrain_every=5)


def _artist(n: int) -> ArtistHistory:
    rng = np.random.default_rng(1)
    shows = []
    for i in range(n):
        date = (dt.date(2021, 1, 1) + dt.timedelta(days=i)).isoformat()
        rotating = [f"song{j}" for j in rng.choice(12, size=3, replace=False)]
        songs = ["a", "b", "c", *rotating] if i % 7 else ["a", "b"]  # every 7th show: too short
        shows.append(show_from_record({"show_id": f"x:{date}", "artist": "X", "date": date, "songs": songs}))
    return ArtistHistory.build("X", shows)


def test_protocol_counts_and_metrics() -> None:
    history = _artist(50)
    result = backtest_artist(history, SMALL, dataset="synthetic")
    summary = result.summary()
    tested = [i for i in range(40, 50) if i % 7]
    assert summary["shows_tested"] == len(tested)
    assert summary["dataset"] == "synthetic"
    # The three songs of every full show are always found; the rotating three are a lottery.
    assert all(p >= 3 / 6 for p in result.p_at_k)
    for key in ("p_at_k", "jaccard", "brier", "ece"):
        value = summary[key]
        assert isinstance(value, float)
        assert 0.0 <= value <= 1.0
    assert sum(len(p) for p in result.probs) == sum(len(y) for y in result.ys)


def test_backtest_never_sees_the_future() -> None:
    history = _artist(50)
    first = backtest_artist(history, SMALL)
    shows = list(history.shows)
    shows[-1] = show_from_record(
        {"show_id": "x:last", "artist": "X", "date": "2021-02-19", "songs": ["z", "y"]}
    )
    second = backtest_artist(ArtistHistory.build("X", shows), SMALL)
    # The last show is too short to be tested: every tested show is scored exactly as before.
    assert first.p_at_k == second.p_at_k
    assert all(np.array_equal(a, b) for a, b in zip(first.probs, second.probs, strict=True))
