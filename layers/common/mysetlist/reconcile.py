"""The tally reconciler: recount active shows from their vote items and repair any drift.

Vote items are the truth; the VoteProcessor derives tallies from the stream and should keep
them exact (see tallies.py). The reconciler checks that, and repairs what a lost stream record
(one that expired into the on-failure queue, say) left behind. It runs while the processor
keeps writing, so:

* **Drift** of a song is ``recount - tally`` (up and down). The recount comes from the ByShow
  index (eventually consistent); the tally is read with strongly consistent queries.
* **Settled shows.** Once voting has been closed for ``SETTLE_AFTER`` (70 minutes: the
  processor's event source mapping drops records older than an hour), no stream record of
  the show can still be applied and no vote can change: its drift is exact and is repaired
  at once.
* **Open shows** (and shows closed less than ``SETTLE_AFTER`` ago): a drift may only be votes
  still in flight. Each song's drift is recorded in the show's *observation* item
  (``RECONCILE#<show>/LAST``) with the time it was first seen; a song is repaired only when
  its drift has been the same in every run for at least ``STABLE_FOR`` (10 minutes).
* **Repairs never touch the processor's items.** A correction is an ``ADD`` to the song's
  *repair lane* (lane ``TALLY_LANES``, which ``keys.lane_of`` never returns) in the song's
  tally partition, so ``TallyStore.read`` sums it like any other lane. Each transaction holds
  the corrections of at most 99 songs and the new observation, written on condition that the
  observation's version is the one read: two runs cannot apply the same correction twice.
* **Trending sums** (``mysetlist.activity``) are recomputed from the same vote items and follow
  the same rule: a song's drift is its counts' drift plus a digest of its per-era trending
  drift, and a repair adds both to the repair lane (an open show's song once both have held
  still for ``STABLE_FOR``). This also fills the new sums after the half-life is changed.
  Songs with trending drift are counted in the report (``TrendingDriftSongs``, which should be
  zero too). After each show, the trending
  sorted sets in Valkey are rebuilt from the tally items (``TrendingBoard.replace_show``),
  repairing whatever a Valkey fault or a replayed batch left there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.activity import ActivityConfig, trend_attribute, trend_sums
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import error_code, from_item, to_item
from mysetlist.models import Show, ShowStatus
from mysetlist.tallies import MAX_SONGS_PER_COMMIT, TallyStore
from mysetlist.votes_store import VotesStore, up_and_down
from mysetlist.voting import voting_closes_at

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Counts = tuple[int, int]
TrendSums = dict[int, int]

# Past the VoteProcessor's MaximumRecordAgeInSeconds (3600) with a margin: after this, no
# stream record of a closed show can still be applied.
SETTLE_AFTER = dt.timedelta(minutes=70)
# An open show's drift must be unchanged for this long before it is repaired.
STABLE_FOR = dt.timedelta(minutes=10)
# Which shows are active: upcoming ones up to this far ahead, and those closed this recently.
AHEAD = dt.timedelta(days=30)
BEHIND = dt.timedelta(days=2)
# A bound on one run's work (the schedule runs every 15 minutes).
MAX_SHOWS = 300
OBSERVATION_TTL = dt.timedelta(days=3)
OBSERVATION_SK = "LAST"
# The processor writes lanes 0 .. TALLY_LANES - 1 (keys.lane_of); this one is the reconciler's.
REPAIR_LANE = keys.TALLY_LANES
_PAGE = 100


def observation_pk(show_id: str) -> str:
    return f"RECONCILE#{show_id}"


# ---------------------------------------------------------------- the rule (pure)
@dataclass(frozen=True, slots=True)
class SongDrift:
    up: int
    down: int
    since: dt.datetime
    trend: str = ""  # a digest of the song's trending drift ("" when its sums are exact)

    @property
    def counts(self) -> Counts:
        return (self.up, self.down)


@dataclass(frozen=True, slots=True)
class Observation:
    version: int
    songs: dict[str, SongDrift]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one show: corrections to add, and the observation to store after."""

    repairs: dict[str, Counts]
    pending: dict[str, SongDrift]
    write: bool


def drift_of(truth: Mapping[str, Counts], tallies: Mapping[str, Counts]) -> dict[str, Counts]:
    """Per song, ``truth - tally``; songs without drift are left out."""
    drift: dict[str, Counts] = {}
    for song in truth.keys() | tallies.keys():
        (t_up, t_down), (c_up, c_down) = truth.get(song, (0, 0)), tallies.get(song, (0, 0))
        if (t_up - c_up, t_down - c_down) != (0, 0):
            drift[song] = (t_up - c_up, t_down - c_down)
    return drift


