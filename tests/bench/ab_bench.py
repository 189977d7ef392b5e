"""A/B test analysis latency at 10^3 and at 10^7 recorded interactions (``make bench-ab``).

    python -m tests.bench.ab_bench [--sizes 1000 10000000] [--runs 30] [--seed 7] [--methods ...]

Two experiments of the same shape, in one ExperimentsTable created from template.yaml
(``create_tables``) in moto, in this process: 14 days, 3 variants (equal weights), a primary
metric and 2 guardrails:

- ``signup``: proportion of users with a ``conversion`` event (primary; true rates 5.0%, 5.2%,
  5.6% by variant);
- ``click_rate``: proportion of users with a ``click`` event (clicks ~ Poisson(2) per user);
- ``engagement``: mean per-user total of ``engagement`` values (events ~ Poisson(1.5) per user,
  values exponential with mean 20, rounded as the store rounds them).

Users see ``1 + views + clicks + conversions + engagements`` interactions (their exposure and their
events; views ~ Poisson(5.45), so 10 interactions per user on average): ``--sizes`` interactions
means ``size / 10`` users, each exposed on a random day of the 14 in a random variant, in the
counter shard of its subject (``shard_of``), its events on that day. The simulated interactions
are aggregated in memory per (day, variant, shard) into what the store's transactions would
have added (users exposed; converters; the sum and sum of squares of per-user totals), and
written through ``ExperimentStore.add_counters``, i.e. the ``counter_update`` every exposure and
interaction goes through (one ``UpdateItem ADD`` per counter cell that any interaction touched).
Only the ``all`` dimension's counters are written: the timed answers read nothing else.

Both experiments are loaded before anything is timed, in one table (moto's ``Query`` walks the
whole table, so a table holding only the small experiment would favour it). The first read of
each (``ab_first_read``) finds no rollup: it reads every counter cell and folds the closed days
into the phase's rollup item, as the first analysis of each day does. Then, ``--runs`` times each
after one warm-up, the two sizes taking turns, as the API answers ``?action=`` at ``NOW`` (late on
the 14th day, so the rollup holds 13 days and the open day is read from its cells):

- ``results``: ``store.counters(test_id, phase)`` (the rollup, and 8 shard queries for the open
  day, strongly consistent, concurrent) then ``results.results`` (the primary metric, the
  family's adjustment) and the JSON encoding;
- ``statistical_analysis``: the same read then ``results.statistical_analysis`` (3 metrics x 2
  treatments, absolute and relative, power and days left) and the JSON encoding.

Each is printed per size (p50, p95, min in ms, the read and compute parts' p50, the items read),
then both sizes side by side with the ratio large / small of the p50 and p95 (target: p50 ratio
<= 1.5). ``--methods`` adds the Bayesian and sequential methods (the Bayesian exact
chance-to-win sum has min(converters, non-converters) terms, so its compute grows with the
converters: it is reported on its own lines).

Not measured: DynamoDB's real latency (a few ms per round trip: the 8 shard queries run
concurrently, so about one round trip; moto's cost per query is its walk of the whole table,
the same for both sizes), the API's authorization, and the segment and real-time answers (other
partitions, the same read pattern).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np

DAYS = 14
SIZES = (1_000, 10_000_000)
TARGET_RATIO = 1.5
INTERACTIONS_PER_USER = 10
VIEWS_PER_USER = 5.45
CLICKS_PER_USER = 2.0
ENGAGEMENTS_PER_USER = 1.5
ENGAGEMENT_MEAN_VALUE = 20.0
SIGNUP_RATES = (0.050, 0.052, 0.056)
START = dt.datetime(2030, 3, 1, 9, 0, tzinfo=dt.UTC)
NOW = START + dt.timedelta(days=DAYS - 1, hours=12)
VARIANTS = ("control", "hero-b", "hero-c")


def _summary(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "min_ms": round(ordered[0], 2),
    }


def experiment_spec() -> dict[str, Any]:
    return {
        "name": "Home hero copy",
        "content_type": "banner",
        "placement": "home-hero",
        "variants": [
            {"name": name, "content": {"headline": name}, "weight": 1, "is_control": i == 0}
            for i, name in enumerate(VARIANTS)
        ],
        "primary_metric": {"name": "signup", "type": "proportion", "event": "conversion"},
        "guardrail_metrics": [
            {"name": "click_rate", "type": "proportion", "event": "click"},
            {"name": "engagement", "type": "mean", "event": "engagement"},
        ],
        "end_date": (START + dt.timedelta(days=DAYS)).isoformat(),
        "minimum_detectable_effect": 0.05,
    }


def simulate(test_id: str, interactions: int, seed: int, shards: int) -> tuple[list[Any], dict[str, int]]:
    """Per-cell counter deltas for ``interactions`` simulated interactions (see the module
    docstring), and what was simulated."""
    from mysetlist.experiments.assignment import shard_of
    from mysetlist.experiments.store import ALL, EXPOSURES, CounterDelta

    rng = np.random.default_rng(seed)
    users = max(1, interactions // INTERACTIONS_PER_USER)
    variant = rng.integers(0, len(VARIANTS), users)
    day = rng.integers(0, DAYS, users)
    shard = np.fromiter((shard_of(f"u:bench-{seed}-{i}", shards) for i in range(users)), np.int64, users)
    rates = np.asarray(SIGNUP_RATES)[variant]
    conversions = rng.poisson(-np.log1p(-rates))
    clicks = rng.poisson(CLICKS_PER_USER, users)
    engagements = rng.poisson(ENGAGEMENTS_PER_USER, users)
    views = rng.poisson(VIEWS_PER_USER, users)
    values = np.round(rng.exponential(ENGAGEMENT_MEAN_VALUE, int(engagements.sum())), 4)
    totals = np.bincount(np.repeat(np.arange(users), engagements), weights=values, minlength=users)
    cells = (day * len(VARIANTS) + variant) * shards + shard
    size = DAYS * len(VARIANTS) * shards
    exposed = np.bincount(cells, minlength=size)
    converted = np.bincount(cells, weights=(conversions > 0), minlength=size)
    clicked = np.bincount(cells, weights=(clicks > 0), minlength=size)
    engagement_sum = np.bincount(cells, weights=totals, minlength=size)
    engagement_squares = np.bincount(cells, weights=totals * totals, minlength=size)
    deltas = []
    for cell in np.flatnonzero(exposed):
        rest, cell_shard = divmod(int(cell), shards)
        cell_day, cell_variant = divmod(rest, len(VARIANTS))
        where = CounterDelta(
            test_id=test_id,
            phase=1,
            dimension=ALL,
            shard=cell_shard,
            day=(START + dt.timedelta(days=cell_day)).date().isoformat(),
            variant_id=VARIANTS[cell_variant],
            metric=EXPOSURES,
            value=ALL,
        )
        deltas.append(replace(where, n=int(exposed[cell])))
        sums = {
            "signup": (converted[cell], converted[cell]),
            "click_rate": (clicked[cell], clicked[cell]),
            "engagement": (engagement_sum[cell], engagement_squares[cell]),
        }
        for metric, (total, squares) in sums.items():
            if total:  # the store writes a counter only when an interaction moved it
                deltas.append(
                    replace(
                        where,
                        metric=metric,
                        sum=Decimal(repr(float(total))),
                        sum_squares=Decimal(repr(float(squares))),
                    )
                )
    simulated = {
        "users": users,
        "interactions": int(users + conversions.sum() + clicks.sum() + engagements.sum() + views.sum()),
        "counter_cells": len(deltas),
    }
    return deltas, simulated


def run(sizes: Sequence[int], runs: int, seed: int, methods: Sequence[str]) -> list[dict[str, Any]]:
    import boto3
    from moto import mock_aws

    from mysetlist.experiments.definitions import Action, Experiment, ExperimentIn
    from mysetlist.experiments.store import ExperimentStore
    from tests.support.template import create_tables

    lines: list[dict[str, Any]] = [
        {
            "bench": "ab_setup",
            "seed": seed,
            "days": DAYS,
            "variants": len(VARIANTS),
            "metrics": {
                "primary": "signup (proportion)",
                "guardrails": ["click_rate (proportion)", "engagement (mean)"],
            },
            "interactions_per_user": INTERACTIONS_PER_USER,
            "runs": runs,
            "now": NOW.isoformat(),
            "store": "moto in-process, one table from template.yaml holding both experiments",
        }
    ]
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        store = ExperimentStore(client, create_tables(client, "")["ExperimentsTable"])
        spec = ExperimentIn.model_validate(experiment_spec(), context={"now": START})
        loaded: dict[int, tuple[Any, dict[str, int]]] = {}
        # Both experiments are loaded before anything is timed: moto's Query walks the whole
        # table, so timing one before the other's counters exist would favour it.
        for size in sizes:
            draft = Experiment.create(spec, by="bench", now=START, test_id=f"bench-{size}")
            store.create(draft)
            experiment = store.save(draft.apply_action(Action.START, "bench", START), previous=draft)
            started = time.perf_counter()
            deltas, simulated = simulate(experiment.test_id, size, seed + size, store.shards)
            simulate_seconds = time.perf_counter() - started
            started = time.perf_counter()
            store.add_counters(deltas)
            write_seconds = time.perf_counter() - started
            loaded[size] = (experiment, simulated)
            lines.append(
                {
                    "bench": "ab_load",
                    "target_interactions": size,
                    **simulated,
                    "simulate_seconds": round(simulate_seconds, 2),
                    "write_seconds": round(write_seconds, 2),
                }
            )
        for experiment, simulated in loaded.values():
            # The first read after the load finds no rollup: it reads every cell and folds the
            # closed days into the rollup (what the first analysis of a day costs).
            started = time.perf_counter()
            counters = store.counters(experiment.test_id, experiment.phase, now=NOW)
            lines.append(
                {
                    "bench": "ab_first_read",
                    "interactions": simulated["interactions"],
                    "counter_items_read": counters.items_read,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                }
            )
        for method in methods:
            for answer in ("results", "statistical_analysis"):
                rows = _measure(store, loaded, answer, method, runs)
                lines.extend(rows.values())
                small, large = rows[min(sizes)], rows[max(sizes)]
                p50_ratio = large["p50_ms"] / small["p50_ms"]
                lines.append(
                    {
                        "bench": "ab_ratio",
                        "answer": answer,
                        "method": method,
                        "small": {k: small[k] for k in ("interactions", "p50_ms", "p95_ms")},
                        "large": {k: large[k] for k in ("interactions", "p50_ms", "p95_ms")},
                        "p50_ratio": round(p50_ratio, 3),
                        "p95_ratio": round(large["p95_ms"] / small["p95_ms"], 3),
                        "target": {"p50_ratio_at_most": TARGET_RATIO, "met": p50_ratio <= TARGET_RATIO},
                    }
                )
    return lines


def _measure(
    store: Any, loaded: Mapping[int, tuple[Any, dict[str, int]]], answer: str, method: str, runs: int
) -> dict[int, dict[str, Any]]:
    """Time one answer as the API gives it (the counters read, the analysis, the JSON) for each
    experiment, the sizes taking turns run after run so that both see the same process state."""
    from mysetlist.experiments.results import results, statistical_analysis

    samples: dict[int, list[tuple[float, float, int]]] = {size: [] for size in loaded}

    def once(size: int) -> None:
        experiment, _simulated = loaded[size]
        started = time.perf_counter()
        counters = store.counters(experiment.test_id, experiment.phase, now=NOW)
        read = time.perf_counter()
        if answer == "results":
            body = results(experiment, counters.totals(), method=method, now=NOW)
        else:
            body = statistical_analysis(
                experiment, counters.totals(), counters.daily_exposures(), method=method, now=NOW
            )
        json.dumps(body, allow_nan=False)
        done = time.perf_counter()
        samples[size].append(((done - started) * 1000, (read - started) * 1000, counters.items_read))

    for size in loaded:  # warm-up
        once(size)
        samples[size].clear()
    for _ in range(runs):
        for size in loaded:
            once(size)
    rows = {}
    for size, taken in samples.items():
        _experiment, simulated = loaded[size]
        totals = [t for t, _r, _i in taken]
        reads = [r for _t, r, _i in taken]
        rows[size] = {
            "bench": "ab_analysis",
            "answer": answer,
            "method": method,
            **simulated,
            "counter_items_read": taken[-1][2],
            "runs": runs,
            **_summary(totals),
            "read_p50_ms": round(statistics.median(reads), 2),
            "compute_p50_ms": round(statistics.median(t - r for t, r, _i in taken), 2),
        }
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=list(SIZES), help="interactions: small and large"
    )
    parser.add_argument("--runs", type=int, default=30, help="timed runs per figure (after a warm-up)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--methods", nargs="+", default=["frequentist"], choices=["frequentist", "bayesian", "sequential"]
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or min(args.sizes) < INTERACTIONS_PER_USER:
        parser.error(f"--runs must be at least 1 and --sizes at least {INTERACTIONS_PER_USER}")
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        os.environ.setdefault(name, value)
    for line in run(sorted(args.sizes), args.runs, args.seed, args.methods):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
