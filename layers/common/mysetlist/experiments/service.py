"""What the A/B testing API does, between the HTTP layer and the store (docs/experiments.md).

* **Serving** (``GET ?content_type=&placement=``): the placement's running experiments, oldest
  started first; the caller gets the variant of the first that includes it (its stored
  assignment when it has one: sticky), and the first exposure is recorded once, with its
  counters, in one transaction. A caller in none of them, or with no identity to keep an
  assignment sticky to, gets the placement's default content and is counted nowhere.
* **Tracking** (``POST ?action=track``): a batch of one caller's interactions with one
  experiment, each idempotent by its event id; only while the experiment is live and only for
  callers exposed to it.
* **Analysis** (``results``, ``statistical_analysis``, ``segment_analysis``,
  ``real_time_metrics``): counters in, the engine's answers out (:mod:`.results`); never a scan
  of interactions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from mysetlist.errors import Conflict, InvalidRequest
from mysetlist.experiments import results as analysis
from mysetlist.experiments.assignment import AssignmentContext, assign
from mysetlist.experiments.definitions import MAX_CONTENT_BYTES, EventKind, Experiment, Method, content_json
from mysetlist.experiments.store import ExperimentStore
from mysetlist.observability import metrics

MAX_EVENTS_PER_REQUEST = 25
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"


class AnalysisAction(StrEnum):
    """The original's analysis actions (``?action=`` of GET and PATCH)."""

    RESULTS = "results"
    STATISTICAL_ANALYSIS = "statistical_analysis"
    SEGMENT_ANALYSIS = "segment_analysis"
    REAL_TIME_METRICS = "real_time_metrics"


# ---------------------------------------------------------------------------------- bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(_Body):
    """One interaction. ``event_id`` is the client's own id for it (a UUID, say): sending it again
    (a retry) records nothing new."""

    event_id: Annotated[str, Field(pattern=EVENT_ID_PATTERN, description="8-128 of A-Z a-z 0-9 . _ : -")]
    type: EventKind = Field(description="view, click, conversion or engagement")
    value: float | None = Field(
        default=None,
        description="For mean metrics (seconds engaged, an amount): added to the user's total; "
        "default 1. At most 1,000,000 in absolute value, 4 decimals kept",
    )


class TrackIn(_Body):
    """Body of ``POST /api/content/ab-testing?action=track``: the caller's interactions with the
    content one experiment served it (the ``test_id`` of the GET's answer)."""

    test_id: Annotated[str, Field(min_length=1, max_length=64)]
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class DefaultContentIn(_Body):
    """Body of ``POST /api/content/ab-testing?action=default_content``: what a placement serves
    when no running experiment includes the caller."""

    content_type: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    placement: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    content: dict[str, JsonValue] = Field(
        description=f"JSON object (at most {MAX_CONTENT_BYTES} bytes as JSON, as a variant's content)"
    )

    @field_validator("content")
    @classmethod
    def _small_json(cls, content: dict[str, JsonValue]) -> dict[str, JsonValue]:
        size = len(content_json(content).encode("utf-8"))
        if size > MAX_CONTENT_BYTES:
            raise ValueError(
                f"content is {size} bytes as JSON, more than the {MAX_CONTENT_BYTES} allowed: serve a "
                "reference (an id or a URL) instead of the payload"
            )
        return content


# ---------------------------------------------------------------------------------- answers


class ServedContent(BaseModel):
    """What ``GET ?content_type=&placement=`` answers."""

    content_type: str
    placement: str
    source: Literal["experiment", "default", "none"] = Field(
        description="experiment: a variant's content; default: the placement's default content; "
        "none: no default content is set"
    )
    content: dict[str, Any] | None
    test_id: str | None = None
    variant_id: str | None = None
    variant_name: str | None = None
    is_control: bool | None = None
    phase: int | None = None
    first_exposure: bool = Field(
        default=False, description="This request recorded the caller's exposure (once per phase)"
    )


class EventOutcome(BaseModel):
    event_id: str
    outcome: Literal["recorded", "duplicate"]
    counted: list[str] = Field(description="Metrics whose counters this event moved")


class Tracked(BaseModel):
    test_id: str
    variant_id: str
    phase: int
    events: list[EventOutcome]


# ---------------------------------------------------------------------------------- serving


