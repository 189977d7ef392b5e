"""The must-show property over HTTP: hundreds of random votes from dozens of users on an
upcoming show, with the stream poller misbehaving as Lambda may (``LOCAL_STREAM_CHAOS=0.3``:
duplicate deliveries, crashes part-way, split batches), leave ``GET /api/votes`` exactly equal
to a recount of the vote items stored in the votes table."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mysetlist.signals import UNCOUNTED_STATES
from tests.e2e.conftest import LocalStackProcess

pytestmark = pytest.mark.e2e

USERS = 30
VOTES = 400
SONGS = 12
CLIENT_THREADS = 8

Vote = tuple[str, str, str]  # user, song, "up" | "down"


def _upcoming_show(stack: LocalStackProcess) -> str:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    response = stack.get("/api/shows", params={"status": "upcoming", "from": today, "limit": 1})
    assert response.status_code == 200, response.text
    shows = response.json()["items"]
    assert shows, "the local stack has no upcoming demo show"
    return str(shows[0]["show_id"])


def _songs(stack: LocalStackProcess) -> list[str]:
    response = stack.get("/api/artists/grateful-dead/songs", params={"limit": SONGS})
    assert response.status_code == 200, response.text
    return [s["song_id"] for s in response.json()["items"]]


def _expected(
    state: dict[tuple[str, str], str], user: str, song: str, vote_type: str
) -> tuple[str, str | None]:
    """The toggle rule: the same vote again removes it, the other replaces it, else it is created."""
    current = state.get((user, song))
    if current is None:
        state[(user, song)] = vote_type
        return "created", vote_type
    if current == vote_type:
        del state[(user, song)]
        return "removed", None
    state[(user, song)] = vote_type
    return "updated", vote_type


def _cast(stack: LocalStackProcess, show_id: str, votes: Sequence[Vote]) -> dict[tuple[str, str], str]:
    """One user's votes, in order; each answer checked against the toggle rule."""
    state: dict[tuple[str, str], str] = {}
    for user, song, vote_type in votes:
        response = stack.request(
            "POST",
            "/api/votes",
            headers=stack.auth(user),
            json={"show_id": show_id, "song_id": song, "vote_type": vote_type},
        )
        assert response.status_code == 200, response.text
        action, mine = _expected(state, user, song, vote_type)
        body = response.json()
        assert (body["action"], body["vote_type"], body["song_id"]) == (action, mine, song), body
    return state


def _recount(
    stack: LocalStackProcess, show_id: str, *, counted_only: bool = False
) -> dict[str, tuple[int, int]]:
    """Up and down votes per song, counted from the vote items in moto's votes table; with
    ``counted_only``, without the votes moderation holds (quarantined or rejected): what the
    tallies must equal. (Thirty accounts voting from one address with one user agent within
    seconds look like ballot stuffing, and the detectors may well quarantine some of them.)"""
    counts: Counter[tuple[str, str]] = Counter()
    paginator = stack.aws("dynamodb").get_paginator("scan")
    for page in paginator.paginate(TableName=stack.health["tables"]["VotesTable"]):
        for item in page["Items"]:
            if item.get("show_id", {}).get("S") != show_id:
                continue
            if counted_only and item.get("moderation", {}).get("S") in UNCOUNTED_STATES:
                continue
            counts[(item["song_id"]["S"], item["vote_type"]["S"])] += 1
    songs = {song for song, _ in counts}
    return {song: (counts[(song, "up")], counts[(song, "down")]) for song in songs}


def _tallies(body: dict[str, Any]) -> dict[str, tuple[int, int]]:
    tallies = {s["song_id"]: (s["upvotes"], s["downvotes"]) for s in body["songs"]}
    for song, (up, down) in tallies.items():
        assert next(s["net"] for s in body["songs"] if s["song_id"] == song) == up - down
    return {song: counts for song, counts in tallies.items() if counts != (0, 0)}


def test_random_votes_leave_tallies_equal_to_a_recount(stack: LocalStackProcess) -> None:
    show_id = _upcoming_show(stack)
    songs = _songs(stack)
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    users = [f"e2e-voter-{n:02d}" for n in range(USERS)]
    sequence: list[Vote] = [
        (rng.choice(users), rng.choice(songs), rng.choice(["up", "down"])) for _ in range(VOTES)
    ]
    per_user = {user: [v for v in sequence if v[0] == user] for user in users}

    with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
        states = list(pool.map(lambda user: _cast(stack, show_id, per_user[user]), users))
    model: dict[tuple[str, str], str] = {key: value for state in states for key, value in state.items()}
    expected: dict[str, tuple[int, int]] = {}
    for (_, song), vote_type in model.items():
        up, down = expected.get(song, (0, 0))
        expected[song] = (up + (vote_type == "up"), down + (vote_type == "down"))

    streams = stack.wait_until_streams_drained(timeout=90)
    recount = _recount(stack, show_id)
    counted = _recount(stack, show_id, counted_only=True)
    response = stack.get("/api/votes", params={"show_id": show_id})
    assert response.status_code == 200, response.text
    body = response.json()
    context = f"vote seed {seed}, chaos seed {stack.health['chaos_seed']}, streams {streams['mappings']}"

    assert recount == expected, f"the votes table disagrees with the API's answers ({context})"
    assert _tallies(body) == {s: c for s, c in counted.items() if c != (0, 0)}, (
        f"tallies are not exact ({context})"
    )
    assert body["total_upvotes"] == sum(up for up, _ in counted.values())
    assert body["total_downvotes"] == sum(down for _, down in counted.values())
    (mapping,) = streams["mappings"]
    assert mapping["given_up_records"] == 0, context
    assert sum(mapping["chaos"].values()) >= 1, (
        f"chaos never happened: the test proved less than it claims ({context})"
    )

    for user in users[:5]:
        mine = stack.get("/api/votes", params={"show_id": show_id}, headers=stack.auth(user)).json()[
            "my_votes"
        ]
        assert mine == {song: vote for (u, song), vote in model.items() if u == user}
