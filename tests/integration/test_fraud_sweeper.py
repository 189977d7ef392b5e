"""The FraudSweeper handler against moto and the session's Valkey: a bot farm the VoteProcessor
counted but did not flag is found by the scheduled sweep, from the Valkey window, or from the
vote items when fraud detection recorded a gap; runs are idempotent, and a run that leaves work
undone fails (its error alarm counts it)."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from mysetlist import keys
from mysetlist.catalog_store import CatalogStore, show_item
from mysetlist.dynamo import from_item, to_item
from mysetlist.fraud import FraudConfig, ValkeyRecentVotes
from mysetlist.fraud_observer import DetectionGaps
from mysetlist.models import Show, ShowStatus
from mysetlist.signals import parse_vote_id, signal_from_item
from tests.harness.events import LambdaContext, load_event
from tests.integration.test_moderation_observer import Stadium
from tests.support.template import load_handler, module_name_for


@pytest.fixture(scope="module")
def fraud_sweeper(aws: dict[str, str]) -> Any:
    return load_handler("FraudSweeper")


@pytest.fixture
def sweeper_module(fraud_sweeper: Any) -> Iterator[Any]:
    module = sys.modules[module_name_for("FraudSweeper")]
    reader = module.sweep._votes
    yield module
    module.sweep._votes = reader


@pytest.fixture
def stadium(platform: Any, dynamodb: Any, settings: Any) -> Stadium:
    """A new upcoming show in the catalogue, with an empty PlatformTable (alerts)."""
    found = Stadium(dynamodb, settings)
    date = dt.date.fromisoformat(found.show.rsplit(":", 1)[1])
    show = Show(
        show_id=found.show,
        artist_id=found.artist,
        date=date,
        starts_at=dt.datetime.combine(date, dt.time(20), tzinfo=dt.UTC),
        status=ShowStatus.UPCOMING,
    )
    CatalogStore(dynamodb, settings.catalog_table).put_many([show_item(show)])
    return found


def run(handler: Any) -> dict[str, Any]:
    result: dict[str, Any] = handler(
        load_event("fraud_sweeper/schedule.json"),
        LambdaContext(function_name="FraudSweeper", remaining_ms=120_000),
    )
    return result


def counted_but_not_flagged(stadium: Stadium) -> tuple[list[str], list[str]]:
    """Fans and a farm, counted by a VoteProcessor without fraud detection."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    fans = stadium.fans(start)
    bots = stadium.farm(start + dt.timedelta(seconds=20))
    stadium.deliver(stadium.processor(None))
    assert {stadium.state(v) for v in fans + bots} == {None}
    return fans, bots


def test_after_a_detection_gap_the_sweep_reads_the_vote_items(stadium: Stadium, fraud_sweeper: Any) -> None:
    fans, bots = counted_but_not_flagged(stadium)
    DetectionGaps(stadium.alerts).record("detection", dt.datetime.now(dt.UTC), "window unavailable")

    report = run(fraud_sweeper)

    assert (report["source"], report["fallback_reason"]) == ("votes_table", "gap:detection")
    assert report["votes_read"] >= len(fans) + len(bots)
    assert {stadium.state(v) for v in bots} == {"quarantined"}
    assert {stadium.state(v) for v in fans} == {None}
    assert stadium.alerts.open_alert(f"vote_fraud.network_cluster#net:{stadium.farm_net}.0/24") is not None

    again = run(fraud_sweeper)  # idempotent: nothing new to flag, nothing fails
    assert again["votes"]["flagged"] == 0
    assert {stadium.state(v) for v in bots} == {"quarantined"}


def test_the_sweep_reads_the_window_when_there_is_no_gap(
    stadium: Stadium, fraud_sweeper: Any, valkey: Any, settings: Any
) -> None:
    fans, bots = counted_but_not_flagged(stadium)
    # The processor kept these votes in the window (its detection missed them: a slow attack).
    config = FraudConfig.from_overrides(settings.fraud_thresholds)
    import redis

    window = ValkeyRecentVotes.for_config(redis.Redis.from_url(valkey.url), config)
    signals = []
    for vid in fans + bots:
        show, user, song = parse_vote_id(vid)  # type: ignore[misc]
        item = stadium.db.get_item(
            TableName=settings.votes_table, Key=to_item({"PK": keys.vote_pk(show, user), "SK": song})
        )["Item"]
        signals.append(signal_from_item(from_item(item)))
    window.add([s for s in signals if s is not None], dt.datetime.now(dt.UTC).timestamp())

    report = run(fraud_sweeper)

    assert (report["source"], report["fallback_reason"]) == ("window", None)
    assert report["votes"]["flagged"] == len(bots)
    assert {stadium.state(v) for v in bots} == {"quarantined"}
    assert {stadium.state(v) for v in fans} == {None}
    assert run(fraud_sweeper)["votes"]["flagged"] == 0


class BrokenReader:
    def recent(self, *args: Any) -> Any:
        raise ConnectionError("the votes table is unreachable")


def test_a_run_that_cannot_read_the_votes_fails(
    stadium: Stadium, fraud_sweeper: Any, sweeper_module: Any
) -> None:
    counted_but_not_flagged(stadium)
    DetectionGaps(stadium.alerts).record("detection", dt.datetime.now(dt.UTC), "window unavailable")
    sweeper_module.sweep._votes = BrokenReader()
    with pytest.raises(sweeper_module.SweepFailed, match="left work undone"):
        run(fraud_sweeper)
