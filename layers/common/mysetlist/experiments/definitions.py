"""Experiment definitions: what an admin sends, what is stored, and the rules between the two.

* :class:`ExperimentIn` is the body that creates an experiment, :class:`ExperimentPatch` the one
  that changes it. Both forbid unknown fields and give each broken rule a message naming the
  field, so the API answers 422 with something a client developer can fix.
* :class:`Experiment` is the stored form: the definition, its lifecycle ``status``, and its
  ``phases``. A phase freezes what a result depends on (the variants, their weights and the
  traffic allocation): counters and assignments are kept per phase, so a change of those starts
  a new phase instead of mixing two designs in one analysis.
* :meth:`Experiment.apply_action` and :meth:`Experiment.apply_patch` are the only ways a stored
  experiment changes; they return a new value and leave ``version`` as it was read, so the store
  can save with the condition that nobody else saved first (``version + 1`` on ``version =
  read``).

A new phase keeps the previous phase's randomisation (``Phase.seed_phase``) when the variants and
their weights are unchanged: ramping a test from 10% to 50% of the traffic keeps every user who
was already in it on the variant they saw (``mysetlist.experiments.assignment``). Changing the
variants or their weights re-randomises everyone, so that what users saw before does not leak
into the new comparison.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    computed_field,
    field_validator,
)
from pydantic_core import PydanticCustomError

from mysetlist import keys
from mysetlist.dynamo import from_item as _plain_values
from mysetlist.dynamo import to_item as _attribute_values
from mysetlist.errors import Conflict, NotFound, Unprocessable
from mysetlist.models import Id

MIN_VARIANTS = 2
MAX_VARIANTS = 10
MAX_NAME = 120
MAX_VARIANT_NAME = 80
MAX_DESCRIPTION = 2000
MAX_SLUG = 64
# A variant's content is served with every GET of its placement: kept small on purpose.
MAX_CONTENT_BYTES = 8 * 1024
MAX_GUARDRAILS = 5
MAX_FOLLOWED_ARTISTS = 50
# Below this share of the traffic a variant would take months to reach a useful sample, and
# a weight like 1e9 against 1 is a typo more often than a design.
MIN_VARIANT_SHARE = 0.01
# Each phase repeats its variants' content in the one experiment item (DynamoDB: 400 KB at
# most); this leaves room for the rest of the item.
MAX_STORED_PHASES_BYTES = 300_000
DEFAULT_ALPHA = 0.05
MIN_ALPHA = 0.001
MAX_ALPHA = 0.2
MAX_MDE = 10.0
# Layers split each user's bucket space into this many buckets (a range per experiment).
LAYER_BUCKETS = 10_000
SALT_BYTES = 8  # 16 hex characters

EXPERIMENT_SK = "META"
EXPERIMENTS_PARTITION = "EXPERIMENTS"

# ISO 3166-1 alpha-2: the 249 officially assigned codes. A region outside the list would match
# no caller, silently; refusing it at definition time surfaces the typo ("UK" for "GB").
_ISO_ROWS = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS",
    "BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE",
    "EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM",
    "HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC",
    "LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA",
    "NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW",
    "SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO",
    "TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW",
)
ISO_COUNTRIES = frozenset(code for row in _ISO_ROWS for code in row.split())
_COUNTRY_HINTS = {"UK": "GB", "EN": "GB", "EL": "GR"}


# ---------------------------------------------------------------------------------- enums


class EventKind(StrEnum):
    """What a caller can record about the content it was served."""

    VIEW = "view"
    CLICK = "click"
    CONVERSION = "conversion"
    ENGAGEMENT = "engagement"


class MetricType(StrEnum):
    """proportion: share of exposed users with at least one such event (unique converters);
    mean: per-user total of the events' values (users with none count as 0)."""

    PROPORTION = "proportion"
    MEAN = "mean"


class Method(StrEnum):
    FREQUENTIST = "frequentist"
    BAYESIAN = "bayesian"
    SEQUENTIAL = "sequential"


class Correction(StrEnum):
    """Adjustment across the comparisons of one analysis (docs/experiments.md)."""

    HOLM = "holm"
    BH = "bh"


class Device(StrEnum):
    MOBILE = "mobile"
    TABLET = "tablet"
    DESKTOP = "desktop"


class TargetRole(StrEnum):
    """The caller's role as targeting sees it: anonymous, or the highest role of a signed-in
    caller (``mysetlist.auth.Role``)."""

    ANONYMOUS = "anonymous"
    USER = "user"
    MODERATOR = "moderator"
    CONTENT_MANAGER = "content_manager"
    ADMIN = "admin"


class UserType(StrEnum):
    NEW = "new"
    RETURNING = "returning"


