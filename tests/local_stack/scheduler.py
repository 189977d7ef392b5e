"""The template's ``Schedule`` / ``ScheduleV2`` events, run locally.

Expressions follow EventBridge: ``rate(N minute|minutes|hour|hours|day|days)`` (singular unit
exactly when N is 1), ``cron(minutes hours day-of-month month day-of-week year)`` and, for
``ScheduleV2``, ``at(yyyy-mm-ddThh:mm:ss)``. Cron fields take ``*``, ``?``, numbers, names
(JAN-DEC, SUN-SAT), ranges ``a-b``, lists ``a,b`` and steps ``a/n``, ``*/n``, ``a-b/n``;
day-of-week counts 1 = SUN .. 7 = SAT; one of the two day fields must be ``?``. The ``L``,
``W`` and ``#`` forms are rejected (not supported locally). ``ScheduleExpressionTimezone``
applies to cron and at expressions; rules (``Schedule``) run in UTC.

Functions receive an EventBridge "Scheduled Event" (or the event's ``Input`` when it has one),
invoked asynchronously as EventBridge does: an error is logged, never raised into the scheduler.
In a ``ScheduleV2`` event's ``Input``, EventBridge Scheduler's context attributes are replaced as
Scheduler replaces them (``<aws.scheduler.schedule-arn>``, ``<aws.scheduler.scheduled-time>``,
``<aws.scheduler.execution-id>``, ``<aws.scheduler.attempt-number>``; the local stack makes one
attempt).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from tests.support.template import ScheduleSpec

log = logging.getLogger("local_stack.scheduler")

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    name: i
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}
_DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)}
_SEARCH_YEARS = 5  # a cron expression with no fire time within this horizon never fires


class ScheduleExpressionError(ValueError):
    """The expression is not valid EventBridge syntax, or uses a form not supported locally."""


class Schedule(Protocol):
    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after ``moment`` (aware, UTC), or None if never again."""
        ...


@dataclass(frozen=True)
class RateSchedule:
    """Every ``period`` from ``anchor`` (EventBridge starts counting when the rule is created)."""

    period: dt.timedelta
    anchor: dt.datetime

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        if moment < self.anchor:
            return self.anchor + self.period
        elapsed = (moment - self.anchor) // self.period
        return self.anchor + (elapsed + 1) * self.period


@dataclass(frozen=True)
class AtSchedule:
    """A one-time schedule (``ScheduleV2`` only)."""

    when: dt.datetime

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        return self.when if self.when > moment else None


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    """The values a cron field allows (``*`` and ``?`` allow all)."""

    def value(token: str) -> int:
        token = token.upper()
        if names and token in names:
            return names[token]
        if not token.isdigit():
            if any(c in token for c in "LW#"):
                raise ScheduleExpressionError(f"cron field {text!r}: L, W and # are not supported locally")
            raise ScheduleExpressionError(f"cron field {text!r}: {token!r} is not a value")
        number = int(token)
        if not low <= number <= high:
            raise ScheduleExpressionError(f"cron field {text!r}: {number} is outside {low}-{high}")
        return number

    allowed: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ScheduleExpressionError(f"cron field {text!r}: bad increment {step_text!r}")
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = value(first), value(last)
            if start > end:
                raise ScheduleExpressionError(f"cron field {text!r}: range {base!r} runs backwards")
        else:
            start = value(base)
            end = high if step else start
        allowed.update(range(start, end + 1, step or 1))
    return frozenset(allowed)


