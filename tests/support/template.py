"""Read ``template.yaml``, the one description of the infrastructure, for tests and the local stack.

Tables, functions, HTTP routes, stream event source mappings, schedules, queues, topics, event
buses, buckets and KMS keys are declared once, in the SAM template; everything here is derived from it so that no
test copies a schema. A resource whose ``Condition`` is false locally (by default every resource
of the ``HasVpc`` condition: there is no VPC locally) is left out.

CloudFormation short tags (``!Ref``, ``!Sub``, ``!GetAtt`` ...) are loaded into their long form
(``{"Ref": ...}``, ``{"Fn::Sub": ...}``), so intrinsic values stay as markers until a
:class:`Resolver` turns them into local values (table names, queue URLs, stream ARNs).

Typical use::

    tables = create_tables(dynamodb_client, prefix="it-")      # logical id -> table name
    handler = load_handler("VotesApi")                          # functions/votes_api/app.py
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

# The value of the template's Environment parameter for local tables, queues and topics.
LOCAL_ENVIRONMENT = "local"
LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_REGION = "us-east-1"

Handler = Callable[[dict[str, Any], Any], Any]


class TemplateError(ValueError):
    """The template declares something this reader cannot map to a local equivalent."""


# ---------------------------------------------------------------------------------- YAML loading


class _TemplateLoader(yaml.SafeLoader):
    """A safe YAML loader that also accepts CloudFormation's short-form intrinsic tags."""


def _construct_intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    """``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``, and so on."""
    key = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {key: value}


_TemplateLoader.add_multi_constructor("!", _construct_intrinsic)


def load_document(path: Path) -> dict[str, Any]:
    """The template at ``path`` as plain data, intrinsic functions in their long (JSON) form."""
    with path.open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(document, dict) or "Resources" not in document:
        raise TemplateError(f"{path} is not a CloudFormation/SAM template (no Resources)")
    return document


# ---------------------------------------------------------------------------------- resolution

_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_INTRINSIC_KEYS = frozenset(
    {"Ref", "Condition"}
    | {
        f"Fn::{name}"
        for name in [
            "Sub",
            "GetAtt",
            "If",
            "Not",
            "Equals",
            "And",
            "Or",
            "Join",
            "Select",
            "Split",
            "FindInMap",
            "Base64",
            "ImportValue",
            "GetAZs",
            "Cidr",
        ]
    }
)


class UnresolvedIntrinsic(TemplateError):
    """An intrinsic function refers to something the resolver has no local value for."""


_NO_VALUE = object()


