"""What template.yaml declares for platform resilience (issue 4): the platform table, the cache
and its VPC wiring behind ``HasVpc``, the alert topic, the model store, the health functions and
their schedules and alarms. Read from the template itself (tests/support/template.py)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import pytest

from mysetlist.keys import ACTUAL_SETLIST_SK
from tests.local_stack.scheduler import parse_schedule, scheduled_event
from tests.support.template import TEMPLATE_PATH, Template, default_template

CACHE_USERS = (
    "CatalogApi",
    "VotesApi",
    "VoteProcessor",
    "HealthApi",
    "HealthCheck",
    "CacheWarmer",
    "PredictionsApi",
    "PredictionPrecompute",
)
VPC_RESOURCES = (
    "FunctionSecurityGroup",
    "FunctionToCacheEgress",
    "CacheSecurityGroup",
    "CacheIngressFromFunctions",
    "ValkeyCache",
    "DynamoDBGatewayEndpoint",
    "S3GatewayEndpoint",
)
FIRE_TIME = dt.datetime(2026, 3, 6, 10, 7, tzinfo=dt.UTC)
WITH_VPC = {"VpcId": "vpc-0abc", "PrivateSubnetIds": "subnet-1,subnet-2"}


def _resource(logical_id: str) -> Mapping[str, Any]:
    return default_template().resources[logical_id]


def _statements(function_id: str) -> list[Mapping[str, Any]]:
    """The inline policy statements of a function (SAM policy templates are left out)."""
    policies = _resource(function_id)["Properties"].get("Policies") or []
    return [s for policy in policies if isinstance(policy, dict) for s in policy.get("Statement", [])]


def _actions(statement: Mapping[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_the_platform_table_is_built_as_the_data_model_describes() -> None:
    spec = default_template().tables["PlatformTable"]
    props = spec.properties
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert [k["AttributeName"] for k in props["KeySchema"]] == ["PK", "SK"]
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "GSI1"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["GSI1PK", "GSI1SK"]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    assert spec.ttl_attribute == "expires_at"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["KMSMasterKeyId"] == {"Ref": "DataKey"}
    assert _resource("PlatformTable")["DeletionPolicy"] == "Retain"
    assert default_template().table_name("PlatformTable") == "mysetlist-local-platform"
    for function in default_template().functions.values():
        assert function.environment["PLATFORM_TABLE"] == {"Ref": "PlatformTable"}


def test_the_cache_and_its_network_exist_only_with_a_vpc() -> None:
    local = default_template()
    assert not any(local.exists(lid) for lid in VPC_RESOURCES)
    with_vpc = Template.load(TEMPLATE_PATH, parameter_overrides=WITH_VPC)
    assert all(with_vpc.exists(lid) for lid in VPC_RESOURCES[:5])
    # Gateway endpoints only when route tables are given (a VPC may already have them).
    assert not with_vpc.exists("DynamoDBGatewayEndpoint")
    routed = Template.load(TEMPLATE_PATH, parameter_overrides={**WITH_VPC, "PrivateRouteTableIds": "rtb-1"})
    assert routed.exists("DynamoDBGatewayEndpoint")
    assert routed.exists("S3GatewayEndpoint")
    # A VPC id without subnets is no VPC (and the template's rule refuses it at deploy time).
    assert not Template.load(TEMPLATE_PATH, parameter_overrides={"VpcId": "vpc-0abc"}).exists("ValkeyCache")


def test_the_cache_is_serverless_valkey_encrypted_with_the_data_key_and_reached_only_by_functions() -> None:
    cache = _resource("ValkeyCache")["Properties"]
    assert cache["Engine"] == "valkey"
    assert cache["KmsKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert cache["SecurityGroupIds"] == [{"Ref": "CacheSecurityGroup"}]
    assert cache["SnapshotRetentionLimit"] == {"Ref": "CacheSnapshotRetentionDays"}
    assert default_template().parameter_defaults()["CacheSnapshotRetentionDays"] == "0"
    ingress = _resource("CacheIngressFromFunctions")["Properties"]
    assert ingress["SourceSecurityGroupId"] == {"Ref": "FunctionSecurityGroup"}
    assert (ingress["FromPort"], ingress["ToPort"]) == (6379, 6379)
    assert "CidrIp" not in ingress
    key_policy = _resource("DataKey")["Properties"]["KeyPolicy"]["Statement"]
    elasticache = next(s for s in key_policy if s["Sid"] == "ElastiCacheUsesForThisAccount")
    assert elasticache["Condition"]["StringEquals"]["kms:ViaService"] == {
        "Fn::Sub": "elasticache.${AWS::Region}.amazonaws.com"
    }


@pytest.mark.parametrize("function_id", CACHE_USERS)
def test_cache_users_join_the_vpc_and_may_wrap_cache_keys(function_id: str) -> None:
    props = _resource(function_id)["Properties"]
    condition, in_vpc, outside = props["VpcConfig"]["Fn::If"]
    assert condition == "HasVpc"
    assert in_vpc == {
        "SecurityGroupIds": [{"Ref": "FunctionSecurityGroup"}],
        "SubnetIds": {"Ref": "PrivateSubnetIds"},
    }
    assert outside == {"Ref": "AWS::NoValue"}
    env = default_template().functions[function_id].environment
    assert env["CACHE_KMS_KEY_ID"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert env["CACHE_URL"]["Fn::If"][0] == "HasVpc"
    kms = [s for s in _statements(function_id) if any(a.startswith("kms:") for a in _actions(s))]
    assert [(_actions(s), s["Resource"]) for s in kms] == [
        ({"kms:GenerateDataKey", "kms:Decrypt"}, {"Fn::GetAtt": ["DataKey", "Arn"]})
    ]


# Functions that reach Valkey for shared state (rate limits, the fraud window, the trending
# sets) but cache nothing encrypted: in the VPC with CACHE_URL, without the KMS data key.
VALKEY_ONLY = ("TallyReconciler", "ModerationApi", "FraudSweeper", "AbTestingApi")


@pytest.mark.parametrize("function_id", VALKEY_ONLY)
def test_valkey_users_without_encrypted_values_join_the_vpc_without_the_data_key(function_id: str) -> None:
    props = _resource(function_id)["Properties"]
    assert props["VpcConfig"]["Fn::If"][0] == "HasVpc"
    env = default_template().functions[function_id].environment
    assert env["CACHE_URL"]["Fn::If"][0] == "HasVpc"
    assert "CACHE_KMS_KEY_ID" not in env
    assert not [s for s in _statements(function_id) if any(a.startswith("kms:") for a in _actions(s))]


def test_functions_that_do_not_cache_stay_out_of_the_vpc_and_the_cache() -> None:
    template = default_template()
    others = set(template.functions) - set(CACHE_USERS) - set(VALKEY_ONLY)
    assert others == {"UserProfileSync", "LiveUpdates", "ModelTrainer"}
    for function_id in others:
        assert "VpcConfig" not in _resource(function_id)["Properties"]
        assert "CACHE_URL" not in template.functions[function_id].environment


def test_cache_url_is_tls_in_aws_and_empty_without_a_vpc() -> None:
    template = default_template()
    local = template.function_environment("HealthCheck", _resolver(template))
    assert local["CACHE_URL"] == ""
    with_vpc = Template.load(TEMPLATE_PATH, parameter_overrides=WITH_VPC)
    resolver = _resolver(
        with_vpc,
        attributes={
            ("ValkeyCache", "Endpoint.Address"): "cache.example.internal",
            ("ValkeyCache", "Endpoint.Port"): "6379",
        },
    )
    assert with_vpc.function_environment("HealthCheck", resolver)["CACHE_URL"] == (
        "rediss://cache.example.internal:6379"
    )


def _resolver(template: Template, attributes: Mapping[tuple[str, str], str] | None = None) -> Any:
    refs = {lid: f"ref-{lid}" for lid in template.resources}
    known = {(lid, "Arn"): f"arn:{lid}" for lid in template.resources}
    return template.resolver(refs=refs, attributes={**known, **(attributes or {})})


def test_health_functions_are_configured_for_their_dependencies() -> None:
    template = default_template()
    resolver = _resolver(template)
    api = template.function_environment("HealthApi", resolver)
    check = template.function_environment("HealthCheck", resolver)
    for env in (api, check):
        assert env["ALERT_TOPIC_ARN"] == "ref-AlarmTopic"
        assert env["MODEL_BUCKET"] == "ref-ModelBucket"
        assert env["PLATFORM_TABLE"] == "ref-PlatformTable"
    assert api["JWT_AUDIENCE"] == "ref-UserPoolClient"
    assert "JWT_ISSUER" not in check
    assert template.functions["HealthCheck"].timeout_seconds < 60  # ends before the next run


def test_only_the_health_check_publishes_alerts() -> None:
    publishers = {
        function_id
        for function_id in default_template().functions
        if any("sns:Publish" in _actions(s) for s in _statements(function_id))
    }
    assert publishers == {"HealthCheck"}
    (topic_reads,) = [s for s in _statements("HealthApi") if "sns:GetTopicAttributes" in _actions(s)]
    assert topic_reads["Resource"] == {"Ref": "AlarmTopic"}


@pytest.mark.parametrize("function_id", ["HealthApi", "HealthCheck"])
def test_health_probes_are_read_only_and_scoped(function_id: str) -> None:
    statements = {s["Sid"]: s for s in _statements(function_id) if "Sid" in s}
    assert _actions(statements["ProbeTables"]) == {"dynamodb:GetItem"}
    assert {"Fn::GetAtt": ["PlatformTable", "Arn"]} not in statements["ProbeTables"]["Resource"]
    listing = statements["ProbeModelStore"]
    assert _actions(listing) == {"s3:ListBucket"}
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["models/", "models/*"]
    assert "ReadModels" not in statements  # the probe lists; reading models is issue 6's
    assert _actions(statements["ProbeEmail"]) == {"ses:GetSendQuota"}
    policies = _resource(function_id)["Properties"]["Policies"]
    assert {"DynamoDBCrudPolicy": {"TableName": {"Ref": "PlatformTable"}}} in policies


def test_health_routes_are_anonymous_for_get_and_need_a_token_for_post() -> None:
    routes = {r.route_key: r for r in default_template().routes if r.function_id == "HealthApi"}
    assert set(routes) == {"GET /api/monitoring/health", "POST /api/monitoring/health"}
    assert routes["GET /api/monitoring/health"].auth_required is False
    assert routes["POST /api/monitoring/health"].authorizer == "CognitoJwt"


def test_health_check_and_cache_warmer_run_on_scheduler_schedules() -> None:
    schedules = {s.function_id: s for s in default_template().schedules}
    assert set(schedules) == {
        "HealthCheck",
        "CacheWarmer",
        "TallyReconciler",
        "FraudSweeper",
        "PredictionPrecompute",
        "ModelTrainer",
    }
    check, warmer = schedules["HealthCheck"], schedules["CacheWarmer"]
    assert (check.kind, check.expression, check.name) == (
        "ScheduleV2",
        "rate(1 minute)",
        "mysetlist-local-health-check",
    )
    assert (warmer.kind, warmer.expression) == ("ScheduleV2", "rate(5 minutes)")
    for spec in (check, warmer):
        assert spec.enabled
        parse_schedule(spec.expression)  # the local scheduler runs it
        event = scheduled_event(spec, FIRE_TIME, region="us-east-1", account_id="123456789012")
        assert event["scheduled_time"] == "2026-03-06T10:07:00Z"
        assert event["attempt"] == "1"
        assert event["schedule_arn"].startswith("arn:aws:scheduler:us-east-1:123456789012:schedule/default/")
    events = _resource("HealthCheck")["Properties"]["Events"]
    assert events["EveryMinute"]["Properties"]["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": ["SchedulesDLQ", "Arn"]}
    }
    assert _resource("HealthCheck")["Properties"]["EventInvokeConfig"]["MaximumRetryAttempts"] == 0


def test_the_tally_reconciler_runs_every_15_minutes_and_writes_only_the_tallies() -> None:
    (spec,) = [s for s in default_template().schedules if s.function_id == "TallyReconciler"]
    assert (spec.kind, spec.expression, spec.enabled) == ("ScheduleV2", "rate(15 minutes)", True)
    parse_schedule(spec.expression)
    props = _resource("TallyReconciler")["Properties"]
    event = props["Events"]["EveryFifteenMinutes"]["Properties"]
    assert event["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["SchedulesDLQ", "Arn"]}}
    assert event["RetryPolicy"]["MaximumRetryAttempts"] == 2
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 0
    reads = [next(iter(p.values())) for p in props["Policies"] if "DynamoDBReadPolicy" in p]
    assert reads == [{"TableName": {"Ref": "CatalogTable"}}, {"TableName": {"Ref": "VotesTable"}}]
    (statement,) = _statements("TallyReconciler")
    assert statement["Resource"] == {"Fn::GetAtt": ["TalliesTable", "Arn"]}
    assert _actions(statement) == {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }


def test_a_silent_health_checker_raises_an_alarm() -> None:
    alarm = _resource("HealthCheckNotRunningAlarm")["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "AWS/Lambda",
        "Invocations",
        "Sum",
    )
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "HealthCheck"}}]
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["Threshold"] == 1
    assert alarm["TreatMissingData"] == "breaching"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_every_new_function_has_its_error_alarm_and_dashboard_line() -> None:
    resources = default_template().resources
    dashboard = str(resources["OperationsDashboard"]["Properties"]["DashboardBody"])
    for function_id in (
        "HealthApi",
        "HealthCheck",
        "CacheWarmer",
        "TallyReconciler",
        "PredictionsApi",
        "PredictionPrecompute",
        "ModelTrainer",
    ):
        alarm = resources[f"{function_id}ErrorsAlarm"]["Properties"]
        assert f"'Ref': '{function_id}'" in str(alarm)
        assert "${" + function_id + "}" in dashboard
        assert resources[function_id]["Properties"]["LoggingConfig"] == {
            "LogGroup": {"Ref": f"{function_id}Logs"}
        }


def test_the_alarm_topic_uses_a_key_cloudwatch_alarms_may_publish_with() -> None:
    topic = _resource("AlarmTopic")["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "DataKey"}
    key_policy = _resource("DataKey")["Properties"]["KeyPolicy"]["Statement"]
    (cloudwatch,) = [s for s in key_policy if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_the_model_store_is_private_versioned_encrypted_and_tls_only() -> None:
    template = default_template()
    bucket = template.buckets["ModelBucket"]
    assert bucket.versioned
    props = bucket.properties
    assert all(props["PublicAccessBlockConfiguration"].values())
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    lifecycle = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert lifecycle["ExpireOldModelVersions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0
    (deny,) = _resource("ModelBucketPolicy")["Properties"]["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
    assert template.bucket_name("ModelBucket") == "mysetlist-local-models-123456789012-us-east-1"


def test_every_function_is_built_by_the_makefile_of_its_folder() -> None:
    template = default_template()
    for function_id, spec in template.functions.items():
        assert template.resources[function_id]["Metadata"]["BuildMethod"] == "makefile", function_id
        assert (spec.code_dir / "Makefile").is_file(), function_id


def test_the_votes_bus_is_archived_and_only_the_vote_processor_publishes_to_it() -> None:
    template = default_template()
    assert template.event_bus_name("VoteEventsBus") == "mysetlist-local-votes"
    archive = _resource("VoteEventsArchive")
    assert archive["Type"] == "AWS::Events::Archive"
    assert archive["Properties"]["SourceArn"] == {"Fn::GetAtt": ["VoteEventsBus", "Arn"]}
    assert archive["Properties"]["RetentionDays"] >= 7  # a consumer added later can replay a week
    assert "EventPattern" not in archive["Properties"]  # every event
    assert template.function_environment("VoteProcessor", _resolver(template))["EVENT_BUS_NAME"] == (
        "ref-VoteEventsBus"
    )
    put_events = {
        function_id: [
            p["EventBridgePutEventsPolicy"]
            for p in _resource(function_id)["Properties"].get("Policies") or []
            if isinstance(p, dict) and "EventBridgePutEventsPolicy" in p
        ]
        for function_id in template.functions
    }
    assert {f: p for f, p in put_events.items() if p} == {
        "VoteProcessor": [{"EventBusName": {"Ref": "VoteEventsBus"}}]
    }
    assert not any("events:PutEvents" in _actions(s) for f in template.functions for s in _statements(f))


def _layers(function_id: str) -> list[str]:
    return [layer["Ref"] for layer in default_template().document["Globals"]["Function"]["Layers"]] + [
        layer["Ref"] for layer in _resource(function_id)["Properties"].get("Layers", [])
    ]


def test_only_the_trainer_carries_scikit_learn_and_serving_gets_numpy() -> None:
    template = default_template()
    with_ml = {fid for fid in template.functions if "MlLayer" in _layers(fid)}
    with_numpy = {fid for fid in template.functions if "NumpyLayer" in _layers(fid)}
    assert with_ml == {"ModelTrainer"}
    assert with_numpy == {"ModelTrainer", "PredictionsApi", "PredictionPrecompute"}
    assert _layers("ModelTrainer") == ["CommonLayer", "NumpyLayer", "MlLayer"]


def test_the_trainer_reads_only_actual_setlists_from_the_catalogue_stream() -> None:
    assert _resource("CatalogTable")["Properties"]["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    (mapping,) = [m for m in default_template().stream_mappings if m.function_id == "ModelTrainer"]
    assert mapping.table_id == "CatalogTable"
    assert mapping.report_batch_item_failures
    assert mapping.on_failure_queue_id == "ModelTrainerDLQ"
    (pattern,) = mapping.filter_criteria["Filters"]
    assert json.loads(pattern["Pattern"]) == {
        "eventName": ["INSERT", "MODIFY"],
        "dynamodb": {"Keys": {"SK": {"S": [ACTUAL_SETLIST_SK]}}},
    }


def test_predictions_table_expires_predictions_and_the_routes_are_signed_in() -> None:
    props = _resource("PredictionsTable")["Properties"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert [i["IndexName"] for i in props["GlobalSecondaryIndexes"]] == ["GSI1"]
    routes = {(r.method, r.path): r for r in default_template().routes}
    for method in ("POST", "GET", "PATCH"):
        route = routes[(method, "/api/ml/predictions")]
        assert route.function_id == "PredictionsApi"
        assert route.auth_required
