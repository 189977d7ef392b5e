"""An artist's history of actual setlists, read from the catalogue (docs/data-model.md, C12/C13).

Songs are keyed by the catalogue's song id (titles come from the setlist entries, for display);
a show's venue, tour and city come from its show item and its venue item. A history for a show
holds only the setlists dated *before* the show's date: a prediction never sees the show's own
setlist, later ones, or another show of the same day.

Reading an artist's every setlist costs about 600 read units for the Grateful Dead's 2,076
shows, so the served path starts from the history snapshot saved with the model and reads only
the setlists recorded after it (:meth:`CatalogHistory.extend`): one query of a few items.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mysetlist import keys
from mysetlist.catalog_store import CatalogStore, setlist_from_item, show_from_item, venue_from_item
from mysetlist.dynamo import from_item, to_item, unavailable_on_throttle
from mysetlist.models import Setlist
from mysetlist.models import Show as CatalogShow
from mysetlist.predictions.history import ArtistHistory, Show, show_parts

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

WHAT = "the catalogue"


@dataclass
class SetlistHistory:
    """An artist's history with the display titles of its songs and where it ends.

    ``last_key`` is the catalogue sort key (``<date>#<show_id>``) of the newest setlist read, or
    None when there was none: the next read starts after it.
    """

    artist_id: str
    history: ArtistHistory
    titles: dict[str, str] = field(default_factory=dict)
    last_key: str | None = None

    @property
    def last_show(self) -> Show | None:
        return self.history.shows[-1] if self.history.shows else None

    def before(self, day: dt.date) -> SetlistHistory:
        """Only the shows dated before ``day``."""
        n = sum(1 for show in self.history.shows if show.date < day)
        if n == len(self.history.shows):
            return self
        kept = self.history.prefix(n)
        last = kept.shows[-1] if kept.shows else None
        return SetlistHistory(
            self.artist_id,
            kept,
            {k: v for k, v in self.titles.items() if k in kept.song_ids},
            keys.dated_sk(last.date.isoformat(), last.show_id) if last else None,
        )

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: the history (compact), the titles and where it ends."""
        return {
            "artist_id": self.artist_id,
            "history": self.history.to_json(),
            "titles": self.titles,
            "last_key": self.last_key,
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> SetlistHistory:
        return cls(
            artist_id=str(data["artist_id"]),
            history=ArtistHistory.from_json(data["history"]),
            titles={str(k): str(v) for k, v in (data.get("titles") or {}).items()},
            last_key=data.get("last_key"),
        )


def history_show(
    setlist: Setlist,
    show: CatalogShow | None,
    artist_id: str,
    day: dt.date,
    city: str | None,
    country: str | None,
) -> Show:
    """A history :class:`Show` from the catalogue's setlist and show (song keys are song ids)."""
    parts = show_parts([(s.name, s.encore, [e.song_id for e in s.songs]) for s in setlist.sets])
    return Show(
        show_id=setlist.show_id,
        artist=artist_id,
        date=day,
        venue=show.venue_id if show else None,
        city=city,
        country=country,
        tour=show.tour if show else None,
        songs=parts.songs,
        roles=parts.roles,
        slots=parts.slots,
    )


class CatalogHistory:
    """Builds :class:`SetlistHistory` values from the catalogue table."""

    def __init__(self, catalog: CatalogStore, client: DynamoDBClient, table: str) -> None:
        self.catalog = catalog
        self._db = client
        self._table = table

    # ------------------------------------------------------------------ histories
    def full(self, artist_id: str, *, before: dt.date | None = None) -> SetlistHistory:
        """Every setlist of the artist (those dated before ``before`` only, when given)."""
        rows = list(self._setlists(artist_id, after=None, before=before))
        return self._build(artist_id, rows, base=None)

    def extend(self, base: SetlistHistory, *, before: dt.date | None = None) -> SetlistHistory:
        """``base`` plus the setlists recorded after its end (dated before ``before``, when
        given). A setlist corrected since the snapshot keeps the snapshot's version until the
        trainer retrains (it does when the correction arrives on the stream)."""
        if before is not None:
            base = base.before(before)
        rows = list(self._setlists(base.artist_id, after=base.last_key, before=before))
        if not rows:
            return base
        return self._build(base.artist_id, rows, base=base)

    def newest_setlist_key(self, artist_id: str) -> str | None:
        """The sort key (``<date>#<show_id>``) of the artist's newest setlist; None without one."""
        with unavailable_on_throttle(WHAT):
            response = self._db.query(
                TableName=self._table,
                IndexName="GSI1",
                KeyConditionExpression="GSI1PK = :pk",
                ExpressionAttributeValues=to_item({":pk": keys.artist_setlists_gsi1pk(artist_id)}),
                ProjectionExpression="GSI1SK",
                ScanIndexForward=False,
                Limit=1,
            )
        items = response.get("Items") or []
        return str(from_item(items[0])["GSI1SK"]) if items else None

    def show_place(self, show: CatalogShow) -> tuple[str | None, str | None]:
        """The city and country of a show's venue (None, None when it has none)."""
        if not show.venue_id:
            return None, None
        venues = self._venues([show.venue_id])
        return venues.get(show.venue_id, (None, None))

    def target_show(self, show: CatalogShow) -> Show:
        """The show to predict, as the model sees it (no songs)."""
        city, country = self.show_place(show)
        return Show(
            show_id=show.show_id,
            artist=show.artist_id,
            date=show.date,
            venue=show.venue_id,
            city=city,
            country=country,
            tour=show.tour,
        )

    # ------------------------------------------------------------------ plumbing
    def _build(
        self, artist_id: str, rows: Sequence[tuple[str, dt.date, Setlist]], *, base: SetlistHistory | None
    ) -> SetlistHistory:
        shows = self._shows([setlist.show_id for _, _, setlist in rows])
        venues = self._venues({s.venue_id for s in shows.values() if s.venue_id})
        titles = dict(base.titles) if base else {}
        new: list[Show] = []
        for _, day, setlist in rows:
            show = shows.get(setlist.show_id)
            city, country = (
                venues.get(show.venue_id, (None, None)) if show and show.venue_id else (None, None)
            )
            new.append(history_show(setlist, show, artist_id, day, city, country))
            for entry in (e for s in setlist.sets for e in s.songs):
                titles[entry.song_id] = entry.title
        earlier = base.history.shows if base else []
        history = ArtistHistory.build(artist_id, [*earlier, *new])
        return SetlistHistory(
            artist_id, history, titles, rows[-1][0] if rows else (base.last_key if base else None)
        )

    def _setlists(
        self, artist_id: str, *, after: str | None, before: dt.date | None
    ) -> Iterator[tuple[str, dt.date, Setlist]]:
        """(sort key, date, setlist) of the artist's setlists after ``after`` (a sort key) and
        dated before ``before``, oldest first (C12)."""
        condition = "GSI1PK = :pk"
        values: dict[str, Any] = {":pk": keys.artist_setlists_gsi1pk(artist_id)}
        # Sort keys are "<date>#<show id>": "<day>" sorts before every setlist of that day.
        if after is not None:
            condition += " AND GSI1SK > :after"
            values[":after"] = after
        elif before is not None:
            condition += " AND GSI1SK < :before"
            values[":before"] = before.isoformat()
        limit = before.isoformat() if before is not None else None
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "GSI1",
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_item(values),
        }
        while True:
            with unavailable_on_throttle(WHAT):
                response = self._db.query(**kwargs)
            for raw in response.get("Items", []):
                item = from_item(raw)
                key = str(item["GSI1SK"])
                if limit is not None and key >= limit:
                    return  # oldest first: every later one is on or after ``before`` too
                yield key, dt.date.fromisoformat(str(item["date"])), setlist_from_item(item)
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _shows(self, show_ids: Iterable[str]) -> dict[str, CatalogShow]:
        wanted = [(keys.show_pk(s), keys.META) for s in dict.fromkeys(show_ids)]
        return {str(i["show_id"]): show_from_item(i) for i in self.catalog.get_many(wanted)} if wanted else {}

    def _venues(self, venue_ids: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        wanted = [(keys.venue_pk(v), keys.META) for v in dict.fromkeys(venue_ids)]
        if not wanted:
            return {}
        found = (venue_from_item(i) for i in self.catalog.get_many(wanted))
        return {v.venue_id: (v.city, v.country) for v in found}
