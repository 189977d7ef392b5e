"""DynamoDB access for vote items: the truth from which every tally is derived.

A vote item is keyed by (show + user, song): a hot show's writes spread over its voters'
partitions. The ByShow index is sharded 16 ways per show for recounts.
One vote per user per song per show is enforced by conditional writes, never by a read first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.activity import VoteState
from mysetlist.dynamo import error_code, from_item, to_item, unavailable_on_throttle
from mysetlist.errors import Conflict
from mysetlist.models import VoteAction, VoteType
from mysetlist.signals import UNCOUNTED_STATES
from mysetlist.timestamps import epoch_of

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Attributes the store writes itself; caller-supplied attributes never override them.
_OWN_ATTRIBUTES = frozenset(
    {
        "PK",
        "SK",
        "ShowShard",
        "SongUser",
        "show_id",
        "song_id",
        "user_id",
        "vote_type",
        "created_at",
        "updated_at",
        "moderation",
        "ModerationKey",
        "FlaggedAt",
        "flag",
    }
)

# Each round trip either wins or learns the current vote; losing this many races in a row
# means someone is hammering the same vote, and the client should retry.
_MAX_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class VoteWrite:
    action: VoteAction
    vote_type: VoteType | None


class VotesStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    def toggle(
        self,
        *,
        show_id: str,
        song_id: str,
        user_id: str,
        vote_type: VoteType,
        now: dt.datetime,
        attributes: Mapping[str, Any] | None = None,
    ) -> VoteWrite:
        """Create the vote, or remove it when it is the same again, or switch it to ``vote_type``.
        ``attributes`` (the artist and the client's signals) are stored with a created or
        switched vote.

        Each branch is a single conditional write on the current state; when a concurrent
        request changed the vote in between, the write fails and the loop starts from the
        state DynamoDB returned with the failure.
        """
        key = {"PK": keys.vote_pk(show_id, user_id), "SK": song_id}
        stamp = now.isoformat()
        extra = {k: v for k, v in (attributes or {}).items() if k not in _OWN_ATTRIBUTES}
        current: dict[str, Any] | None = None
        for _attempt in range(_MAX_ATTEMPTS):
            try:
                if current is None:
                    self._put_new(key, show_id, song_id, user_id, vote_type, stamp, extra)
                    return VoteWrite(VoteAction.CREATED, vote_type)
                if current.get("vote_type") == vote_type.value:
                    self._delete_if(key, vote_type)
                    return VoteWrite(VoteAction.REMOVED, None)
                self._switch(key, str(current.get("vote_type")), vote_type, stamp, extra)
                return VoteWrite(VoteAction.UPDATED, vote_type)
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                old: Any = exc.response.get("Item")
                current = from_item(old) if old else None
        raise Conflict("this vote is being changed by another request; retry", details={"retryable": True})

    def _put_new(
        self,
        key: dict[str, str],
        show_id: str,
        song_id: str,
        user_id: str,
        vote_type: VoteType,
        stamp: str,
        extra: Mapping[str, Any],
    ) -> None:
        item = {
            **extra,
            **key,
            "ShowShard": keys.vote_index_pk(show_id, user_id),
            "SongUser": keys.vote_index_sk(song_id, user_id),
            "show_id": show_id,
            "song_id": song_id,
            "user_id": user_id,
            "vote_type": vote_type.value,
            "created_at": stamp,
            "updated_at": stamp,
        }
        with unavailable_on_throttle("voting"):
            self._db.put_item(
                TableName=self._table,
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(PK)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

    def _delete_if(self, key: dict[str, str], vote_type: VoteType) -> None:
        with unavailable_on_throttle("voting"):
            self._db.delete_item(
                TableName=self._table,
                Key=to_item(key),
                ConditionExpression="vote_type = :current",
                ExpressionAttributeValues=to_item({":current": vote_type.value}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

    def _switch(
        self, key: dict[str, str], old: str, vote_type: VoteType, stamp: str, extra: Mapping[str, Any]
    ) -> None:
        """Switch the vote's type; the signals become this request's (a quarantined vote stays
        quarantined: its moderation attributes are not touched)."""
        names = {f"#x{i}": name for i, name in enumerate(extra)}
        values: dict[str, Any] = {":new": vote_type.value, ":old": old, ":now": stamp}
        values.update({f":x{i}": value for i, value in enumerate(extra.values())})
        sets = ["vote_type = :new", "updated_at = :now", *(f"#x{i} = :x{i}" for i in range(len(extra)))]
        kwargs: dict[str, Any] = {}
        if names:
            kwargs["ExpressionAttributeNames"] = names
        with unavailable_on_throttle("voting"):
            self._db.update_item(
                TableName=self._table,
                Key=to_item(key),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="vote_type = :old",
                ExpressionAttributeValues=to_item(values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **kwargs,
            )

    def votes_of(self, show_id: str, user_id: str) -> dict[str, VoteType]:
        """The user's votes on a show by song id (one query: they share a partition)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": to_item({":pk": keys.vote_pk(show_id, user_id)}),
            "ProjectionExpression": "SK, vote_type",
            "ConsistentRead": True,
        }
        votes: dict[str, VoteType] = {}
        while True:
            with unavailable_on_throttle("voting"):
                response = self._db.query(**kwargs)
            for raw in response.get("Items", []):
                item = from_item(raw)
                votes[item["SK"]] = VoteType(item["vote_type"])
            if "LastEvaluatedKey" not in response:
                return votes
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def recount(self, show_id: str) -> dict[str, tuple[int, int]]:
        """Up and down votes per song of a show, counted from the vote items (ByShow index).
        Votes held by moderation (quarantined, rejected) count nowhere, as in the tallies."""
        return {song: up_and_down(states) for song, states in self.standing_votes(show_id).items()}

    def standing_votes(self, show_id: str) -> dict[str, list[VoteState]]:
        """The counted votes of a show per song, with the time of their current state: what
        tallies, velocity and trending sums are recomputed from (ByShow index)."""
        standing: dict[str, list[VoteState]] = {}
        for shard in range(keys.VOTE_INDEX_SHARDS):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": "ByShow",
                "KeyConditionExpression": "ShowShard = :pk",
                "ExpressionAttributeValues": to_item({":pk": f"{show_id}#{shard:02d}"}),
                "ProjectionExpression": "song_id, vote_type, created_at, updated_at, moderation",
            }
            while True:
                response = self._db.query(**kwargs)
                for raw in response.get("Items", []):
                    item = from_item(raw)
                    if item.get("moderation") in UNCOUNTED_STATES:
                        continue
                    if item.get("vote_type") not in (VoteType.UP.value, VoteType.DOWN.value):
                        continue
                    at = epoch_of(str(item.get("updated_at") or item["created_at"]))
                    standing.setdefault(item["song_id"], []).append(VoteState(item["vote_type"], at))
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return standing


def up_and_down(states: Sequence[VoteState]) -> tuple[int, int]:
    """How many of a song's standing votes are up, and how many down."""
    up = sum(1 for state in states if state.vote_type == VoteType.UP.value)
    return (up, len(states) - up)
