"""The catalogue and tallies through the cache (moto + the session's Valkey): what is cached,
what invalidates it, the importer's invalidation, and the cache warmer."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest

from mysetlist import keys
from mysetlist.auth import Caller, Role
from mysetlist.cache import Cache, build_cache
from mysetlist.cache_warming import upcoming_specs, warm
from mysetlist.catalog import get_show_detail, record_setlist
from mysetlist.catalog_cache import CachedCatalogStore
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import to_value
from mysetlist.importer import import_lines
from mysetlist.models import SetlistIn, ShowStatus, VoteType
from mysetlist.settings import Settings
from mysetlist.tallies import TallyStore
from mysetlist.votes_store import VotesStore
from mysetlist.voting import show_votes

MODERATOR = Caller(user_id="mod-1", roles=frozenset({Role.MODERATOR}))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(settings: Settings, clock: Clock) -> Cache:
    return build_cache(settings, clock=clock)


@pytest.fixture
def artist() -> str:
    """A fresh artist per test: the session's Valkey and tables are shared by the tests."""
    return f"Band {uuid.uuid4().hex[:10]}"


def show_line(artist: str, date: dt.date, *songs: str) -> str:
    sets = [{"name": "Set 1", "songs": list(songs)}] if songs else []
    return json.dumps(
        {"artist": artist, "date": date.isoformat(), "venue": "Roxy", "city": "LA", "sets": sets}
    )


def cached_store(dynamodb: Any, settings: Settings, cache: Cache) -> CachedCatalogStore:
    return CachedCatalogStore(dynamodb, settings.catalog_table, cache)


def rename_tour_behind_the_cache(dynamodb: Any, settings: Settings, show_id: str, tour: str) -> None:
    dynamodb.update_item(
        TableName=settings.catalog_table,
        Key={"PK": to_value(keys.show_pk(show_id)), "SK": to_value(keys.META)},
        UpdateExpression="SET tour = :tour",
        ExpressionAttributeValues={":tour": to_value(tour)},
    )


def test_shows_are_served_from_the_cache_until_a_setlist_invalidates_them(
    dynamodb: Any, settings: Settings, cache: Cache, artist: str
) -> None:
    store = cached_store(dynamodb, settings, cache)
    day = dt.date.today() + dt.timedelta(days=3)
    import_lines(store, [show_line(artist, day)], warn=lambda _: None)
    show_id = keys.show_id_for(keys.artist_id_for(artist), day.isoformat())

    first = store.get_show(show_id)
    assert first is not None
    assert first.status is ShowStatus.UPCOMING
    assert first.tour is None
    rename_tour_behind_the_cache(dynamodb, settings, show_id, "Secret Tour")
    assert store.get_show(show_id) == first  # served from the cache, not DynamoDB

    record_setlist(
        store,
        show_id,
        SetlistIn.model_validate({"sets": [{"name": "Set 1", "songs": ["Opener"]}]}),
        MODERATOR,
        dt.datetime.now(dt.UTC),
    )
    after = store.get_show(show_id)
    assert after is not None
    assert after.status is ShowStatus.COMPLETED
    assert after.tour == "Secret Tour"
    detail = get_show_detail(store, show_id)
    assert detail.setlist is not None
    assert detail.setlist.song_ids == [keys.song_id_for(keys.artist_id_for(artist), "Opener")]


def test_another_container_sees_the_setlist_after_its_version_check(
    dynamodb: Any, settings: Settings, clock: Clock, artist: str
) -> None:
    writer_cache, reader_cache = build_cache(settings, clock=clock), build_cache(settings, clock=clock)
    writer, reader = (
        cached_store(dynamodb, settings, writer_cache),
        cached_store(dynamodb, settings, reader_cache),
    )
    day = dt.date.today() - dt.timedelta(days=2)
    import_lines(writer, [show_line(artist, day)], warn=lambda _: None)
    show_id = keys.show_id_for(keys.artist_id_for(artist), day.isoformat())
    before = get_show_detail(reader, show_id)
    assert before.setlist is None

    record_setlist(
        writer,
        show_id,
        SetlistIn.model_validate({"sets": [{"name": "Set 1", "songs": ["Closer"]}]}),
        MODERATOR,
        dt.datetime.now(dt.UTC),
    )
    clock.now += settings.cache_version_check_seconds + 0.1
    assert get_show_detail(reader, show_id).setlist is not None


