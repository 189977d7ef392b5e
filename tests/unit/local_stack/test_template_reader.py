"""The template reader: the repository's template.yaml, and small inline templates for the
parts it does not use yet (schedules, queues with redrive, greedy routes)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from tests.support.template import (
    Template,
    TemplateError,
    UnresolvedIntrinsic,
    create_buckets,
    create_event_buses,
    create_keys,
    create_tables,
    create_topics,
    default_template,
    load_handler,
    module_name_for,
)

INLINE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Environment: {Type: String, Default: dev}
  Flag: {Type: String, Default: "off"}
Conditions:
  FlagOn: !Equals [!Ref Flag, "on"]
  FlagOff: !Not [!Condition FlagOn]
Globals:
  Function:
    Timeout: 7
    MemorySize: 256
    Layers: [!Ref Shared]
    Environment:
      Variables:
        TABLE: !Ref Things
        SHARED: global
Resources:
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layer/}
  Things:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub app-${Environment}-things
      BillingMode: PROVISIONED
      ProvisionedThroughput: {ReadCapacityUnits: 1, WriteCapacityUnits: 1}
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
  Dlq:
    Type: AWS::SQS::Queue
    Properties: {QueueName: !Sub "app-${Environment}-dlq"}
  Work:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy: {deadLetterTargetArn: !GetAtt Dlq.Arn, maxReceiveCount: 3}
  Loud:
    Type: AWS::SQS::Queue
    Condition: FlagOn
    Properties: {QueueName: !Sub "app-${Environment}-loud"}
  Job:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Timeout: 30
      Environment:
        Variables:
          SHARED: own
          MODE: !If [FlagOn, loud, !Ref AWS::NoValue]
          WHERE: !Sub "${AWS::Region}/${Things.Arn}"
      Events:
        Hourly:
          Type: Schedule
          Properties: {Schedule: rate(1 hour), Input: '{"job": "hourly"}'}
        Nightly:
          Type: ScheduleV2
          Properties: {ScheduleExpression: "cron(0 3 * * ? *)", ScheduleExpressionTimezone: Europe/Paris}
        Paused:
          Type: ScheduleV2
          Properties: {ScheduleExpression: rate(5 minutes), State: DISABLED}
        Proxy:
          Type: HttpApi
          Properties: {Method: ANY, Path: "/files/{path+}"}
"""


def _inline(tmp_path: Path, text: str = INLINE) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(text))
    return Template.load(path)


def test_short_tags_load_as_long_form_markers() -> None:
    template = default_template()
    env = template.functions["VotesApi"].environment
    assert env["VOTES_TABLE"] == {"Ref": "VotesTable"}
    assert env["JWT_ISSUER"] == {"Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPool}"}
    mapping = template.stream_mappings[0]
    assert mapping.on_failure_destination == {"Fn::GetAtt": ["VoteProcessorDLQ", "Arn"]}


