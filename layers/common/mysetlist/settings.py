"""Settings: one pydantic model, validated once per container at cold start."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class SettingsError(RuntimeError):
    """The function's environment is missing or has invalid settings (a deployment error)."""


class Settings(BaseModel):
    """What every function may need; each field maps to one environment variable (upper case)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    environment: str = "dev"
    catalog_table: str = ""
    votes_table: str = ""
    tallies_table: str = ""
    users_table: str = ""
    # The function's own dead-letter queue (unreadable stream records go there).
    dead_letter_queue_url: str = ""
    # Local stack and tests only: where the AWS APIs live (moto's server). Empty in AWS.
    aws_endpoint_url: str = ""
    # Seconds a DynamoDB request may take: short in AWS so a stuck call fails fast and is
    # retried; the local stack raises it (moto copies whole tables in every transaction).
    dynamodb_read_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    aws_region: str = "us-east-1"
    # Tokens sent to anonymous routes are verified in the function, as the JWT authorizer would.
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # Lambda's stream retries give up after this age; checkpoint markers must outlive it.
    stream_marker_ttl_seconds: Annotated[int, Field(ge=3600)] = 2 * 24 * 3600
    max_page_size: Annotated[int, Field(ge=1, le=1000)] = 100

    def require(self, *names: str) -> None:
        """Fail fast (at cold start) when a function is deployed without a setting it needs."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError(f"missing settings: {', '.join(n.upper() for n in missing)}")


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Read the settings from the environment (cached for the container's life)."""
    values = {name: os.environ[name.upper()] for name in Settings.model_fields if name.upper() in os.environ}
    if "aws_region" not in values and "AWS_DEFAULT_REGION" in os.environ:
        values["aws_region"] = os.environ["AWS_DEFAULT_REGION"]
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(str(exc)) from exc
