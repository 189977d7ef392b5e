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
    # The EventBridge bus the VoteProcessor publishes vote events to; empty: none are published.
    event_bus_name: str = ""
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

    # --- Platform (issue 4): alerts and health history, the operators' topic, the model store.
    platform_table: str = ""
    alert_topic_arn: str = ""
    model_bucket: str = ""

    # --- Setlist predictions (issue 6): stored predictions, scores, weights and model pointers;
    # the ModelTrainer's name or ARN (the weights PATCH invokes it asynchronously).
    predictions_table: str = ""
    trainer_function: str = ""

    # --- A/B testing (issue 7): experiments, assignments, interactions and counters.
    experiments_table: str = ""

    # --- Cache (layers/common/mysetlist/cache). Defaults are the original design's.
    # Valkey endpoint: redis://host:port/0 locally, rediss://host:port in AWS (ElastiCache
    # Serverless requires TLS). Empty: the cache runs L1 only.
    cache_url: str = ""
    cache_l1_max_entries: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    cache_l2_max_entries: Annotated[int, Field(ge=1, le=100_000_000)] = 5000
    # Upper bound of the L1's bytes; the cache also keeps it under a quarter of the function's
    # memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE), whichever is smaller.
    cache_max_memory_mb: Annotated[float, Field(gt=0, le=10_240)] = 256
    cache_compression_threshold: Annotated[int, Field(ge=0)] = 1024
    cache_refresh_ahead_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.8
    # An L1 entry lives at most this long (seconds) without a version check, whatever its TTL.
    cache_l1_ttl_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # How often (seconds) a container asks Valkey whether any tag was invalidated.
    cache_version_check_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    # Past its TTL a value may still be served this long (seconds) when its loader fails.
    cache_stale_seconds: Annotated[float, Field(ge=0, le=7 * 24 * 3600)] = 3600.0
    # How long (seconds) a show's tallies may be served from the cache; 0 reads them every time.
    tallies_cache_seconds: Annotated[float, Field(ge=0, le=60)] = 2.0
    # KMS key (id or ARN) that wraps the data key for values cached with encrypt=True.
    cache_kms_key_id: str = ""
    # Valkey socket timeouts (seconds): a slow cache must cost less than the read it saves.
    valkey_timeout_seconds: Annotated[float, Field(gt=0, le=10)] = 0.25
    valkey_connect_timeout_seconds: Annotated[float, Field(gt=0, le=10)] = 0.5

    # --- Real-time voting (issue 5): velocity window, trending decay, fraud thresholds.
    velocity_window_minutes: Annotated[int, Field(ge=1, le=60)] = 5
    # Half-life of a vote's weight in trending scores, hours (a minute to 90 days).
    trending_half_life_hours: Annotated[float, Field(ge=1 / 60, le=90 * 24)] = 6.0
    # A down vote's weight in trending scores (an up vote weighs 1).
    trending_down_weight: Annotated[float, Field(ge=-1, le=1)] = 0.25
    # JSON object overriding the fraud detectors' thresholds (mysetlist.fraud.config).
    fraud_thresholds: str = ""
    # Live pushes: the WebSocket API's connections table and management endpoint
    # (https://<api>.execute-api.<region>.amazonaws.com/<stage>; the local stack sets its own).
    connections_table: str = ""
    live_management_endpoint: str = ""
    # Shows one WebSocket connection may watch at once.
    live_max_subscriptions: Annotated[int, Field(ge=1, le=100)] = 10
    # Origins (comma-separated) a browser may open the WebSocket from; empty: any.
    web_client_origin: str = ""

    # --- Rate limits: JSON object {"<budget>": "<limit>/<period seconds>"} overriding defaults.
    rate_limit_overrides: str = ""

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