def test_repository_tables_carry_keys_indexes_stream_and_ttl() -> None:
    tables = default_template().tables
    assert {"CatalogTable", "VotesTable", "TalliesTable", "UsersTable"} <= set(tables)
    votes = tables["VotesTable"].create_kwargs("votes")
    assert votes["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert [i["IndexName"] for i in votes["GlobalSecondaryIndexes"]] == ["ByShow", "ByModeration"]
    assert votes["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in votes
    assert tables["TalliesTable"].ttl_attribute == "expires_at"
    assert tables["CatalogTable"].ttl_attribute is None
    assert "SSESpecification" not in votes


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")


@pytest.mark.usefixtures("aws_credentials")
def test_create_tables_builds_every_table_with_ttl_in_moto() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        names = create_tables(client, "t1-")
        assert names["VotesTable"] == "t1-mysetlist-local-votes"
        # Only this test's prefix: a mock already running in this process may hold other tables.
        created = [n for n in client.list_tables()["TableNames"] if n.startswith("t1-")]
        assert sorted(created) == sorted(names.values())
        ttl = client.describe_time_to_live(TableName=names["TalliesTable"])["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expires_at"
        assert client.describe_table(TableName=names["VotesTable"])["Table"]["LatestStreamArn"]
        platform = client.describe_table(TableName=names["PlatformTable"])["Table"]
        assert [i["IndexName"] for i in platform["GlobalSecondaryIndexes"]] == ["GSI1"]
        ttl = client.describe_time_to_live(TableName=names["PlatformTable"])["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expires_at"


@pytest.mark.usefixtures("aws_credentials")
def test_topics_buckets_and_keys_are_created_from_the_template_in_moto() -> None:
    with mock_aws():
        topics = create_topics(boto3.client("sns", region_name="us-east-1"), "t2-")
        assert topics == {"AlarmTopic": "arn:aws:sns:us-east-1:123456789012:t2-mysetlist-local-alarms"}
        s3 = boto3.client("s3", region_name="us-east-1")
        buckets = create_buckets(s3, "t2-")
        assert buckets == {"ModelBucket": "t2-mysetlist-local-models-123456789012-us-east-1"}
        assert s3.get_bucket_versioning(Bucket=buckets["ModelBucket"])["Status"] == "Enabled"
        kms = boto3.client("kms", region_name="us-east-1")
        keys, aliases = create_keys(kms, "t2-")
        assert set(keys) == {"DataKey"}
        assert aliases == {"DataKeyAlias": "alias/t2-mysetlist-local-data"}
        data_key = kms.generate_data_key(KeyId=keys["DataKey"].arn, KeySpec="AES_256")
        assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
        assert (
            kms.describe_key(KeyId=aliases["DataKeyAlias"])["KeyMetadata"]["KeyId"] == keys["DataKey"].key_id
        )


def test_routes_know_which_need_a_token() -> None:
    routes = {r.route_key: r for r in default_template().routes}
    assert routes["GET /api/shows/{show_id}"].auth_required is False
    assert routes["GET /api/votes"].auth_required is False
    assert routes["POST /api/votes"].auth_required is True
    assert routes["PUT /api/shows/{show_id}/setlist"].authorizer == "CognitoJwt"
    assert routes["POST /api/votes"].function_id == "VotesApi"


def test_stream_mapping_settings_come_from_the_event() -> None:
    (mapping,) = [m for m in default_template().stream_mappings if m.function_id == "VoteProcessor"]
    assert (mapping.function_id, mapping.table_id) == ("VoteProcessor", "VotesTable")
    assert mapping.batch_size == 100
    assert mapping.batching_window_seconds == 1.0
    assert mapping.report_batch_item_failures
    assert mapping.bisect_on_error
    assert mapping.maximum_retry_attempts == 10
    assert mapping.maximum_record_age_seconds == 3600
    assert mapping.on_failure_queue_id == "VoteProcessorDLQ"


def test_functions_merge_globals_and_resolve_locally(tmp_path: Path) -> None:
    template = _inline(tmp_path)
    job = template.functions["Job"]
    assert job.timeout_seconds == 30
    assert job.memory_mb == 256
    assert job.code_dir == (tmp_path / "fn").resolve()
    assert job.module_path == (tmp_path / "fn" / "app.py").resolve()
    assert job.layer_dirs == ((tmp_path / "layer").resolve(),)
    resolver = template.resolver(
        refs={"Things": "things-table"}, attributes={("Things", "Arn"): "arn:things"}
    )
    env = template.function_environment("Job", resolver)
    assert env == {"TABLE": "things-table", "SHARED": "own", "WHERE": "us-east-1/arn:things"}
    loud = template.resolver(
        parameter_overrides={"Flag": "on"}, refs={"Things": "t"}, attributes={("Things", "Arn"): "a"}
    )
    assert template.function_environment("Job", loud)["MODE"] == "loud"
    assert loud.condition("FlagOff") is False


def test_table_and_queue_names_use_the_local_environment(tmp_path: Path) -> None:
    template = _inline(tmp_path)
    assert template.table_name("Things") == "app-local-things"
    assert template.table_name("Things", "x-") == "x-app-local-things"
    assert template.queue_name("Dlq") == "app-local-dlq"
    assert template.queue_name("Work") == "Work"
    assert template.tables["Things"].create_kwargs("t")["ProvisionedThroughput"] == {
        "ReadCapacityUnits": 1,
        "WriteCapacityUnits": 1,
    }


def test_resources_whose_condition_is_false_locally_are_left_out(tmp_path: Path) -> None:
    template = _inline(tmp_path)
    assert set(template.queues) == {"Dlq", "Work"}
    assert template.exists("Dlq")
    assert not template.exists("Loud")
    loud = Template.load(template.path, parameter_overrides={"Flag": "on"})
    assert loud.queue_name("Loud") == "app-local-loud"
    assert (
        loud.function_environment(
            "Job", loud.resolver(refs={"Things": "t"}, attributes={("Things", "Arn"): "a"})
        )["MODE"]
        == "loud"
    )
    # Every resource of the repository's VPC condition is absent locally: there is no VPC.
    repository = default_template()
    assert not repository.exists("ValkeyCache")
    assert repository.exists("PlatformTable")


def test_schedules_and_greedy_routes_are_read(tmp_path: Path) -> None:
    template = _inline(tmp_path)
    schedules = {s.event_name: s for s in template.schedules}
    assert schedules["Hourly"].kind == "Schedule"
    assert schedules["Hourly"].input == '{"job": "hourly"}'
    assert schedules["Nightly"].timezone == "Europe/Paris"
    assert schedules["Nightly"].expression == "cron(0 3 * * ? *)"
    assert schedules["Paused"].enabled is False
    (route,) = template.routes
    assert (route.method, route.path, route.auth_required) == ("ANY", "/files/{path+}", False)


def test_unresolvable_references_say_what_is_missing(tmp_path: Path) -> None:
    template = _inline(tmp_path)
    with pytest.raises(UnresolvedIntrinsic, match="Things"):
        template.function_environment("Job", template.resolver())
    with pytest.raises(UnresolvedIntrinsic, match="Fn::ImportValue"):
        template.resolver().resolve({"Fn::ImportValue": "x"})


def test_sub_supports_literals_and_variable_maps() -> None:
    resolver = default_template().resolver()
    assert resolver.resolve({"Fn::Sub": "a-${!Literal}-${Environment}"}) == "a-${Literal}-local"
    assert resolver.resolve({"Fn::Sub": ["${X}-${AWS::AccountId}", {"X": {"Ref": "Environment"}}]}) == (
        "local-123456789012"
    )
    assert resolver.resolve({"Fn::Join": ["/", ["a", {"Ref": "AWS::Region"}]]}) == "a/us-east-1"


def test_load_handler_imports_by_path_under_unique_names(tmp_path: Path) -> None:
    template = _inline(
        tmp_path,
        INLINE.replace("CodeUri: fn/", "CodeUri: fn/\n      Handler: app.handler"),
    )
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "shared_helper_for_test.py").write_text("VALUE = 41\n")
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text(
        "import shared_helper_for_test\n\ndef handler(event, context):\n    return shared_helper_for_test.VALUE + event['n']\n"
    )
    handler = load_handler("Job", template=template)
    assert handler({"n": 1}, None) == 42
    assert module_name_for("Job") == "lambda_function_Job"
    with pytest.raises(TemplateError, match="no function"):
        load_handler("Nope", template=template)


def test_a_file_that_is_not_a_template_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("just: text\n")
    with pytest.raises(TemplateError, match="no Resources"):
        Template.load(path)


@pytest.mark.usefixtures("aws_credentials")
def test_event_buses_are_created_from_the_template_in_moto() -> None:
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        buses = create_event_buses(events, "t3-")
        assert buses == {"VoteEventsBus": "t3-mysetlist-local-votes"}
        assert events.describe_event_bus(Name=buses["VoteEventsBus"])["Arn"] == (
            "arn:aws:events:us-east-1:123456789012:event-bus/t3-mysetlist-local-votes"
        )
