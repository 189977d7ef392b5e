"""UserProfileSync: Cognito post-confirmation trigger.

Creates the user's profile (kept if it exists: a trigger can fire again) and puts the new user
in the ``user`` group. Roles come from groups alone; users can never pick their own.
"""

from __future__ import annotations

from typing import Any

from mysetlist.aws import service_client
from mysetlist.dynamo import client_for
from mysetlist.observability import entrypoint
from mysetlist.profiles import ProfileStore, profile_from_cognito_event
from mysetlist.settings import load_settings

settings = load_settings()
settings.require("users_table")
profiles = ProfileStore(client_for(settings), settings.users_table)
cognito = service_client("cognito-idp", settings)

DEFAULT_GROUP = "user"


@entrypoint()
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("triggerSource") != "PostConfirmation_ConfirmSignUp":
        return event  # e.g. a confirmed password reset: nothing to create
    profiles.create_if_absent(profile_from_cognito_event(event))
    cognito.admin_add_user_to_group(
        UserPoolId=event["userPoolId"], Username=event["userName"], GroupName=DEFAULT_GROUP
    )
    return event  # Cognito triggers must return the event
