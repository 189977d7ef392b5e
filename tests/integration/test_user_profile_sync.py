"""UserProfileSync: a confirmed sign-up gets a profile and the 'user' group, once."""

from __future__ import annotations

from typing import Any

import boto3

from tests.harness.events import LambdaContext, load_event
from tests.support.template import load_handler


def test_confirmed_sign_up_gets_a_profile_and_the_user_group(
    aws: dict[str, str], dynamodb: Any, settings: Any
) -> None:
    cognito = boto3.client("cognito-idp")
    pool = cognito.create_user_pool(PoolName="it-pool")["UserPool"]["Id"]
    cognito.create_group(GroupName="user", UserPoolId=pool)
    event = load_event("user_profile_sync/post_confirmation.json")
    event["userPoolId"] = pool
    cognito.admin_create_user(UserPoolId=pool, Username=event["userName"])
    handler = load_handler("UserProfileSync")

    assert handler(event, LambdaContext()) == event
    first = dynamodb.get_item(
        TableName=settings.users_table, Key={"PK": {"S": f"USER#{event['userName']}"}, "SK": {"S": "PROFILE"}}
    )["Item"]
    assert first["display_name"]["S"] == "deadhead"
    groups = cognito.admin_list_groups_for_user(UserPoolId=pool, Username=event["userName"])["Groups"]
    assert [g["GroupName"] for g in groups] == ["user"]

    handler(event, LambdaContext())  # Cognito may fire the trigger again: the first profile stays
    again = dynamodb.get_item(
        TableName=settings.users_table, Key={"PK": {"S": f"USER#{event['userName']}"}, "SK": {"S": "PROFILE"}}
    )["Item"]
    assert again == first


def test_other_triggers_change_nothing(aws: dict[str, str], dynamodb: Any, settings: Any) -> None:
    event = load_event("user_profile_sync/post_confirmation.json")
    event["triggerSource"] = "PostConfirmation_ConfirmForgotPassword"
    event["request"]["userAttributes"]["sub"] = "someone-new"
    assert load_handler("UserProfileSync")(event, LambdaContext()) == event
    assert "Item" not in dynamodb.get_item(
        TableName=settings.users_table, Key={"PK": {"S": "USER#someone-new"}, "SK": {"S": "PROFILE"}}
    )