def test_a_missing_show_is_not_remembered(
    dynamodb: Any, settings: Settings, cache: Cache, artist: str
) -> None:
    store = cached_store(dynamodb, settings, cache)
    day = dt.date.today() + dt.timedelta(days=40)
    show_id = keys.show_id_for(keys.artist_id_for(artist), day.isoformat())
    assert store.get_show(show_id) is None
    import_lines(
        CatalogStore(dynamodb, settings.catalog_table), [show_line(artist, day)], warn=lambda _: None
    )
    assert store.get_show(show_id) is not None


def test_an_import_invalidates_what_it_changes(
    dynamodb: Any, settings: Settings, cache: Cache, artist: str
) -> None:
    store = cached_store(dynamodb, settings, cache)
    artist_id = keys.artist_id_for(artist)
    import_lines(store, [show_line(artist, dt.date(2001, 1, 1), "Old Song")], warn=lambda _: None)
    new_song = keys.song_id_for(artist_id, "New Song")
    assert store.song_exists(artist_id, new_song) is False  # cached as absent

    import_lines(store, [show_line(artist, dt.date(2001, 1, 2), "New Song")], warn=lambda _: None)
    assert store.song_exists(artist_id, new_song) is True
    artist_item = store.get_artist(artist_id)
    assert artist_item is not None
    assert artist_item.song_count == 2


def test_tallies_are_shared_for_their_short_ttl_and_own_votes_are_always_fresh(
    dynamodb: Any, settings: Settings, cache: Cache, clock: Clock, artist: str
) -> None:
    store = cached_store(dynamodb, settings, cache)
    day = dt.date.today() + dt.timedelta(days=10)
    import_lines(store, [show_line(artist, day)], warn=lambda _: None)
    show_id = keys.show_id_for(keys.artist_id_for(artist), day.isoformat())
    votes = VotesStore(dynamodb, settings.votes_table)
    tallies = TallyStore(
        dynamodb, settings.tallies_table, marker_ttl_seconds=settings.stream_marker_ttl_seconds
    )
    fan = Caller(user_id=f"fan-{uuid.uuid4().hex[:6]}", roles=frozenset({Role.USER}))

    empty = show_votes(store, votes, tallies, show_id, fan, cache, ttl=2.0)
    assert empty.songs == []
    assert empty.my_votes == {}
    song = keys.song_id_for(keys.artist_id_for(artist), "Wanted")
    votes.toggle(
        show_id=show_id, song_id=song, user_id=fan.user_id, vote_type=VoteType.UP, now=dt.datetime.now(dt.UTC)
    )

    again = show_votes(store, votes, tallies, show_id, fan, cache, ttl=2.0)
    assert again.my_votes == {song: "up"}  # the caller's own vote, at once
    assert again.total_upvotes == 0  # the tallies themselves are the cached board


def test_the_warmer_loads_shows_starting_soon_and_leaves_fresh_ones(
    dynamodb: Any, settings: Settings, cache: Cache, artist: str
) -> None:
    store = cached_store(dynamodb, settings, cache)
    today = dt.date.today()
    import_lines(
        CatalogStore(dynamodb, settings.catalog_table),
        [show_line(artist, today + dt.timedelta(days=1)), show_line(artist, today + dt.timedelta(days=9))],
        warn=lambda _: None,
    )
    artist_id = keys.artist_id_for(artist)
    soon = keys.show_id_for(artist_id, (today + dt.timedelta(days=1)).isoformat())
    later = keys.show_id_for(artist_id, (today + dt.timedelta(days=9)).isoformat())

    warmed = {spec.key for spec in upcoming_specs(store, today)}
    assert f"show:{soon}" in warmed
    assert f"show-detail:{soon}" in warmed
    assert f"artist:{artist_id}" in warmed
    assert f"show:{later}" not in warmed

    first = warm(store, cache, dt.datetime.now(dt.UTC))
    second = warm(store, cache, dt.datetime.now(dt.UTC))

    def never() -> Any:
        raise AssertionError("the warmer did not load it")

    for key in (f"show:{soon}", f"show-detail:{soon}", f"artist:{artist_id}"):
        assert cache.get(key, never, ttl=60) is not None, key
    # The session's catalogue holds other tests' upcoming shows too (some of artists they never
    # stored, which fail to load): what loaded the first time is still fresh the second.
    loaded = first["upcoming_keys"] - first["upcoming"]["failed"]
    assert second["upcoming"]["warmed"] == 0
    assert second["upcoming"]["fresh"] == loaded
