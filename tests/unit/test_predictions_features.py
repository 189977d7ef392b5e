"""Features of a tiny synthetic history: values, and no leakage from later shows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

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


def _named_sets_history(n: int) -> ArtistHistory:
    """A core set that always comes back and a "surprise" set of one-offs."""
    shows = []
    for i in range(n):
        date = (dt.date(2021, 1, 1) + dt.timedelta(days=i)).isoformat()
        sets = [
            {"name": "Main", "songs": ["c1", "c2", "c3", "c4"]},
            {"name": "Surprise", "songs": [f"one-off {i}"]},
            {"name": "Finale", "songs": ["f1"]},
        ]
        shows.append(show_from_record({"show_id": f"s:{date}", "artist": "S", "date": date, "sets": sets}))
    return ArtistHistory.build("S", shows)


def test_slot_repeat_learns_where_songs_come_back() -> None:
    history = _named_sets_history(12)
    # A new song debuts in the main set of show 12: placed where songs always come back.
    debut = show_from_record(
        {
            "show_id": "s:debut",
            "artist": "S",
            "date": "2021-02-01",
            "sets": [{"name": "Main", "songs": ["c1", "new"]}, {"name": "Surprise", "songs": ["one-off x"]}],
        }
    )
    state = FeatureState.after([*history.shows, debut])
    f = state.features(history.shows[0])
    row = {state.keys[int(s)]: f.X[i] for i, s in enumerate(f.song_ids)}
    # 12 pairs of consecutive shows. Main set: 48 songs, 45 back next show (c2-c4 were not
    # in the debut show); surprise set: 12 songs, none back; finale: 12, 11 back. Overall
    # (56 + 1) / (72 + 2), the prior each set's rate is pulled towards with weight 2.
    prior = 57 / 74
    assert row["new"][F["slot_repeat"]] == pytest.approx((45 + 2 * prior) / (48 + 2))
    assert row["one-off x"][F["slot_repeat"]] == pytest.approx((0 + 2 * prior) / (12 + 2))
    assert row["c1"][F["slot_repeat"]] == row["new"][F["slot_repeat"]]
    assert row["new"][F["in_prev1"]] == row["one-off x"][F["in_prev1"]] == 1.0


def test_slot_repeat_does_not_see_later_shows() -> None:
    history = _named_sets_history(30)
    before = all_show_features(history, upto=20)
    changed = list(history.shows)
    # Later shows replay the surprise songs and move the core songs to the surprise set.
    for i in (20, 21, 25):
        date = changed[i].date.isoformat()
        changed[i] = show_from_record(
            {
                "show_id": f"s:{date}",
                "artist": "S",
                "date": date,
                "sets": [{"name": "Surprise", "songs": ["c1", "c2", "one-off 3", "one-off 4"]}],
            }
        )
    after = all_show_features(ArtistHistory.build("S", changed), upto=20)
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a.X, b.X)


def test_state_after_all_shows_at_once_equals_absorbing_one_by_one() -> None:
    histories = [_history(40), _named_sets_history(40)]
    # Shows with and without set names, venues, cities, tours, an empty one.
    mixed = [
        Show(
            "m1",
            "M",
            dt.date(2020, 1, 1),
            venue="V",
            city="C",
            tour="T",
            songs=("a", "b"),
            roles=("opener", "main"),
        ),
        Show("m2", "M", dt.date(2020, 1, 2), venue="W", songs=(), roles=()),
        Show(
            "m3",
            "M",
            dt.date(2020, 1, 3),
            venue="V",
            songs=("b", "c", "a"),
            roles=("opener", "main", "encore"),
        ),
        Show(
            "m4",
            "M",
            dt.date(2020, 1, 4),
            city="C",
            tour="T",
            songs=("c",),
            roles=("opener",),
            slots=("set 1",),
        ),
    ]
    for shows in [h.shows for h in histories] + [mixed]:
        for n in (1, 2, len(shows) // 2, len(shows) - 1):
            one_by_one = FeatureState()
            for show in shows[:n]:
                one_by_one.absorb(show)
            at_once = FeatureState.after(shows[:n])
            for state in (one_by_one, at_once):
                state.absorb(shows[n])  # both carry forward the same way
            assert one_by_one.keys == at_once.keys
            a, b = one_by_one.features(shows[0]), at_once.features(shows[0])
            assert np.array_equal(a.song_ids, b.song_ids)
            np.testing.assert_allclose(a.X, b.X, rtol=0, atol=1e-12)


def test_cached_state_gives_the_same_prediction() -> None:
    history = _history(40)
    before = history.prefix(30)
    model = train_history(before, SMALL)
    target = history.shows[30]
    state = FeatureState.after(before.shows)
    cached = predict_show(before, target, setlist_length=6, model=model, state=state.copy())
    assert cached == predict_show(before, target, setlist_length=6, model=model)
    # A state carried forward by one show predicts the next show as if built from scratch.
    state.absorb(target)
    longer = history.prefix(31)
    assert predict_show(longer, history.shows[31], model=model, state=state) == predict_show(
        longer, history.shows[31], model=model
    )
    with pytest.raises(ValueError, match="feature state"):
        predict_show(before, target, model=model, state=state)