def serve(
    store: ExperimentStore,
    running: Callable[[str, str], Sequence[Experiment]],
    default: Callable[[str, str], dict[str, Any] | None],
    context: AssignmentContext | None,
    content_type: str,
    placement: str,
    now: dt.datetime,
) -> ServedContent:
    """The caller's content for a placement (see the module docstring). ``running`` lists the
    placement's running experiments and ``default`` gives its default content (None when none
    is set): both read on every page view and changed rarely, so the caller caches them.
    ``context`` is None for a caller with no identity (no token, no device id)."""
    if context is not None:
        live = sorted(
            (e for e in running(content_type, placement) if e.is_live(now)),
            key=lambda e: (e.current_phase.started_at or e.created_at, e.test_id),
        )
        for experiment in live:
            served = _variant_for(store, experiment, context, now)
            if served is not None:
                metrics.add_metric(name="VariantsServed", unit=MetricUnit.Count, value=1)
                if served.first_exposure:
                    metrics.add_metric(name="ExposuresRecorded", unit=MetricUnit.Count, value=1)
                return served
    content = default(content_type, placement)
    metrics.add_metric(name="DefaultContentServed", unit=MetricUnit.Count, value=1)
    return ServedContent(
        content_type=content_type,
        placement=placement,
        source="default" if content is not None else "none",
        content=content,
    )


def _variant_for(
    store: ExperimentStore, experiment: Experiment, context: AssignmentContext, now: dt.datetime
) -> ServedContent | None:
    stored = store.assignment(experiment.test_id, context.subject, experiment.phase)
    first = False
    if stored is None:
        variant_id = assign(experiment, context)
        if variant_id is None:
            return None
        stored, first = store.expose(experiment, context, variant_id, now)
    variant = next((v for v in experiment.current_variants if v.variant_id == stored.variant_id), None)
    if variant is None:  # cannot happen: a phase's variants never change
        return None
    return ServedContent(
        content_type=experiment.content_type,
        placement=experiment.placement,
        source="experiment",
        content=variant.content,
        test_id=experiment.test_id,
        variant_id=variant.variant_id,
        variant_name=variant.name,
        is_control=variant.is_control,
        phase=experiment.phase,
        first_exposure=first,
    )


# ---------------------------------------------------------------------------------- tracking


def track(store: ExperimentStore, body: TrackIn, subject: str, now: dt.datetime) -> Tracked:
    """Record a batch of one caller's interactions, in order, each once per event id. 404 for an
    unknown experiment, 409 when it is not live (paused, completed, past its end date: nothing
    is recorded), 403 when the caller was never exposed to it in its current phase."""
    ids = [e.event_id for e in body.events]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("events: each event_id may appear once per request", details={"field": "events"})
    experiment = store.require(body.test_id)
    reason = experiment.not_live_reason(now)
    if reason is not None:
        raise Conflict(
            f"experiment {experiment.test_id!r} is not recording interactions: {reason}",
            details={"status": experiment.status.value},
        )
    outcomes: list[EventOutcome] = []
    variant_id = ""
    for event in body.events:
        done = store.track(
            experiment, subject, event_id=event.event_id, kind=event.type, value=event.value, now=now
        )
        variant_id = done.variant_id
        outcomes.append(
            EventOutcome(event_id=event.event_id, outcome=done.outcome, counted=list(done.counted))
        )
    recorded = sum(1 for o in outcomes if o.outcome == "recorded")
    metrics.add_metric(name="InteractionsRecorded", unit=MetricUnit.Count, value=recorded)
    if recorded < len(outcomes):
        metrics.add_metric(
            name="InteractionsDuplicate", unit=MetricUnit.Count, value=len(outcomes) - recorded
        )
    return Tracked(test_id=experiment.test_id, variant_id=variant_id, phase=experiment.phase, events=outcomes)


# ---------------------------------------------------------------------------------- analysis


def analyse(
    store: ExperimentStore,
    experiment: Experiment,
    action: AnalysisAction,
    now: dt.datetime,
    *,
    phase: int | None = None,
    method: Method | None = None,
) -> dict[str, Any]:
    """One of the original's analysis answers, from the phase's counters (the current phase by
    default; 404 for a phase the experiment never had)."""
    number = experiment.phase_of(phase).number
    chosen = method.value if method is not None else None
    test_id = experiment.test_id
    if action is AnalysisAction.RESULTS:
        counts = store.counters(test_id, number, now=now).totals()
        return analysis.results(experiment, counts, phase=number, method=chosen, now=now)
    if action is AnalysisAction.STATISTICAL_ANALYSIS:
        counters = store.counters(test_id, number, now=now)
        return analysis.statistical_analysis(
            experiment, counters.totals(), counters.daily_exposures(), phase=number, method=chosen, now=now
        )
    if action is AnalysisAction.SEGMENT_ANALYSIS:
        by_dimension = store.segment_counters(test_id, number, now=now)
        return analysis.segment_analysis(experiment, by_dimension, phase=number, method=chosen, now=now)
    since = now - dt.timedelta(minutes=analysis.REAL_TIME_MINUTES - 1)
    buckets = store.live(test_id, number, since.replace(second=0, microsecond=0))
    return analysis.real_time_metrics(experiment, buckets, phase=number, now=now)


def public(experiment: Experiment) -> dict[str, Any]:
    """An experiment as the API shows it: every stored field but the salt (which, with the
    subject, would let anyone compute who gets which variant)."""
    return experiment.model_dump(mode="json", exclude={"salt"})
