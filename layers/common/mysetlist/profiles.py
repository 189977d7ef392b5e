"""User profiles (users table): created when a Cognito sign-up is confirmed."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from mysetlist.dynamo import error_code, from_item, to_item
from mysetlist.observability import logger
from mysetlist.timestamps import parse_utc

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from mysetlist.cache.core import Cache

PROFILE_SK = "PROFILE"


class UserProfile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str
    username: str
    email: str | None = None
    display_name: str | None = None
    created_at: dt.datetime


def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


def profile_from_cognito_event(event: dict[str, Any], now: dt.datetime | None = None) -> UserProfile:
    attributes = event["request"]["userAttributes"]
    return UserProfile(
        user_id=attributes["sub"],
        username=event["userName"],
        email=attributes.get("email"),
        display_name=attributes.get("preferred_username") or attributes.get("name"),
        created_at=now or dt.datetime.now(dt.UTC),
    )


class ProfileStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    def create_if_absent(self, profile: UserProfile) -> bool:
        """Store the profile unless one exists (its first creation time is kept). True if created."""
        item = {"PK": user_pk(profile.user_id), "SK": PROFILE_SK, **profile.model_dump(mode="json")}
        try:
            self._db.put_item(
                TableName=self._table, Item=to_item(item), ConditionExpression="attribute_not_exists(PK)"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def created_at(self, user_id: str) -> dt.datetime | None:
        """When the user's account was created; None when no profile is stored."""
        response = self._db.get_item(
            TableName=self._table,
            Key=to_item({"PK": user_pk(user_id), "SK": PROFILE_SK}),
            ProjectionExpression="created_at",
        )
        stamp = from_item(response["Item"]).get("created_at") if "Item" in response else None
        if not stamp:
            return None
        return parse_utc(str(stamp))


def cached_account_created_at(
    profiles: ProfileStore | None, cache: Cache, user_id: str
) -> dt.datetime | None:
    """A caller's account creation time, cached for an hour (it never changes); None when there
    is no users table, no profile, or the read fails now. It is a signal (fraud detection, new or
    returning user), never a requirement: a failure is logged and the request goes on."""
    if profiles is None:
        return None
    store = profiles

    def load() -> str:
        created = store.created_at(user_id)
        return created.isoformat() if created else ""

    try:
        stamp = cache.get(f"account-created:{user_id}", load, ttl=3600)
    except Exception:  # a signal, not a requirement
        logger.warning("could not read the caller's account creation time", exc_info=True)
        return None
    return dt.datetime.fromisoformat(stamp) if stamp else None