@dataclass(frozen=True)
class Resolver:
    """Turns intrinsic markers into local values.

    ``refs`` maps a logical id to what ``!Ref`` returns (a table name, a queue URL ...);
    ``attributes`` maps ``(logical id, attribute)`` to what ``!GetAtt`` returns. Parameters
    resolve to their template defaults unless overridden; ``Environment`` is ``local``.
    """

    parameters: Mapping[str, str]
    conditions: Mapping[str, Any] = field(default_factory=dict)
    refs: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[tuple[str, str], str] = field(default_factory=dict)
    region: str = LOCAL_REGION
    account_id: str = LOCAL_ACCOUNT_ID

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function evaluated (recursively)."""
        resolved = self._resolve(value)
        return None if resolved is _NO_VALUE else resolved

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self._resolve(v) for v in value) if r is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, argument), *_ = value.items()
            if key in _INTRINSIC_KEYS:
                return self._intrinsic(key, argument)
        return {k: r for k, r in ((k, self._resolve(v)) for k, v in value.items()) if r is not _NO_VALUE}

    def _intrinsic(self, key: str, argument: Any) -> Any:  # noqa: PLR0911 - one branch per function
        if key == "Ref":
            return self._ref(str(argument))
        if key == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
            return self._get_att(str(logical_id), str(attribute))
        if key == "Fn::Sub":
            return self._sub(argument)
        if key == "Fn::If":
            name, when_true, when_false = argument
            return self._resolve(when_true if self.condition(str(name)) else when_false)
        if key in ("Fn::Not", "Fn::Equals", "Fn::And", "Fn::Or", "Condition"):
            return self._boolean(key, argument)
        if key == "Fn::Join":
            separator, items = argument
            return str(separator).join(str(i) for i in self._resolve(items))
        if key == "Fn::Select":
            index, items = argument
            return self._resolve(items)[int(self._resolve(index))]
        if key == "Fn::Split":
            separator, text = argument
            return str(self._resolve(text)).split(str(separator))
        raise UnresolvedIntrinsic(f"{key} is not supported locally: {argument!r}")

    def condition(self, name: str) -> bool:
        """The value of the template condition ``name``."""
        if name not in self.conditions:
            raise UnresolvedIntrinsic(f"unknown condition {name!r}")
        return bool(self._boolean_value(self.conditions[name]))

    def _boolean_value(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            (key, argument), *_ = value.items()
            if key in ("Fn::Not", "Fn::Equals", "Fn::And", "Fn::Or", "Condition"):
                return self._boolean(key, argument)
        return self._resolve(value)

    def _boolean(self, key: str, argument: Any) -> bool:
        if key == "Condition":
            return self.condition(str(argument))
        if key == "Fn::Not":
            return not self._boolean_value(argument[0])
        if key == "Fn::Equals":
            left, right = (self._boolean_value(a) for a in argument)
            return str(left) == str(right)
        values = [bool(self._boolean_value(a)) for a in argument]
        return all(values) if key == "Fn::And" else any(values)

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": f"mysetlist-{LOCAL_ENVIRONMENT}",
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/mysetlist-local/0",
        }
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise UnresolvedIntrinsic(f"!Ref {name}: no local value")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        if (logical_id, attribute) not in self.attributes:
            raise UnresolvedIntrinsic(f"!GetAtt {logical_id}.{attribute}: no local value")
        return self.attributes[(logical_id, attribute)]

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        local = {k: self._resolve(v) for k, v in dict(variables).items()}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return str(local[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self._get_att(logical_id, attribute)
            return str(self._ref(name))

        return _SUB_VARIABLE.sub(substitute, str(text))


# ---------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class TableSpec:
    """One ``AWS::DynamoDB::Table``: enough to create it (in moto) exactly as declared."""

    logical_id: str
    properties: Mapping[str, Any]

    @property
    def ttl_attribute(self) -> str | None:
        """The TTL attribute when TTL is enabled (moto records it but never expires items)."""
        ttl = self.properties.get("TimeToLiveSpecification") or {}
        return str(ttl["AttributeName"]) if ttl.get("Enabled") and ttl.get("AttributeName") else None

    @property
    def stream_view_type(self) -> str | None:
        spec = self.properties.get("StreamSpecification") or {}
        return str(spec["StreamViewType"]) if spec.get("StreamViewType") else None

    def create_kwargs(self, table_name: str) -> dict[str, Any]:
        """Keyword arguments of ``create_table`` for this table under ``table_name``.

        Encryption, point-in-time recovery and tags are left out: moto does not need them and
        they change nothing a test can observe.
        """
        props = self.properties
        kwargs: dict[str, Any] = {
            "TableName": table_name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        throughput = props.get("ProvisionedThroughput")
        if kwargs["BillingMode"] == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = throughput or {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if props.get(key):
                kwargs[key] = [dict(index) for index in props[key]]
        if kwargs["BillingMode"] == "PROVISIONED":
            for index in kwargs.get("GlobalSecondaryIndexes", []):
                index.setdefault("ProvisionedThroughput", kwargs["ProvisionedThroughput"])
        if self.stream_view_type:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": self.stream_view_type}
        return kwargs


@dataclass(frozen=True)
class FunctionSpec:
    """One ``AWS::Serverless::Function`` with the template's Globals merged in."""

    logical_id: str
    code_dir: Path
    handler: str
    environment: Mapping[str, Any]
    events: Mapping[str, Mapping[str, Any]]
    layer_dirs: tuple[Path, ...]
    timeout_seconds: int
    memory_mb: int

    @property
    def handler_module(self) -> str:
        """Dotted module of the handler inside the code directory (``app`` for ``app.handler``)."""
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_attr(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    @property
    def module_path(self) -> Path:
        """The handler's source file, e.g. ``functions/votes_api/app.py``."""
        return self.code_dir.joinpath(*self.handler_module.split(".")).with_suffix(".py")


@dataclass(frozen=True)
class HttpRoute:
    """One ``HttpApi`` event: a route of the HTTP API and whether its JWT authorizer applies."""

    function_id: str
    event_name: str
    method: str
    path: str
    auth_required: bool
    authorizer: str | None
    scopes: tuple[str, ...] = ()

    @property
    def route_key(self) -> str:
        """API Gateway's route key, e.g. ``GET /api/shows/{show_id}``."""
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class StreamMapping:
    """One ``DynamoDB`` event: a table stream feeding a function, with Lambda's batch settings."""

    function_id: str
    event_name: str
    table_id: str
    batch_size: int = 100
    batching_window_seconds: float = 0.0
    starting_position: str = "TRIM_HORIZON"
    report_batch_item_failures: bool = False
    bisect_on_error: bool = False
    maximum_retry_attempts: int = -1
    maximum_record_age_seconds: int = -1
    on_failure_destination: Any = None
    enabled: bool = True
    filter_criteria: Any = None

    @property
    def on_failure_queue_id(self) -> str | None:
        """Logical id of the SQS queue named by ``DestinationConfig.OnFailure`` (``!GetAtt Q.Arn``)."""
        destination = self.on_failure_destination
        if isinstance(destination, dict) and "Fn::GetAtt" in destination:
            logical_id, attribute = destination["Fn::GetAtt"]
            return str(logical_id) if attribute == "Arn" else None
        return None


@dataclass(frozen=True)
class ScheduleSpec:
    """One ``Schedule`` (EventBridge rule) or ``ScheduleV2`` (EventBridge Scheduler) event."""

    function_id: str
    event_name: str
    kind: str
    expression: str
    timezone: str = "UTC"
    input: str | None = None
    enabled: bool = True
    name: str | None = None


@dataclass(frozen=True)
class QueueSpec:
    """One ``AWS::SQS::Queue``; ``properties`` keep their intrinsic markers."""

    logical_id: str
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class BucketSpec:
    """One ``AWS::S3::Bucket``; ``properties`` keep their intrinsic markers."""

    logical_id: str
    properties: Mapping[str, Any]

    @property
    def versioned(self) -> bool:
        versioning = self.properties.get("VersioningConfiguration") or {}
        return str(versioning.get("Status", "")) == "Enabled"


@dataclass(frozen=True)
class LocalKey:
    """A KMS key created locally for an ``AWS::KMS::Key``: what ``!Ref`` and ``!GetAtt .Arn`` give."""

    key_id: str
    arn: str


@dataclass(frozen=True)
class HttpApiSpec:
    """One HTTP API: its CORS configuration and authorizers (markers unresolved)."""

    logical_id: str
    cors: Mapping[str, Any] | None
    default_authorizer: str | None
    authorizers: Mapping[str, Any]


# ---------------------------------------------------------------------------------- the template


@dataclass(frozen=True)
class Template:
    """A parsed SAM template and the local views of it."""

    path: Path
    document: Mapping[str, Any]
    # Parameter values that replace the defaults everywhere (names, conditions, environment).
    parameter_overrides: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(
        cls, path: Path = TEMPLATE_PATH, *, parameter_overrides: Mapping[str, str] | None = None
    ) -> Template:
        path = path.resolve()
        return cls(
            path=path, document=load_document(path), parameter_overrides=dict(parameter_overrides or {})
        )

    @property
    def root(self) -> Path:
        """The directory that ``CodeUri`` and ``ContentUri`` are relative to."""
        return self.path.parent

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        return dict(self.document.get("Resources") or {})

    def resources_of_type(self, resource_type: str) -> dict[str, Mapping[str, Any]]:
        """Logical id -> properties of every resource of ``resource_type`` that exists locally
        (its ``Condition``, if any, holds), in template order."""
        return {
            logical_id: resource.get("Properties") or {}
            for logical_id, resource in self.resources.items()
            if resource.get("Type") == resource_type and self.exists(logical_id)
        }

    def exists(self, logical_id: str) -> bool:
        """Whether the resource is created with the local parameters: it has no ``Condition``, or
        its condition holds."""
        condition = (self.resources.get(logical_id) or {}).get("Condition")
        return condition is None or self.resolver().condition(str(condition))

    def parameter_defaults(self) -> dict[str, str]:
        """Parameter name -> default (as a string, as CloudFormation passes it)."""
        params = self.document.get("Parameters") or {}
        return {name: str(spec.get("Default", "")) for name, spec in params.items()}

    def resolver(
        self,
        *,
        parameter_overrides: Mapping[str, str] | None = None,
        refs: Mapping[str, str] | None = None,
        attributes: Mapping[tuple[str, str], str] | None = None,
        region: str = LOCAL_REGION,
    ) -> Resolver:
        """A resolver with the template's parameter defaults, ``Environment=local`` and overrides."""
        parameters = self.parameter_defaults()
        parameters["Environment"] = LOCAL_ENVIRONMENT
        parameters.update(self.parameter_overrides)
        parameters.update(parameter_overrides or {})
        return Resolver(
            parameters=parameters,
            conditions=dict(self.document.get("Conditions") or {}),
            refs=dict(refs or {}),
            # Kept as given: a caller may pass a mapping that answers for any resource.
            attributes=attributes if attributes is not None else {},
            region=region,
        )

    # -- tables, queues -------------------------------------------------------------------

    @property
    def tables(self) -> dict[str, TableSpec]:
        """Logical id -> table spec for every ``AWS::DynamoDB::Table``."""
        return {
            lid: TableSpec(lid, props)
            for lid, props in self.resources_of_type("AWS::DynamoDB::Table").items()
        }

    def table_name(self, logical_id: str, prefix: str = "") -> str:
        """The local name of a table: ``prefix`` + its TableName with ``Environment=local``."""
        declared = self.tables[logical_id].properties.get("TableName")
        base = str(self.resolver().resolve(declared)) if declared is not None else logical_id
        return f"{prefix}{base}"

    @property
    def queues(self) -> dict[str, QueueSpec]:
        """Logical id -> queue spec for every ``AWS::SQS::Queue``."""
        return {
            lid: QueueSpec(lid, props) for lid, props in self.resources_of_type("AWS::SQS::Queue").items()
        }

    def queue_name(self, logical_id: str, prefix: str = "") -> str:
        declared = self.queues[logical_id].properties.get("QueueName")
        base = str(self.resolver().resolve(declared)) if declared is not None else logical_id
        return f"{prefix}{base}"

    @property
    def topics(self) -> dict[str, Mapping[str, Any]]:
        """Logical id -> properties of every ``AWS::SNS::Topic``."""
        return self.resources_of_type("AWS::SNS::Topic")

    def topic_name(self, logical_id: str, prefix: str = "") -> str:
        declared = self.topics[logical_id].get("TopicName")
        base = str(self.resolver().resolve(declared)) if declared is not None else logical_id
        return f"{prefix}{base}"

    @property
    def event_buses(self) -> dict[str, Mapping[str, Any]]:
        """Logical id -> properties of every ``AWS::Events::EventBus``."""
        return self.resources_of_type("AWS::Events::EventBus")

    def event_bus_name(self, logical_id: str, prefix: str = "") -> str:
        """``prefix`` + the declared Name with ``Environment=local`` (what ``!Ref`` gives)."""
        declared = self.event_buses[logical_id].get("Name")
        base = str(self.resolver().resolve(declared)) if declared is not None else logical_id
        return f"{prefix}{base}"

    @property
    def buckets(self) -> dict[str, BucketSpec]:
        """Logical id -> bucket spec for every ``AWS::S3::Bucket``."""
        return {
            lid: BucketSpec(lid, props) for lid, props in self.resources_of_type("AWS::S3::Bucket").items()
        }

    def bucket_name(self, logical_id: str, prefix: str = "") -> str:
        """``prefix`` + the declared BucketName with ``Environment=local`` (lower-cased logical id
        when none is declared: bucket names are lower case)."""
        declared = self.buckets[logical_id].properties.get("BucketName")
        base = str(self.resolver().resolve(declared)) if declared is not None else logical_id.lower()
        return f"{prefix}{base}"

    # -- functions and their events -------------------------------------------------------

    @property
    def functions(self) -> dict[str, FunctionSpec]:
        """Logical id -> function spec (Globals merged: environment, layers, timeout, memory)."""
        globals_ = (self.document.get("Globals") or {}).get("Function") or {}
        global_env = ((globals_.get("Environment") or {}).get("Variables")) or {}
        functions: dict[str, FunctionSpec] = {}
        for logical_id, props in self.resources_of_type("AWS::Serverless::Function").items():
            env = {**global_env, **(((props.get("Environment") or {}).get("Variables")) or {})}
            layers = [*(globals_.get("Layers") or []), *(props.get("Layers") or [])]
            code_uri = props.get("CodeUri")
            if not isinstance(code_uri, str):
                raise TemplateError(f"{logical_id}: CodeUri must be a local directory, got {code_uri!r}")
            functions[logical_id] = FunctionSpec(
                logical_id=logical_id,
                code_dir=(self.root / code_uri).resolve(),
                handler=str(props.get("Handler") or globals_.get("Handler") or "app.handler"),
                environment=env,
                events=dict(props.get("Events") or {}),
                layer_dirs=tuple(self._layer_dir(layer) for layer in layers),
                timeout_seconds=int(props.get("Timeout") or globals_.get("Timeout") or 3),
                memory_mb=int(props.get("MemorySize") or globals_.get("MemorySize") or 128),
            )
        return functions

    def _layer_dir(self, layer: Any) -> Path:
        if isinstance(layer, dict) and "Ref" in layer:
            props = self.resources_of_type("AWS::Serverless::LayerVersion").get(str(layer["Ref"]))
            if props and isinstance(props.get("ContentUri"), str):
                return (self.root / str(props["ContentUri"])).resolve()
        raise TemplateError(f"layer {layer!r} is not a local AWS::Serverless::LayerVersion")

    def layer_dirs(self) -> list[Path]:
        """The content directory of every local layer (``AWS::Serverless::LayerVersion``)."""
        return [
            (self.root / str(props["ContentUri"])).resolve()
            for props in self.resources_of_type("AWS::Serverless::LayerVersion").values()
            if isinstance(props.get("ContentUri"), str)
        ]

    def add_layers_to_path(self) -> None:
        """Put the layers on ``sys.path`` (as ``/opt/python`` is in Lambda), so the shared package
        imports in this process too."""
        for directory in self.layer_dirs():
            if directory.is_dir() and str(directory) not in sys.path:
                sys.path.insert(0, str(directory))

    def function_environment(self, function_id: str, resolver: Resolver) -> dict[str, str]:
        """The function's environment variables (Globals + its own), resolved to strings."""
        resolved = resolver.resolve(dict(self.functions[function_id].environment))
        return {name: _env_string(value) for name, value in resolved.items()}

    def _events_of_type(self, *types: str) -> Iterable[tuple[str, str, Mapping[str, Any]]]:
        for function_id, spec in self.functions.items():
            for event_name, event in spec.events.items():
                if event.get("Type") in types:
                    yield function_id, event_name, event

    @property
    def http_apis(self) -> dict[str, HttpApiSpec]:
        """Every ``AWS::Serverless::HttpApi`` (CORS and JWT authorizers)."""
        apis: dict[str, HttpApiSpec] = {}
        for logical_id, props in self.resources_of_type("AWS::Serverless::HttpApi").items():
            auth = props.get("Auth") or {}
            apis[logical_id] = HttpApiSpec(
                logical_id=logical_id,
                cors=props.get("CorsConfiguration"),
                default_authorizer=auth.get("DefaultAuthorizer"),
                authorizers=dict(auth.get("Authorizers") or {}),
            )
        return apis

    @property
    def routes(self) -> list[HttpRoute]:
        """Every ``HttpApi`` event as a route. A route needs a token when its API has a default
        authorizer and the event does not say ``Auth: {Authorizer: NONE}``."""
        apis = self.http_apis
        routes: list[HttpRoute] = []
        for function_id, event_name, event in self._events_of_type("HttpApi"):
            props = event.get("Properties") or {}
            api_ref = props.get("ApiId")
            api = apis.get(str(api_ref["Ref"])) if isinstance(api_ref, dict) and "Ref" in api_ref else None
            auth = props.get("Auth") or {}
            authorizer = auth.get("Authorizer", api.default_authorizer if api else None)
            authorizer = None if authorizer in (None, "NONE") else str(authorizer)
            routes.append(
                HttpRoute(
                    function_id=function_id,
                    event_name=event_name,
                    method=str(props.get("Method", "ANY")).upper(),
                    path=str(props.get("Path", "$default")),
                    auth_required=authorizer is not None,
                    authorizer=authorizer,
                    scopes=tuple(str(s) for s in auth.get("AuthorizationScopes") or ()),
                )
            )
        return routes

    @property
    def stream_mappings(self) -> list[StreamMapping]:
        """Every ``DynamoDB`` event (a table stream -> function event source mapping)."""
        mappings: list[StreamMapping] = []
        for function_id, event_name, event in self._events_of_type("DynamoDB"):
            props = event.get("Properties") or {}
            stream = props.get("Stream")
            if not (
                isinstance(stream, dict) and "Fn::GetAtt" in stream and stream["Fn::GetAtt"][1] == "StreamArn"
            ):
                raise TemplateError(f"{function_id}.{event_name}: Stream must be !GetAtt <Table>.StreamArn")
            mappings.append(
                StreamMapping(
                    function_id=function_id,
                    event_name=event_name,
                    table_id=str(stream["Fn::GetAtt"][0]),
                    batch_size=int(props.get("BatchSize", 100)),
                    batching_window_seconds=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                    starting_position=str(props.get("StartingPosition", "TRIM_HORIZON")),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in (props.get("FunctionResponseTypes") or []),
                    bisect_on_error=bool(props.get("BisectBatchOnFunctionError", False)),
                    maximum_retry_attempts=int(props.get("MaximumRetryAttempts", -1)),
                    maximum_record_age_seconds=int(props.get("MaximumRecordAgeInSeconds", -1)),
                    on_failure_destination=(
                        (props.get("DestinationConfig") or {}).get("OnFailure") or {}
                    ).get("Destination"),
                    enabled=bool(props.get("Enabled", True)),
                    filter_criteria=props.get("FilterCriteria"),
                )
            )
        return mappings

    @property
    def schedules(self) -> list[ScheduleSpec]:
        """Every ``Schedule`` and ``ScheduleV2`` event."""
        schedules: list[ScheduleSpec] = []
        for function_id, event_name, event in self._events_of_type("Schedule", "ScheduleV2"):
            props = event.get("Properties") or {}
            kind = str(event["Type"])
            expression = props.get("Schedule") if kind == "Schedule" else props.get("ScheduleExpression")
            if not isinstance(expression, str):
                raise TemplateError(f"{function_id}.{event_name}: the schedule expression must be a string")
            state = str(props.get("State", "ENABLED")).upper()
            schedules.append(
                ScheduleSpec(
                    function_id=function_id,
                    event_name=event_name,
                    kind=kind,
                    expression=expression,
                    timezone=str(props.get("ScheduleExpressionTimezone") or "UTC"),
                    input=str(props["Input"]) if props.get("Input") is not None else None,
                    enabled=bool(props.get("Enabled", True)) and state == "ENABLED",
                    name=self._schedule_name(props.get("Name")),
                )
            )
        return schedules

    def _schedule_name(self, declared: Any) -> str | None:
        """The schedule's (or rule's) name with the local parameters; None when it has none or
        it refers to something without a local value."""
        if declared is None:
            return None
        try:
            return str(self.resolver().resolve(declared))
        except UnresolvedIntrinsic:
            return None


def _env_string(value: Any) -> str:
    """Environment values as Lambda sets them: strings (booleans lower-case, numbers as written)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


@cache
def default_template() -> Template:
    """The repository's ``template.yaml`` (parsed once per process)."""
    return Template.load(TEMPLATE_PATH)


# ---------------------------------------------------------------------------------- helpers


def create_tables(
    dynamodb_client: DynamoDBClient, prefix: str = "", *, template: Template | None = None
) -> dict[str, str]:
    """Create every table of the template (and enable TTL where declared); logical id -> name.

    Names are ``prefix`` + the declared TableName with ``Environment=local``, e.g.
    ``create_tables(client, "it-")["VotesTable"] == "it-mysetlist-local-votes"``.
    """
    template = template or default_template()
    names: dict[str, str] = {}
    for logical_id, spec in template.tables.items():
        name = template.table_name(logical_id, prefix)
        dynamodb_client.create_table(**spec.create_kwargs(name))
        if spec.ttl_attribute:
            dynamodb_client.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute}
            )
        names[logical_id] = name
    return names


