"""Integration tier: handlers in-process, events from ``events/``, AWS mocked by moto.

Tables come from template.yaml (tests.support.template), never from a copy of their schema.
The mock starts before any client exists: handler modules create theirs at import.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws

from tests.support.template import create_event_buses, create_tables, default_template, load_handler
from tests.support.valkey import LocalValkey, running_valkey

AUDIENCE = "integration-client"
SAMPLE = Path(__file__).resolve().parents[1] / "local_stack" / "sample_data" / "grateful-dead.jsonl"

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "MySetlistTests",
        "POWERTOOLS_SERVICE_NAME": "integration-tests",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
)


class Issuer:
    """A token issuer on loopback: serves its JWKS like Cognito, signs tokens like Cognito."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()

        def b64(value: int) -> str:
            import base64

            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")

        jwks = json.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "kid": "it-1",
                        "use": "sig",
                        "alg": "RS256",
                        "n": b64(numbers.n),
                        "e": b64(numbers.e),
                    }
                ]
            }
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path.endswith("/.well-known/jwks.json") else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pool"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, user_id: str, *groups: str, lifetime: int = 600, **extra: Any) -> str:
        import time

        import jwt

        now = int(time.time())
        claims = {
            "sub": user_id,
            "iss": self.url,
            "client_id": AUDIENCE,
            "token_use": "access",
            "cognito:groups": list(groups),
            "iat": now,
            "exp": now + lifetime,
            **extra,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "it-1"})


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    yield issuer
    issuer.server.shutdown()


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalValkey]:
    """A private Valkey server for the session (each xdist worker has its own): the cache's L2,
    shared rate limits and breaker state. Tests that stop a server start their own."""
    with running_valkey(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture(scope="session")
def aws(issuer: Issuer, valkey: LocalValkey) -> Iterator[dict[str, str]]:
    """moto for the whole session, tables created from template.yaml, settings in the env."""
    with mock_aws():
        tables = create_tables(boto3.client("dynamodb"), "it-")
        template = default_template()
        sqs = boto3.client("sqs")
        queues = {
            lid: sqs.create_queue(QueueName=template.queue_name(lid, "it-"))["QueueUrl"]
            for lid in template.queues
        }
        # The health check's dependencies: the model store and the operators' topic.
        bucket = "it-mysetlist-local-models"
        boto3.client("s3").create_bucket(Bucket=bucket)
        topic_arn = boto3.client("sns").create_topic(Name="it-mysetlist-local-alarms")["TopicArn"]
        buses = create_event_buses(boto3.client("events"), "it-")
        os.environ.update(
            {
                "PLATFORM_TABLE": tables["PlatformTable"],
                "PREDICTIONS_TABLE": tables["PredictionsTable"],
                "EXPERIMENTS_TABLE": tables["ExperimentsTable"],
                "MODEL_BUCKET": bucket,
                "ALERT_TOPIC_ARN": topic_arn,
                "DEAD_LETTER_QUEUE_URL": queues["VoteProcessorDLQ"],
                "EVENT_BUS_NAME": buses["VoteEventsBus"],
                "CATALOG_TABLE": tables["CatalogTable"],
                "VOTES_TABLE": tables["VotesTable"],
                "TALLIES_TABLE": tables["TalliesTable"],
                "USERS_TABLE": tables["UsersTable"],
                "CONNECTIONS_TABLE": tables["ConnectionsTable"],
                "JWT_ISSUER": issuer.url,
                "JWT_AUDIENCE": AUDIENCE,
                "CACHE_URL": valkey.url,
            }
        )
        yield tables


@pytest.fixture(scope="session")
def dynamodb(aws: dict[str, str]) -> Any:
    return boto3.client("dynamodb")


@pytest.fixture(scope="session")
def catalog_api(aws: dict[str, str]) -> Any:
    return load_handler("CatalogApi")


@pytest.fixture(scope="session")
def votes_api(aws: dict[str, str]) -> Any:
    return load_handler("VotesApi")


@pytest.fixture(scope="session")
def vote_processor(aws: dict[str, str]) -> Any:
    return load_handler("VoteProcessor")


@pytest.fixture(scope="session")
def settings(aws: dict[str, str]) -> Any:
    from mysetlist.settings import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def sample_lines() -> list[str]:
    """The first 120 shows of the Grateful Dead sample (1965-1969)."""
    with SAMPLE.open(encoding="utf-8") as handle:
        return [line for _, line in zip(range(120), handle, strict=False)]


@pytest.fixture(scope="session")
def health_api(aws: dict[str, str]) -> Any:
    return load_handler("HealthApi")


@pytest.fixture(scope="session")
def health_check(aws: dict[str, str]) -> Any:
    return load_handler("HealthCheck")


def wipe(dynamodb: Any, table: str) -> None:
    """Delete every item of ``table`` (the session's tables are shared by the tests)."""
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ProjectionExpression="PK, SK"):
        for item in page["Items"]:
            dynamodb.delete_item(TableName=table, Key=item)


@pytest.fixture
def platform(aws: dict[str, str], dynamodb: Any, settings: Any) -> Iterator[Any]:
    """An empty PlatformTable and closed breakers, before and after (health and alert tests)."""
    from mysetlist.alerts import PlatformStore
    from mysetlist.breaker import reset_all

    wipe(dynamodb, settings.platform_table)
    reset_all()
    yield PlatformStore(dynamodb, settings.platform_table)
    reset_all()
    wipe(dynamodb, settings.platform_table)
