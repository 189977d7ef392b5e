"""The A/B testing API's analysis answers, from an experiment and its counters (pure: no AWS).

Every statistic comes from the engine: :func:`mysetlist.experiments.analysis.analyze` for the
comparisons (frequentist, Bayesian, sequential, with the sample-ratio check), and its ``srm``,
``multiple``, ``power`` and ``frequentist.summarize`` for the rest. This module only arranges the
store's counts into the engine's documents and the engine's outputs into the API's answers, so
the API says exactly what ``make ab-stats`` says on the same counts.

* :func:`results`: per variant the original's fields (``sample_size``, ``improvement_percentage``,
  ``confidence_level``, ``is_significant``, ``recommendation``), now computed honestly on the
  primary metric, with a top-level recommendation and the sample-ratio check.
* :func:`statistical_analysis`: every metric (primary and guardrails) x every treatment, with
  absolute and relative lifts and their intervals, p-values adjusted across that whole family
  (Holm, or Benjamini-Hochberg), the power section and the days left at current traffic.
* :func:`segment_analysis`: the primary metric per value of each targeting dimension, adjusted
  across every segment comparison (segments are exploratory).
* :func:`real_time_metrics`: the last hour per variant and per minute.

Inputs are the store's aggregates (:class:`~mysetlist.experiments.store.Totals` keyed by
``(value, variant_id, metric)``; the ``exposures`` metric's ``n`` is the users exposed). A metric's
counts for the engine are ``n`` = users exposed and the ``sum`` and ``sum_squares`` of the per-user
values (users without an event count as 0).

Conventions: :func:`results` gives lifts and intervals in percent (the original's
``improvement_percentage``); :func:`statistical_analysis` and :func:`segment_analysis` give them
as fractions (0.05 = +5%), as ``make ab-stats`` does. A figure that cannot be computed is null
with a note saying why, never NaN or infinity. Significance needs the adjusted p-value below alpha
(Bayesian: a chance to beat the control of at least 1 - alpha) AND a passing sample-ratio check.
Every metric reads "higher is better" (views, clicks, conversions, engagement): a treatment that
significantly lowers a guardrail is not a winner.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mysetlist.errors import InvalidRequest
from mysetlist.experiments import analysis, frequentist, multiple, power, srm
from mysetlist.experiments.definitions import Experiment, MetricSpec, MetricType, Status
from mysetlist.experiments.store import ALL, EXPOSURES, SEGMENT_DIMENSIONS, LiveBucket, Totals, minute_of

# The power a sample size is planned for (the conventional 80%).
PLANNED_POWER = 0.8
# The traffic of the days-left estimate: the mean of up to this many recent complete UTC days.
TRAFFIC_DAYS = 7
# Until a complete day exists, the rate is the users since the phase started over at least this
# long (a start minutes ago would otherwise extrapolate a handful of users to a huge rate).
MIN_TRAFFIC_WINDOW = dt.timedelta(hours=1)
REAL_TIME_MINUTES = 60
SEGMENT_NOTE = (
    "Segments are exploratory: they were not the experiment's question, small segments are noisy, "
    "and with many segments some differ by chance. p-values are adjusted across every segment "
    "comparison listed here ({m}); confirm a segment finding with an experiment that targets it."
)
HIGHER_IS_BETTER = "every metric reads higher is better: a significant drop of a guardrail blocks a winner"

Counts = Mapping[tuple[str, str, str], Totals]


# ---------------------------------------------------------------------------------- the family


@dataclass(frozen=True, slots=True)
class _Variant:
    variant_id: str
    name: str
    weight: float  # share of the phase's traffic, in percent
    is_control: bool


@dataclass(slots=True)
class _Row:
    """One treatment against the control on one metric, as the engine answered."""

    metric: MetricSpec
    variant: _Variant
    counts: frequentist.VariantCounts
    summary: frequentist.VariantSummary
    absolute: dict[str, float | None]
    relative: dict[str, float | None]
    p_value: float | None = None
    p_adjusted: float | None = None
    chance: float | None = None
    expected_loss: float | None = None
    expected_loss_control: float | None = None
    mixing_sd: float | None = None
    notes: list[str] = field(default_factory=list)
    significant: bool = False
    direction: str | None = None  # "better" / "worse" when significant


@dataclass(slots=True)
class _Block:
    """One metric: the control's counts and one row per treatment."""

    metric: MetricSpec
    role: str
    control: frequentist.VariantCounts
    control_summary: frequentist.VariantSummary
    rows: list[_Row]