def create_topics(
    sns_client: SNSClient, prefix: str = "", *, template: Template | None = None
) -> dict[str, str]:
    """Create every SNS topic of the template; logical id -> topic ARN (encryption is left out)."""
    template = template or default_template()
    return {
        logical_id: sns_client.create_topic(Name=template.topic_name(logical_id, prefix))["TopicArn"]
        for logical_id in template.topics
    }


def create_event_buses(
    events_client: EventBridgeClient, prefix: str = "", *, template: Template | None = None
) -> dict[str, str]:
    """Create every EventBridge bus of the template; logical id -> bus name (what ``!Ref`` gives).

    Archives (``AWS::Events::Archive``) are left out: they only matter to a replay, and moto would
    keep every event of a long local session in memory for them.
    """
    template = template or default_template()
    names: dict[str, str] = {}
    for logical_id in template.event_buses:
        name = template.event_bus_name(logical_id, prefix)
        events_client.create_event_bus(Name=name)
        names[logical_id] = name
    return names


def create_buckets(
    s3_client: S3Client, prefix: str = "", *, template: Template | None = None
) -> dict[str, str]:
    """Create every S3 bucket of the template, versioned where declared; logical id -> name.

    Encryption, lifecycle rules, public access blocks and bucket policies are left out: moto does
    not enforce them and a test cannot observe them.
    """
    template = template or default_template()
    region = s3_client.meta.region_name
    names: dict[str, str] = {}
    for logical_id, spec in template.buckets.items():
        name = template.bucket_name(logical_id, prefix)
        if region == "us-east-1":
            s3_client.create_bucket(Bucket=name)
        else:
            s3_client.create_bucket(
                Bucket=name,
                CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
            )
        if spec.versioned:
            s3_client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        names[logical_id] = name
    return names