@dataclass(frozen=True)
class CronSchedule:
    """An EventBridge cron expression in a time zone."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None  # None: '?'
    months: frozenset[int]
    days_of_week: frozenset[int] | None  # None: '?'; 1 = Sunday
    years: frozenset[int]
    zone: ZoneInfo

    @classmethod
    def parse(cls, fields_text: str, timezone: str = "UTC") -> CronSchedule:
        fields = fields_text.split()
        if len(fields) != 6:
            raise ScheduleExpressionError(
                f"cron needs 6 fields (min hour dom month dow year), got {fields_text!r}"
            )
        minute, hour, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise ScheduleExpressionError("cron: exactly one of day-of-month and day-of-week must be '?'")
        return cls(
            minutes=_field(minute, 0, 59),
            hours=_field(hour, 0, 23),
            days_of_month=None if dom == "?" else _field(dom, 1, 31),
            months=_field(month, 1, 12, _MONTHS),
            days_of_week=None if dow == "?" else _field(dow, 1, 7, _DAYS),
            years=_field(year, 1970, 2199),
            zone=ZoneInfo(timezone),
        )

    def _day_matches(self, day: dt.date) -> bool:
        if self.days_of_month is not None:
            return day.day in self.days_of_month
        aws_weekday = (day.weekday() + 1) % 7 + 1  # Python: Monday = 0; AWS: Sunday = 1
        return self.days_of_week is not None and aws_weekday in self.days_of_week

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        local = moment.astimezone(self.zone).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        day = local.date()
        horizon = day + dt.timedelta(days=366 * _SEARCH_YEARS)
        while day <= horizon:  # bounded: at most a few thousand days
            if day.year in self.years and day.month in self.months and self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone)
                        if candidate >= local:
                            return candidate.astimezone(dt.UTC)
            day += dt.timedelta(days=1)
            local = dt.datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return None


def parse_schedule(expression: str, *, timezone: str = "UTC", now: dt.datetime | None = None) -> Schedule:
    """A :class:`Schedule` for an EventBridge expression; rates count from ``now``."""
    text = expression.strip()
    now = now or dt.datetime.now(dt.UTC)
    if match := _RATE.match(text):
        value, unit = int(match.group(1)), match.group(2)
        if value < 1:
            raise ScheduleExpressionError(f"{expression!r}: the rate must be a positive whole number")
        if (value == 1) != (not unit.endswith("s")):
            raise ScheduleExpressionError(
                f"{expression!r}: use a singular unit for 1 and a plural one otherwise"
            )
        return RateSchedule(dt.timedelta(seconds=value * _UNIT_SECONDS[unit.rstrip("s")]), anchor=now)
    if match := _CRON.match(text):
        return CronSchedule.parse(match.group(1), timezone)
    if match := _AT.match(text):
        when = dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=ZoneInfo(timezone))
        return AtSchedule(when.astimezone(dt.UTC))
    raise ScheduleExpressionError(f"{expression!r} is not rate(...), cron(...) or at(...)")


def scheduled_event(
    spec: ScheduleSpec, fire_time: dt.datetime, *, region: str, account_id: str
) -> dict[str, Any]:
    """The payload EventBridge delivers for a schedule: the event's ``Input`` if set (with
    Scheduler's context attributes filled in for ``ScheduleV2``), else a "Scheduled Event" naming
    the rule (or schedule) in ``resources``."""
    name = spec.name or f"{spec.function_id}{spec.event_name}"
    resource = (
        f"arn:aws:events:{region}:{account_id}:rule/{name}"
        if spec.kind == "Schedule"
        else f"arn:aws:scheduler:{region}:{account_id}:schedule/default/{name}"
    )
    if spec.input is not None:
        text = spec.input
        if spec.kind == "ScheduleV2":
            context = {
                "<aws.scheduler.schedule-arn>": resource,
                "<aws.scheduler.scheduled-time>": fire_time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "<aws.scheduler.execution-id>": uuid.uuid4().hex[:16],
                "<aws.scheduler.attempt-number>": "1",
            }
            for keyword, value in context.items():
                text = text.replace(keyword, value)
        payload = json.loads(text)
        if not isinstance(payload, dict):
            raise ScheduleExpressionError(
                f"{spec.function_id}.{spec.event_name}: Input must be a JSON object"
            )
        return payload
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events" if spec.kind == "Schedule" else "aws.scheduler",
        "account": account_id,
        "time": fire_time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [resource],
        "detail": {},
    }


@dataclass
class _Entry:
    spec: ScheduleSpec
    schedule: Schedule
    next_fire: dt.datetime | None
    fired: int = 0
    errors: int = 0


class Scheduler:
    """Fires each enabled schedule at its times (a background thread).

    ``invoke(function_id, event)`` runs the function; it is called from this thread, so a slow
    function delays later fires (EventBridge would run them concurrently).
    """

    def __init__(
        self,
        specs: Sequence[ScheduleSpec],
        *,
        invoke: Callable[[str, dict[str, Any]], Any],
        region: str,
        account_id: str,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.invoke = invoke
        self.region = region
        self.account_id = account_id
        self.clock = clock
        now = clock()
        self.entries = []
        for spec in specs:
            if not spec.enabled:
                continue
            schedule = parse_schedule(spec.expression, timezone=spec.timezone, now=now)
            self.entries.append(_Entry(spec, schedule, schedule.next_after(now)))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.entries:
            return
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_due(self) -> int:
        """Fire every schedule whose time has come; the number fired."""
        now = self.clock()
        fired = 0
        for entry in self.entries:
            if entry.next_fire is None or entry.next_fire > now:
                continue
            self.fire(entry, entry.next_fire)
            entry.next_fire = entry.schedule.next_after(max(now, entry.next_fire))
            fired += 1
        return fired

    def fire(self, entry: _Entry, fire_time: dt.datetime) -> None:
        """Invoke the entry's function once (errors are counted and logged, not raised)."""
        spec = entry.spec
        entry.fired += 1
        try:
            event = scheduled_event(spec, fire_time, region=self.region, account_id=self.account_id)
            self.invoke(spec.function_id, event)
        except Exception:
            entry.errors += 1
            log.exception("schedule %s.%s failed", spec.function_id, spec.event_name)

    def fire_now(self, function_id: str, event_name: str) -> bool:
        """Fire one schedule at once (for trying a scheduled function without waiting); False if
        there is no such enabled schedule. Its regular times are unchanged."""
        for entry in self.entries:
            if (entry.spec.function_id, entry.spec.event_name) == (function_id, event_name):
                self.fire(entry, self.clock())
                return True
        return False

    def seconds_until_next(self) -> float | None:
        upcoming = [e.next_fire for e in self.entries if e.next_fire is not None]
        if not upcoming:
            return None
        return max(0.0, (min(upcoming) - self.clock()).total_seconds())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            wait = self.seconds_until_next()
            if wait is None:
                return
            self._stop.wait(min(wait, 60.0))

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "function": e.spec.function_id,
                "event": e.spec.event_name,
                "expression": e.spec.expression,
                "timezone": e.spec.timezone,
                "next_fire": e.next_fire.isoformat() if e.next_fire else None,
                "fired": e.fired,
                "errors": e.errors,
            }
            for e in self.entries
        ]
