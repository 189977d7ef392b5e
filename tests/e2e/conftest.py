"""End-to-end tier: one local stack per test session, started as a subprocess exactly as
``make dev`` starts it (on a free port, never 3000, with ``LOCAL_STREAM_CHAOS=0.3``), and
driven over HTTP. Its moto endpoint and table names come from ``/__local/health``, so tests can
recount what the API stored.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.local_stack import tokens
from tests.support.template import REPO_ROOT
from tests.support.valkey import free_port

STARTUP_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 20.0
STREAM_CHAOS = "0.3"
SAMPLE_ARTIST = "grateful-dead"
# One training of the 2,076-show sample on the local stack (reads through moto, then trains).
SEED_TRAINED_TIMEOUT_SECONDS = 200.0


def _poll(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str = "condition"
) -> Any:
    """Call ``condition`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout:.0f} s")
        time.sleep(interval)  # polling a condition with a deadline, not a fixed wait


@dataclass
class LocalStackProcess:
    """A running local stack and what the tests need to talk to it."""

    base_url: str
    health: dict[str, Any]
    process: subprocess.Popen[bytes]
    console_log: Path
    http: requests.Session = field(default_factory=requests.Session)
    key: tokens.SigningKey = field(default_factory=tokens.load_or_create_key)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url(path), timeout=30, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.url(path), timeout=30, **kwargs)

    def token(self, user_id: str, groups: Sequence[str] = ("user",), *, lifetime_seconds: int = 3600) -> str:
        """A token the stack's issuer would sign (the checkout's local key)."""
        return tokens.mint_token(
            self.key,
            issuer=self.health["issuer"],
            user_id=user_id,
            groups=groups,
            lifetime_seconds=lifetime_seconds,
        )

    def auth(self, user_id: str, groups: Sequence[str] = ("user",)) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, groups)}"}

    def aws(self, service: str) -> Any:
        """A boto3 client for the stack's moto server (to recount what the API stored)."""
        make_client: Any = boto3.client
        return make_client(
            service,
            region_name=self.health["region"],
            endpoint_url=self.health["moto_endpoint"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def wait_for_model(self, artist_id: str, timeout: float) -> str:
        """The artist's current model version, once the ModelTrainer has stored one."""
        version: str = _poll(
            lambda: _model_version(self, artist_id),
            timeout=timeout,
            interval=1.0,
            what=f"a model for {artist_id}",
        )
        return version

    def streams(self, functions: Sequence[str] = ()) -> dict[str, Any]:
        """The stream mappings' status (of ``functions`` only, when given: cheaper)."""
        params = {"function": ",".join(functions)} if functions else None
        response = self.get("/__local/streams", params=params)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_until_streams_drained(
        self, timeout: float = 60.0, functions: Sequence[str] = ("VoteProcessor",)
    ) -> dict[str, Any]:
        """Wait until every record written so far to the streams that ``functions`` read has been
        delivered (twice idle in a row, so a delivery that started between two looks is not
        missed). Other mappings are neither waited for nor probed: the ModelTrainer reads the
        catalogue's stream with a 60 s batching window and trains on the seeded sample for a
        while after start, and probing that stream (large items) is slow."""
        idle_in_a_row = 0

        def drained() -> dict[str, Any] | None:
            nonlocal idle_in_a_row
            status = self.streams(functions)
            idle_in_a_row = idle_in_a_row + 1 if status["idle"] else 0
            return status if idle_in_a_row >= 2 else None

        result: dict[str, Any] = _poll(drained, timeout=timeout, interval=0.25, what="stream drained")
        return result


def _model_version(stack: LocalStackProcess, artist_id: str) -> str | None:
    item = (
        stack.aws("dynamodb")
        .get_item(
            TableName=stack.health["tables"]["PredictionsTable"],
            Key={"PK": {"S": f"MODEL#{artist_id}"}, "SK": {"S": "CURRENT"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return str(item["version"]["S"]) if item else None


def _chaos_seed() -> int:
    """A chaos seed whose first stream batch misbehaves (the poller's first draw per mapping is
    ``Random(seed).random() < p``), so every run exercises chaos at least once whatever the
    timing. ``LOCAL_STREAM_CHAOS_SEED`` in the environment wins, to replay a failure."""
    if os.environ.get("LOCAL_STREAM_CHAOS_SEED"):
        return int(os.environ["LOCAL_STREAM_CHAOS_SEED"])
    return next(seed for seed in range(10_000) if random.Random(seed).random() < float(STREAM_CHAOS))


def _console_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackProcess]:
    """The local stack, started once for the session and stopped (SIGTERM) at its end."""
    port = free_port()
    while port == 3000:  # never take the developer's `make dev` port
        port = free_port()
    root = tmp_path_factory.mktemp("local-stack")
    console_log = root / "console.log"
    env = {
        **os.environ,
        "LOCAL_STREAM_CHAOS": STREAM_CHAOS,
        "LOCAL_STREAM_CHAOS_SEED": str(_chaos_seed()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AWS_PROFILE", None)
    with console_log.open("wb") as console:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.local_stack",
                "--port",
                str(port),
                "--state-dir",
                str(root / "state"),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=console,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> dict[str, Any] | None:
        if process.poll() is not None:
            raise RuntimeError(
                f"the local stack exited with {process.returncode}:\n{_console_tail(console_log)}"
            )
        try:
            response = requests.get(f"{base_url}/__local/health", timeout=2)
        except requests.RequestException:
            return None
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 else None

    try:
        health = _poll(healthy, timeout=STARTUP_TIMEOUT_SECONDS, interval=0.25, what="local stack healthy")
        running = LocalStackProcess(
            base_url=base_url, health=health, process=process, console_log=console_log
        )
        # The stack trains the sample artist once after seeding (tests/local_stack/stack.py): wait
        # for that model, so no test measures latency on a stack still busy with start-up work.
        running.wait_for_model(SAMPLE_ARTIST, timeout=SEED_TRAINED_TIMEOUT_SECONDS)
        yield running
        running.http.close()
    finally:
        problem = _stop(process)
    if problem:  # not after a failed start: that error is the one to see
        raise AssertionError(f"{problem}:\n{_console_tail(console_log)}")


def _stop(process: subprocess.Popen[bytes]) -> str | None:
    """SIGTERM the stack as Ctrl-C would and wait; what went wrong with the stop, if anything."""
    if process.poll() is not None:
        return f"the local stack had already exited with {process.returncode}"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        return f"the local stack did not stop within {STOP_TIMEOUT_SECONDS:.0f} s of SIGTERM"
    return None if process.returncode == 0 else f"the local stack stopped with exit code {process.returncode}"