def create_keys(
    kms_client: KMSClient, prefix: str = "", *, template: Template | None = None
) -> tuple[dict[str, LocalKey], dict[str, str]]:
    """Create every KMS key of the template, and the aliases that point at them.

    Returns (logical id -> key, alias logical id -> alias name). Alias names get ``prefix`` after
    ``alias/`` (``alias/<prefix>mysetlist-local-data``), so several callers can share one mock.
    Key policies are left out (moto does not enforce them).
    """
    template = template or default_template()
    resolver = template.resolver()
    keys: dict[str, LocalKey] = {}
    for logical_id, props in template.resources_of_type("AWS::KMS::Key").items():
        description = props.get("Description")
        metadata = kms_client.create_key(
            Description=f"{prefix}{resolver.resolve(description) if isinstance(description, str) else logical_id}"
        )["KeyMetadata"]
        keys[logical_id] = LocalKey(key_id=metadata["KeyId"], arn=metadata["Arn"])
    aliases: dict[str, str] = {}
    for logical_id, props in template.resources_of_type("AWS::KMS::Alias").items():
        target = props.get("TargetKeyId")
        if not (isinstance(target, dict) and str(target.get("Ref")) in keys):
            raise TemplateError(f"{logical_id}: TargetKeyId must be !Ref <an AWS::KMS::Key of the template>")
        name = str(resolver.resolve(props["AliasName"]))
        name = "alias/" + prefix + name.removeprefix("alias/")
        kms_client.create_alias(AliasName=name, TargetKeyId=keys[str(target["Ref"])].key_id)
        aliases[logical_id] = name
    return keys, aliases


