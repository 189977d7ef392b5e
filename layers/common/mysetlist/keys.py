"""Key formats of every DynamoDB item: the only place that knows them (see docs/data-model.md)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib

# A hot show's vote writes spread over users (the votes table's partition key is show + user);
# its by-show index and its tallies are sharded so that no partition key takes more than
# ~1,000 writes per second (DynamoDB's per-partition limit) at 10,000 votes per second.
VOTE_INDEX_SHARDS = 16
TALLY_SHARDS = 8
# Each delivery writes its songs' counts into one of a few lanes (chosen from the delivery), so
# that concurrent stream shards rarely write the same tally item in the same instant
# (transactional writes to one item serialise). A song's tally is the sum of its lanes.
TALLY_LANES = 4

_SLUG_DROP = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """Lower-case ASCII slug: 'Sugar Magnolia' -> 'sugar-magnolia'. Empty for text with no letters."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _SLUG_DROP.sub("-", ascii_text.lower()).strip("-")


def search_name(name: str) -> str:
    """Normalised name for prefix search: slug without a leading 'the-' ('The Band' ~ 'band')."""
    slug = slugify(name)
    return slug.removeprefix("the-")


def shard_of(value: str, shards: int) -> int:
    """Stable shard number (CRC-32, the same in every process and language)."""
    return zlib.crc32(value.encode("utf-8")) % shards


# ---- ids
def artist_id_for(name: str) -> str:
    return slugify(name)


def song_id_for(artist_id: str, title: str) -> str:
    """Stable song id from the title; titles with no letters or digits get a hash instead."""
    slug = slugify(title) or f"t{zlib.crc32(title.strip().encode('utf-8')):08x}"
    return f"{artist_id}:{slug}"


def venue_id_for(name: str, city: str | None, country: str | None) -> str:
    parts = [slugify(name), slugify(city or ""), slugify(country or "")]
    return "-".join(p for p in parts if p)


def show_id_for(artist_id: str, date: str, disambiguator: str | None = None) -> str:
    return f"{artist_id}:{date}" + (f"-{disambiguator}" if disambiguator else "")


# ---- catalogue table (PK/SK, GSI1 by owner and date, GSI2 by status and date)
def artist_pk(artist_id: str) -> str:
    return f"ARTIST#{artist_id}"


def venue_pk(venue_id: str) -> str:
    return f"VENUE#{venue_id}"


def show_pk(show_id: str) -> str:
    return f"SHOW#{show_id}"


META = "META"
ARTISTS_INDEX_PK = "ARTISTS"
ACTUAL_SETLIST_SK = "SETLIST#actual"


def song_sk(song_id: str) -> str:
    return f"SONG#{song_id}"


def artist_shows_gsi1pk(artist_id: str) -> str:
    return f"ARTIST#{artist_id}#SHOWS"


def artist_setlists_gsi1pk(artist_id: str) -> str:
    return f"ARTIST#{artist_id}#SETLISTS"


def status_gsi2pk(status: str) -> str:
    return f"SHOWS#{status}"


def dated_sk(date: str, show_id: str) -> str:
    return f"{date}#{show_id}"


# ---- votes table (the truth) and its sharded by-show index
def vote_pk(show_id: str, user_id: str) -> str:
    return f"{show_id}#{user_id}"


def vote_index_pk(show_id: str, user_id: str) -> str:
    return f"{show_id}#{shard_of(user_id, VOTE_INDEX_SHARDS):02d}"


def vote_index_sk(song_id: str, user_id: str) -> str:
    return f"{song_id}#{user_id}"


# ---- tallies table (derived by the VoteProcessor alone)
def tally_pk(show_id: str, song_id: str) -> str:
    return f"TALLY#{show_id}#{shard_of(song_id, TALLY_SHARDS)}"


def tally_sk(song_id: str, lane: int) -> str:
    return f"{song_id}#{lane}"


def lane_of(first_sequence_number: str) -> int:
    return shard_of(first_sequence_number, TALLY_LANES)


def tally_partitions(show_id: str) -> list[str]:
    return [f"TALLY#{show_id}#{n}" for n in range(TALLY_SHARDS)]


def stream_marker_pk(stream_arn: str, first_sequence_number: str) -> str:
    """Checkpoint marker of one delivery, keyed by the stream and the delivery's first record."""
    stream = hashlib.sha256(stream_arn.encode("utf-8")).hexdigest()[:16]
    return f"CKPT#{stream}#{first_sequence_number}"


# ---- predictions table (issue 6): stored predictions and their scores under the show's key,
# the ensemble's weights (versioned) and each artist's model pointer
PREDICTION_SK = "PREDICTION"
SCORE_SK = "SCORE"
WEIGHTS_PK = "CONFIG#weights"
CURRENT_SK = "CURRENT"


def scores_gsi1pk(month: str) -> str:
    """The scores of one month (``yyyy-mm`` of ``scored_at``)."""
    return f"SCORES#{month}"


def weights_version_sk(version: int) -> str:
    return f"v{version:06d}"


def model_pk(artist_id: str) -> str:
    return f"MODEL#{artist_id}"


def model_version_sk(version: str) -> str:
    return f"v#{version}"