def is_settled(closes_at: dt.datetime, now: dt.datetime) -> bool:
    return now - closes_at >= SETTLE_AFTER


def plan(
    drift: Mapping[str, Counts],
    *,
    settled: bool,
    previous: Observation | None,
    now: dt.datetime,
    trend: Mapping[str, str] | None = None,
) -> Plan:
    """The repair rule. A settled show's drift is repaired at once. An open show's song is
    repaired when its drift (counts, and the digest of its trending drift in ``trend``) equals
    the one recorded at least ``STABLE_FOR`` ago (and in every run since); a new or changed drift
    is recorded with ``now``. Nothing is written when there is nothing to repair and the
    observation would not change."""
    digests = trend or {}
    before = previous.songs if previous else {}
    repairs: dict[str, Counts] = {}
    pending: dict[str, SongDrift] = {}
    for song in sorted(drift.keys() | digests.keys()):
        counts, digest = drift.get(song, (0, 0)), digests.get(song, "")
        seen = before.get(song)
        if settled:
            repairs[song] = counts
        elif seen is not None and seen.counts == counts and seen.trend == digest:
            if now - seen.since >= STABLE_FOR:
                repairs[song] = counts
            else:
                pending[song] = seen
        else:
            pending[song] = SongDrift(counts[0], counts[1], now, digest)
    return Plan(repairs=repairs, pending=pending, write=bool(repairs) or pending != before)


def trend_digest(drift: Mapping[int, int]) -> str:
    """A short fingerprint of one song's trending drift (to tell a stable drift from a moving one)."""
    text = ",".join(f"{era}:{amount}" for era, amount in sorted(drift.items()))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