def module_name_for(function_id: str) -> str:
    """The unique ``sys.modules`` name a function's handler module is loaded under."""
    return f"lambda_function_{re.sub(r'[^0-9A-Za-z_]', '_', function_id)}"


def load_handler(function_id: str, *, template: Template | None = None, reload: bool = False) -> Handler:
    """Import a function's handler module from its file, under a unique module name, and return
    its handler. Every handler module is called ``app``, hence loading by path.

    The function's layer directories and code directory are put on ``sys.path`` first, as the
    Lambda runtime would (``/opt/python`` and ``/var/task``). Set the environment before calling:
    the shared settings are read once per process. Raises :class:`TemplateError` for an unknown
    function and ``ImportError`` when the module cannot be loaded.
    """
    template = template or default_template()
    if function_id not in template.functions:
        raise TemplateError(f"no function {function_id!r} in {template.path}")
    spec = template.functions[function_id]
    name = module_name_for(function_id)
    module = sys.modules.get(name)
    if module is None or reload:
        module = _import_file(name, spec)
    handler = getattr(module, spec.handler_attr, None)
    if not callable(handler):
        raise ImportError(f"{spec.module_path} has no callable {spec.handler_attr!r}")
    return handler  # type: ignore[no-any-return]


def _import_file(name: str, spec: FunctionSpec) -> ModuleType:
    for directory in (*spec.layer_dirs, spec.code_dir):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    module_spec = importlib.util.spec_from_file_location(name, spec.module_path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {spec.module_path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
