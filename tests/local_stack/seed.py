"""The local stack's sample catalogue: the Grateful Dead dataset plus a few upcoming demo shows.

The demo shows are generated at seed time with dates relative to the day the stack starts, so
they are always upcoming (votes are only taken for shows that are not completed). Both files
go through the project's importer (``mysetlist.importer.import_file``), the same code as
``make import``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("local_stack.seed")

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
GRATEFUL_DEAD = SAMPLE_DIR / "grateful-dead.jsonl"
DEMO_ARTIST = "Grateful Dead"
DEMO_TOUR = "MySetlist Demo Tour"

# (days after today, venue, city, region, country, IANA zone, local start time)
_DEMO_SHOWS: Sequence[tuple[int, str, str, str | None, str, str, str]] = (
    (7, "Red Rocks Amphitheatre", "Morrison", "CO", "US", "America/Denver", "19:30"),
    (9, "The Gorge Amphitheatre", "George", "WA", "US", "America/Los_Angeles", "19:00"),
    (14, "Madison Square Garden", "New York", "NY", "US", "America/New_York", "19:30"),
    (21, "Fox Theatre", "Atlanta", "GA", "US", "America/New_York", "20:00"),
    (30, "Greek Theatre", "Berkeley", "CA", "US", "America/Los_Angeles", "18:30"),
)


def demo_show_lines(today: dt.date) -> list[dict[str, Any]]:
    """Upcoming demo shows (no songs) dated relative to ``today``, in the setlist file format."""
    lines: list[dict[str, Any]] = []
    for days, venue, city, region, country, zone, local_time in _DEMO_SHOWS:
        date = (today + dt.timedelta(days=days)).isoformat()
        lines.append(
            {
                "show_id": f"grateful-dead:{date}",
                "artist": DEMO_ARTIST,
                "date": date,
                "venue": venue,
                "city": city,
                "region": region,
                "country": country,
                "tour": DEMO_TOUR,
                "status": "upcoming",
                "local_time": local_time,
                "timezone": zone,
                "sets": [],
            }
        )
    return lines


def write_demo_shows(directory: Path, today: dt.date | None = None) -> Path:
    """Write ``demo_shows.jsonl`` into ``directory`` (dates from ``today``, default: now)."""
    today = today or dt.datetime.now(dt.UTC).date()
    path = directory / "demo_shows.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in demo_show_lines(today)), encoding="utf-8")
    return path


class ImporterMissing(RuntimeError):
    """The project's importer (``mysetlist.importer``) cannot be imported."""


@dataclass(frozen=True)
class SeedResult:
    path: Path
    shows: int
    lines_read: int
    skipped: int
    seconds: float
    summary: str


def load_import_file() -> Callable[..., Any]:
    """``mysetlist.importer.import_file``, or :class:`ImporterMissing` with what to do about it."""
    try:
        module = importlib.import_module("mysetlist.importer")
    except ImportError as exc:
        raise ImporterMissing(
            f"the catalogue importer (mysetlist.importer) cannot be loaded: {exc}. "
            "Start the stack with --no-seed to run it with an empty catalogue."
        ) from exc
    import_file = getattr(module, "import_file", None)
    if not callable(import_file):
        raise ImporterMissing("mysetlist.importer has no import_file(path, settings, report=...)")
    return import_file  # type: ignore[no-any-return]


def seed(files: Sequence[Path], settings: Any, *, report: Callable[[str], None]) -> list[SeedResult]:
    """Import each file into the catalogue described by ``settings`` (a ``mysetlist`` Settings)."""
    import_file = load_import_file()
    results = []
    for path in files:
        started = time.perf_counter()
        outcome = import_file(path, settings, report=report)
        elapsed = time.perf_counter() - started
        summary = outcome.summary() if callable(getattr(outcome, "summary", None)) else ""
        results.append(
            SeedResult(
                path=path,
                shows=int(getattr(outcome, "shows", 0)),
                lines_read=int(getattr(outcome, "lines_read", 0)),
                skipped=len(getattr(outcome, "skipped", []) or []),
                seconds=elapsed,
                summary=str(summary),
            )
        )
        log.info("imported %s in %.1f s: %s", path.name, elapsed, summary)
    return results


DEMO_EXPERIMENT_ID = "demo-home-hero"
DEMO_CONTENT_TYPE = "banner"
DEMO_PLACEMENT = "home-hero"


def seed_demo_experiment(settings: Any, *, report: Callable[[str], None]) -> str:
    """A running A/B test on the home page's hero banner (the id the sample events in
    ``events/ab_testing_api/`` use), with the placement's default content, written through the
    project's own experiment store as the API would. Kept as it is when it exists already."""
    from mysetlist.dynamo import client_for
    from mysetlist.experiments.definitions import Action, Experiment, ExperimentIn
    from mysetlist.experiments.store import ExperimentStore

    store = ExperimentStore(client_for(settings), settings.experiments_table)
    if store.get(DEMO_EXPERIMENT_ID) is not None:
        return DEMO_EXPERIMENT_ID
    now = dt.datetime.now(dt.UTC)
    store.put_default(
        DEMO_CONTENT_TYPE, DEMO_PLACEMENT, {"headline": "Vote for tonight's setlist"}, "local-stack", now
    )
    spec = ExperimentIn.model_validate(
        {
            "name": "Home hero headline",
            "description": "Demo experiment of the local stack: does urgency get more fans voting?",
            "content_type": DEMO_CONTENT_TYPE,
            "placement": DEMO_PLACEMENT,
            "variants": [
                {
                    "name": "Control",
                    "content": {"headline": "Vote for tonight's setlist"},
                    "weight": 50,
                    "is_control": True,
                },
                {"name": "Urgent", "content": {"headline": "Doors open soon: vote now"}, "weight": 50},
            ],
            "primary_metric": {"name": "voted", "type": "proportion", "event": "conversion"},
            "guardrail_metrics": [{"name": "engaged_seconds", "type": "mean", "event": "engagement"}],
        },
        context={"now": now},
    )
    draft = store.create(Experiment.create(spec, by="local-stack", now=now, test_id=DEMO_EXPERIMENT_ID))
    store.save(draft.apply_action(Action.START, "local-stack", now), previous=draft)
    report(f"A/B demo experiment {DEMO_EXPERIMENT_ID} running on {DEMO_CONTENT_TYPE}/{DEMO_PLACEMENT}")
    return DEMO_EXPERIMENT_ID
