"""Breakers of two containers sharing "open" and "reset" through a real Valkey.

Each "container" is a CircuitBreaker with its own VALKEY guard breaker, as in two Lambda
containers; both read the same private Valkey server. Their monotonic clock is injected (the
check interval is driven by hand); the key's expiry is Valkey's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mysetlist.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    SharedEvent,
    ValkeySharedState,
    WindowKind,
)
from mysetlist.settings import Settings
from mysetlist.valkey import reset_clients, valkey_client
from tests.support.valkey import LocalValkey, running_valkey

pytestmark = pytest.mark.integration

WAIT = 60.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Container:
    breaker: CircuitBreaker
    valkey_guard: CircuitBreaker


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalValkey]:
    with running_valkey(tmp_path / "valkey") as valkey:
        yield valkey
    reset_clients()


def container(name: str, settings: Settings, monotonic: Clock, wall: Clock) -> Container:
    guard = CircuitBreaker(
        "valkey",
        BreakerConfig(window=WindowKind.COUNT, window_size=4, minimum_calls=2, wait_in_open=5.0),
        clock=monotonic,
    )
    shared = ValkeySharedState(client=lambda: valkey_client(settings), guard=lambda: guard)
    config = BreakerConfig(
        window=WindowKind.COUNT,
        window_size=4,
        minimum_calls=2,
        wait_in_open=WAIT,
        shared_check_interval=1.0,
        half_open_permitted_calls=1,
    )
    return Container(CircuitBreaker(name, config, shared=shared, clock=monotonic, wall_clock=wall), guard)


@pytest.fixture
def pair(server: LocalValkey) -> tuple[Container, Container, Clock, Clock]:
    settings = Settings(cache_url=server.url)
    monotonic, wall = Clock(500.0), Clock(1_900_000_000.0)
    name = f"dynamodb-it-{uuid.uuid4().hex[:8]}"
    return (
        container(name, settings, monotonic, wall),
        container(name, settings, monotonic, wall),
        monotonic,
        wall,
    )


def state_of(b: CircuitBreaker) -> BreakerState:
    """The breaker's state, read through a call: the state changes under calls mypy cannot see."""
    return b.state


def trip(b: CircuitBreaker) -> None:
    for _ in range(b.config.minimum_calls):
        with pytest.raises(ConnectionError):
            b.call(_refused)


def _refused() -> None:
    raise ConnectionError("refused")


def test_an_open_circuit_reaches_the_other_container_within_its_check_interval(
    pair: tuple[Container, Container, Clock, Clock], server: LocalValkey
) -> None:
    a, b, monotonic, _ = pair
    assert b.breaker.call(lambda: "ok") == "ok"  # b reads the shared state now (nothing there)
    monotonic.now += 0.2
    trip(a.breaker)
    assert state_of(a.breaker) is BreakerState.OPEN
    # The key lives as long as the wait in OPEN.
    client = valkey_client(Settings(cache_url=server.url))
    assert client is not None
    ttl = client.pttl(ValkeySharedState.key(a.breaker.name))
    assert isinstance(ttl, int)
    assert 0 < ttl <= WAIT * 1000

    monotonic.now += 0.5  # b's last read was 0.7 s ago: it does not ask Valkey on every call
    assert b.breaker.call(lambda: "ok") == "ok"
    monotonic.now += 0.3  # now 1.0 s: b reads the key and opens for what is left of the wait
    with pytest.raises(CircuitOpenError) as refused:
        b.breaker.call(lambda: "never called")
    assert 0 < refused.value.retry_after <= WAIT
    snapshot = b.breaker.snapshot()
    assert (snapshot["state"], snapshot["reason"]) == ("open", "opened by another container")
    assert snapshot["shared_state"] is True


def test_a_reset_in_one_container_closes_the_other(pair: tuple[Container, Container, Clock, Clock]) -> None:
    a, b, monotonic, wall = pair
    trip(a.breaker)
    monotonic.now += 1.0
    with pytest.raises(CircuitOpenError):
        b.breaker.call(lambda: "never called")
    wall.now += 5.0
    a.breaker.reset()
    assert state_of(a.breaker) is BreakerState.CLOSED
    monotonic.now += 1.0  # b's next read sees the reset, which is newer than its open
    assert b.breaker.call(lambda: "ok") == "ok"
    assert state_of(b.breaker) is BreakerState.CLOSED
    assert b.breaker.snapshot()["reason"] == "reset in another container"


def test_only_a_reset_newer_than_the_open_closes_it(
    pair: tuple[Container, Container, Clock, Clock], server: LocalValkey
) -> None:
    a, b, monotonic, wall = pair
    trip(b.breaker)  # b opens on its own evidence at wall time W
    opened_at = wall.now
    writer = ValkeySharedState(
        client=lambda: valkey_client(Settings(cache_url=server.url)), guard=lambda: a.valkey_guard
    )
    # A reset from before W (one b could not have seen: its own open would have replaced it).
    writer.write(b.breaker.name, SharedEvent(kind="reset", id="older", at=opened_at - 5.0), ttl=WAIT)
    monotonic.now += 1.0
    with pytest.raises(CircuitOpenError):
        b.breaker.call(lambda: "never called")
    writer.write(b.breaker.name, SharedEvent(kind="reset", id="newer", at=opened_at + 1.0), ttl=WAIT)
    monotonic.now += 1.0
    assert b.breaker.call(lambda: "ok") == "ok"


def test_with_valkey_down_shared_state_is_ignored_and_calls_go_on(
    pair: tuple[Container, Container, Clock, Clock], server: LocalValkey
) -> None:
    a, b, monotonic, _ = pair
    server.stop()
    reset_clients()
    trip(a.breaker)  # opening still works; publishing fails quietly
    assert state_of(a.breaker) is BreakerState.OPEN
    for _ in range(3):
        monotonic.now += 1.0
        assert b.breaker.call(lambda: "ok") == "ok"  # b cannot read Valkey: it carries on
    assert state_of(b.breaker) is BreakerState.CLOSED
    # The failed reads were counted against Valkey by b's guard breaker, which opened.
    assert state_of(b.valkey_guard) is BreakerState.OPEN
    a.breaker.reset()  # a reset with Valkey down still resets locally
    assert state_of(a.breaker) is BreakerState.CLOSED
