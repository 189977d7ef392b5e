"""Features of a tiny synthetic history: values, and no leakage from later shows."""

from __future__ import annotations

import datetime as dt

import numpy as np

from mysetlist.predictions.features import F, FeatureState, all_show_features
from mysetlist.predictions.history import ROLE_ENCORE, ROLE_OPENER, ArtistHistory, Show, show_from_record
from mysetlist.predictions.model import ModelConfig, train_history
from mysetlist.predictions.predict import predict_show

SMALL = ModelConfig(hgb_max_iter=15)


def _show(i: int, songs: list[str], venue: str = "Hall", encore: list[str] | None = None) -> Show:
    sets = [{"name": "Set 1", "songs": songs}]
    if encore:
        sets.append({"name": "Encore", "songs": encore})
    date = (dt.date(2020, 1, 1) + dt.timedelta(days=i)).isoformat()
    return show_from_record(
        {"show_id": f"a:{date}", "artist": "A", "date": date, "venue": venue, "sets": sets}
    )


def _history(n: int = 30) -> ArtistHistory:
    shows = []
    for i in range(n):
        rotating = [f"r{i % 4}", f"r{(i + 1) % 4}"]
        shows.append(_show(i, ["core1", "core2", *rotating, "core3"], encore=["closer"]))
    return ArtistHistory.build("A", shows)


def test_parse_roles_and_dedupe() -> None:
    show = show_from_record(
        {
            "show_id": "x",
            "artist": "A",
            "date": "2020-01-01",
            "sets": [{"name": "Set 1", "songs": ["a", "b", "a"]}, {"name": "Encore", "songs": ["c"]}],
        }
    )
    assert show.songs == ("a", "b", "c")
    assert show.roles == (ROLE_OPENER, "main", ROLE_ENCORE)


def test_feature_values() -> None:
    history = _history(10)
    state = FeatureState(history)
    for show in history.shows[:8]:
        state.absorb(show)
    f = state.features(history.shows[8])
    row = {history.titles[int(s)]: f.X[i] for i, s in enumerate(f.song_ids)}
    assert f.shows_before == 8
    assert row["core1"][F["rate_all"]] == 1.0
    assert row["core1"][F["in_prev1"]] == 1.0
    assert row["closer"][F["encore_share"]] == 1.0
    assert row["core1"][F["mean_pos"]] == 0.0
    # r0 was played in shows 0, 3, 4, 7: last in the previous show.
    assert row["r0"][F["rate_5"]] == 3 / 5
    assert row["r2"][F["log_gap"]] == np.log1p(2)
    assert row["core1"][F["venue_rate"]] == 1.0


def test_features_do_not_see_later_shows() -> None:
    history = _history(30)
    before = all_show_features(history, upto=20)
    changed = list(history.shows)
    changed[25] = _show(25, ["new song", "core1"], venue="Elsewhere")
    changed[20] = _show(20, ["core2"])
    after = all_show_features(ArtistHistory.build("A", changed), upto=20)
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a.song_ids, b.song_ids)
        assert np.array_equal(a.X, b.X)


def test_prediction_does_not_change_when_a_later_show_does() -> None:
    history = _history(40)
    target = history.shows[30]
    before = history.prefix(30)
    first = predict_show(before, target, setlist_length=6, model=train_history(before, SMALL))
    changed = ArtistHistory.build("A", [*history.shows[:35], _show(35, ["something else", "core3"])])
    before = changed.prefix(30)
    second = predict_show(before, target, setlist_length=6, model=train_history(before, SMALL))
    assert first == second
    assert len({s.song for s in first.songs} & set(target.songs)) >= 5
