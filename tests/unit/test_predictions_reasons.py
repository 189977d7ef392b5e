"""The reasons: what moved the blended score, and every sentence literally true of the history.

Each sentence of a prediction is parsed back and checked against counts made here, directly from
the made-up shows (not from the feature state that wrote it).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import numpy as np
import pytest

from mysetlist.predictions.features import FEATURE_NAMES, F, FeatureState, FloatArray
from mysetlist.predictions.history import ROLE_ENCORE, ROLE_OPENER, ArtistHistory, Show, show_from_record
from mysetlist.predictions.model import ModelConfig, train_history
from mysetlist.predictions.predict import predict_show
from mysetlist.predictions.reasons import FAMILIES, family_effects, reasons_for, sentence

SMALL = ModelConfig(hgb_max_iter=15)


def _made_up(n: int = 60, seed: int = 3) -> ArtistHistory:
    """Core songs, a rotation, a one-off "surprise" set, an encore, venues, cities and tours."""
    rng = np.random.default_rng(seed)
    shows = []
    for i in range(n):
        date = (dt.date(2022, 1, 1) + dt.timedelta(days=2 * i)).isoformat()
        rotation = [f"rot{j}" for j in sorted(rng.choice(15, size=4, replace=False))]
        core = ["open", "core1", "core2"] if i % 10 else ["core1", "open", "core2"]
        if i % 3 == 0:
            core.append("every third")
        sets = [
            {"name": "Set 1", "songs": core + rotation[:2]},
            {"name": "Surprise", "songs": [f"one-off {i}"]},
            {"name": "Set 2", "songs": rotation[2:]},
            {"name": "Encore", "songs": ["closer"] if i % 4 else ["closer", "rare encore"]},
        ]
        shows.append(
            show_from_record(
                {
                    "show_id": f"m:{date}",
                    "artist": "M",
                    "date": date,
                    "venue": f"Venue {i % 7}",
                    "city": f"City {i % 5}",
                    "tour": f"Tour {i // 20}",
                    "sets": sets,
                }
            )
        )
    return ArtistHistory.build("M", shows)


def _played(show: Show, song: str) -> bool:
    return song in show.songs


def _check(sentence_text: str, song: str, shows: list[Show], target: Show, votes: dict[str, float]) -> None:
    """Assert one sentence about ``song`` is true of ``shows`` (all before ``target``)."""
    t = len(shows)
    plays = [i for i, s in enumerate(shows) if _played(s, song)]
    text = sentence_text
    if m := re.fullmatch(r"Fans voted it #(\d+) for this show", text):
        ranked = sorted((v, k) for k, v in votes.items() if v > 0)[::-1]
        assert [k for _, k in ranked].index(song) + 1 == int(m[1])
    elif m := re.fullmatch(r"Played in (\d+) of the last 50 shows \((\d+) of (\d+) in all\)", text):
        assert int(m[1]) == sum(_played(s, song) for s in shows[-50:])
        assert (int(m[2]), int(m[3])) == (len(plays), t)
    elif m := re.fullmatch(r"Played in (\d+) of the last (\d+) shows?", text):
        w = int(m[2])
        assert w == min(10, t)
        assert int(m[1]) == sum(_played(s, song) for s in shows[-w:])
    elif m := re.fullmatch(r"Played in (\d+) of the artist's (\d+) shows? at this venue", text):
        here = [s for s in shows if s.venue == target.venue]
        assert (int(m[1]), int(m[2])) == (sum(_played(s, song) for s in here), len(here))
    elif m := re.fullmatch(r"Played in (\d+) of the artist's (\d+) shows? in this city", text):
        here = [s for s in shows if s.city == target.city]
        assert (int(m[1]), int(m[2])) == (sum(_played(s, song) for s in here), len(here))
    elif m := re.fullmatch(r"Played in (\d+) of the artist's (\d+) shows?", text):
        assert (int(m[1]), int(m[2])) == (len(plays), t)
    elif m := re.fullmatch(r"Played in (\d+) of this tour's (\d+) shows? so far", text):
        here = [s for s in shows if s.tour == target.tour]
        assert (int(m[1]), int(m[2])) == (sum(_played(s, song) for s in here), len(here))
    elif text == "Played in the previous show":
        assert _played(shows[-1], song)
    elif m := re.fullmatch(r"Not played in the last (\d+) shows?", text):
        n = int(m[1])
        assert not any(_played(s, song) for s in shows[-n:])
        assert _played(shows[-n - 1], song)
    elif m := re.fullmatch(
        r"Last played (\d+) shows ago, ([\d.]+) times its average gap of ([\d.]+) shows", text
    ):
        ago = int(m[1])
        assert plays[-1] == t - ago
        usual = (plays[-1] - plays[0]) / (len(plays) - 1)
        assert float(m[3]) == pytest.approx(usual, abs=0.05)
        assert float(m[2]) == pytest.approx(ago / usual, abs=0.05)
        assert ago >= 1.5 * usual
    elif m := re.fullmatch(
        r"Last played in (.+): (\d+) of (\d+) songs played there came back in the next show", text
    ):
        where = m[1]
        named = {"the encore": "encore", "the main set": "main", "the opening slot": "opener"}
        name = (
            where.removeprefix('the set "').removesuffix('"')
            if where.startswith('the set "')
            else named[where]
        )

        def slot_of(show: Show, key: str) -> str:
            return show.slots[show.songs.index(key)]

        assert slot_of(shows[plays[-1]], song) == name
        chances = [(u, key) for u in range(t - 1) for key in shows[u].songs if slot_of(shows[u], key) == name]
        back = sum(_played(shows[u + 1], key) for u, key in chances)
        assert (int(m[2]), int(m[3])) == (back, len(chances))
    elif m := re.fullmatch(r"Played in the encore at (\d+) of its (\d+) shows?", text):
        encores = sum(s.roles[s.songs.index(song)] == ROLE_ENCORE for s in shows if _played(s, song))
        assert (int(m[1]), int(m[2])) == (encores, len(plays))
        assert 2 * encores >= len(plays)
    elif m := re.fullmatch(r"Opened (\d+) of its (\d+) shows?", text):
        opened = sum(s.roles[s.songs.index(song)] == ROLE_OPENER for s in shows if _played(s, song))
        assert (int(m[1]), int(m[2])) == (opened, len(plays))
    elif m := re.fullmatch(r"On average played in the (first|middle|last) third of the show", text):
        positions = [s.songs.index(song) / max(len(s.songs) - 1, 1) for s in shows if _played(s, song)]
        mean = float(np.mean(positions))
        assert {"first": mean < 1 / 3, "middle": 1 / 3 <= mean < 2 / 3, "last": mean >= 2 / 3}[m[1]]
    elif text == "First played in the previous show":
        assert plays[0] == t - 1
    elif m := re.fullmatch(r"First played (\d+) shows ago", text):
        assert plays[0] == t - int(m[1])
    else:
        raise AssertionError(f"no check for {text!r}")


@pytest.mark.parametrize("trained", [True, False])
def test_every_reason_is_true_of_the_history(trained: bool) -> None:
    history = _made_up(70)
    checked = 0
    for n in (40, 55, 69):
        before = history.prefix(n)
        target = history.shows[n]
        votes = {"rot3": 5.0, "core2": 2.0, "rot7": 9.0, "never played": 4.0}
        model = train_history(before, SMALL) if trained else None
        prediction = predict_show(before, target, setlist_length=20, model=model, votes=votes)
        assert prediction.songs
        for song in prediction.songs:
            assert 1 <= len(song.reasons) <= 3 or not trained
            for text in song.reasons:
                _check(text, song.song_id, before.shows, target, votes)
                checked += 1
    assert checked >= 60


def test_nine_of_the_last_ten() -> None:
    """The issue's example, literally: a song played in 9 of the last 10 shows."""
    shows = []
    for i in range(30):
        date = (dt.date(2020, 1, 1) + dt.timedelta(days=i)).isoformat()
        songs = ["anthem"] if i in range(20, 30) and i != 24 else []
        songs += ["every fourth"] if i % 4 == 0 else []
        shows.append(
            show_from_record({"show_id": date, "artist": "A", "date": date, "songs": [*songs, "x", "y"]})
        )
    history = ArtistHistory.build("A", shows)
    state = FeatureState.after(history.shows)
    (facts,) = state.facts(history.shows[-1], np.array([history.song_ids["anthem"]]))
    assert sentence("recent", facts) == "Played in 9 of the last 10 shows"
    assert sentence("long", facts) == "Played in 9 of the artist's 30 shows"
    assert sentence("gap", facts) == "Played in the previous show"
    assert sentence("debut", facts) == "First played 10 shows ago"
    # Three shows later: 4 shows since its last play, its plays were 1.125 shows apart.
    later = FeatureState.after([*history.shows, *(_plain(30 + j) for j in range(3))])
    anthem, fourth = later.facts(
        _plain(40), np.array([history.song_ids[s] for s in ("anthem", "every fourth")])
    )
    assert sentence("gap", anthem) == "Last played 4 shows ago, 3.6 times its average gap of 1.1 shows"
    assert sentence("recent", anthem) == "Played in 6 of the last 10 shows"
    # Every fourth show, last in show 28 of 33: not overdue (5 < 1.5 x 4).
    assert sentence("gap", fourth) == "Not played in the last 4 shows"
    assert sentence("recent", fourth) == "Played in 2 of the last 10 shows"