@dataclass(slots=True)
class _Family:
    """Every metric x every treatment of one phase, the p-values adjusted together."""

    phase: int
    method: str
    alpha: float
    correction: str
    variants: list[_Variant]
    exposed: dict[str, int]
    srm_p: float | None
    srm_ok: bool
    blocks: list[_Block]
    size: int  # comparisons in the adjusted family
    warnings: list[str]


def _family(experiment: Experiment, counts: Counts, phase: int | None, method: str | None) -> _Family:
    number = experiment.phase_of(phase).number
    variants = _variants(experiment, number)
    chosen = _method(experiment, method)
    alpha = float(experiment.alpha)
    warnings: list[str] = []
    exposed = {v.variant_id: _exposed(counts, ALL, v.variant_id) for v in variants}
    srm_p, srm_ok = _srm([exposed[v.variant_id] for v in variants], variants)
    if not srm_ok:
        warnings.append(
            f"sample ratio mismatch (chi-square p = {_fmt(srm_p)} < {srm.SRM_THRESHOLD}): users did not "
            "reach the variants in the configured proportions, so no verdict is given; look for an "
            "assignment, exposure-logging or bot problem before reading the figures"
        )
    blocks = [
        _block(metric, "primary" if i == 0 else "guardrail", variants, counts, ALL, chosen, alpha, warnings)
        for i, metric in enumerate(experiment.metrics)
    ]
    rows = [row for block in blocks for row in block.rows]
    size = _adjust(rows, experiment.correction.value)
    for row in rows:
        _verdict(row, chosen, alpha, srm_ok)
    return _Family(
        number,
        chosen,
        alpha,
        experiment.correction.value,
        variants,
        exposed,
        srm_p,
        srm_ok,
        blocks,
        size,
        warnings,
    )


def _block(
    metric: MetricSpec,
    role: str,
    variants: Sequence[_Variant],
    counts: Counts,
    value: str,
    method: str,
    alpha: float,
    warnings: list[str],
) -> _Block:
    """The engine's comparison of each treatment with the control on one metric (within one
    segment value): the relative lift and, for the tests, the absolute one."""
    kind = metric.type.value
    engine_counts = [_counts(counts, value, v.variant_id, metric, warnings) for v in variants]
    summaries = [
        frequentist.summarize(c, "proportion" if kind == "proportion" else "mean") for c in engine_counts
    ]
    relative = _analyze(metric, variants, engine_counts, method, alpha, True, warnings)
    # The Bayesian figures do not depend on how the lift is expressed: one run is enough.
    absolute = (
        None
        if method == "bayesian"
        else _analyze(metric, variants, engine_counts, method, alpha, False, warnings)
    )
    rows = []
    for i, variant in enumerate(variants[1:], start=1):
        rel = relative["variants"][i - 1] if relative else {}
        ab = absolute["variants"][i - 1] if absolute else {}
        mean_t, mean_c = summaries[i].mean, summaries[0].mean
        difference = mean_t - mean_c if mean_t is not None and mean_c is not None else None
        row = _Row(
            metric=metric,
            variant=variant,
            counts=engine_counts[i],
            summary=summaries[i],
            absolute=_interval(ab)
            if absolute
            else {"lift": _finite(difference), "ci_low": None, "ci_high": None},
            relative=_interval(rel),
            # A test's p-value is the absolute comparison's (B = A is the same null hypothesis;
            # the relative interval is its delta-method companion).
            p_value=ab.get("p_value"),
            chance=rel.get("chance_to_win"),
            expected_loss=rel.get("expected_loss"),
            expected_loss_control=rel.get("expected_loss_control"),
            mixing_sd=ab.get("mixing_sd"),
        )
        if relative is None:
            row.notes.append("fewer than two users exposed in all: nothing to compare yet")
        if method == "bayesian":
            row.notes.append(
                "Bayesian: read chance_to_beat_control and expected_loss (no p-value or interval)"
            )
        for note in (ab.get("note"), rel.get("note")):
            if note and note not in row.notes:
                row.notes.append(note)
        rows.append(row)
    return _Block(metric, role, engine_counts[0], summaries[0], rows)


