"""The OpenAPI document of each HTTP function, generated from its FastAPI app.

``python -m tests.tools.openapi`` writes ``docs/openapi/<code dir>.json`` (``catalog_api.json``,
``votes_api.json`` ...) for every function of ``template.yaml`` that has ``HttpApi`` events;
``--check`` writes nothing and exits 1 when a committed document differs from what the code
generates, when one is missing, or when ``docs/openapi`` holds a document no function generates.

Each handler module builds its app at import (settings, DynamoDB client, JWT verifier), so the
settings they require are given placeholder values first; nothing is called over the network.
``create_app`` turns the docs routes off in Lambda (``openapi_url=None``), but ``app.openapi()``
still builds the document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.template import REPO_ROOT, Template, default_template, load_handler, module_name_for

OPENAPI_DIR = REPO_ROOT / "docs" / "openapi"

# What the handler modules need at import. The values never reach a document.
PLACEHOLDER_ENVIRONMENT = {
    "CATALOG_TABLE": "openapi-catalog",
    "VOTES_TABLE": "openapi-votes",
    "TALLIES_TABLE": "openapi-tallies",
    "USERS_TABLE": "openapi-users",
    "PLATFORM_TABLE": "openapi-platform",
    "PREDICTIONS_TABLE": "openapi-predictions",
    "EXPERIMENTS_TABLE": "openapi-experiments",
    "MODEL_BUCKET": "openapi-models",
    "JWT_ISSUER": "https://issuer.invalid/openapi",
    "JWT_AUDIENCE": "openapi",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
}

_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def http_functions(template: Template) -> dict[str, str]:
    """Logical id -> document name (the code directory's name) of every function with routes."""
    functions = template.functions
    ids = sorted({route.function_id for route in template.routes})
    return {function_id: functions[function_id].code_dir.name for function_id in ids}


def generate(template: Template | None = None) -> dict[str, dict[str, Any]]:
    """Document name -> OpenAPI document, for every HTTP function of ``template``.

    Sets the placeholder environment in this process (settings are read once per process):
    run it in a process of its own, as ``python -m tests.tools.openapi`` does.
    """
    template = template or default_template()
    os.environ.update(PLACEHOLDER_ENVIRONMENT)
    documents: dict[str, dict[str, Any]] = {}
    for function_id, name in http_functions(template).items():
        load_handler(function_id, template=template)
        app = getattr(sys.modules[module_name_for(function_id)], "app", None)
        if app is None or not callable(getattr(app, "openapi", None)):
            raise RuntimeError(f"{function_id}: its handler module has no FastAPI 'app'")
        documents[name] = app.openapi()
    return documents


def route_mismatches(template: Template, documents: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Routes declared in the template that the function's app does not serve, and the reverse."""
    problems: list[str] = []
    names = http_functions(template)
    for function_id, name in names.items():
        declared = {(r.method, r.path) for r in template.routes if r.function_id == function_id}
        paths: Mapping[str, Mapping[str, Any]] = documents[name].get("paths", {})
        served = {
            (method.upper(), path)
            for path, item in paths.items()
            for method in item
            if method in _HTTP_METHODS
        }
        problems += [
            f"{function_id}: template route {m} {p} is not served by the app"
            for m, p in sorted(declared - served)
        ]
        problems += [
            f"{function_id}: app route {m} {p} is not declared in template.yaml"
            for m, p in sorted(served - declared)
        ]
    return problems


def render(document: Mapping[str, Any]) -> str:
    """The committed form of a document: indented JSON, keys in the app's order, final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def stale(documents: Mapping[str, Mapping[str, Any]], directory: Path = OPENAPI_DIR) -> list[str]:
    """What differs between ``directory`` and ``documents`` (empty when the docs are current)."""
    problems: list[str] = []
    for name, document in documents.items():
        path = directory / f"{name}.json"
        if not path.is_file():
            problems.append(f"{path.relative_to(REPO_ROOT)} is missing")
        elif path.read_text(encoding="utf-8") != render(document):
            problems.append(f"{path.relative_to(REPO_ROOT)} differs from what the code generates")
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            if path.stem not in documents:
                problems.append(f"{path.relative_to(REPO_ROOT)} belongs to no HTTP function of template.yaml")
    return problems


def write(documents: Mapping[str, Mapping[str, Any]], directory: Path = OPENAPI_DIR) -> list[Path]:
    """Write every document that changed; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, document in documents.items():
        path = directory / f"{name}.json"
        text = render(document)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tools.openapi", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when docs/openapi is not current"
    )
    args = parser.parse_args(argv)
    template = default_template()
    documents = generate(template)
    problems = route_mismatches(template, documents)
    if args.check:
        problems += stale(documents)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `make openapi` and commit docs/openapi", file=sys.stderr)
            return 1
        print(f"docs/openapi is current ({len(documents)} documents)")
        return 0
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    written = write(documents)
    for path in written:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    if not written:
        print(f"docs/openapi is current ({len(documents)} documents)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
