"""The built template's reading, the size report and the cold-start helpers, on a small build
made here (no sam build, no child processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.built import function_kind, load_build
from tests.bench.cold_start import (
    FLOOR,
    ImportRecord,
    Sample,
    Target,
    by_package,
    lambda_environment,
    parse_child_output,
    parse_importtime,
    result_line,
    template_environment,
)
from tests.bench.replica import Replica
from tests.bench.sizes import LAMBDA_UNZIPPED_LIMIT_MB, function_size

BUILT_TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  Environment: {Type: String, Default: dev}
Globals:
  Function:
    Runtime: python3.12
    Architectures: [arm64]
    Tracing: Active
    MemorySize: 512
    Layers: [!Ref CommonLayer]
    Environment:
      Variables:
        VOTES_TABLE: !Ref VotesTable
        ENVIRONMENT: !Ref Environment
Resources:
  VotesTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub mysetlist-${Environment}-votes
      KeySchema: [{AttributeName: PK, KeyType: HASH}]
      AttributeDefinitions: [{AttributeName: PK, AttributeType: S}]
  CommonLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: CommonLayer}
    Metadata: {BuildMethod: makefile, BuildArchitecture: arm64}
  MlLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: MlLayer, CompatibleArchitectures: [arm64]}
  Api:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: Api
      Handler: app.handler
      Environment:
        Variables:
          JWT_ISSUER: !Sub https://issuer.example/${Pool}
      Events:
        Get: {Type: HttpApi, Properties: {Method: GET, Path: /x}}
  Trainer:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: Trainer
      Handler: train.handler
      Tracing: PassThrough
      Layers: [!Ref MlLayer]
      Events:
        Nightly: {Type: Schedule, Properties: {Schedule: rate(1 day)}}
  Pool:
    Type: AWS::Cognito::UserPool
    Properties:
      LambdaConfig: {PostConfirmation: !GetAtt Api.Arn}
"""


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    (tmp_path / "template.yaml").write_text(BUILT_TEMPLATE, encoding="utf-8")
    for folder, size in (
        ("Api", 1000),
        ("Trainer", 2000),
        ("CommonLayer/python", 3 * 2**20),
        ("MlLayer/python", 2**20),
    ):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "blob").write_bytes(b"x" * size)
    return tmp_path


def test_load_build_merges_globals_and_orders_layers(build_dir: Path) -> None:
    build = load_build(build_dir)

    api, trainer = build.functions
    assert (api.logical_id, api.kind, api.architecture, api.runtime, api.tracing_active) == (
        "Api",
        "http",
        "aarch64",
        "python3.12",
        True,
    )
    assert [layer.logical_id for layer in trainer.layers] == ["CommonLayer", "MlLayer"]
    assert (trainer.kind, trainer.tracing_active, trainer.spec.handler_module) == ("schedule", False, "train")
    assert [layer.logical_id for layer in build.layers] == ["CommonLayer", "MlLayer"]
    assert all(layer.architecture == "aarch64" for layer in build.layers)


def test_load_build_needs_a_build(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make build"):
        load_build(tmp_path)


def test_function_kind() -> None:
    document = {
        "Resources": {
            "Stream": {"Properties": {"Events": {"E": {"Type": "DynamoDB"}}}},
            "Trigger": {"Properties": {}},
            "Lonely": {"Properties": {}},
            "Pool": {
                "Type": "AWS::Cognito::UserPool",
                "Properties": {"LambdaConfig": {"PreSignUp": {"Fn::GetAtt": ["Trigger", "Arn"]}}},
            },
        }
    }

    assert function_kind(document, "Stream") == "stream"
    assert function_kind(document, "Trigger") == "cognito-trigger"
    assert function_kind(document, "Lonely") == "other"


def test_sizes_add_the_layers_to_the_code(build_dir: Path) -> None:
    build = load_build(build_dir)
    cache: dict[Path, int] = {}

    api, trainer = (function_size(f, cache) for f in build.functions)

    assert (api.code_mb, api.layers_mb, api.limit_mb) == (0.0, 3.0, LAMBDA_UNZIPPED_LIMIT_MB)
    assert (trainer.layers_mb, trainer.total_mb, trainer.over_limit) == (4.0, 4.0, False)
    assert len(cache) == 2


def test_template_environment_resolves_refs_and_subs(build_dir: Path) -> None:
    build = load_build(build_dir)

    env = template_environment(build.template, "Api")

    assert env == {
        "VOTES_TABLE": "mysetlist-dev-votes",
        "ENVIRONMENT": "dev",
        "JWT_ISSUER": "https://issuer.example/Pool",
    }


def test_lambda_environment_sets_xray_only_when_tracing(tmp_path: Path) -> None:
    def env(*, tracing_active: bool) -> dict[str, str]:
        return lambda_environment(
            name="Fn",
            handler="app.handler",
            task_root=tmp_path,
            runtime_dir=tmp_path,
            region="eu-west-1",
            memory_mb=256,
            tracing_active=tracing_active,
        )

    traced, plain = env(tracing_active=True), env(tracing_active=False)

    assert traced["LAMBDA_TASK_ROOT"] == str(tmp_path)
    assert traced["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert traced["AWS_XRAY_CONTEXT_MISSING"] == "LOG_ERROR"
    assert "AWS_XRAY_DAEMON_ADDRESS" not in plain


def test_replica_sys_path_follows_lambda(tmp_path: Path) -> None:
    layers = {}
    for name in ("A", "B"):
        (tmp_path / name / "python" / "lib" / "python3.12" / "site-packages").mkdir(parents=True)
        layers[name] = tmp_path / name
    replica = Replica(tmp_path, {}, layers, tmp_path / "_runtime", tmp_path / "_floor")

    path = replica.sys_path(tmp_path / "code", ["A", "B"])

    site = Path("lib", "python3.12", "site-packages")
    assert path == [
        tmp_path / "code",
        tmp_path / "B" / "python" / site,
        tmp_path / "A" / "python" / site,
        tmp_path / "B" / "python",
        tmp_path / "A" / "python",
        tmp_path / "_runtime",
    ]


def test_parse_child_output() -> None:
    sample, outside = parse_child_output('1000 3000 9000\n{"outside": ["x"], "modules": 3}\n', spawned_ns=400)

    assert sample == Sample(startup_ns=600, import_ns=6000)
    assert outside == ["x"]


def test_result_line_compares_with_the_floor() -> None:
    target = Target("Api", "http", "app", "handler", (), {})
    floor = [Sample(0, 100_000_000), Sample(0, 200_000_000), Sample(0, 300_000_000)]
    samples = [Sample(0, 300_000_000), Sample(0, 400_000_000), Sample(0, 900_000_000)]

    line = result_line(target, samples, floor)

    assert line == {
        "function": "Api",
        "kind": "http",
        "cold_start_ms_median": 400.0,
        "floor_ms_median": 200.0,
        "ratio": 2.0,
        "target": 1.5,
        "runs": 3,
    }
    assert result_line(Target(FLOOR, "stream", "app", "handler", (), {}), samples, floor)["target"] is None


def test_importtime_is_parsed_and_grouped_by_package() -> None:
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       120 |        120 |     pydantic.fields",
            "import time:        30 |        150 |   pydantic",
            "import time:        50 |        200 | app",
            "a warning line",
        ]
    )

    records = parse_importtime(stderr)

    assert records[0] == ImportRecord("pydantic.fields", 120, 120)
    assert by_package(records) == {"pydantic": 150, "app": 50}