def _analyze(
    metric: MetricSpec,
    variants: Sequence[_Variant],
    counts: Sequence[frequentist.VariantCounts],
    method: str,
    alpha: float,
    relative: bool,
    warnings: list[str],
) -> dict[str, Any] | None:
    """``analysis.analyze`` on one metric's counts, the control first. None while fewer than two
    users are exposed in all (the engine has nothing to compare), or when the counts are
    inconsistent (reported in ``warnings``: an answer, not a 500)."""
    if sum(c.n for c in counts) < 2:
        return None
    document = {
        "metric": metric.type.value,
        "method": method,
        "relative": relative,
        "alpha": alpha,
        "weights": [v.weight for v in variants],
        "variants": [{"name": c.name, "n": c.n, "sum": c.sum, "sum_squares": c.sum_squares} for c in counts],
    }
    try:
        return analysis.analyze(document)
    except ValueError as exc:
        message = f"{metric.name}: the counters are inconsistent ({exc}); no comparison"
        if message not in warnings:
            warnings.append(message)
        return None


def _adjust(rows: Sequence[_Row], correction: str) -> int:
    """Adjust the rows' p-values together (rows without a p-value are not tests); the family size."""
    tested = [(row, row.p_value) for row in rows if row.p_value is not None]
    if not tested:
        return 0
    adjusted = multiple.ADJUSTMENTS[correction]([p for _row, p in tested])
    for (row, _p), value in zip(tested, adjusted, strict=True):
        row.p_adjusted = _finite(value)
    return len(tested)


def _verdict(row: _Row, method: str, alpha: float, srm_ok: bool) -> None:
    """Significant, and which way: the adjusted p-value (Bayesian: the chance to beat the control)
    against alpha, and never while the sample-ratio check fails."""
    if method == "bayesian":
        if row.chance is not None and row.chance >= 1.0 - alpha:
            row.direction = "better"
        elif row.chance is not None and row.chance <= alpha:
            row.direction = "worse"
    else:
        difference = row.absolute.get("lift")
        if row.p_adjusted is not None and row.p_adjusted < alpha and difference:
            row.direction = "better" if difference > 0 else "worse"
    if row.direction is not None and not srm_ok:
        row.notes.append("would be significant, but the sample-ratio check failed: no verdict")
        row.direction = None
    row.significant = row.direction is not None


# ---------------------------------------------------------------------------------- results


