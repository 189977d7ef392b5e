"""VoteProcessor in-process against moto: votes cast through VotesApi, the votes table's real
stream fed to the handler as Lambda would (duplicates, partial failures, crashes and bisection),
and the tallies VotesApi serves compared with a recount of the vote items."""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines
from mysetlist.tallies import TallyStore
from mysetlist.votes_store import VotesStore
from tests.harness.delivery import deliver_all
from tests.harness.events import LambdaContext, call_http, claims_for, http_event, load_event
from tests.harness.fakes import LostResponse, throttled
from tests.harness.streams import StreamReader
from tests.support.template import module_name_for

ARTIST_SONGS = [f"Song Number {i}" for i in range(8)]


@pytest.fixture(scope="module", autouse=True)
def roomy_vote_budget(aws: dict[str, str]) -> Iterator[None]:
    """The property tests below send as many votes per user as hypothesis likes; the per-user
    vote budget is not what they test."""
    from mysetlist import ratelimit
    from mysetlist.settings import load_settings

    previous = ratelimit.shared_limiter()
    roomy = load_settings().model_copy(update={"rate_limit_overrides": '{"votes.cast": "100000/60"}'})
    ratelimit.use_limiter(ratelimit.RateLimiter.from_settings(roomy))
    yield
    ratelimit.use_limiter(previous)


@pytest.fixture(scope="module")
def world(aws: dict[str, str], dynamodb: Any, settings: Any) -> dict[str, Any]:
    """An artist with 8 songs and 40 upcoming shows (one per hypothesis example at most)."""
    store = CatalogStore(dynamodb, settings.catalog_table)
    future = dt.date.today() + dt.timedelta(days=60)
    lines = [
        json.dumps(
            {
                "artist": "Stream Band",
                "date": "2001-01-01",
                "sets": [{"name": "Set 1", "songs": ARTIST_SONGS}],
            }
        )
    ]
    lines += [
        json.dumps({"artist": "Stream Band", "date": (future + dt.timedelta(days=i)).isoformat(), "sets": []})
        for i in range(200)
    ]
    import_lines(store, lines, warn=lambda _: None)
    arn = dynamodb.describe_table(TableName=settings.votes_table)["Table"]["LatestStreamArn"]
    return {
        "shows": [f"stream-band:{(future + dt.timedelta(days=i)).isoformat()}" for i in range(200)],
        "songs": [f"stream-band:song-number-{i}" for i in range(8)],
        "reader": StreamReader(boto3.client("dynamodbstreams"), arn),
        "tallies": TallyStore(dynamodb, settings.tallies_table, marker_ttl_seconds=3600),
        "votes": VotesStore(dynamodb, settings.votes_table),
    }


@dataclass
class FaultyStore:
    """The real TallyStore, with commits that are refused or whose response is lost."""

    real: TallyStore
    rng: random.Random
    rate: float

    def marker(self, *args: Any, **kwargs: Any) -> Any:
        return self.real.marker(*args, **kwargs)

    def forward(self, **kwargs: Any) -> None:
        self.real.forward(**kwargs)

    def commit(self, **kwargs: Any) -> Any:
        fault = self.rng.random() < self.rate and self.rng.choice(["throttle", "lost_response"])
        if fault == "throttle":
            raise throttled()
        marker = self.real.commit(**kwargs)
        if fault == "lost_response":
            raise LostResponse("timeout after the commit")
        return marker


@pytest.fixture
def processor_module(vote_processor: Any) -> Iterator[Any]:
    module = sys.modules[module_name_for("VoteProcessor")]
    real = module.processor._store
    yield module
    module.processor._store = real


def invoker(handler: Any) -> Any:
    def invoke(event: dict[str, Any]) -> Any:  # an exception escaping it is a function error
        return handler(event, LambdaContext(function_name="VoteProcessor"))

    return invoke


def served_tallies(votes_api: Any, show_id: str) -> dict[str, tuple[int, int]]:
    status, body = call_http(votes_api, http_event("GET /api/votes", query={"show_id": show_id}))
    assert status == 200, body
    return {s["song_id"]: (s["upvotes"], s["downvotes"]) for s in body["songs"]}


def test_the_canonical_stream_event(vote_processor: Any, world: dict[str, Any], settings: Any) -> None:
    event = load_event("vote_processor/stream_batch.json")
    assert vote_processor(event, LambdaContext()) == {"batchItemFailures": []}
    assert vote_processor(event, LambdaContext()) == {"batchItemFailures": []}  # redelivered: counted once
    counts = {c.song_id: (c.up, c.down) for c in world["tallies"].read("grateful-dead:2030-06-01")}
    # Dark Star was voted and un-voted within the batch: its sum is zero, so it is never written.
    assert counts == {"grateful-dead:scarlet-begonias": (2, 0)}


examples = iter(range(10**6))


@settings(
    max_examples=25,
    deadline=None,
    # No explain phase: it traces every line (moto's included) and turns a failure into a
    # run that outlives every timeout instead of a report.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 24), st.integers(0, 7), st.sampled_from(["up", "down"])),
        min_size=1,
        max_size=120,
    ),
    seed=st.integers(0, 2**32 - 1),
    chaos=st.sampled_from([0.0, 0.2, 0.4]),
    batch_size=st.sampled_from([2, 7, 100]),
)
def test_served_tallies_equal_a_recount_of_the_vote_items(
    votes_api: Any,
    vote_processor: Any,
    processor_module: Any,
    world: dict[str, Any],
    ops: list[tuple[int, int, str]],
    seed: int,
    chaos: float,
    batch_size: int,
) -> None:
    example = next(examples)
    show = world["shows"][example]
    world["reader"].new_records()  # start from here
    for user, song, vote_type in ops:
        body = {"show_id": show, "song_id": world["songs"][song], "vote_type": vote_type}
        # Fans of their own per example: the VoteProcessor's fraud detectors keep a window of
        # recent votes across the session, and one fan voting in every example's show is an
        # account burst across shows (its vote would be quarantined, rightly).
        claims = claims_for(f"fan{user}-example{example}", "user")
        status, reply = call_http(votes_api, http_event("POST /api/votes", body=body, claims=claims))
        assert status == 200, reply
    records = world["reader"].new_records()
    assert len(records) == len(ops)
    rng = random.Random(seed)
    processor_module.processor._store = FaultyStore(world["tallies"], rng, chaos)
    # What the processor itself writes back to the votes (a quarantine flag) is stream records
    # too: deliver until the stream is quiet, as Lambda would, and compare then.
    for _ in range(5):
        deliver_all(
            records,
            invoker(vote_processor),
            rng=rng,
            batch_size=batch_size,
            chaos=chaos,
        )
        records = world["reader"].new_records()
        if not records:
            break
    assert not records, "the processor kept writing to the votes stream"
    recount = {song: counts for song, counts in world["votes"].recount(show).items() if any(counts)}
    assert served_tallies(votes_api, show) == recount