class Status(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ARCHIVED = "archived"


class Action(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    ARCHIVE = "archive"


# The lifecycle: (status, action) -> new status. Anything else is a 409.
TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (Status.DRAFT, Action.START): Status.RUNNING,
    (Status.RUNNING, Action.PAUSE): Status.PAUSED,
    (Status.PAUSED, Action.RESUME): Status.RUNNING,
    (Status.RUNNING, Action.COMPLETE): Status.COMPLETED,
    (Status.PAUSED, Action.COMPLETE): Status.COMPLETED,
    (Status.DRAFT, Action.ARCHIVE): Status.ARCHIVED,
    (Status.COMPLETED, Action.ARCHIVE): Status.ARCHIVED,
}
# Statuses in which the experiment holds its layer range (users may be exposed).
ACTIVE_STATUSES = frozenset({Status.RUNNING, Status.PAUSED})


# ---------------------------------------------------------------------------------- field types


def _problem(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose message reaches the client as written (no 'Value error,'
    prefix). Braces in ``message`` would be read as placeholders: they are escaped."""
    return PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}"))


_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_METRIC_NAME = re.compile(r"[a-z0-9_]{1,40}")


def _check_slug(value: str) -> str:
    # Slugs end up in item keys ('#' separates their parts) and in URLs.
    if not _SLUG.fullmatch(value):
        raise _problem(
            "slug",
            f"must be 1 to {MAX_SLUG} lower-case letters, digits, '-' or '_', starting with a letter "
            f"or digit (e.g. 'home-hero'); got {value[:100]!r}",
        )
    return value


def _check_metric_name(value: str) -> str:
    if not _METRIC_NAME.fullmatch(value):
        raise _problem(
            "metric_name",
            f"must be 1 to 40 lower-case letters, digits or '_' (e.g. 'signup_rate'); got {value[:100]!r}",
        )
    return value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _check_country(value: str) -> str:
    if value not in ISO_COUNTRIES:
        hint = _COUNTRY_HINTS.get(value)
        suggestion = f": use {hint!r}" if hint else " (two letters, e.g. 'US', 'GB', 'DE')"
        raise _problem("region", f"{value[:20]!r} is not an ISO 3166-1 alpha-2 country code{suggestion}")
    return value


Slug = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_check_slug),
    Field(json_schema_extra={"pattern": f"^{_SLUG.pattern}$"}),
]
MetricName = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_check_metric_name),
    Field(json_schema_extra={"pattern": f"^{_METRIC_NAME.pattern}$"}),
]
Region = Annotated[
    str,
    BeforeValidator(_upper),
    AfterValidator(_check_country),
    Field(json_schema_extra={"pattern": "^[A-Z]{2}$"}, description="ISO 3166-1 alpha-2, e.g. US"),
]
ExperimentName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME)]
VariantName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_VARIANT_NAME)
]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_DESCRIPTION)]
Weight = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Allocation = Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)]
Alpha = Annotated[float, Field(ge=MIN_ALPHA, le=MAX_ALPHA, allow_inf_nan=False)]
Mde = Annotated[float, Field(gt=0, le=MAX_MDE, allow_inf_nan=False)]


class _In(BaseModel):
    """Request bodies: unknown fields are a 422 (a misspelt field is never silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------- parts


class MetricSpec(_In):
    """A metric the experiment measures, from the callers' events of one kind."""

    name: MetricName = Field(description="Unique within the experiment, e.g. signup_rate")
    type: MetricType = Field(description="proportion: users with at least one event; mean: per-user total")
    event: EventKind = Field(description="The event kind that feeds it")


DEFAULT_PRIMARY_METRIC = MetricSpec(
    name="conversion_rate", type=MetricType.PROPORTION, event=EventKind.CONVERSION
)


def _unique_in_order[T](values: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(values))


class Targeting(_In):
    """Who may enter the experiment. Every given field must match (AND); within a list any value
    matches (OR). A field left out does not restrict. Callers outside the targeting get the
    placement's default content and are not counted."""

    devices: list[Device] | None = Field(default=None, description="mobile, tablet, desktop")
    regions: list[Region] | None = Field(
        default=None, description="ISO 3166-1 alpha-2 country codes of the caller's location"
    )
    roles: list[TargetRole] | None = Field(
        default=None,
        description="anonymous, user, moderator, content_manager, admin (a signed-in caller's highest role)",
    )
    user_type: UserType | None = Field(
        default=None, description="new: account created in the last 30 days; anonymous callers never match"
    )
    artist_followers: list[Id] | None = Field(
        default=None,
        max_length=MAX_FOLLOWED_ARTISTS,
        description="Artist ids: callers who follow one of them (anonymous callers never match)",
    )

    @field_validator("devices", "regions", "roles", "artist_followers")
    @classmethod
    def _not_empty(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value is None:
            return None
        if not value:
            raise _problem(
                "empty_targeting",
                f"give at least one value, or leave {info.field_name} out to include every caller",
            )
        return _unique_in_order(value)

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


class VariantIn(_In):
    """One variant of a create or patch body."""

    name: VariantName
    content: dict[str, Any] = Field(
        description=f"JSON object served to the variant's users (at most {MAX_CONTENT_BYTES} bytes as JSON)"
    )
    weight: Weight = Field(
        description="Relative share of the included traffic (weights are normalised: 1 and 1, or 50 and 50)"
    )
    is_control: bool = Field(default=False, description="Exactly one variant is the control")
    variant_id: Slug | None = Field(
        default=None, description="Stable id (default: the slug of the name); unique in the experiment"
    )

    @field_validator("content")
    @classmethod
    def _small_json(cls, content: dict[str, Any]) -> dict[str, Any]:
        size = len(content_json(content).encode("utf-8"))
        if size > MAX_CONTENT_BYTES:
            raise _problem(
                "content_too_large",
                f"content is {size} bytes as JSON, more than the {MAX_CONTENT_BYTES} allowed: serve a "
                "reference (an id or a URL) instead of the payload",
            )
        return content

    @property
    def resolved_id(self) -> str:
        return self.variant_id or default_variant_id(self.name)

    def to_variant(self) -> Variant:
        return Variant(
            variant_id=self.resolved_id,
            name=self.name,
            content=self.content,
            weight=self.weight,
            is_control=self.is_control,
        )


class Variant(BaseModel):
    """A variant as stored in a phase (its id resolved)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    variant_id: str
    name: str
    content: dict[str, Any]
    weight: float
    is_control: bool = False


class Phase(BaseModel):
    """One period of an experiment with fixed variants, weights and traffic allocation.

    ``seed_phase`` names the phase whose randomisation this one uses: its own number, or the
    previous phase's when only the allocation changed (users keep their variant when a test ramps
    up). ``started_at`` is None until the phase first runs; ``ended_at`` is set when the next
    phase replaces it or the experiment completes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    number: int = Field(ge=1)
    seed_phase: int = Field(ge=1)
    variants: list[Variant]
    traffic_allocation: float
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None

    @property
    def control(self) -> Variant:
        return next(v for v in self.variants if v.is_control)

    @property
    def normalised_weights(self) -> dict[str, float]:
        return dict(
            zip(
                (v.variant_id for v in self.variants),
                normalise([v.weight for v in self.variants]),
                strict=True,
            )
        )


def normalise(weights: Sequence[float]) -> list[float]:
    """Weights as shares of their total (sum exactly 1 up to rounding)."""
    total = math.fsum(weights)
    if not weights or not total > 0 or not math.isfinite(total):
        raise ValueError(f"weights must be positive and finite, got {list(weights)}")
    return [w / total for w in weights]


def content_json(content: Mapping[str, Any]) -> str:
    """The content as compact JSON (its stored form and the measure of its size).

    ValueError, as a field error, for what JSON cannot carry (NaN, infinities, non-JSON types)."""
    try:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _problem(
            "content_not_json", f"content must be plain JSON (no NaN or Infinity): {exc}"
        ) from None


def default_variant_id(name: str) -> str:
    """The slug of ``name`` ('Big Hero' -> 'big-hero'); names with no letters or digits get a
    short hash instead, so that every name has an id."""
    slug = keys.slugify(name)[:MAX_SLUG].rstrip("-")
    if slug:
        return slug
    return "v-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]


# ---------------------------------------------------------------------------------- shared rules


def _check_variants(variants: list[VariantIn] | None) -> list[VariantIn] | None:
    """The rules across variants: one control, unique names and ids, no negligible share."""
    if variants is None:
        return None
    controls = [v.name for v in variants if v.is_control]
    if len(controls) != 1:
        found = f"{len(controls)}: " + ", ".join(repr(c) for c in controls) if controls else "none"
        raise _problem("one_control", f"exactly one variant must have is_control true (found {found})")
    seen_names: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    for index, variant in enumerate(variants):
        folded = variant.name.casefold()
        if folded in seen_names:
            raise _problem(
                "duplicate_variant",
                f"variant names must be unique (ignoring case): variants[{seen_names[folded]}] "
                f"({variants[seen_names[folded]].name!r}) and variants[{index}] ({variant.name!r})",
            )
        seen_names[folded] = index
        vid = variant.resolved_id
        if vid in seen_ids:
            raise _problem(
                "duplicate_variant_id",
                f"variant ids must be unique: variants[{seen_ids[vid]}] and variants[{index}] both have "
                f"the id {vid!r} (an id defaults to the slug of the name): give variant_id to tell them apart",
            )
        seen_ids[vid] = index
    shares = normalise([v.weight for v in variants])
    for index, share in enumerate(shares):
        if share < MIN_VARIANT_SHARE - 1e-12:
            raise _problem(
                "weight_too_small",
                f"variants[{index}] ({variants[index].name!r}) would get {share:.4%} of the traffic: "
                f"each variant needs at least {MIN_VARIANT_SHARE:.0%} (weights are relative: 50 and 50 "
                "is an even split)",
            )
    return variants


def _check_guardrails(guardrails: list[MetricSpec] | None) -> list[MetricSpec] | None:
    if guardrails is None:
        return None
    names: dict[str, int] = {}
    for index, metric in enumerate(guardrails):
        if metric.name in names:
            raise _problem(
                "duplicate_metric",
                f"metric names must be unique: guardrail_metrics[{names[metric.name]}] and "
                f"guardrail_metrics[{index}] are both {metric.name!r}",
            )
        names[metric.name] = index
    return guardrails


def _check_metrics_together(primary: MetricSpec | None, guardrails: list[MetricSpec]) -> None:
    """Guardrails distinct from the primary metric, and no metric measured twice."""
    measured: dict[tuple[MetricType, EventKind], str] = {}
    labelled = ([("primary_metric", primary)] if primary is not None else []) + [
        (f"guardrail_metrics[{i}]", m) for i, m in enumerate(guardrails)
    ]
    for label, metric in labelled:
        if primary is not None and label != "primary_metric" and metric.name == primary.name:
            raise _problem(
                "duplicate_metric",
                f"{label} is named {metric.name!r} like the primary metric: each metric needs its own name",
            )
        what = (metric.type, metric.event)
        if what in measured:
            raise _problem(
                "duplicate_metric",
                f"{label} measures the same thing as {measured[what]} ({metric.type.value} of "
                f"{metric.event.value} events): keep one of them",
            )
        measured[what] = label


def _check_dates(start: dt.datetime | None, end: dt.datetime | None) -> None:
    if start is not None and end is not None and not end > start:
        raise _problem(
            "end_before_start", f"end_date ({end.isoformat()}) must be after start_date ({start.isoformat()})"
        )


def _now_of(info: ValidationInfo) -> dt.datetime:
    """``now`` from the validation context (tests, the patch path), else the clock."""
    context = info.context if isinstance(info.context, Mapping) else {}
    now = context.get("now")
    return now if isinstance(now, dt.datetime) else dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------------- bodies


class ExperimentSpec(_In):
    """What an experiment is, whatever its status (the rules of a create body without the clock)."""

    name: ExperimentName
    description: Description = ""
    content_type: Slug = Field(description="Kind of content the experiment replaces, e.g. banner")
    placement: Slug = Field(description="Where it is served, e.g. home-hero")
    variants: list[VariantIn] = Field(min_length=MIN_VARIANTS, max_length=MAX_VARIANTS)
    traffic_allocation: Allocation = Field(
        default=100.0, description="Percentage (1 to 100) of the targeted callers who enter the experiment"
    )
    targeting: Targeting = Field(default_factory=Targeting)
    primary_metric: MetricSpec = Field(
        default=DEFAULT_PRIMARY_METRIC,
        description="What decides the experiment (default: share of users with a conversion event)",
    )
    guardrail_metrics: list[MetricSpec] = Field(
        default_factory=list,
        max_length=MAX_GUARDRAILS,
        description="Metrics that must not get worse (analysed with the primary, adjusted together)",
    )
    layer: Slug | None = Field(
        default=None,
        description="Experiments sharing a layer never share a user (each takes its own slice of the layer)",
    )
    start_date: AwareDatetime | None = Field(
        default=None, description="No variant is served before it (default: from the start action)"
    )
    end_date: AwareDatetime | None = Field(
        default=None, description="No variant is served after it (the experiment stops counting)"
    )
    method: Method = Method.FREQUENTIST
    alpha: Alpha = Field(
        default=DEFAULT_ALPHA, description=f"Significance level ({MIN_ALPHA} to {MAX_ALPHA})"
    )
    correction: Correction = Field(default=Correction.HOLM, description="holm or bh (Benjamini-Hochberg)")
    minimum_detectable_effect: Mde | None = Field(
        default=None, description="Relative lift the test should be able to see, e.g. 0.05 for +5% (power)"
    )

    _variants_rule = field_validator("variants")(_check_variants)
    _guardrails_rule = field_validator("guardrail_metrics")(_check_guardrails)

    @field_validator("guardrail_metrics")
    @classmethod
    def _distinct_from_primary(cls, guardrails: list[MetricSpec], info: ValidationInfo) -> list[MetricSpec]:
        _check_metrics_together(info.data.get("primary_metric"), guardrails)
        return guardrails

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, end: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
        _check_dates(info.data.get("start_date"), end)
        return end


class ExperimentIn(ExperimentSpec):
    """Body of POST /api/content/ab-testing: a new experiment (created as a draft)."""

    @field_validator("end_date")
    @classmethod
    def _in_the_future(cls, end: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
        now = _now_of(info)
        if end is not None and not end > now:
            raise _problem(
                "end_in_past", f"end_date ({end.isoformat()}) must be in the future (now {now.isoformat()})"
            )
        return end


# Fields a client may set to null in a patch, and what null means.
CLEARED_VALUES: dict[str, Any] = {
    "description": "",
    "targeting": Targeting(),
    "layer": None,
    "start_date": None,
    "end_date": None,
    "minimum_detectable_effect": None,
}


class ExperimentPatch(_In):
    """Body of PATCH /api/content/ab-testing?test_id=: the fields to change, the others left out.

    ``null`` clears an optional field (description, targeting, layer, start_date, end_date,
    minimum_detectable_effect). Once started, its content_type, placement, layer and metrics are
    fixed; while it runs or is paused its variants, weights and traffic allocation are frozen:
    changing them needs ``"new_phase": true``. A completed experiment changes only its name,
    description and analysis settings."""

    name: ExperimentName | None = None
    description: Description | None = None
    content_type: Slug | None = None
    placement: Slug | None = None
    variants: list[VariantIn] | None = Field(default=None, min_length=MIN_VARIANTS, max_length=MAX_VARIANTS)
    traffic_allocation: Allocation | None = None
    targeting: Targeting | None = None
    primary_metric: MetricSpec | None = None
    guardrail_metrics: list[MetricSpec] | None = Field(default=None, max_length=MAX_GUARDRAILS)
    layer: Slug | None = None
    start_date: AwareDatetime | None = None
    end_date: AwareDatetime | None = None
    method: Method | None = None
    alpha: Alpha | None = None
    correction: Correction | None = None
    minimum_detectable_effect: Mde | None = None
    new_phase: bool = Field(
        default=False,
        description="Required to change the variants, weights or traffic allocation of a running or "
        "paused experiment: starts the next phase (earlier phases stay readable with ?phase=)",
    )

    _variants_rule = field_validator("variants")(_check_variants)
    _guardrails_rule = field_validator("guardrail_metrics")(_check_guardrails)

    @field_validator(
        "name",
        "content_type",
        "placement",
        "variants",
        "traffic_allocation",
        "primary_metric",
        "guardrail_metrics",
        "method",
        "alpha",
        "correction",
        mode="wrap",
    )
    @classmethod
    def _not_null(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        if value is None:
            raise _problem(
                "not_clearable",
                f"{info.field_name} cannot be null: leave it out to keep the current value",
            )
        return handler(value)

    @property
    def changes(self) -> dict[str, Any]:
        """The fields the client sent (null turned into the cleared value), new_phase left out."""
        given = self.model_fields_set - {"new_phase"}
        return {
            name: CLEARED_VALUES[name] if getattr(self, name) is None else getattr(self, name)
            for name in sorted(given)
        }


# ---------------------------------------------------------------------------------- stored form

# What may change, by status (anything else sent with a different value is a 409): completed
# experiments change only these; running and paused ones anything but the draft-only fields
# (and start_date once serving), the phase fields only with new_phase.
ANALYSIS_FIELDS = frozenset(
    {"name", "description", "method", "alpha", "correction", "minimum_detectable_effect"}
)
PHASE_FIELDS = frozenset({"variants", "traffic_allocation"})
# Fixed once the experiment has started: where it is served and its layer (its slice of the
# layer is reserved), and its metrics (decided before the data came in; counters exist only
# for them).
DRAFT_ONLY_FIELDS = frozenset({"content_type", "placement", "layer", "primary_metric", "guardrail_metrics"})


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def experiment_pk(test_id: str) -> str:
    return f"EXP#{test_id}"


def placement_pk(content_type: str, placement: str) -> str:
    """The placement's partition (GSI1 of its experiments, and its default content item)."""
    return f"PLACEMENT#{content_type}#{placement}"


def new_test_id() -> str:
    return str(uuid.uuid4())


def new_salt() -> str:
    """16 hex characters: each experiment randomises independently of every other one."""
    return secrets.token_hex(SALT_BYTES)


class Experiment(BaseModel):
    """An experiment as stored (one item: see :meth:`to_item`).

    Unknown attributes are ignored when reading, so that an item written by a newer version of
    the code can still be read during a deployment."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    test_id: str
    name: str
    description: str = ""
    content_type: str
    placement: str
    targeting: Targeting = Field(default_factory=Targeting)
    primary_metric: MetricSpec
    guardrail_metrics: list[MetricSpec] = Field(default_factory=list)
    layer: str | None = None
    layer_range: tuple[int, int] | None = Field(
        default=None, description="The slice [lo, hi) of the layer's 10,000 buckets it holds while active"
    )
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    method: Method = Method.FREQUENTIST
    alpha: float = DEFAULT_ALPHA
    correction: Correction = Correction.HOLM
    minimum_detectable_effect: float | None = None
    status: Status
    phase: int = Field(ge=1, description="The current phase")
    phases: list[Phase]
    salt: str
    version: int = Field(ge=1)
    created_by: str
    created_at: dt.datetime
    updated_by: str
    updated_at: dt.datetime
    completed_at: dt.datetime | None = None

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        spec: ExperimentSpec,
        *,
        by: str,
        now: dt.datetime,
        test_id: str | None = None,
        salt: str | None = None,
    ) -> Experiment:
        """A new draft from a validated body (phase 1, not started, version 1)."""
        return cls(
            test_id=test_id or new_test_id(),
            name=spec.name,
            description=spec.description,
            content_type=spec.content_type,
            placement=spec.placement,
            targeting=spec.targeting,
            primary_metric=spec.primary_metric,
            guardrail_metrics=list(spec.guardrail_metrics),
            layer=spec.layer,
            start_date=spec.start_date,
            end_date=spec.end_date,
            method=spec.method,
            alpha=spec.alpha,
            correction=spec.correction,
            minimum_detectable_effect=spec.minimum_detectable_effect,
            status=Status.DRAFT,
            phase=1,
            phases=[
                Phase(
                    number=1,
                    seed_phase=1,
                    variants=[v.to_variant() for v in spec.variants],
                    traffic_allocation=spec.traffic_allocation,
                )
            ],
            salt=salt or new_salt(),
            version=1,
            created_by=by,
            created_at=now,
            updated_by=by,
            updated_at=now,
        )

    # ------------------------------------------------------------------ views
    @property
    def current_phase(self) -> Phase:
        return self.phases[self.phase - 1]

    @property
    def current_variants(self) -> list[Variant]:
        return self.current_phase.variants

    @computed_field(description="The current phase's variants")  # type: ignore[prop-decorator]
    @property
    def variants(self) -> list[Variant]:
        return self.current_variants

    @computed_field(description="The current phase's traffic allocation (percent)")  # type: ignore[prop-decorator]
    @property
    def traffic_allocation(self) -> float:
        return self.current_phase.traffic_allocation

    def phase_of(self, number: int | None = None) -> Phase:
        """Phase ``number`` (default: the current one); 404 when the experiment has no such phase."""
        if number is None:
            return self.current_phase
        if not 1 <= number <= len(self.phases):
            raise NotFound(
                f"experiment {self.test_id} has no phase {number}: its phases are 1 to {len(self.phases)}",
                details={"test_id": self.test_id, "phase": number, "phases": len(self.phases)},
            )
        return self.phases[number - 1]

    def normalised_weights(self, phase: int | None = None) -> dict[str, float]:
        """variant_id -> share of the included traffic (sums to 1), in the variants' order."""
        return self.phase_of(phase).normalised_weights

    @property
    def metrics(self) -> list[MetricSpec]:
        """The primary metric, then the guardrails."""
        return [self.primary_metric, *self.guardrail_metrics]

    def metrics_for(self, event: EventKind) -> list[MetricSpec]:
        """The metrics an event of this kind feeds (tracking updates exactly these)."""
        return [m for m in self.metrics if m.event is event]

    @property
    def layer_width(self) -> int:
        """Buckets of its layer the current allocation needs (1% = 100 of 10,000)."""
        return max(1, min(LAYER_BUCKETS, round(self.traffic_allocation * LAYER_BUCKETS / 100)))

    @property
    def needs_layer_range(self) -> bool:
        """True when the store must (re)reserve the layer slice before saving: an active layered
        experiment without one, or whose slice no longer has the allocation's width (a new
        phase changed the allocation)."""
        if self.layer is None or self.status not in ACTIVE_STATUSES:
            return False
        if self.layer_range is None:
            return True
        lo, hi = self.layer_range
        return hi - lo != self.layer_width

    def not_live_reason(self, now: dt.datetime) -> str | None:
        """Why no variant is served or tracked now (None: it is live)."""
        if self.status is not Status.RUNNING:
            return f"the experiment is {self.status.value}"
        if self.start_date is not None and now < self.start_date:
            return f"the experiment starts at {_iso(self.start_date)}"
        if self.end_date is not None and now >= self.end_date:
            return f"the experiment ended at {_iso(self.end_date)}"
        if self.layer is not None and self.layer_range is None:
            return f"the experiment has no slice of layer {self.layer!r} yet"
        return None

    def is_live(self, now: dt.datetime) -> bool:
        """Running, between its dates (and holding its layer slice): variants are served."""
        return self.not_live_reason(now) is None

    # ------------------------------------------------------------------ lifecycle
    def transition(self, action: Action, now: dt.datetime) -> Status:
        """The status ``action`` leads to; 409 naming the current status when it is not allowed
        (including starting or resuming after the end date)."""
        target = TRANSITIONS.get((self.status, action))
        if target is None:
            allowed = sorted(a.value for (s, a) in TRANSITIONS if s is self.status)
            hint = f"allowed now: {', '.join(allowed)}" if allowed else "no action is allowed on it"
            raise Conflict(
                f"cannot {action.value} experiment {self.test_id}: it is {self.status.value} ({hint})",
                details={"status": self.status.value, "action": action.value, "allowed": allowed},
            )
        if target is Status.RUNNING and self.end_date is not None and now >= self.end_date:
            raise Conflict(
                f"cannot {action.value} experiment {self.test_id}: its end_date {_iso(self.end_date)} has "
                "passed (set a later end_date first, or complete it)",
                details={
                    "status": self.status.value,
                    "action": action.value,
                    "end_date": _iso(self.end_date),
                },
            )
        return target

    def apply_action(self, action: Action, by: str, now: dt.datetime) -> Experiment:
        """The experiment after ``action`` (409 when not allowed). Starting or resuming stamps the
        current phase's start; completing ends it and gives up the layer slice, as archiving does.
        A layered experiment that starts has no slice yet: the store reserves one
        (:attr:`needs_layer_range`)."""
        target = self.transition(action, now)
        phases = list(self.phases)
        current = self.current_phase
        update: dict[str, Any] = {"status": target, "updated_by": by, "updated_at": now}
        if target is Status.RUNNING and current.started_at is None:
            phases[-1] = current.model_copy(update={"started_at": now})
        if target is Status.COMPLETED:
            phases[-1] = current.model_copy(update={"ended_at": now})
            update["completed_at"] = now
        if target not in ACTIVE_STATUSES:
            update["layer_range"] = None
        update["phases"] = phases
        return self.model_copy(update=update)

    def with_layer_range(self, layer_range: tuple[int, int] | None) -> Experiment:
        return self.model_copy(update={"layer_range": layer_range})

    def apply_patch(self, patch: ExperimentPatch, by: str, now: dt.datetime) -> Experiment:
        """The experiment after ``patch``.

        * 409 when the status freezes a field that changes (the message names the fields and how
          to proceed): archived experiments change nothing; completed ones only their name,
          description and analysis settings; running and paused ones keep their placement, layer
          and metrics, and change variants, weights or allocation only with ``new_phase``.
        * 422 when the merged definition breaks a rule (guardrail named like a new primary
          metric, end before start, end in the past ...), in the shape of a validation error.

        A draft's variants change in place (it has no data); a new phase ends the current one."""
        sent = patch.changes
        changed = {name for name, value in sent.items() if not self._same(name, value)}
        if not changed and not patch.new_phase:
            return self
        self._check_frozen(changed, patch.new_phase, now)
        merged = self._validated({**self._spec_values(), **sent}, changed, now)
        update: dict[str, Any] = {name: getattr(merged, name) for name in changed if name not in PHASE_FIELDS}
        update |= {"updated_by": by, "updated_at": now}
        phase = Phase(
            number=self.phase,
            seed_phase=self.current_phase.seed_phase,
            variants=[v.to_variant() for v in merged.variants],
            traffic_allocation=merged.traffic_allocation,
            started_at=self.current_phase.started_at,
        )
        if self.status is Status.DRAFT:
            update["phases"] = [*self.phases[:-1], phase]
        elif patch.new_phase:
            number = len(self.phases) + 1
            keeps_randomisation = _same_split(phase.variants, self.current_variants)
            update["phases"] = [
                *self.phases[:-1],
                self.current_phase.model_copy(update={"ended_at": now}),
                phase.model_copy(
                    update={
                        "number": number,
                        "seed_phase": self.current_phase.seed_phase if keeps_randomisation else number,
                        "started_at": now if self.status is Status.RUNNING else None,
                    }
                ),
            ]
            update["phase"] = number
        updated = self.model_copy(update=update)
        updated._check_size()
        return updated

    # ------------------------------------------------------------------ patch helpers
    def _spec_values(self) -> dict[str, Any]:
        """The current definition as ExperimentSpec fields."""
        return {
            "name": self.name,
            "description": self.description,
            "content_type": self.content_type,
            "placement": self.placement,
            "variants": [VariantIn(**v.model_dump()) for v in self.current_variants],
            "traffic_allocation": self.traffic_allocation,
            "targeting": self.targeting,
            "primary_metric": self.primary_metric,
            "guardrail_metrics": self.guardrail_metrics,
            "layer": self.layer,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "method": self.method,
            "alpha": self.alpha,
            "correction": self.correction,
            "minimum_detectable_effect": self.minimum_detectable_effect,
        }

    def _same(self, name: str, value: Any) -> bool:
        if name == "variants":
            return [v.to_variant() for v in value] == self.current_variants
        current = self.traffic_allocation if name == "traffic_allocation" else getattr(self, name)
        return bool(current == value)

    def _check_frozen(self, changed: set[str], new_phase: bool, now: dt.datetime) -> None:
        status = self.status.value
        details: dict[str, Any] = {"status": status}
        if self.status is Status.ARCHIVED:
            raise Conflict(
                f"experiment {self.test_id} is archived: it cannot change ({', '.join(sorted(changed))} sent)",
                details=details | {"fields": sorted(changed)},
            )
        if self.status is Status.COMPLETED:
            refused = sorted(changed - ANALYSIS_FIELDS)
            if refused or new_phase:
                raise Conflict(
                    f"experiment {self.test_id} is completed: only {', '.join(sorted(ANALYSIS_FIELDS))} "
                    f"can change ({', '.join(refused) or 'new_phase'} sent); create a new experiment to test again",
                    details=details | {"fields": refused},
                )
            return
        if self.status is Status.DRAFT:
            return
        fixed = sorted(changed & DRAFT_ONLY_FIELDS)
        if fixed:
            raise Conflict(
                f"{', '.join(fixed)} cannot change once experiment {self.test_id} has started (it is "
                f"{status}): create a new experiment for another placement, layer or metric",
                details=details | {"fields": fixed},
            )
        if "start_date" in changed and (self.start_date is None or self.start_date <= now):
            raise Conflict(
                f"start_date cannot change: experiment {self.test_id} is {status} and has started serving "
                "(set end_date, or pause or complete it)",
                details=details | {"fields": ["start_date"]},
            )
        frozen = sorted(changed & PHASE_FIELDS)
        if frozen and not new_phase:
            raise Conflict(
                f"experiment {self.test_id} is {status}: changing its {' and '.join(frozen)} starts a new "
                f'phase, send "new_phase": true to start phase {len(self.phases) + 1} with them (the '
                f"results of phase {self.phase} stay readable with ?phase={self.phase})",
                details=details | {"fields": frozen, "phase": self.phase},
            )

    def _validated(self, values: dict[str, Any], changed: set[str], now: dt.datetime) -> ExperimentSpec:
        """The merged definition, checked by the create rules (422 in the API's validation shape)."""
        try:
            spec = ExperimentSpec.model_validate(values, context={"now": now})
        except ValidationError as exc:
            raise _unprocessable(exc) from None
        if "end_date" in changed and spec.end_date is not None and not spec.end_date > now:
            raise Unprocessable(
                f"end_date: must be in the future (now {_iso(now)}); complete the experiment to stop it now",
                details={"fields": [{"field": "end_date", "problem": "must be in the future"}]},
            )
        return spec

    def _check_size(self) -> None:
        size = len(json.dumps([p.model_dump(mode="json") for p in self.phases], separators=(",", ":")))
        if size > MAX_STORED_PHASES_BYTES:
            raise Unprocessable(
                f"experiment {self.test_id} would store {size} bytes of variants over its "
                f"{len(self.phases)} phases, more than {MAX_STORED_PHASES_BYTES}: make the content "
                "smaller, or complete it and create a new experiment",
                details={"bytes": size, "phases": len(self.phases)},
            )

    # ------------------------------------------------------------------ items
    def to_item(self) -> dict[str, Any]:
        """The experiment item in DynamoDB's attribute-value form, with its keys.

        Variant content is stored as a JSON string: DynamoDB maps would drop nulls and turn
        1.0 into 1, and the API must serve back exactly what was sent."""
        values = self.model_dump(mode="json", exclude={"variants", "traffic_allocation"})
        for name in ("start_date", "end_date", "created_at", "updated_at", "completed_at"):
            moment = getattr(self, name)
            values[name] = _iso(moment) if moment is not None else None
        values["phases"] = [_phase_values(p) for p in self.phases]
        values["layer_range"] = list(self.layer_range) if self.layer_range is not None else None
        values |= {
            "PK": experiment_pk(self.test_id),
            "SK": EXPERIMENT_SK,
            "GSI1PK": placement_pk(self.content_type, self.placement),
            "GSI1SK": f"{self.status.value}#{self.test_id}",
            "GSI2PK": EXPERIMENTS_PARTITION,
            "GSI2SK": f"{self.status.value}#{_iso(self.created_at)}#{self.test_id}",
        }
        return _attribute_values(values)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Experiment:
        """An experiment from its item (attribute-value form, as GetItem or Query return it)."""
        values = _plain_values(item)
        for phase in values.get("phases") or []:
            for variant in phase.get("variants") or []:
                if isinstance(variant.get("content"), str):
                    variant["content"] = json.loads(variant["content"])
        return cls.model_validate(values)


def _phase_values(phase: Phase) -> dict[str, Any]:
    values = phase.model_dump(mode="json")
    values["started_at"] = _iso(phase.started_at) if phase.started_at is not None else None
    values["ended_at"] = _iso(phase.ended_at) if phase.ended_at is not None else None
    values["variants"] = [
        {**v.model_dump(mode="json"), "content": content_json(v.content)} for v in phase.variants
    ]
    return values


def _same_split(new: Sequence[Variant], old: Sequence[Variant]) -> bool:
    """Same variant ids in the same order, same control, same shares: the randomisation can stay."""
    if [(v.variant_id, v.is_control) for v in new] != [(v.variant_id, v.is_control) for v in old]:
        return False
    shares_new = normalise([v.weight for v in new])
    shares_old = normalise([v.weight for v in old])
    return all(
        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(shares_new, shares_old, strict=True)
    )


def _unprocessable(exc: ValidationError) -> Unprocessable:
    """A pydantic error as the 422 the API gives for a body (fields and problems)."""
    problems = [
        {"field": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg", "")}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems)
    return Unprocessable(summary, details={"fields": problems})