# ---------------------------------------------------------------- storage
class ReconcileStore:
    """Strongly consistent tally reads, observations, and repairs in TalliesTable."""

    def __init__(self, client: DynamoDBClient, table: str, tallies: TallyStore) -> None:
        self._db = client
        self._table = table
        self._tallies = tallies  # its reads of the same table (lanes summed)

    @property
    def activity(self) -> ActivityConfig:
        return self._tallies.activity

    def tallies(self, show_id: str) -> dict[str, Counts]:
        """A show's tallies per song, lanes summed (as TallyStore.read, but strongly consistent:
        a run must see the repairs of the run whose observation it has just read)."""
        return self.read(show_id)[0]

    def read(self, show_id: str) -> tuple[dict[str, Counts], dict[str, TrendSums]]:
        """A show's tallies and trending sums per song (strongly consistent, lanes summed)."""
        counts = self._tallies.read(show_id, consistent=True)
        return {c.song_id: (c.up, c.down) for c in counts}, {c.song_id: dict(c.trend) for c in counts}

    def observation(self, show_id: str) -> Observation | None:
        response = self._db.get_item(
            TableName=self._table,
            Key=to_item({"PK": observation_pk(show_id), "SK": OBSERVATION_SK}),
            ConsistentRead=True,
        )
        if "Item" not in response:
            return None
        item = from_item(response["Item"])
        songs = {
            song: SongDrift(
                int(d["up"]), int(d["down"]), dt.datetime.fromisoformat(d["since"]), str(d.get("trend", ""))
            )
            for song, d in json.loads(item["drift"]).items()
        }
        return Observation(version=int(item["version"]), songs=songs)

    def commit(
        self,
        *,
        show_id: str,
        previous: Observation | None,
        repairs: Mapping[str, Counts],
        pending: Mapping[str, SongDrift],
        now: dt.datetime,
        trend_repairs: Mapping[str, Mapping[int, int]] | None = None,
    ) -> Observation:
        """Add ``repairs`` to the repair lanes and store ``pending`` as the observation, in
        transactions of at most 99 songs, each conditioned on the observation's version.
        Raises ``ClientError`` (``TransactionCanceledException``) when another run changed it."""
        version = previous.version if previous else 0
        remaining = dict(repairs)
        kept_since = {s: d.since for s, d in (previous.songs.items() if previous else ())}
        for chunk in _chunks(sorted(repairs), MAX_SONGS_PER_COMMIT) if repairs else iter([[]]):
            for song in chunk:
                del remaining[song]
            # Corrections not applied yet stay in the observation: a run that dies between
            # transactions leaves them to the next run, which finds the same drift.
            still = {s: SongDrift(c[0], c[1], kept_since.get(s, now)) for s, c in remaining.items()}
            actions: list[dict[str, Any]] = [
                self._repair(show_id, song, repairs[song], (trend_repairs or {}).get(song, {}), now)
                for song in chunk
            ]
            actions.append(self._observe(show_id, version, {**pending, **still}, now))
            self._db.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
            version += 1
        return Observation(version=version, songs=dict(pending))

    def _repair(
        self, show_id: str, song_id: str, counts: Counts, trend: Mapping[int, int], now: dt.datetime
    ) -> dict[str, Any]:
        adds = ["upvotes :up", "downvotes :down"]
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":up": counts[0],
            ":down": counts[1],
            ":show": show_id,
            ":song": song_id,
            ":now": now.isoformat(),
        }
        for era, amount in sorted(trend.items()):
            names[f"#t{era}"] = trend_attribute(era, self.activity)
            values[f":t{era}"] = amount
            adds.append(f"#t{era} :t{era}")
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": to_item(
                {"PK": keys.tally_pk(show_id, song_id), "SK": keys.tally_sk(song_id, REPAIR_LANE)}
            ),
            "UpdateExpression": f"ADD {', '.join(adds)} SET show_id = :show, song_id = :song, updated_at = :now",
            "ExpressionAttributeValues": to_item(values),
        }
        if names:
            update["ExpressionAttributeNames"] = names
        return {"Update": update}

    def _observe(
        self, show_id: str, version: int, songs: Mapping[str, SongDrift], now: dt.datetime
    ) -> dict[str, Any]:
        drift = {
            s: {
                "up": d.up,
                "down": d.down,
                "since": d.since.isoformat(),
                **({"trend": d.trend} if d.trend else {}),
            }
            for s, d in sorted(songs.items())
        }
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": to_item(
                {
                    "PK": observation_pk(show_id),
                    "SK": OBSERVATION_SK,
                    "show_id": show_id,
                    "drift": json.dumps(drift, separators=(",", ":")),
                    "version": version + 1,
                    "updated_at": now.isoformat(),
                    "expires_at": int((now + OBSERVATION_TTL).timestamp()),
                }
            ),
        }
        if version == 0:
            put["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            put["ConditionExpression"] = "version = :seen"
            put["ExpressionAttributeValues"] = to_item({":seen": version})
        return {"Put": put}


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# ---------------------------------------------------------------- one run
class RecountPort(Protocol):
    def recount(self, show_id: str) -> dict[str, Counts]: ...


class TrendingRebuild(Protocol):
    """Where a show's trending sums are rebuilt after it is reconciled (Valkey's sorted sets)."""

    def replace_show(
        self,
        show_id: str,
        artist_id: str | None,
        song_sums: Mapping[str, Mapping[int, int]],
        now: dt.datetime,
    ) -> None: ...


def trend_drift_of(truth: Mapping[str, TrendSums], tallies: Mapping[str, TrendSums]) -> dict[str, TrendSums]:
    """Per song, the per-era ``truth - tally`` of trending sums; exact songs are left out."""
    drift: dict[str, TrendSums] = {}
    for song in truth.keys() | tallies.keys():
        want, have = truth.get(song, {}), tallies.get(song, {})
        diff = {era: want.get(era, 0) - have.get(era, 0) for era in want.keys() | have.keys()}
        diff = {era: amount for era, amount in diff.items() if amount}
        if diff:
            drift[song] = diff
    return drift


@dataclass(slots=True)
class ShowResult:
    show_id: str
    settled: bool
    drift: dict[str, Counts]
    repaired: dict[str, Counts]
    outcome: str  # "clean", "observed", "repaired", "raced", "failed"
    trend_drift: int = 0  # songs whose trending sums drifted


@dataclass(slots=True)
class RunReport:
    shows: list[ShowResult] = field(default_factory=list)
    truncated: bool = False

    @property
    def drift_votes(self) -> int:
        return sum(abs(up) + abs(down) for r in self.shows for up, down in r.drift.values())

    @property
    def drift_songs(self) -> int:
        return sum(len(r.drift) for r in self.shows)

    @property
    def trend_drift_songs(self) -> int:
        return sum(r.trend_drift for r in self.shows)

    @property
    def repairs(self) -> int:
        return sum(len(r.repaired) for r in self.shows)

    @property
    def failed(self) -> list[str]:
        return [r.show_id for r in self.shows if r.outcome == "failed"]


def active_shows(
    catalog: CatalogStore, now: dt.datetime, *, limit: int = MAX_SHOWS
) -> tuple[list[Show], bool]:
    """Shows whose voting closed less than ``BEHIND`` ago (completed or not yet marked so)
    first, then upcoming ones up to ``AHEAD``; at most ``limit``. Also says if it stopped short."""
    today = now.date()
    shows: dict[str, Show] = {}
    for status, low, high in (
        (ShowStatus.COMPLETED, today - BEHIND - dt.timedelta(days=1), today),
        (ShowStatus.UPCOMING, today - BEHIND - dt.timedelta(days=1), (now + AHEAD).date()),
    ):
        cursor: str | None = None
        while True:
            page = catalog.list_shows(
                artist_id=None,
                status=status,
                date_from=low,
                date_to=high,
                descending=False,
                limit=_PAGE,
                cursor=cursor,
            )
            for show in page.items:
                if now - voting_closes_at(show) <= BEHIND and show.show_id not in shows:
                    if len(shows) == limit:
                        return list(shows.values()), True
                    shows[show.show_id] = show
            cursor = page.next_cursor
            if not cursor:
                break
    return list(shows.values()), False


def reconcile_show(
    show: Show,
    votes: RecountPort,
    store: ReconcileStore,
    now: dt.datetime,
    log: Callable[..., None],
    trending: TrendingRebuild | None = None,
) -> ShowResult:
    settled = is_settled(voting_closes_at(show), now)
    # The observation first, strongly consistent, then the tallies: a run that sees another
    # run's observation also sees that run's repairs.
    previous = store.observation(show.show_id)
    tallies, tally_trends = store.read(show.show_id)
    standing = getattr(votes, "standing_votes", None)
    trend_drift: dict[str, TrendSums] = {}
    if standing is not None:
        states = standing(show.show_id)
        truth = {song: up_and_down(votes_of_song) for song, votes_of_song in states.items()}
        truth_trends = {
            song: trend_sums(votes_of_song, store.activity) for song, votes_of_song in states.items()
        }
        trend_drift = trend_drift_of(truth_trends, tally_trends)
    else:
        truth = votes.recount(show.show_id)
    drift = drift_of(truth, tallies)
    digests = {song: trend_digest(amounts) for song, amounts in trend_drift.items()}
    decided = plan(drift, settled=settled, previous=previous, now=now, trend=digests)
    repairs = dict(decided.repairs)
    trend_repairs = {song: trend_drift[song] for song in repairs if song in trend_drift}
    clean = not drift and not trend_drift
    result = ShowResult(
        show.show_id, settled, drift, {}, "clean" if clean else "observed", trend_drift=len(trend_drift)
    )
    if decided.write or trend_repairs:
        try:
            store.commit(
                show_id=show.show_id,
                previous=previous,
                repairs=repairs,
                pending=decided.pending,
                now=now,
                trend_repairs=trend_repairs,
            )
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons: Any = exc.response.get("CancellationReasons") or []
            if not (reasons and reasons[-1].get("Code") == "ConditionalCheckFailed"):
                raise
            result.outcome = "raced"  # another run changed the observation: it owns this round
            return result
        if repairs:
            result.repaired = dict(repairs)
            result.outcome = "repaired"
            for song, amounts in trend_repairs.items():
                tally_trends[song] = {
                    era: tally_trends.get(song, {}).get(era, 0) + amounts.get(era, 0)
                    for era in tally_trends.get(song, {}).keys() | amounts.keys()
                }
            log(
                "tally drift repaired",
                extra={
                    "show_id": show.show_id,
                    "settled": settled,
                    "drift": {s: {"up": u, "down": d} for s, (u, d) in repairs.items()},
                    "trending_songs": sorted(trend_repairs),
                },
            )
    if trending is not None:
        _rebuild_trending(trending, show, tally_trends, now, log)
    return result


def _rebuild_trending(
    trending: TrendingRebuild,
    show: Show,
    sums: Mapping[str, TrendSums],
    now: dt.datetime,
    log: Callable[..., None],
) -> None:
    """Valkey's sorted sets of the show, rebuilt from its tally items (a fault is only logged:
    the sets are a view, and the next run tries again)."""
    try:
        trending.replace_show(show.show_id, show.artist_id, sums, now)
    except Exception as exc:
        log("trending sets not rebuilt", extra={"show_id": show.show_id, "error": repr(exc)[:300]})


def reconcile(
    catalog: CatalogStore,
    votes: VotesStore | RecountPort,
    store: ReconcileStore,
    now: dt.datetime,
    *,
    log: Callable[..., None],
    log_error: Callable[..., None],
    time_left: Callable[[], float] = lambda: float("inf"),
    min_seconds_per_show: float = 5.0,
    limit: int = MAX_SHOWS,
    trending: TrendingRebuild | None = None,
) -> RunReport:
    """One reconciler run over the active shows."""
    shows, truncated = active_shows(catalog, now, limit=limit)
    report = RunReport(truncated=truncated)
    for show in shows:
        if time_left() < min_seconds_per_show:
            report.truncated = True
            break
        try:
            report.shows.append(reconcile_show(show, votes, store, now, log, trending))
        except Exception:  # one show's failure must not stop the others
            log_error("tally reconciliation failed", extra={"show_id": show.show_id})
            report.shows.append(ShowResult(show.show_id, False, {}, {}, "failed"))
    return report
