"""``make import DATA=file.jsonl [STACK=name]``: load setlist files into a catalogue.

Without ``--stack`` the target is the local stack running on ``--port`` (default 3000): its
moto endpoint and table names come from the stack's state file. With ``--stack NAME`` the
target is a deployed stack: the catalogue table comes from its CloudFormation outputs, using
the AWS credentials and region of the environment (AWS_PROFILE, AWS_REGION, ...).

Importing is idempotent (a second run writes nothing) and never removes anything: see
``mysetlist.importer``. Malformed lines are reported as ``line N: reason`` and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import boto3

from mysetlist.importer import import_file
from mysetlist.settings import Settings
from tests.local_stack.stack import default_state_dir


def local_settings(port: int) -> Settings:
    """Settings that point at the local stack on ``port`` (it must be running)."""
    state = default_state_dir(port) / "stack.json"
    if not state.exists():
        raise SystemExit(f"no local stack on port {port} ({state} is missing): start it with `make dev`")
    info = json.loads(state.read_text(encoding="utf-8"))
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}.items():
        os.environ.setdefault(name, value)
    os.environ["AWS_ACCOUNT_ID_ENDPOINT_MODE"] = "disabled"
    return Settings(
        catalog_table=info["tables"]["CatalogTable"],
        aws_endpoint_url=info["moto_endpoint"],
        aws_region=info["region"],
    )


def deployed_settings(stack: str) -> Settings:
    """Settings for a deployed stack, from its CloudFormation outputs."""
    cloudformation = boto3.client("cloudformation")
    outputs = cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    values = {o["OutputKey"]: o["OutputValue"] for o in outputs}
    if "CatalogTableName" not in values:
        raise SystemExit(f"stack {stack} has no CatalogTableName output: is it a MySetlist stack?")
    return Settings(catalog_table=values["CatalogTableName"], aws_region=cloudformation.meta.region_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path, help="JSON Lines setlist files")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--stack", help="a deployed stack's name (uses your AWS credentials)")
    target.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "3000")), help="local stack port"
    )
    args = parser.parse_args(argv)
    settings = deployed_settings(args.stack) if args.stack else local_settings(args.port)
    skipped = 0
    for path in args.files:
        if not path.is_file():
            parser.error(f"{path}: no such file")
        skipped += len(import_file(path, settings, report=lambda line: print(line, file=sys.stderr)).skipped)
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
