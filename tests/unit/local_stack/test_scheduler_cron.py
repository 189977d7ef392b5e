"""Schedule expressions (rate, cron, at) and the scheduler, driven by a fake clock and an inline
template (tests/unit/test_template_infrastructure.py covers template.yaml's own schedules)."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.local_stack.scheduler import (
    CronSchedule,
    RateSchedule,
    ScheduleExpressionError,
    Scheduler,
    parse_schedule,
    scheduled_event,
)
from tests.support.template import Template

START = dt.datetime(2026, 3, 6, 10, 7, 30, tzinfo=dt.UTC)  # a Friday


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("expression", "period"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(1 hour)", 3600), ("rate(2 days)", 172800)],
)
def test_rates_count_from_the_start(expression: str, period: int) -> None:
    schedule = parse_schedule(expression, now=START)
    assert isinstance(schedule, RateSchedule)
    first = schedule.next_after(START)
    assert first == START + dt.timedelta(seconds=period)
    assert schedule.next_after(first) == START + dt.timedelta(seconds=2 * period)


@pytest.mark.parametrize(
    "expression",
    [
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(0 minutes)",
        "rate(1 week)",
        "rate(minutes)",
        "every 5 minutes",
    ],
)
def test_invalid_rates_are_refused(expression: str) -> None:
    with pytest.raises(ScheduleExpressionError):
        parse_schedule(expression, now=START)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("cron(0 10 * * ? *)", [utc(2026, 3, 7, 10, 0), utc(2026, 3, 8, 10, 0)]),
        ("cron(15 12 ? * MON-FRI *)", [utc(2026, 3, 6, 12, 15), utc(2026, 3, 9, 12, 15)]),
        ("cron(0/15 * * * ? *)", [utc(2026, 3, 6, 10, 15), utc(2026, 3, 6, 10, 30)]),
        ("cron(0 8 1 * ? *)", [utc(2026, 4, 1, 8, 0), utc(2026, 5, 1, 8, 0)]),
        ("cron(0 18 ? * 1,7 *)", [utc(2026, 3, 7, 18, 0), utc(2026, 3, 8, 18, 0)]),
        ("cron(30 9 29 FEB ? 2027-2028)", [utc(2028, 2, 29, 9, 30), None]),
        ("cron(0 0 1 JAN ? 2020)", [None]),
    ],
)
def test_cron_next_fire_times(expression: str, expected: list[dt.datetime | None]) -> None:
    schedule = parse_schedule(expression, now=START)
    moment: dt.datetime | None = START
    for want in expected:
        assert moment is not None
        moment = schedule.next_after(moment)
        assert moment == want


def test_cron_honours_the_schedules_time_zone() -> None:
    schedule = parse_schedule("cron(0 9 * * ? *)", timezone="America/New_York", now=START)
    assert schedule.next_after(START) == utc(2026, 3, 6, 14, 0)  # 09:00 EST
    assert schedule.next_after(utc(2026, 3, 9, 0, 0)) == utc(2026, 3, 9, 13, 0)  # 09:00 EDT after the switch


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 10 * * * *)", "exactly one"),
        ("cron(0 10 ? * ? *)", "exactly one"),
        ("cron(0 10 L * ? *)", "not supported"),
        ("cron(0 10 ? * 6#3 *)", "not supported"),
        ("cron(0 10 15W * ? *)", "not supported"),
        ("cron(61 10 * * ? *)", "outside"),
        ("cron(0 10 * * ?)", "6 fields"),
        ("cron(0 10-5 * * ? *)", "backwards"),
        ("cron(0 10 * FOO ? *)", "not a value"),
    ],
)
def test_invalid_or_unsupported_cron_is_refused(expression: str, message: str) -> None:
    with pytest.raises(ScheduleExpressionError, match=message):
        parse_schedule(expression, now=START)


def test_cron_fields_expand_steps_ranges_and_names() -> None:
    schedule = CronSchedule.parse("5-20/5 1,2 ? JAN-MAR SUN,SAT 2026", "UTC")
    assert schedule.minutes == {5, 10, 15, 20}
    assert schedule.hours == {1, 2}
    assert schedule.months == {1, 2, 3}
    assert schedule.days_of_week == frozenset({1, 7})
    assert schedule.days_of_month is None


def test_at_fires_once_in_its_time_zone() -> None:
    schedule = parse_schedule("at(2026-03-06T12:00:00)", timezone="Europe/Paris", now=START)
    assert schedule.next_after(START) == utc(2026, 3, 6, 11, 0)
    assert schedule.next_after(utc(2026, 3, 6, 11, 0)) is None


TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Warm:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: warm/
      Handler: app.handler
      Events:
        EveryMinute:
          Type: Schedule
          Properties: {Schedule: rate(1 minute)}
        Nightly:
          Type: ScheduleV2
          Properties: {ScheduleExpression: "cron(0 3 * * ? *)", Input: '{"job": "nightly"}'}
        Disabled:
          Type: Schedule
          Properties: {Schedule: rate(1 minute), Enabled: false}
"""


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_the_scheduler_fires_template_schedules_with_eventbridge_payloads(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(TEMPLATE))
    template = Template.load(path)
    clock = FakeClock(START)
    calls: list[tuple[str, dict[str, Any]]] = []
    scheduler = Scheduler(
        template.schedules,
        invoke=lambda fn, event: calls.append((fn, event)),
        region="us-east-1",
        account_id="123456789012",
        clock=clock,
    )
    assert [e.spec.event_name for e in scheduler.entries] == ["EveryMinute", "Nightly"]
    assert scheduler.run_due() == 0
    assert scheduler.seconds_until_next() == 60.0
    clock.now = START + dt.timedelta(seconds=60)
    assert scheduler.run_due() == 1
    function, event = calls[0]
    assert function == "Warm"
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["time"] == "2026-03-06T10:08:30Z"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/WarmEveryMinute"]
    assert event["detail"] == {}
    clock.now = utc(2026, 3, 7, 3, 0, 5)
    assert scheduler.run_due() == 2  # the overdue minute fires once, then the nightly job
    assert calls[-1] == ("Warm", {"job": "nightly"})
    assert scheduler.fire_now("Warm", "Nightly")
    assert not scheduler.fire_now("Warm", "Disabled")
    assert calls[-1] == ("Warm", {"job": "nightly"})
    status = {s["event"]: s for s in scheduler.status()}
    assert status["EveryMinute"]["fired"] == 2
    assert status["Nightly"]["fired"] == 2
    assert status["Nightly"]["next_fire"] == "2026-03-08T03:00:00+00:00"


