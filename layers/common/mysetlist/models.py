"""The catalogue and voting models: API bodies and domain values, validated at the edge."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

Id = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9:._-]*$")]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


class ShowStatus(StrEnum):
    UPCOMING = "upcoming"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class VoteType(StrEnum):
    UP = "up"
    DOWN = "down"


class VoteAction(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    REMOVED = "removed"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Artist(Model):
    artist_id: Id
    name: Title
    song_count: int = 0
    show_count: int = 0


class Venue(Model):
    venue_id: Id
    name: Title
    city: str | None = None
    region: str | None = None
    country: str | None = None
    timezone: str | None = None


class Song(Model):
    song_id: Id
    artist_id: Id
    title: Title
    times_played: int = 0
    first_played: dt.date | None = None
    last_played: dt.date | None = None


class Show(Model):
    show_id: Id
    artist_id: Id
    venue_id: Id | None = None
    date: dt.date
    local_time: str | None = Field(default=None, description="Doors or start time at the venue, HH:MM")
    timezone: str | None = Field(default=None, description="IANA time zone of the venue")
    starts_at: dt.datetime | None = Field(
        default=None, description="Start in UTC, when time and zone are known"
    )
    status: ShowStatus
    tour: str | None = None
    name: str | None = None


class SetlistEntry(Model):
    position: int = Field(ge=1, description="1-based position over the whole show")
    song_id: Id
    title: Title
    segue: bool = Field(default=False, description="Flows into the next song without a break")


class SetlistSet(Model):
    name: Title
    encore: bool = False
    songs: list[SetlistEntry]


class Setlist(Model):
    show_id: Id
    kind: Literal["actual", "predicted"] = "actual"
    sets: list[SetlistSet]
    recorded_by: str | None = None
    recorded_at: dt.datetime | None = None
    revision: int = Field(default=0, ge=0, description="Bumped by each recording through the API")

    @property
    def song_ids(self) -> list[str]:
        return [e.song_id for s in self.sets for e in s.songs]


class ShowDetail(Model):
    show: Show
    venue: Venue | None
    artist: Artist
    setlist: Setlist | None


class Page[T](Model):
    items: list[T]
    next_cursor: str | None = None


# ---- requests
class SetlistSetIn(Model):
    name: Title = "Set 1"
    encore: bool = False
    songs: Annotated[list[Title], Field(min_length=1, max_length=100)] = Field(
        description="Song titles in the order played"
    )
    segues: list[bool] | None = Field(default=None, description="Per song: flows into the next one")

    @model_validator(mode="after")
    def _segues_match(self) -> SetlistSetIn:
        if self.segues is not None and len(self.segues) != len(self.songs):
            raise ValueError("segues must have one entry per song")
        return self


class SetlistIn(Model):
    """Body of PUT /api/shows/{id}/setlist: the actual setlist, sets in order."""

    sets: Annotated[list[SetlistSetIn], Field(min_length=1, max_length=10)]
    mark_completed: bool = Field(default=True, description="Also mark the show completed (closes voting)")


class VoteIn(Model):
    show_id: Id
    song_id: Id
    vote_type: VoteType

    @field_validator("vote_type", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class VoteOut(Model):
    action: VoteAction
    show_id: str
    song_id: str
    vote_type: VoteType | None = Field(description="The caller's vote after the call; null once removed")


class SongTally(Model):
    song_id: str
    title: str | None = None
    upvotes: int
    downvotes: int
    net: int
    vote_velocity: float = Field(
        default=0.0, description="Votes per minute for this song over the sliding window (5 minutes)"
    )
    trending_score: float = Field(default=0.0, description="Time-decayed vote weight (docs/realtime.md)")
    positive_ratio: float | None = Field(
        default=None, description="Up votes / all votes; absent while the song has none"
    )


class ShowVotes(Model):
    show_id: str
    songs: list[SongTally]
    total_upvotes: int
    total_downvotes: int
    vote_velocity: float = Field(
        default=0.0, description="Votes per minute for the whole show over the sliding window (5 minutes)"
    )
    trending_score: float = Field(default=0.0, description="The show's trending score (sum of its songs')")
    my_votes: dict[str, VoteType] | None = Field(
        default=None, description="The signed-in caller's votes by song id (absent when anonymous)"
    )


class TrendingScope(StrEnum):
    SONGS = "songs"
    SHOWS = "shows"


class TrendingItem(Model):
    """One entry of a trending list, with the original design's ``trending_metrics`` fields."""

    show_id: str
    song_id: str | None = Field(default=None, description="Set for scope=songs")
    title: str | None = None
    trending_score: float = Field(description="Time-decayed vote weight now (docs/realtime.md)")
    vote_velocity: float = Field(description="Votes per minute over the sliding window (5 minutes)")
    total_votes: int = Field(description="Standing up and down votes")
    positive_ratio: float | None = Field(default=None, description="Up votes / all votes")


class Trending(Model):
    scope: TrendingScope
    show_id: str | None = None
    artist_id: str | None = None
    half_life_hours: float
    generated_at: dt.datetime
    ranked_by: Literal["valkey", "tallies"] = Field(
        description="Where the ranking came from: Valkey's sorted sets, or the tally items while Valkey is down"
    )
    items: list[TrendingItem]
