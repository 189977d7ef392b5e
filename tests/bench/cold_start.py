"""Cold start of every function as it ships, against a floor (``make bench-cold-start``).

What is measured: the import and init of the handler module (everything Lambda runs before the
first invocation: module import, settings, app and client construction), in a fresh
interpreter per run, median of several runs. Timed inside the child, from the top of its script
to the handler being ready (``tests/bench/child.py``); the interpreter's own start-up comes
before that clock in every child alike and is reported apart, on stderr.

How it ships: against a local replica of ``.aws-sam/build`` (``tests/bench/replica.py``): the
same sources and the same bytecode policy (bytecode only if the build ships it), the same
layers in Lambda's ``sys.path`` order, with this machine's wheels for native code and the
development environment's boto3 standing in for the runtime's. The child runs with ``-I -S -B``:
no site-packages of this machine (checked: a module loaded from elsewhere is an error), no
bytecode written (Lambda's code folders are read-only).

The environment is Lambda's as far as init can see it: the template's variables (Globals merged,
intrinsics resolved to placeholders), Lambda's reserved variables (``LAMBDA_TASK_ROOT``,
``AWS_LAMBDA_FUNCTION_NAME``, credentials...) and, for ``Tracing: Active``, the X-Ray variables.
``LAMBDA_TASK_ROOT`` makes Powertools' Tracer enabled, as in Lambda, so its cost is counted.

The floor: a function that only imports FastAPI, Mangum and boto3, builds one async route and a
DynamoDB client (``tests/bench/floor_app.py``), run the same way next to the same layers.
Target: an HTTP function at most 1.5x the floor.

Output: one JSON line per function. ``--importtime NAME`` instead shows what dominates one
function's import (``python -X importtime``), by top-level package and by module.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench.built import BUILD_DIR, Build, FunctionArtifact, load_build
from tests.bench.replica import REPLICA_DIR, Replica, ensure_replica
from tests.support.template import Template

DEFAULT_RUNS = 7
DEFAULT_WARMUP = 1
HTTP_TARGET_RATIO = 1.5
CHILD_TIMEOUT_SECONDS = 60
FLOOR = "floor"
CHILD_SCRIPT = Path(__file__).with_name("child.py")
# The interpreter flags of every child: isolated (no PYTHON* variables, no user site), no site
# module (this machine's site-packages stay out of sys.path), no bytecode written.
CHILD_FLAGS = ("-I", "-S", "-B")


class ChildError(RuntimeError):
    """A child failed to import its handler, or imported modules from outside the replica."""


@dataclass(frozen=True)
class Target:
    """One thing to cold-start: a handler module in the replica and its environment."""

    name: str
    kind: str
    module: str
    attribute: str
    sys_path: tuple[Path, ...]
    env: Mapping[str, str]


@dataclass(frozen=True)
class Sample:
    """One fresh-process run, in nanoseconds."""

    startup_ns: int
    import_ns: int


# ---------------------------------------------------------------------------------- environment


class _Placeholders(Mapping[tuple[str, str], str]):
    """``!GetAtt X.Attr`` of any resource of the template: a placeholder string."""

    def __init__(self, logical_ids: Sequence[str], region: str, account_id: str) -> None:
        self._ids = frozenset(logical_ids)
        self._prefix = f"arn:aws:bench:{region}:{account_id}"

    def __getitem__(self, key: tuple[str, str]) -> str:
        if key[0] not in self._ids:
            raise KeyError(key)
        return f"{self._prefix}:{key[0]}/{key[1]}"

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and key[0] in self._ids

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def __len__(self) -> int:
        return 0


def template_environment(template: Template, function_id: str) -> dict[str, str]:
    """The function's variables from the template (Globals merged), intrinsics resolved:
    parameters to their defaults, tables to their declared names, other resources to
    placeholders (init only needs them to be set)."""
    probe = template.resolver()
    attributes = _Placeholders(list(template.resources), probe.region, probe.account_id)
    parameters = template.parameter_defaults()
    refs = {logical_id: logical_id for logical_id in template.resources}
    names = template.resolver(parameter_overrides=parameters, refs=refs, attributes=attributes)
    for logical_id, table in template.tables.items():
        if table.properties.get("TableName") is not None:
            refs[logical_id] = str(names.resolve(table.properties["TableName"]))
    resolver = template.resolver(parameter_overrides=parameters, refs=refs, attributes=attributes)
    return template.function_environment(function_id, resolver)


def lambda_environment(
    *,
    name: str,
    handler: str,
    task_root: Path,
    runtime_dir: Path,
    region: str,
    memory_mb: int,
    tracing_active: bool,
) -> dict[str, str]:
    """The variables Lambda itself sets in a python3.12 execution environment (as far as init
    can observe them), plus two that keep this machine's AWS configuration out of the child."""
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": str(runtime_dir),
        "_HANDLER": handler,
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        # Lambda has no AWS config files; this machine's ~/.aws must not change what boto3 does.
        "AWS_CONFIG_FILE": str(runtime_dir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(runtime_dir / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if tracing_active:
        # Lambda sets these when Tracing is Active (its daemon address, here loopback: nothing is
        # sent at init anyway).
        env |= {
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
            "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
            "_AWS_XRAY_DAEMON_PORT": "2000",
        }
    return env


def make_targets(
    build: Build, functions: Sequence[FunctionArtifact], replica: Replica, extra_env: Mapping[str, str]
) -> list[Target]:
    """The floor (first) and each function, ready to run against ``replica``. ``extra_env`` is
    added to the functions only (what-if runs, e.g. ``POWERTOOLS_TRACE_DISABLED=true``)."""
    region = build.template.resolver().region
    targets: list[Target] = []
    for function in functions:
        code = replica.code[function.logical_id]
        env = {
            **template_environment(build.template, function.logical_id),
            **lambda_environment(
                name=function.logical_id,
                handler=function.spec.handler,
                task_root=code,
                runtime_dir=replica.runtime,
                region=region,
                memory_mb=function.spec.memory_mb,
                tracing_active=function.tracing_active,
            ),
            **extra_env,
        }
        targets.append(
            Target(
                name=function.logical_id,
                kind=function.kind,
                module=function.spec.handler_module,
                attribute=function.spec.handler_attr,
                sys_path=tuple(replica.sys_path(code, [layer.logical_id for layer in function.layers])),
                env=env,
            )
        )
    # The floor runs next to the HTTP functions' layers, with their Lambda settings.
    model = next((f for f in functions if f.kind == "http"), functions[0])
    floor_env = lambda_environment(
        name=FLOOR,
        handler="app.handler",
        task_root=replica.floor,
        runtime_dir=replica.runtime,
        region=region,
        memory_mb=model.spec.memory_mb,
        tracing_active=model.tracing_active,
    )
    floor_path = replica.sys_path(replica.floor, [layer.logical_id for layer in model.layers])
    return [Target(FLOOR, "http", "app", "handler", tuple(floor_path), floor_env), *targets]


# ---------------------------------------------------------------------------------- running


def child_command(
    target: Target, *, python: str = sys.executable, extra_flags: Sequence[str] = ()
) -> list[str]:
    """The command line of one fresh-process run of ``target``."""
    return [
        python,
        *CHILD_FLAGS,
        *extra_flags,
        str(CHILD_SCRIPT),
        target.module,
        target.attribute,
        *(str(p) for p in target.sys_path),
    ]


def parse_child_output(stdout: str, spawned_ns: int) -> tuple[Sample, list[str]]:
    """The sample and the modules loaded from outside the replica, from a child's stdout."""
    lines = stdout.strip().splitlines()
    if len(lines) < 2:
        raise ChildError(f"unexpected child output: {stdout!r}")
    t0, t_import, t_ready = (int(field) for field in lines[-2].split())
    report = json.loads(lines[-1])
    return Sample(startup_ns=t0 - spawned_ns, import_ns=t_ready - t_import), list(report["outside"])


def run_child(
    target: Target, *, timeout: float = CHILD_TIMEOUT_SECONDS, extra_flags: Sequence[str] = ()
) -> tuple[Sample, str]:
    """One fresh-process cold start of ``target``: the sample and the child's stderr."""
    spawned_ns = time.monotonic_ns()
    done = subprocess.run(
        child_command(target, extra_flags=extra_flags),
        env=dict(target.env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise ChildError(f"{target.name}: the handler did not import:\n{done.stderr[-3000:]}")
    sample, outside = parse_child_output(done.stdout, spawned_ns)
    if outside:
        raise ChildError(f"{target.name}: modules loaded from outside the replica: {outside[:10]}")
    return sample, done.stderr


def measure(targets: Sequence[Target], *, runs: int, warmup: int, timeout: float) -> dict[str, list[Sample]]:
    """``runs`` samples per target, after ``warmup`` discarded rounds (file cache). Rounds are
    interleaved and rotated so that drift on the machine spreads over every target alike."""
    samples: dict[str, list[Sample]] = defaultdict(list)
    for round_number in range(warmup + runs):
        shift = round_number % len(targets)
        for target in [*targets[shift:], *targets[:shift]]:
            sample, _ = run_child(target, timeout=timeout)
            if round_number >= warmup:
                samples[target.name].append(sample)
    return samples


def median_ms(values_ns: Sequence[int]) -> float:
    """Median of nanosecond values, in milliseconds (1 decimal)."""
    return round(statistics.median(values_ns) / 1e6, 1)


def result_line(target: Target, samples: Sequence[Sample], floor: Sequence[Sample]) -> dict[str, object]:
    """The JSON line of one function."""
    cold = statistics.median(s.import_ns for s in samples)
    base = statistics.median(s.import_ns for s in floor)
    return {
        "function": target.name,
        "kind": target.kind,
        "cold_start_ms_median": round(cold / 1e6, 1),
        "floor_ms_median": round(base / 1e6, 1),
        "ratio": round(cold / base, 2),
        "target": HTTP_TARGET_RATIO if target.kind == "http" else None,
        "runs": len(samples),
    }


# ---------------------------------------------------------------------------------- -X importtime


@dataclass(frozen=True)
class ImportRecord:
    """One line of ``-X importtime``: a module, its own and cumulative import time."""

    module: str
    self_us: int
    cumulative_us: int


def parse_importtime(stderr: str) -> list[ImportRecord]:
    """The records of ``python -X importtime`` output (other stderr lines are ignored)."""
    records: list[ImportRecord] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        records.append(ImportRecord(fields[2].strip(), int(fields[0]), int(fields[1])))
    return records


def by_package(records: Sequence[ImportRecord]) -> dict[str, int]:
    """Own import time (us) summed per top-level package."""
    totals: dict[str, int] = defaultdict(int)
    for record in records:
        totals[record.module.split(".")[0]] += record.self_us
    return dict(totals)


def importtime_report(target: Target, *, runs: int, timeout: float, top: int) -> list[dict[str, object]]:
    """Median own time per top-level package and cumulative time per module over ``runs`` runs."""
    packages: dict[str, list[int]] = defaultdict(list)
    modules: dict[str, list[int]] = defaultdict(list)
    for _ in range(runs):
        _, stderr = run_child(target, timeout=timeout, extra_flags=("-X", "importtime"))
        records = parse_importtime(stderr)
        for package, self_us in by_package(records).items():
            packages[package].append(self_us)
        for record in records:
            modules[record.module].append(record.cumulative_us)
    lines: list[dict[str, object]] = []
    ranked = sorted(packages.items(), key=lambda kv: statistics.median(kv[1]), reverse=True)
    for package, values in ranked[:top]:
        lines.append(
            {
                "function": target.name,
                "package": package,
                "self_ms_median": median_ms([v * 1000 for v in values]),
            }
        )
    ranked = sorted(modules.items(), key=lambda kv: statistics.median(kv[1]), reverse=True)
    for module, values in ranked[:top]:
        lines.append(
            {
                "function": target.name,
                "module": module,
                "cumulative_ms_median": median_ms([v * 1000 for v in values]),
            }
        )
    return lines


# ---------------------------------------------------------------------------------- main


class UsageError(Exception):
    """The command line asks for something the build does not have (exit status 2)."""


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--env expects NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def _select(build: Build, only: Sequence[str]) -> list[FunctionArtifact]:
    functions = [f for f in build.functions if not only or f.logical_id in only]
    if not functions:
        raise UsageError(f"no function matches {list(only)}")
    for function in functions:
        if function.runtime != "python3.12":
            raise UsageError(
                f"{function.logical_id}: runtime {function.runtime!r}; this replicates python3.12"
            )
    return functions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Cold start of each built function against the floor.")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="fresh processes per function")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="discarded rounds first")
    parser.add_argument("--timeout", type=float, default=CHILD_TIMEOUT_SECONDS, help="seconds per process")
    parser.add_argument(
        "--only", action="append", default=[], metavar="FUNCTION", help="these functions only"
    )
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="what-if variables")
    parser.add_argument(
        "--importtime", metavar="FUNCTION", help=f"what dominates an import ({FLOOR!r}: the floor)"
    )
    parser.add_argument("--top", type=int, default=15, help="rows of --importtime")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    parser.add_argument("--replica-dir", type=Path, default=REPLICA_DIR)
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; 1 when a function failed to start, 2 on a usage error."""
    args = _parser().parse_args(argv)
    try:
        if sys.version_info[:2] != (3, 12):
            raise UsageError("run this with Python 3.12 (the runtime's version): make bench-cold-start")
        build = load_build(args.build_dir)
        functions = _select(build, args.only)
        replica = ensure_replica(build, functions, args.replica_dir.resolve(), _log)
        targets = make_targets(build, functions, replica, _parse_env(args.env))
        if args.importtime:
            chosen = [t for t in targets if t.name == args.importtime]
            if not chosen:
                raise UsageError(f"unknown function {args.importtime!r}")
            for line in importtime_report(chosen[0], runs=args.runs, timeout=args.timeout, top=args.top):
                print(json.dumps(line))
            return 0
    except UsageError as exc:
        _log(str(exc))
        return 2
    return _benchmark(targets, runs=args.runs, warmup=args.warmup, timeout=args.timeout)


def _benchmark(targets: Sequence[Target], *, runs: int, warmup: int, timeout: float) -> int:
    """Print one line per function (the floor is ``targets[0]``); 1 if a function failed."""
    if _fails(targets[0], timeout):
        return 1
    failed = [t.name for t in targets[1:] if _fails(t, timeout)]
    runnable = [t for t in targets if t.name not in failed]
    samples = measure(runnable, runs=runs, warmup=warmup, timeout=timeout)
    startup = [s.startup_ns for target in runnable for s in samples[target.name]]
    _log(
        f"interpreter start-up before the clock (every child alike, not counted): {median_ms(startup)} ms median"
    )
    for target in runnable[1:]:
        print(json.dumps(result_line(target, samples[target.name], samples[FLOOR])))
    for name in failed:
        print(json.dumps({"function": name, "error": "the handler did not import (see stderr)"}))
    return 1 if failed else 0


def _fails(target: Target, timeout: float) -> bool:
    """Try one run; on failure, report it (stderr) and return True."""
    try:
        run_child(target, timeout=timeout)
    except (ChildError, subprocess.TimeoutExpired) as exc:
        _log(f"{target.name}: {exc}")
        return True
    return False


if __name__ == "__main__":
    sys.exit(main())