def _plain(i: int) -> Show:
    date = (dt.date(2020, 1, 1) + dt.timedelta(days=i)).isoformat()
    return show_from_record({"show_id": date, "artist": "A", "date": date, "songs": ["x", "y"]})


def _linear(weights: dict[str, float]) -> Callable[[FloatArray], FloatArray]:
    w = np.zeros(len(FEATURE_NAMES))
    for name, value in weights.items():
        w[F[name]] = value

    def score(X: FloatArray) -> FloatArray:
        return np.asarray(1 / (1 + np.exp(-(X @ w - 1))), dtype=np.float64)

    return score


def test_effects_follow_the_score_not_one_member() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((30, len(FEATURE_NAMES)))
    names = list(FAMILIES)
    # A score moved by the tour and fan votes only: only those families have an effect.
    effects = family_effects(_linear({"tour_rate": 3.0, "votes": -2.0}), X, X[:5])
    assert effects.shape == (5, len(FAMILIES))
    moved = {names[j] for j in np.flatnonzero(np.abs(effects).max(axis=0) > 1e-12)}
    assert moved == {"tour", "votes"}
    # In log-odds: exactly the weight times the distance from the mean row.
    expected = 3.0 * (X[:5, F["tour_rate"]] - X[:, F["tour_rate"]].mean())
    np.testing.assert_allclose(effects[:, names.index("tour")], expected, atol=1e-9)


def test_reasons_order_votes_first_then_what_raised_then_what_lowered() -> None:
    history = _made_up(30)
    state = FeatureState.after(history.shows)
    sid = history.song_ids["core1"]
    (facts,) = state.facts(history.shows[0], np.array([sid]))
    names = list(FAMILIES)
    effects = np.zeros(len(names))
    effects[names.index("long")] = 0.4
    effects[names.index("recent")] = 1.2
    effects[names.index("place")] = 0.01  # too small to mention
    effects[names.index("gap")] = -0.9
    effects[names.index("debut")] = -0.2
    reasons = reasons_for(effects, facts)
    assert reasons == [
        "Played in 10 of the last 10 shows",
        "Played in 30 of the artist's 30 shows",
        "Played in the previous show",
    ]
    assert reasons_for(effects, facts, vote_rank=2)[0] == "Fans voted it #2 for this show"
    assert len(reasons_for(effects, facts, vote_rank=2)) == 3
