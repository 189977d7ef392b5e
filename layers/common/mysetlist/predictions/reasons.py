"""Why a song is predicted: which of its features moved the blended score, in plain sentences.

The effect of a feature family on one song is measured on the whole ensemble (trees, logistic
regression and the weighted member, blended by the stacker): the song's score is recomputed
with that family's values replaced by the artist's mean over every candidate of the show, and
the change in log-odds is the family's contribution. The families that raised the score most
come first; one that lowered it clearly is named too. Each sentence is then built from plain
counts of the history (:class:`~mysetlist.predictions.features.SongFacts`), never from a
rounded rate, so "Played in 9 of the last 10 shows" is literally true.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mysetlist.predictions.features import F, FloatArray, SongFacts
from mysetlist.predictions.history import ROLE_ENCORE, ROLE_MAIN, ROLE_OPENER

MAX_REASONS = 3
# Contributions smaller than this (in log-odds) say nothing worth a sentence.
MIN_EFFECT = 0.05

# Feature families, each explained by one sentence. Features equal for every candidate of a
# show (the artist's repeat rate, shows at this venue, days since the last show) cannot set one
# song apart and are left out.
FAMILIES: dict[str, tuple[str, ...]] = {
    "votes": ("votes",),
    "recent": ("rate_5", "rate_10", "in_prev3", "decay_h5"),
    "long": ("rate_20", "rate_50", "decay_h20", "rate_all"),
    "gap": ("log_gap", "in_prev1", "overdue", "gap_rate", "log_days_since_played"),
    "slot": ("slot_repeat",),
    "venue": ("venue_rate", "city_rate"),
    "tour": ("tour_rate",),
    "place": ("mean_pos", "encore_share", "opener_share"),
    "debut": ("log_since_debut",),
}


def family_effects(score: Callable[[FloatArray], FloatArray], X: FloatArray, rows: FloatArray) -> FloatArray:
    """Per song of ``rows`` and family of :data:`FAMILIES`: the log-odds of the song's score
    minus that with the family's features set to their mean over ``X`` (every candidate)."""
    reference = X.mean(axis=0)
    n, k = len(rows), len(FAMILIES)
    batch = np.repeat(rows[None, :, :], k + 1, axis=0)  # [0] = the songs as they are
    for j, names in enumerate(FAMILIES.values(), start=1):
        columns = [F[name] for name in names]
        batch[j][:, columns] = reference[columns]
    raw = np.clip(score(batch.reshape((k + 1) * n, -1)), 1e-9, 1 - 1e-9)
    z = np.log(raw / (1 - raw)).reshape(k + 1, n)
    return np.asarray((z[0][None, :] - z[1:]).T, dtype=np.float64)


def _shows(n: int) -> str:
    return "1 show" if n == 1 else f"{n} shows"


def _share(hits: int, chances: int) -> str:
    return f"{hits} of {chances}"


def _where(slot: str) -> str:
    if slot == ROLE_ENCORE:
        return "the encore"
    if slot == ROLE_OPENER:
        return "the opening slot"
    if slot == ROLE_MAIN:
        return "the main set"
    return f'the set "{slot}"'


def sentence(family: str, facts: SongFacts, vote_rank: int | None = None) -> str | None:  # noqa: PLR0911, PLR0912
    """The sentence for one family of one song, or None when there is nothing true to say."""
    t = facts.shows
    if family == "votes":
        return f"Fans voted it #{vote_rank} for this show" if vote_rank else None
    if family == "recent":
        w = min(10, t)
        return f"Played in {facts.window_plays[10]} of the last {_shows(w)}"
    if family == "long":
        if t > 50:
            return f"Played in {facts.window_plays[50]} of the last 50 shows ({facts.plays} of {t} in all)"
        return f"Played in {facts.plays} of the artist's {_shows(t)}"
    if family == "gap":
        if facts.last_ago == 1:
            return "Played in the previous show"
        if facts.usual_gap and facts.last_ago >= 1.5 * facts.usual_gap:
            return (
                f"Last played {facts.last_ago} shows ago, {facts.last_ago / facts.usual_gap:.1f} times "
                f"its average gap of {facts.usual_gap:.1f} shows"
            )
        return f"Not played in the last {_shows(facts.last_ago - 1)}"
    if family == "slot":
        hits, chances = facts.slot_back
        if not chances:
            return None
        return (
            f"Last played in {_where(facts.slot)}: {_share(hits, chances)} songs played there "
            "came back in the next show"
        )
    if family == "venue":
        for label, at in (("at this venue", facts.venue), ("in this city", facts.city)):
            if at and at[1]:
                return f"Played in {at[0]} of the artist's {_shows(at[1])} {label}"
        return None
    if family == "tour":
        if facts.tour and facts.tour[1]:
            return f"Played in {facts.tour[0]} of this tour's {_shows(facts.tour[1])} so far"
        return None
    if family == "place":
        if facts.encore_plays * 2 >= facts.plays:
            return f"Played in the encore at {facts.encore_plays} of its {_shows(facts.plays)}"
        if facts.opener_plays * 10 >= 3 * facts.plays:
            return f"Opened {facts.opener_plays} of its {_shows(facts.plays)}"
        third = ("first", "middle", "last")[min(int(facts.mean_position * 3), 2)]
        return f"On average played in the {third} third of the show"
    if family == "debut":
        return (
            "First played in the previous show"
            if facts.first_ago == 1
            else f"First played {facts.first_ago} shows ago"
        )
    return None


def reasons_for(effects: FloatArray, facts: SongFacts, vote_rank: int | None = None) -> list[str]:
    """Up to :data:`MAX_REASONS` sentences: fan votes first when there are any, then the
    families that raised the score most, then one that lowered it, each at least
    :data:`MIN_EFFECT` in log-odds."""
    names = list(FAMILIES)
    out: list[str] = []

    def add(family: str) -> None:
        text = sentence(family, facts, vote_rank)
        if text and text not in out and len(out) < MAX_REASONS:
            out.append(text)

    if vote_rank:
        add("votes")
    order = np.argsort(-effects, kind="stable")
    for j in order:
        if effects[j] >= MIN_EFFECT:
            add(names[int(j)])
    for j in order[::-1]:
        if effects[j] <= -MIN_EFFECT:
            add(names[int(j)])
            break
    return out
