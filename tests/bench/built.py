"""What ``sam build`` produced, read from ``.aws-sam/build/template.yaml``: each function's code
folder, its layers (Globals merged, in order), architecture, runtime, tracing and trigger kind.

The built template is the deployable one: its ``CodeUri``/``ContentUri`` point at the built
folders, so sizes and the cold-start replica describe exactly what ``sam deploy`` would zip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.artifacts import LAMBDA_ARCHITECTURES
from tests.support.template import FunctionSpec, Template, TemplateError

BUILD_DIR = Path(".aws-sam") / "build"

# SAM event types by the kind of trigger they are (a function's kind is its first match here).
_EVENT_KINDS = (
    ("http", frozenset({"HttpApi", "Api"})),
    ("stream", frozenset({"DynamoDB", "Kinesis", "MSK", "SelfManagedKafka", "DocumentDB"})),
    ("queue", frozenset({"SQS", "MQ"})),
    ("schedule", frozenset({"Schedule", "ScheduleV2"})),
    ("event", frozenset({"EventBridgeRule", "CloudWatchEvent", "SNS", "S3", "CloudWatchLogs", "IoTRule"})),
)


@dataclass(frozen=True)
class LayerArtifact:
    """One built layer: its folder (Lambda's ``/opt``) and the instruction set it was built for."""

    logical_id: str
    path: Path
    architecture: str


@dataclass(frozen=True)
class FunctionArtifact:
    """One built function and the layers Lambda mounts under it (in template order)."""

    logical_id: str
    path: Path
    spec: FunctionSpec
    runtime: str
    architecture: str
    tracing_active: bool
    kind: str
    layers: tuple[LayerArtifact, ...]


@dataclass(frozen=True)
class Build:
    """The built template and its artifacts."""

    template: Template
    functions: tuple[FunctionArtifact, ...]

    @property
    def layers(self) -> tuple[LayerArtifact, ...]:
        """Every layer of the template (used by a function or not: all of them ship)."""
        return tuple(
            _layer(self.template, {"Ref": logical_id})
            for logical_id in self.template.resources_of_type("AWS::Serverless::LayerVersion")
        )


def load_build(build_dir: Path = BUILD_DIR) -> Build:
    """Read ``build_dir/template.yaml``; ``FileNotFoundError`` when ``sam build`` has not run."""
    path = build_dir / "template.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make build` first")
    template = Template.load(path)
    globals_ = (template.document.get("Globals") or {}).get("Function") or {}
    resources = template.resources
    functions: list[FunctionArtifact] = []
    for logical_id, spec in template.functions.items():
        props = resources[logical_id].get("Properties") or {}
        layer_refs = [*(globals_.get("Layers") or []), *(props.get("Layers") or [])]
        functions.append(
            FunctionArtifact(
                logical_id=logical_id,
                path=spec.code_dir,
                spec=spec,
                runtime=str(props.get("Runtime") or globals_.get("Runtime") or ""),
                architecture=_machine(
                    (props.get("Architectures") or globals_.get("Architectures") or ["x86_64"])[0]
                ),
                tracing_active=str(props.get("Tracing") or globals_.get("Tracing") or "") == "Active",
                kind=function_kind(template.document, logical_id),
                layers=tuple(_layer(template, ref) for ref in layer_refs),
            )
        )
    return Build(template=template, functions=tuple(functions))


def _machine(architecture: Any) -> str:
    name = str(architecture)
    if name not in LAMBDA_ARCHITECTURES:
        raise TemplateError(f"unknown Lambda architecture {name!r}")
    return LAMBDA_ARCHITECTURES[name]


def _layer(template: Template, ref: Any) -> LayerArtifact:
    if not (isinstance(ref, dict) and "Ref" in ref):
        raise TemplateError(f"layer {ref!r} is not a layer of this template: its size and code are unknown")
    logical_id = str(ref["Ref"])
    resource = template.resources.get(logical_id) or {}
    props = resource.get("Properties") or {}
    metadata = resource.get("Metadata") or {}
    content = props.get("ContentUri")
    if resource.get("Type") != "AWS::Serverless::LayerVersion" or not isinstance(content, str):
        raise TemplateError(f"layer {logical_id}: not a built AWS::Serverless::LayerVersion")
    architecture = (
        metadata.get("BuildArchitecture") or (props.get("CompatibleArchitectures") or ["x86_64"])[0]
    )
    return LayerArtifact(logical_id, (template.root / content).resolve(), _machine(architecture))


def function_kind(document: Mapping[str, Any], logical_id: str) -> str:
    """What triggers a function: ``http``, ``stream``, ``queue``, ``schedule``, ``event``,
    ``cognito-trigger`` (named in a user pool's LambdaConfig) or ``other``."""
    resources = document.get("Resources") or {}
    props = (resources.get(logical_id) or {}).get("Properties") or {}
    types = {str(event.get("Type")) for event in (props.get("Events") or {}).values()}
    for kind, event_types in _EVENT_KINDS:
        if types & event_types:
            return kind
    for resource in resources.values():
        if resource.get("Type") == "AWS::Cognito::UserPool":
            config = (resource.get("Properties") or {}).get("LambdaConfig") or {}
            if any(_names(value, logical_id) for value in config.values()):
                return "cognito-trigger"
    return "other"


def _names(value: Any, logical_id: str) -> bool:
    """True when an intrinsic value (``!GetAtt F.Arn``, ``!Ref F``, ``!Sub``...) refers to ``logical_id``."""
    if isinstance(value, dict):
        if value.get("Ref") == logical_id:
            return True
        target = value.get("Fn::GetAtt")
        if isinstance(target, list) and target and target[0] == logical_id:
            return True
        return any(_names(v, logical_id) for v in value.values())
    if isinstance(value, list):
        return any(_names(v, logical_id) for v in value)
    return isinstance(value, str) and ("${" + logical_id + "." in value or "${" + logical_id + "}" in value)