def test_a_failing_scheduled_function_is_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(TEMPLATE))
    clock = FakeClock(START)

    def fail(function_id: str, event: dict[str, Any]) -> None:
        raise RuntimeError("down")

    scheduler = Scheduler(
        Template.load(path).schedules, invoke=fail, region="us-east-1", account_id="123456789012", clock=clock
    )
    clock.now = START + dt.timedelta(minutes=1)
    scheduler.run_due()
    assert scheduler.status()[0]["errors"] == 1


def test_scheduled_event_for_scheduler_v2_names_the_schedule(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(TEMPLATE.replace(', Input: \'{"job": "nightly"}\'', "")))
    nightly = next(s for s in Template.load(path).schedules if s.event_name == "Nightly")
    event = scheduled_event(nightly, START, region="eu-west-1", account_id="1")
    assert event["source"] == "aws.scheduler"
    assert event["resources"] == ["arn:aws:scheduler:eu-west-1:1:schedule/default/WarmNightly"]
    assert json.loads(json.dumps(event)) == event


def test_scheduler_context_attributes_are_filled_in_scheduler_v2_input_only(tmp_path: Path) -> None:
    context = (
        '{"arn": "<aws.scheduler.schedule-arn>", "at": "<aws.scheduler.scheduled-time>", '
        '"id": "<aws.scheduler.execution-id>", "attempt": "<aws.scheduler.attempt-number>"}'
    )
    path = tmp_path / "template.yaml"
    path.write_text(
        textwrap.dedent(TEMPLATE)
        .replace('\'{"job": "nightly"}\'', f"'{context}', Name: warm-nightly")
        .replace("{Schedule: rate(1 minute)}", f"{{Schedule: rate(1 minute), Input: '{context}'}}")
    )
    specs = {s.event_name: s for s in Template.load(path).schedules}
    event = scheduled_event(specs["Nightly"], utc(2026, 3, 7, 3, 0), region="eu-west-1", account_id="1")
    assert event["arn"] == "arn:aws:scheduler:eu-west-1:1:schedule/default/warm-nightly"
    assert event["at"] == "2026-03-07T03:00:00Z"
    assert event["attempt"] == "1"
    assert len(event["id"]) == 16
    assert event["id"] != scheduled_event(specs["Nightly"], START, region="eu-west-1", account_id="1")["id"]
    # EventBridge rules pass their Input as written.
    rule_event = scheduled_event(specs["EveryMinute"], START, region="eu-west-1", account_id="1")
    assert rule_event["at"] == "<aws.scheduler.scheduled-time>"
