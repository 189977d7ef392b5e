"""DynamoDB access for the catalogue: artists, venues, shows, songs and setlists.

One table (see docs/data-model.md): items are keyed PK/SK; GSI1 lists an owner's items by date
(an artist's shows and setlists) or by name (artists); GSI2 lists shows by status and date.
Only this module and :mod:`mysetlist.keys` know the item shapes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.breaker import CircuitOpenError
from mysetlist.dynamo import (
    from_item,
    raise_unavailable_for,
    to_item,
    unavailable_for_open_circuit,
    unavailable_on_throttle,
)
from mysetlist.errors import Unavailable, Unprocessable
from mysetlist.models import Artist, Page, Setlist, SetlistEntry, SetlistSet, Show, ShowStatus, Song, Venue
from mysetlist.pagination import decode_cursor, encode_cursor
from mysetlist.retry import pause_before_retry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_BATCH_GET_LIMIT = 100
_BATCH_WRITE_LIMIT = 25
# Tries of a batch call while DynamoDB leaves items unprocessed, with full-jitter backoff between
# them (50 ms doubling up to 1 s), never past the invocation's remaining time.
_BATCH_ATTEMPTS = 8
MAX_TRANSACTION_ACTIONS = 100
_FILTERED_READ = 100


class ChangedConcurrently(Exception):
    """Another request changed the show's setlist or created one of its new songs since this
    one read them: re-read and try again."""


@dataclass(frozen=True, slots=True)
class SetlistChange:
    """A show's new actual setlist and what it changes in the artist's songs."""

    show: Show
    setlist: Setlist
    added: dict[str, str]  # song id -> title: songs played in the new setlist but not the old one
    removed: frozenset[str]  # songs of the old setlist that the new one no longer has
    new_song_ids: frozenset[str]  # songs the artist's catalogue does not have yet
    previous_revision: int | None  # revision of the setlist it replaces (None: the show had none)


class CatalogStore:
    """Reads and writes catalogue items in one DynamoDB table."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    # ------------------------------------------------------------------ artists
    def get_artist(self, artist_id: str) -> Artist | None:
        item = self._get(keys.artist_pk(artist_id), keys.META)
        return artist_from_item(item) if item else None

    def search_artists(self, query: str, limit: int, cursor: str | None) -> Page[Artist]:
        """Artists whose name starts with ``query`` (case, accents and a leading 'The' ignored)."""
        prefix = keys.search_name(query) if query else ""
        start = decode_cursor(
            cursor, expect={"PK": "", "SK": "", "GSI1PK": keys.ARTISTS_INDEX_PK, "GSI1SK": ""}
        )
        condition = "GSI1PK = :pk" + (" AND begins_with(GSI1SK, :prefix)" if prefix else "")
        values: dict[str, Any] = {":pk": keys.ARTISTS_INDEX_PK}
        if prefix:
            values[":prefix"] = prefix
        items, last = self._query_page("GSI1", condition, values, limit, start)
        return Page[Artist](items=[artist_from_item(i) for i in items], next_cursor=encode_cursor(last))

    # ------------------------------------------------------------------ songs
    def list_songs(self, artist_id: str, limit: int, cursor: str | None) -> Page[Song]:
        pk = keys.artist_pk(artist_id)
        start = decode_cursor(cursor, expect={"PK": pk, "SK": ""})
        items, last = self._query_page(
            None, "PK = :pk AND begins_with(SK, :song)", {":pk": pk, ":song": "SONG#"}, limit, start
        )
        return Page[Song](items=[song_from_item(i) for i in items], next_cursor=encode_cursor(last))

    def song_exists(self, artist_id: str, song_id: str) -> bool:
        """Whether the artist has the song (reads only its key: a song's plays can be large)."""
        return self._get(keys.artist_pk(artist_id), keys.song_sk(song_id), projection="PK") is not None

    def song_titles(self, artist_id: str, song_ids: Iterable[str]) -> dict[str, str]:
        """Titles of the artist's songs among ``song_ids`` (unknown ids are absent)."""
        pk = keys.artist_pk(artist_id)
        found = self._batch_get(
            [(pk, keys.song_sk(s)) for s in dict.fromkeys(song_ids)], projection="song_id, title"
        )
        return {str(i["song_id"]): str(i["title"]) for i in found}

    def all_songs(self, artist_id: str) -> list[Song]:
        return [song_from_item(i) for i in self.raw_songs(artist_id)]

    def raw_songs(self, artist_id: str) -> list[dict[str, Any]]:
        """The artist's song items as stored (with their plays)."""
        return list(
            self._query_all(
                None,
                "PK = :pk AND begins_with(SK, :song)",
                {":pk": keys.artist_pk(artist_id), ":song": "SONG#"},
            )
        )

    # ------------------------------------------------------------------ shows
    def get_show(self, show_id: str) -> Show | None:
        item = self._get(keys.show_pk(show_id), keys.META)
        return show_from_item(item) if item else None

    def get_show_and_setlist(self, show_id: str) -> tuple[Show, Setlist | None] | None:
        """The show and its actual setlist in one query (both live under the show's key)."""
        items = list(self._query_all(None, "PK = :pk", {":pk": keys.show_pk(show_id)}, consistent=True))
        by_sk = {i["SK"]: i for i in items}
        if keys.META not in by_sk:
            return None
        setlist_item = by_sk.get(keys.ACTUAL_SETLIST_SK)
        return show_from_item(by_sk[keys.META]), setlist_from_item(setlist_item) if setlist_item else None

    def read_show_and_setlist(self, show_id: str) -> tuple[Show, Setlist | None] | None:
        """The show and its setlist for display (a cached store serves it from the cache)."""
        return self.get_show_and_setlist(show_id)

    def get_artist_and_venue(
        self, artist_id: str, venue_id: str | None
    ) -> tuple[Artist | None, Venue | None]:
        wanted = [(keys.artist_pk(artist_id), keys.META)]
        if venue_id:
            wanted.append((keys.venue_pk(venue_id), keys.META))
        found = {i["PK"]: i for i in self._batch_get(wanted)}
        artist = found.get(keys.artist_pk(artist_id))
        venue = found.get(keys.venue_pk(venue_id)) if venue_id else None
        return (artist_from_item(artist) if artist else None, venue_from_item(venue) if venue else None)

    def list_shows(
        self,
        *,
        artist_id: str | None,
        status: ShowStatus | None,
        date_from: dt.date | None,
        date_to: dt.date | None,
        descending: bool,
        limit: int,
        cursor: str | None,
    ) -> Page[Show]:
        """Shows by artist (GSI1) or by status (GSI2), between two dates, in date order."""
        if artist_id:
            index, pk_name, sk_name, pk = "GSI1", "GSI1PK", "GSI1SK", keys.artist_shows_gsi1pk(artist_id)
        else:
            index, pk_name, sk_name = "GSI2", "GSI2PK", "GSI2SK"
            pk = keys.status_gsi2pk((status or ShowStatus.UPCOMING).value)
        start = decode_cursor(cursor, expect={"PK": "", "SK": "", pk_name: pk, sk_name: ""})
        condition = f"{pk_name} = :pk"
        values: dict[str, Any] = {":pk": pk}
        # Sort keys are "<date>#<show id>": '#' < '~', so "<to>~" includes every show on <to>.
        low = date_from.isoformat() if date_from else None
        high = f"{date_to.isoformat()}~" if date_to else None
        if low and high:
            condition += f" AND {sk_name} BETWEEN :low AND :high"
            values.update({":low": low, ":high": high})
        elif low:
            condition += f" AND {sk_name} >= :low"
            values[":low"] = low
        elif high:
            condition += f" AND {sk_name} <= :high"
            values[":high"] = high
        filter_expression = None
        if artist_id and status:
            filter_expression = "#status = :status"
            values[":status"] = status.value
        items, last = self._query_page(
            index, condition, values, limit, start, descending=descending, filter_expression=filter_expression
        )
        return Page[Show](items=[show_from_item(i) for i in items], next_cursor=encode_cursor(last))

    # ------------------------------------------------------------------ setlists
    def artist_setlists(self, artist_id: str) -> list[tuple[str, Setlist]]:
        """Every actual setlist of an artist as (date, setlist), oldest first."""
        rows = self._query_all("GSI1", "GSI1PK = :pk", {":pk": keys.artist_setlists_gsi1pk(artist_id)})
        return [(str(i["date"]), setlist_from_item(i)) for i in rows]

    def artist_shows(self, artist_id: str) -> list[Show]:
        rows = self._query_all("GSI1", "GSI1PK = :pk", {":pk": keys.artist_shows_gsi1pk(artist_id)})
        return [show_from_item(i) for i in rows]

    def record_setlist(self, change: SetlistChange) -> None:
        """Store a show's actual setlist, its status, the songs' plays and new songs, atomically.

        Raises :class:`ChangedConcurrently` when another request recorded this show's setlist or
        created one of the new songs in the meantime (re-read and try again), :class:`Unavailable`
        when throttled, and
        :class:`Unprocessable` when the change is too large for one transaction.
        """
        show, setlist = change.show, change.setlist
        # The setlist replaces exactly the revision this change was computed from: two corrections
        # of one show at once would otherwise both move the same plays.
        put_setlist: dict[str, Any] = {"TableName": self._table, "Item": to_item(setlist_item(show, setlist))}
        if change.previous_revision is None:
            put_setlist["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            put_setlist["ConditionExpression"] = "revision = :seen"
            put_setlist["ExpressionAttributeValues"] = to_item({":seen": change.previous_revision})
        actions: list[dict[str, Any]] = [
            {"Put": put_setlist},
            {"Put": {"TableName": self._table, "Item": to_item(show_item(show))}},
        ]
        play = {play_key(show.date.isoformat(), show.show_id)}
        for song_id, title in change.added.items():
            is_new = song_id in change.new_song_ids
            update: dict[str, Any] = {
                "TableName": self._table,
                "Key": to_item({"PK": keys.artist_pk(show.artist_id), "SK": keys.song_sk(song_id)}),
                "UpdateExpression": "SET #type = :song, song_id = :id, artist_id = :artist, "
                "title = if_not_exists(title, :title) ADD plays :play",
                "ExpressionAttributeNames": {"#type": "type"},
                "ExpressionAttributeValues": to_item(
                    {
                        ":song": "song",
                        ":id": song_id,
                        ":artist": show.artist_id,
                        ":title": title,
                        ":play": play,
                    }
                ),
            }
            # A song is created once: a concurrent recording that created it first wins.
            update["ConditionExpression"] = "attribute_not_exists(PK)" if is_new else "attribute_exists(PK)"
            actions.append({"Update": update})
        for song_id in change.removed:
            actions.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"PK": keys.artist_pk(show.artist_id), "SK": keys.song_sk(song_id)}),
                        "UpdateExpression": "DELETE plays :play",
                        "ExpressionAttributeValues": to_item({":play": play}),
                    }
                }
            )
        if change.new_song_ids:
            actions.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"PK": keys.artist_pk(show.artist_id), "SK": keys.META}),
                        "UpdateExpression": "ADD song_count :n",
                        "ExpressionAttributeValues": to_item({":n": len(change.new_song_ids)}),
                    }
                }
            )
        if len(actions) > MAX_TRANSACTION_ACTIONS:
            songs = len(change.added) + len(change.removed)
            room = songs - (len(actions) - MAX_TRANSACTION_ACTIONS)
            raise Unprocessable(
                f"this change adds or drops {songs} songs; one update can hold {room}: record it in two steps",
                details={"songs_changed": songs, "limit": room},
            )
        try:
            self._db.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except CircuitOpenError as exc:
            raise unavailable_for_open_circuit(exc, "the catalogue") from exc
        except ClientError as exc:
            response: Any = exc.response
            reasons = {str(r.get("Code")) for r in response.get("CancellationReasons") or []}
            if "ConditionalCheckFailed" in reasons:
                raise ChangedConcurrently(show.show_id) from exc
            if {"ThrottlingError", "TransactionConflict"} & reasons:
                raise Unavailable(
                    "the catalogue is busy; retry shortly (nothing was changed)",
                    details={"retryable": True, "outcome": "unchanged"},
                ) from exc
            raise_unavailable_for(exc, "the catalogue")
            raise

    # ------------------------------------------------------------------ bulk (import, stats)
    def get_many(self, wanted: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """Raw items for (PK, SK) pairs that exist."""
        return self._batch_get(wanted)

    def put_many(self, items: Iterable[Mapping[str, Any]]) -> int:
        """Write raw items with BatchWriteItem (retrying unprocessed ones); returns how many."""
        count = 0
        batch: list[Mapping[str, Any]] = []
        for item in items:
            batch.append(item)
            if len(batch) == _BATCH_WRITE_LIMIT:
                count += self._write_batch(batch)
                batch = []
        if batch:
            count += self._write_batch(batch)
        return count

    # ------------------------------------------------------------------ plumbing
    def _get(self, pk: str, sk: str, *, projection: str | None = None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"TableName": self._table, "Key": to_item({"PK": pk, "SK": sk})}
        if projection:
            kwargs["ProjectionExpression"] = projection
        with unavailable_on_throttle("the catalogue"):
            response = self._db.get_item(**kwargs)
        item = response.get("Item")
        return from_item(item) if item else None

    def _batch_get(
        self, wanted: Sequence[tuple[str, str]], *, projection: str | None = None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(wanted))
        for chunk in _chunks(unique, _BATCH_GET_LIMIT):
            keys_and_attributes: dict[str, Any] = {
                "Keys": [to_item({"PK": pk, "SK": sk}) for pk, sk in chunk]
            }
            if projection:
                keys_and_attributes["ProjectionExpression"] = projection
            request: dict[str, Any] = {self._table: keys_and_attributes}
            for attempt in range(_BATCH_ATTEMPTS):
                with unavailable_on_throttle("the catalogue"):
                    response = self._db.batch_get_item(RequestItems=request)
                found += [from_item(i) for i in response.get("Responses", {}).get(self._table, [])]
                request = dict(response.get("UnprocessedKeys") or {})
                if not request:
                    break
                # Unprocessed keys mean the table is at its limit: back off before asking again.
                if attempt + 1 == _BATCH_ATTEMPTS or not pause_before_retry(attempt):
                    raise_unavailable()
        return found

    def _write_batch(self, batch: Sequence[Mapping[str, Any]]) -> int:
        request: dict[str, Any] = {self._table: [{"PutRequest": {"Item": to_item(i)}} for i in batch]}
        for attempt in range(_BATCH_ATTEMPTS):
            with unavailable_on_throttle("the catalogue"):
                response = self._db.batch_write_item(RequestItems=request)
            request = dict(response.get("UnprocessedItems") or {})
            if not request:
                break
            if attempt + 1 == _BATCH_ATTEMPTS or not pause_before_retry(attempt):
                raise_unavailable()
        return len(batch)

    def _query_page(
        self,
        index: str | None,
        condition: str,
        values: Mapping[str, Any],
        limit: int,
        start: dict[str, Any] | None,
        *,
        descending: bool = False,
        filter_expression: str | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of up to ``limit`` matching items and the key to continue from.

        A filter discards items after DynamoDB has read them, so with one each request reads
        at least ``_FILTERED_READ`` items (asking for only the missing few would take a round
        trip per item). A read that overshoots is cut at ``limit`` and the cursor then points at
        the last item returned, so the next page starts right after it.
        """
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_item(values),
            "ScanIndexForward": not descending,
        }
        if index:
            kwargs["IndexName"] = index
        if filter_expression:
            kwargs["FilterExpression"] = filter_expression
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
        key_names = ["PK", "SK", *([f"{index}PK", f"{index}SK"] if index else [])]
        raw: list[dict[str, Any]] = []
        last = start
        while True:
            wanted = limit - len(raw)
            kwargs["Limit"] = max(wanted, _FILTERED_READ) if filter_expression else wanted
            if last:
                kwargs["ExclusiveStartKey"] = last
            with unavailable_on_throttle("the catalogue"):
                response = self._db.query(**kwargs)
            raw += response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if len(raw) > limit:
                raw = raw[:limit]
                last = {name: raw[-1][name] for name in key_names}
            if not last or len(raw) == limit:
                return [from_item(i) for i in raw], last

    def _query_all(
        self, index: str | None, condition: str, values: Mapping[str, Any], *, consistent: bool = False
    ) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_item(values),
        }
        if index:
            kwargs["IndexName"] = index
        elif consistent:
            kwargs["ConsistentRead"] = True
        while True:
            with unavailable_on_throttle("the catalogue"):
                response = self._db.query(**kwargs)
            yield from (from_item(i) for i in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def raise_unavailable() -> NoReturn:
    raise Unavailable("the catalogue is busy; retry shortly", details={"retryable": True})


def _chunks[T](values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


# ---------------------------------------------------------------------- item <-> model
def artist_item(artist: Artist) -> dict[str, Any]:
    return {
        "PK": keys.artist_pk(artist.artist_id),
        "SK": keys.META,
        "type": "artist",
        "GSI1PK": keys.ARTISTS_INDEX_PK,
        "GSI1SK": f"{keys.search_name(artist.name)}#{artist.artist_id}",
        **artist.model_dump(mode="json"),
    }


def artist_from_item(item: Mapping[str, Any]) -> Artist:
    return Artist(
        artist_id=item["artist_id"],
        name=item["name"],
        song_count=item.get("song_count", 0),
        show_count=item.get("show_count", 0),
    )


def venue_item(venue: Venue) -> dict[str, Any]:
    return {
        "PK": keys.venue_pk(venue.venue_id),
        "SK": keys.META,
        "type": "venue",
        **venue.model_dump(mode="json"),
    }


def venue_from_item(item: Mapping[str, Any]) -> Venue:
    return Venue.model_validate({k: item.get(k) for k in Venue.model_fields})


def play_key(date: str, show_id: str) -> str:
    """One play of a song, as kept in the song's ``plays`` set: '<date>#<show id>'."""
    return f"{date}#{show_id}"


def song_item(song: Song, plays: Iterable[str] = ()) -> dict[str, Any]:
    """A song item. Play statistics are not stored: they derive from ``plays`` when read."""
    item: dict[str, Any] = {
        "PK": keys.artist_pk(song.artist_id),
        "SK": keys.song_sk(song.song_id),
        "type": "song",
        "song_id": song.song_id,
        "artist_id": song.artist_id,
        "title": song.title,
    }
    played = set(plays)
    if played:  # DynamoDB has no empty sets
        item["plays"] = played
    return item


def song_from_item(item: Mapping[str, Any]) -> Song:
    dates = sorted(str(p).split("#", 1)[0] for p in item.get("plays") or ())
    return Song(
        song_id=item["song_id"],
        artist_id=item["artist_id"],
        title=item["title"],
        times_played=len(dates),
        first_played=dt.date.fromisoformat(dates[0]) if dates else None,
        last_played=dt.date.fromisoformat(dates[-1]) if dates else None,
    )


def show_item(show: Show) -> dict[str, Any]:
    data = show.model_dump(mode="json")
    date = show.date.isoformat()
    return {
        "PK": keys.show_pk(show.show_id),
        "SK": keys.META,
        "type": "show",
        "GSI1PK": keys.artist_shows_gsi1pk(show.artist_id),
        "GSI1SK": keys.dated_sk(date, show.show_id),
        "GSI2PK": keys.status_gsi2pk(show.status.value),
        "GSI2SK": keys.dated_sk(date, show.show_id),
        **data,
    }


def show_from_item(item: Mapping[str, Any]) -> Show:
    return Show.model_validate({k: item[k] for k in Show.model_fields if k in item})


def setlist_item(show: Show, setlist: Setlist) -> dict[str, Any]:
    date = show.date.isoformat()
    return {
        "PK": keys.show_pk(show.show_id),
        "SK": keys.ACTUAL_SETLIST_SK,
        "type": "setlist",
        "GSI1PK": keys.artist_setlists_gsi1pk(show.artist_id),
        "GSI1SK": keys.dated_sk(date, show.show_id),
        "artist_id": show.artist_id,
        "date": date,
        **setlist.model_dump(mode="json"),
    }


def setlist_from_item(item: Mapping[str, Any]) -> Setlist:
    return Setlist(
        show_id=item["show_id"],
        kind=item.get("kind", "actual"),
        sets=[
            SetlistSet(
                name=s["name"],
                encore=s.get("encore", False),
                songs=[SetlistEntry.model_validate(e) for e in s.get("songs", [])],
            )
            for s in item.get("sets", [])
        ],
        recorded_by=item.get("recorded_by"),
        recorded_at=item.get("recorded_at"),
        revision=item.get("revision", 0),
    )