def results(
    experiment: Experiment,
    counts: Counts,
    *,
    phase: int | None = None,
    method: str | None = None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The ``results`` answer on the primary metric (``phase``: default the current one;
    ``method`` overrides the experiment's).

    Per variant (the control first): ``variant_id``, ``name``, ``is_control``, ``weight`` (% of the
    phase's traffic), ``sample_size`` (users exposed), ``conversions`` (unique converters) and
    ``conversion_rate`` for a proportion metric, ``mean``, ``variance`` (sample, n - 1),
    ``improvement_percentage`` (relative lift x 100 against the control) with ``ci_low`` /
    ``ci_high`` (its interval, %), ``confidence_level`` (the interval's level, 100 (1 - alpha);
    Bayesian: the chance to beat the control x 100), ``p_value``, ``p_value_adjusted`` (across the
    family of :func:`statistical_analysis`), ``chance_to_beat_control`` and ``expected_loss``
    (Bayesian), ``is_significant``, ``recommendation`` (winner / loser / inconclusive; null for the
    control) and ``notes``. Top level: ``sample_size``, ``recommendation`` {decision: ship |
    keep_control | continue | investigate, variant_id, reason}, ``srm`` {p_value, ok}, ``warnings``.
    """
    family = _family(experiment, counts, phase, method)
    primary = family.blocks[0]
    harm = _guardrail_harm(family)
    rows = {row.variant.variant_id: row for row in primary.rows}
    proportion = primary.metric.type is MetricType.PROPORTION
    answer_variants = []
    for variant in family.variants:
        row = rows.get(variant.variant_id)
        counts_v = primary.control if row is None else row.counts
        summary = primary.control_summary if row is None else row.summary
        entry: dict[str, Any] = {
            "variant_id": variant.variant_id,
            "name": variant.name,
            "is_control": variant.is_control,
            "weight": variant.weight,
            "sample_size": counts_v.n,
            "conversions": int(counts_v.sum) if proportion else None,
            "conversion_rate": _finite(summary.mean) if proportion else None,
            "mean": _finite(summary.mean),
            "variance": _finite(summary.variance),
        }
        if row is None:
            entry |= {
                "improvement_percentage": None,
                "ci_low": None,
                "ci_high": None,
                "confidence_level": _confidence(family, None),
                "p_value": None,
                "p_value_adjusted": None,
                "chance_to_beat_control": None,
                "expected_loss": None,
                "is_significant": False,
                "recommendation": None,
                "notes": ["the control: every other variant is compared with it"],
            }
        else:
            lowered = harm.get(variant.variant_id, [])
            entry |= {
                "improvement_percentage": _percent(row.relative.get("lift")),
                "ci_low": _percent(row.relative.get("ci_low")),
                "ci_high": _percent(row.relative.get("ci_high")),
                "confidence_level": _confidence(family, row),
                "p_value": row.p_value,
                "p_value_adjusted": row.p_adjusted,
                "chance_to_beat_control": row.chance,
                "expected_loss": row.expected_loss,
                "is_significant": row.significant,
                "recommendation": _recommendation(row, lowered),
                "notes": [*row.notes, *(f"guardrail {name} is significantly lower" for name in lowered)],
            }
        answer_variants.append(entry)
    return {
        "test_id": experiment.test_id,
        "name": experiment.name,
        "status": experiment.status.value,
        "phase": family.phase,
        "phases": len(experiment.phases),
        "method": family.method,
        "alpha": family.alpha,
        "correction": family.correction,
        "primary_metric": _metric_json(primary.metric),
        "sample_size": sum(family.exposed.values()),
        "variants": answer_variants,
        "recommendation": _overall(family, harm, experiment),
        "srm": {"p_value": family.srm_p, "ok": family.srm_ok},
        "warnings": [*family.warnings, *_status_warnings(experiment, family.phase, now)],
        "computed_at": _iso(now),
    }


def _confidence(family: _Family, row: _Row | None) -> float | None:
    if family.method == "bayesian":
        return None if row is None or row.chance is None else _finite(100.0 * row.chance)
    return _finite(100.0 * (1.0 - family.alpha))


def _recommendation(row: _Row, lowered: Sequence[str]) -> str:
    if row.direction == "worse" or lowered:
        return "loser"
    if row.direction == "better":
        return "winner"
    return "inconclusive"


def _guardrail_harm(family: _Family) -> dict[str, list[str]]:
    """Per treatment, the guardrails it significantly lowered."""
    harm: dict[str, list[str]] = {}
    for block in family.blocks[1:]:
        for row in block.rows:
            if row.direction == "worse":
                harm.setdefault(row.variant.variant_id, []).append(block.metric.name)
    return harm


def _overall(family: _Family, harm: Mapping[str, Sequence[str]], experiment: Experiment) -> dict[str, Any]:
    """One decision: ``investigate`` (the split is broken), ``ship`` (a winner: the largest
    significant lift among treatments that lower no guardrail), ``keep_control`` (every treatment
    lost, or the experiment is over without a winner) or ``continue`` (not enough evidence yet)."""
    control = family.variants[0].variant_id
    if not family.srm_ok:
        return {
            "decision": "investigate",
            "variant_id": None,
            "reason": f"sample ratio mismatch (p = {_fmt(family.srm_p)}): fix the split before reading results",
        }
    rows = family.blocks[0].rows
    winners = [r for r in rows if r.direction == "better" and not harm.get(r.variant.variant_id)]
    if winners:
        best = max(winners, key=lambda r: (r.relative.get("lift") or 0.0, r.absolute.get("lift") or 0.0))
        lift = _percent(best.relative.get("lift"))
        shown = f" ({lift:+.2f}%)" if lift is not None else ""
        return {
            "decision": "ship",
            "variant_id": best.variant.variant_id,
            "reason": f"{best.variant.name} beats the control on {best.metric.name}{shown} and lowers no guardrail",
        }
    if rows and all(r.direction == "worse" or harm.get(r.variant.variant_id) for r in rows):
        return {
            "decision": "keep_control",
            "variant_id": control,
            "reason": "every treatment is significantly worse than the control on the primary metric or a guardrail",
        }
    blocked = [r.variant.name for r in rows if r.direction == "better" and harm.get(r.variant.variant_id)]
    reason = (
        f"{', '.join(blocked)} won on the primary metric but lowered a guardrail"
        if blocked
        else "no treatment differs significantly from the control yet"
    )
    if experiment.status in (Status.COMPLETED, Status.ARCHIVED):
        return {
            "decision": "keep_control",
            "variant_id": control,
            "reason": f"{reason}; the experiment is over",
        }
    return {"decision": "continue", "variant_id": None, "reason": reason}


# ---------------------------------------------------------------------------------- statistical analysis


def statistical_analysis(
    experiment: Experiment,
    counts: Counts,
    daily_exposures: Mapping[str, Mapping[str, int]],
    *,
    phase: int | None = None,
    method: str | None = None,
    now: dt.datetime,
) -> dict[str, Any]:
    """Every metric (primary, then guardrails) x every treatment.

    Per metric: ``name``, ``type``, ``event``, ``role``, ``control`` {variant_id, name, n, sum,
    mean, variance} and ``comparisons``, each with the same variant fields plus ``absolute`` and
    ``relative`` {lift, ci_low, ci_high} (fractions), ``p_value``, ``p_value_adjusted`` (Holm or
    Benjamini-Hochberg across every comparison here), ``significant``, ``direction`` (better /
    worse / null), ``chance_to_beat_control``, ``expected_loss``, ``expected_loss_control``
    (Bayesian), ``mixing_sd`` (sequential) and ``notes``. Then ``srm`` (p-value, observed users,
    expected shares), ``power`` (see :func:`_power`) and ``daily_exposures`` (users first exposed
    per UTC day and variant).
    """
    family = _family(experiment, counts, phase, method)
    metrics = [
        {
            **_metric_json(block.metric),
            "role": block.role,
            "control": _variant_json(block.control, block.control_summary, family.variants[0]),
            "comparisons": [
                {
                    **_variant_json(row.counts, row.summary, row.variant),
                    "absolute": row.absolute,
                    "relative": row.relative,
                    "p_value": row.p_value,
                    "p_value_adjusted": row.p_adjusted,
                    "significant": row.significant,
                    "direction": row.direction,
                    "chance_to_beat_control": row.chance,
                    "expected_loss": row.expected_loss,
                    "expected_loss_control": row.expected_loss_control,
                    "mixing_sd": row.mixing_sd,
                    "notes": row.notes,
                }
                for row in block.rows
            ],
        }
        for block in family.blocks
    ]
    total_weight = math.fsum(v.weight for v in family.variants)
    started_at = experiment.phase_of(family.phase).started_at
    return {
        "test_id": experiment.test_id,
        "phase": family.phase,
        "method": family.method,
        "alpha": family.alpha,
        "correction": family.correction,
        "comparisons_in_family": family.size,
        "srm": {
            "p_value": family.srm_p,
            "ok": family.srm_ok,
            "threshold": srm.SRM_THRESHOLD,
            "observed": dict(family.exposed),
            "expected_share": {v.variant_id: v.weight / total_weight for v in family.variants},
        },
        "metrics": metrics,
        "power": _power(family, daily_exposures, started_at, experiment, now),
        "daily_exposures": [
            {"day": day, "variants": {v: int(n) for v, n in per.items()}, "total": int(sum(per.values()))}
            for day, per in sorted(daily_exposures.items())
        ],
        "notes": [
            f"{family.size} comparison(s) adjusted together ({family.correction}); the intervals are per "
            "comparison (not adjusted)",
            HIGHER_IS_BETTER,
        ],
        "warnings": [*family.warnings, *_status_warnings(experiment, family.phase, now)],
        "computed_at": _iso(now),
    }


def _power(
    family: _Family,
    daily_exposures: Mapping[str, Mapping[str, int]],
    started_at: dt.datetime | None,
    experiment: Experiment,
    now: dt.datetime,
) -> dict[str, Any]:
    """Users per variant for the primary metric's minimum detectable effect (relative) at the
    control's rate (proportion) or standard deviation (mean), planned at alpha / m with m the
    family's planned comparisons (metrics x treatments: the strictest Holm threshold) and 80%
    power; and the days left at the recent daily traffic split by the weights."""
    block = family.blocks[0]
    mde = experiment.minimum_detectable_effect
    planned = max(1, len(family.blocks) * (len(family.variants) - 1))
    plan_alpha = family.alpha / planned
    daily = _daily_users(daily_exposures, started_at, now)
    notes: list[str] = []
    answer: dict[str, Any] = {
        "metric": block.metric.name,
        "minimum_detectable_effect": mde,
        "relative": True,
        "alpha_per_comparison": plan_alpha,
        "power": PLANNED_POWER,
        "baseline": _finite(block.control_summary.mean),
        "required_per_variant": None,
        "exposed": dict(family.exposed),
        "daily_users": None if daily is None else _finite(daily),
        "days_left": None,
        "reachable_by_end_date": None,
        "notes": notes,
    }
    if family.method == "sequential":
        notes.append("planned for a fixed-horizon test: monitoring continuously needs more users than this")
    elif family.method == "bayesian":
        notes.append("planned for the frequentist test at the same alpha")
    if mde is None:
        notes.append("set minimum_detectable_effect to get the sample size and the days left")
        return answer
    required = _required(block, float(mde), plan_alpha, notes)
    if required is None:
        return answer
    answer["required_per_variant"] = required
    if daily is None:
        notes.append("the phase has not started: no traffic to extrapolate")
        return answer
    days = power.days_to_reach(
        required,
        [family.exposed[v.variant_id] for v in family.variants],
        daily,
        [v.weight for v in family.variants],
    )
    answer["days_left"] = days
    if days is None:
        notes.append("no users are being exposed: at this traffic the sample is never reached")
    elif experiment.end_date is not None:
        answer["reachable_by_end_date"] = now + dt.timedelta(days=days) <= experiment.end_date
    return answer


def _required(block: _Block, mde: float, alpha: float, notes: list[str]) -> int | None:
    control = block.control_summary
    try:
        if block.metric.type is MetricType.PROPORTION:
            if control.mean is None or not 0.0 < control.mean < 1.0:
                notes.append("the control's rate must be strictly between 0 and 1 to plan a sample size")
                return None
            return power.sample_size_proportions(
                control.mean, mde, relative=True, alpha=alpha, power=PLANNED_POWER
            )
        if control.variance is None or control.variance <= 0.0 or not control.mean:
            notes.append("the control needs a non-zero mean and some variation to plan a sample size")
            return None
        return power.sample_size_means(
            math.sqrt(control.variance),
            mde,
            baseline_mean=control.mean,
            relative=True,
            alpha=alpha,
            power=PLANNED_POWER,
        )
    except ValueError as exc:
        notes.append(str(exc))
        return None


def _daily_users(
    daily_exposures: Mapping[str, Mapping[str, int]], started_at: dt.datetime | None, now: dt.datetime
) -> float | None:
    """New users a day: the mean of the last ``TRAFFIC_DAYS`` complete UTC days of the phase (its
    first day and today are partial), or, before a complete day exists, the users so far over the
    time since the start (at least ``MIN_TRAFFIC_WINDOW``). None when the phase never started."""
    if started_at is None:
        return None
    today = now.astimezone(dt.UTC).date()
    first = started_at.astimezone(dt.UTC).date()
    complete = [today - dt.timedelta(days=i) for i in range(1, TRAFFIC_DAYS + 1)]
    complete = [day for day in complete if day > first]
    if complete:
        return sum(sum(daily_exposures.get(day.isoformat(), {}).values()) for day in complete) / len(complete)
    elapsed = max(now - started_at, MIN_TRAFFIC_WINDOW) / dt.timedelta(days=1)
    return sum(sum(per.values()) for per in daily_exposures.values()) / elapsed


# ---------------------------------------------------------------------------------- segments


def segment_analysis(
    experiment: Experiment,
    counts_by_dimension: Mapping[str, Counts],
    *,
    phase: int | None = None,
    method: str | None = None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The primary metric per value of each targeting dimension (device, region, role,
    user_type; ``counts_by_dimension`` maps each to the store's totals for it). Per segment:
    ``value``, ``sample_size``, ``srm_p``, ``srm_ok`` and per variant ``n`` and the ``rate`` (or
    ``mean``), with, for treatments, the relative ``lift``, ``ci_low``, ``ci_high`` (fractions),
    ``p_value``, ``p_value_adjusted`` (across every segment comparison of the answer),
    ``chance_to_beat_control`` (Bayesian), ``significant``, ``direction`` and ``notes``."""
    number = experiment.phase_of(phase).number
    variants = _variants(experiment, number)
    chosen = _method(experiment, method)
    alpha = float(experiment.alpha)
    metric = experiment.primary_metric
    figure = "rate" if metric.type is MetricType.PROPORTION else "mean"
    warnings: list[str] = []
    dimensions: list[dict[str, Any]] = []
    segments: list[tuple[dict[str, Any], _Block, bool]] = []
    for dimension in SEGMENT_DIMENSIONS:
        counts = counts_by_dimension.get(dimension, {})
        entries = []
        for value in sorted({value for (value, _variant, _metric) in counts}):
            exposed = [_exposed(counts, value, v.variant_id) for v in variants]
            srm_p, srm_ok = _srm(exposed, variants)
            block = _block(metric, "primary", variants, counts, value, chosen, alpha, warnings)
            entry: dict[str, Any] = {
                "value": value,
                "sample_size": sum(exposed),
                "srm_p": srm_p,
                "srm_ok": srm_ok,
            }
            entries.append(entry)
            segments.append((entry, block, srm_ok))
        dimensions.append({"dimension": dimension, "segments": entries})
    size = _adjust(
        [row for _entry, block, _ok in segments for row in block.rows], experiment.correction.value
    )
    for entry, block, srm_ok in segments:
        for row in block.rows:
            _verdict(row, chosen, alpha, srm_ok)
        entry["variants"] = [
            {
                "variant_id": variants[0].variant_id,
                "is_control": True,
                "n": block.control.n,
                figure: _finite(block.control_summary.mean),
            },
            *(
                {
                    "variant_id": row.variant.variant_id,
                    "is_control": False,
                    "n": row.counts.n,
                    figure: _finite(row.summary.mean),
                    "lift": row.relative.get("lift"),
                    "ci_low": row.relative.get("ci_low"),
                    "ci_high": row.relative.get("ci_high"),
                    "p_value": row.p_value,
                    "p_value_adjusted": row.p_adjusted,
                    "chance_to_beat_control": row.chance,
                    "significant": row.significant,
                    "direction": row.direction,
                    "notes": row.notes,
                }
                for row in block.rows
            ),
        ]
    return {
        "test_id": experiment.test_id,
        "phase": number,
        "metric": _metric_json(metric),
        "method": chosen,
        "alpha": alpha,
        "correction": experiment.correction.value,
        "comparisons_in_family": size,
        "note": SEGMENT_NOTE.format(m=size),
        "dimensions": dimensions,
        "warnings": [*warnings, *_status_warnings(experiment, number, now)],
        "computed_at": _iso(now),
    }


# ---------------------------------------------------------------------------------- real time


def real_time_metrics(
    experiment: Experiment,
    buckets: Sequence[LiveBucket],
    *,
    phase: int | None = None,
    now: dt.datetime,
    minutes: int = REAL_TIME_MINUTES,
) -> dict[str, Any]:
    """The last ``minutes`` minutes (the current one included), from the store's minute buckets:
    per variant the users first exposed, the events of each kind (events, not unique users) and
    the sum of their values, and a ``series`` with every minute (zeros where nothing happened)."""
    number = experiment.phase_of(phase).number
    variants = _variants(experiment, number)
    end = now.astimezone(dt.UTC).replace(second=0, microsecond=0)
    window = [minute_of(end - dt.timedelta(minutes=i)) for i in range(minutes - 1, -1, -1)]
    counted = ("exposures", "views", "clicks", "conversions", "engagements")
    per_minute: dict[str, dict[str, list[float]]] = {minute: {} for minute in window}
    totals: dict[str, list[float]] = {v.variant_id: [0.0] * 6 for v in variants}
    for bucket in buckets:
        if bucket.minute not in per_minute:
            continue
        figures = [float(getattr(bucket, name)) for name in counted] + [bucket.value_sum]
        cell = per_minute[bucket.minute].setdefault(bucket.variant_id, [0.0] * 6)
        total = totals.setdefault(bucket.variant_id, [0.0] * 6)
        for i, amount in enumerate(figures):
            cell[i] += amount
            total[i] += amount
    names = {v.variant_id: v.name for v in variants}

    def shaped(values: Sequence[float]) -> dict[str, Any]:
        return {**{name: int(values[i]) for i, name in enumerate(counted)}, "value_sum": _finite(values[5])}

    return {
        "test_id": experiment.test_id,
        "phase": number,
        "window_minutes": minutes,
        "from": window[0],
        "to": window[-1],
        "variants": [
            {"variant_id": vid, "name": names.get(vid, vid), **shaped(values)}
            for vid, values in totals.items()
        ],
        "series": [
            {
                "minute": minute,
                "variants": {vid: shaped(per_minute[minute].get(vid, [0.0] * 6)) for vid in totals},
            }
            for minute in window
        ],
        "warnings": _status_warnings(experiment, number, now),
        "computed_at": _iso(now),
    }


# ---------------------------------------------------------------------------------- helpers


def _variants(experiment: Experiment, number: int) -> list[_Variant]:
    """The phase's variants, the control first, weights as % of the phase's traffic."""
    defined = experiment.phase_of(number).variants
    total = math.fsum(float(v.weight) for v in defined)
    variants = [
        _Variant(v.variant_id, v.name, 100.0 * float(v.weight) / total, v.is_control) for v in defined
    ]
    return sorted(variants, key=lambda v: not v.is_control)


def _method(experiment: Experiment, method: str | None) -> str:
    chosen = method if method is not None else experiment.method.value
    if chosen not in analysis.METHODS:
        raise InvalidRequest(
            f"method must be one of {', '.join(analysis.METHODS)}, got {chosen!r}",
            details={"field": "method"},
        )
    return chosen


def _srm(exposed: Sequence[int], variants: Sequence[_Variant]) -> tuple[float | None, bool]:
    p = _finite(srm.srm_test(list(exposed), [v.weight for v in variants]))
    return p, p is not None and srm.srm_ok(p)


def _exposed(counts: Counts, value: str, variant_id: str) -> int:
    found = counts.get((value, variant_id, EXPOSURES))
    return int(found.n) if found is not None else 0


def _counts(
    counts: Counts, value: str, variant_id: str, metric: MetricSpec, warnings: list[str]
) -> frequentist.VariantCounts:
    """The engine's counts of one variant on one metric: n = users exposed and the sums of the
    per-user values. A proportion's converters are whole and at most n; a counter read saying
    otherwise (which the store's transactions rule out) is clamped and reported, not a 500."""
    n = _exposed(counts, value, variant_id)
    found = counts.get((value, variant_id, metric.name))
    total = float(found.sum) if found is not None else 0.0
    squares = float(found.sum_squares) if found is not None else 0.0
    if metric.type is MetricType.PROPORTION:
        converters = round(total)
        if not 0 <= converters <= n:
            warnings.append(
                f"{metric.name}: {variant_id} counts {converters} converters for {n} users exposed; clamped"
            )
            converters = min(max(converters, 0), n)
        return frequentist.VariantCounts(variant_id, n, float(converters), float(converters))
    if n == 0:
        if total or squares:
            warnings.append(f"{metric.name}: {variant_id} has values but no users exposed; ignored")
        return frequentist.VariantCounts(variant_id, 0, 0.0, 0.0)
    # Converting the exact decimal sums to floats can leave sum^2 / n a hair above sum_squares
    # when every user has the same total: the variance is 0 then, not negative.
    return frequentist.VariantCounts(variant_id, n, total, max(squares, total * total / n))


def _interval(row: Mapping[str, Any]) -> dict[str, float | None]:
    return {"lift": row.get("lift"), "ci_low": row.get("ci_low"), "ci_high": row.get("ci_high")}


def _variant_json(
    counts: frequentist.VariantCounts, summary: frequentist.VariantSummary, variant: _Variant
) -> dict[str, Any]:
    return {
        "variant_id": variant.variant_id,
        "name": variant.name,
        "n": counts.n,
        "sum": _finite(counts.sum),
        "mean": _finite(summary.mean),
        "variance": _finite(summary.variance),
    }


def _metric_json(metric: MetricSpec) -> dict[str, Any]:
    return {"name": metric.name, "type": metric.type.value, "event": metric.event.value}


def _status_warnings(experiment: Experiment, phase: int, now: dt.datetime) -> list[str]:
    """What a reader must know about the figures' freshness: not started, paused, or running but
    not serving (before its start date, after its end date, no layer slice)."""
    warnings = []
    if experiment.status is Status.DRAFT:
        warnings.append("the experiment has not started: no user has been exposed")
    elif experiment.status is Status.PAUSED:
        warnings.append("the experiment is paused: no new users are exposed and no interactions are recorded")
    elif experiment.status is Status.RUNNING:
        reason = experiment.not_live_reason(now)
        if reason is not None:
            warnings.append(f"no variant is served now ({reason}): the figures are not growing")
    if phase != experiment.phase:
        warnings.append(f"phase {phase} ended: the current phase is {experiment.phase}")
    return warnings


def _percent(value: float | None) -> float | None:
    return None if value is None else _finite(100.0 * value)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: an undefined figure is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")
