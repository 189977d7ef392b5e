"""What template.yaml declares for live pushes: the WebSocket API (routes, two-way message
routes, a throttled stage with access logs that leave the token out), the LiveUpdates function
and its least-privilege policy, the ephemeral connections table, the error alarm, and what the
VoteProcessor needs to push (the management endpoint, ManageConnections, the connections
table). Read from the template itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.support.template import default_template

API = "LiveWebSocketApi"


def _resource(logical_id: str) -> Mapping[str, Any]:
    return default_template().resources[logical_id]


def _of_type(resource_type: str) -> dict[str, Mapping[str, Any]]:
    return default_template().resources_of_type(resource_type)


def _statements(function_id: str) -> list[Mapping[str, Any]]:
    policies = _resource(function_id)["Properties"].get("Policies") or []
    return [s for policy in policies if isinstance(policy, dict) for s in policy.get("Statement", [])]


def _actions(statement: Mapping[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def _granted(function_id: str, resource: Any) -> set[str]:
    """Every action the function's inline statements allow on ``resource``."""
    granted: set[str] = set()
    for statement in _statements(function_id):
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        if resource in resources:
            granted |= _actions(statement)
    return granted


def test_the_websocket_api_routes_every_key_to_live_updates() -> None:
    api = _resource(API)["Properties"]
    assert (api["ProtocolType"], api["RouteSelectionExpression"]) == ("WEBSOCKET", "$request.body.action")
    routes = {props["RouteKey"]: (lid, props) for lid, props in _of_type("AWS::ApiGatewayV2::Route").items()}
    assert set(routes) == {"$connect", "$disconnect", "subscribe", "unsubscribe", "$default"}
    (integration,) = _of_type("AWS::ApiGatewayV2::Integration").values()
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert "${LiveUpdates.Arn}" in integration["IntegrationUri"]["Fn::Sub"]
    answered = {props["RouteId"]["Ref"] for props in _of_type("AWS::ApiGatewayV2::RouteResponse").values()}
    for key, (logical_id, props) in routes.items():
        assert props["ApiId"] == {"Ref": API}
        assert props["Target"] == {"Fn::Sub": "integrations/${LiveUpdatesIntegration}"}
        # Message routes answer (ack or error); $connect and $disconnect cannot.
        assert (logical_id in answered) == (key not in ("$connect", "$disconnect")), key
    assert routes["$connect"][1]["AuthorizationType"] == "NONE"  # the function checks ?token=


def test_the_stage_is_throttled_and_its_access_logs_leave_the_token_out() -> None:
    stage = _resource("LiveStage")["Properties"]
    assert stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottleRate"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottleBurst"},
    }
    logs = stage["AccessLogSettings"]
    assert logs["DestinationArn"] == {"Fn::GetAtt": ["LiveWebSocketAccessLogs", "Arn"]}
    assert "$context.connectionId" in logs["Format"]
    assert "querystring" not in logs["Format"].lower()
    assert _resource("LiveStage")["DependsOn"] == "LiveApiGatewayAccount"  # the account's log role first
    permission = _resource("LiveUpdatesInvokePermission")["Properties"]
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert "${LiveWebSocketApi}/*" in permission["SourceArn"]["Fn::Sub"]


def test_the_connections_table_is_ephemeral_and_expires_its_items() -> None:
    spec = default_template().tables["ConnectionsTable"]
    props = spec.properties
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert [k["AttributeName"] for k in props["KeySchema"]] == ["PK", "SK"]
    assert spec.ttl_attribute == "expires_at"
    assert "GlobalSecondaryIndexes" not in props  # a show's watchers are a query per shard
    assert props["SSESpecification"]["KMSMasterKeyId"] == {"Ref": "DataKey"}
    assert default_template().table_name("ConnectionsTable") == "mysetlist-local-connections"


def test_live_updates_has_least_privilege_and_an_errors_alarm() -> None:
    function = default_template().functions["LiveUpdates"]
    assert function.code_dir.name == "live_updates"
    env = function.environment
    assert env["CONNECTIONS_TABLE"] == {"Ref": "ConnectionsTable"}
    assert env["JWT_AUDIENCE"] == {"Ref": "UserPoolClient"}
    assert env["WEB_CLIENT_ORIGIN"] == {"Ref": "WebClientOrigin"}
    assert "VpcConfig" not in _resource("LiveUpdates")["Properties"]  # no cache: outside the VPC
    assert _granted("LiveUpdates", {"Fn::GetAtt": ["ConnectionsTable", "Arn"]}) == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
    }
    assert _granted("LiveUpdates", {"Fn::GetAtt": ["CatalogTable", "Arn"]}) == {"dynamodb:GetItem"}
    assert _granted("LiveUpdates", {"Fn::GetAtt": ["TalliesTable", "Arn"]}) == {"dynamodb:Query"}
    metrics = _resource("LiveUpdatesErrorsAlarm")["Properties"]["Metrics"]
    watched = {m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m}
    assert watched == {"Errors", "Throttles"}
    assert all(
        m["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "LiveUpdates"}}]
        for m in metrics
        if "MetricStat" in m
    )


def test_the_vote_processor_can_push_to_the_connections_of_a_show() -> None:
    env = default_template().functions["VoteProcessor"].environment
    assert env["CONNECTIONS_TABLE"] == {"Ref": "ConnectionsTable"}
    endpoint = env["LIVE_MANAGEMENT_ENDPOINT"]["Fn::Sub"]
    assert endpoint == "https://${LiveWebSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${LiveStage}"
    manage = [s for s in _statements("VoteProcessor") if "execute-api:ManageConnections" in _actions(s)]
    assert [_actions(s) for s in manage] == [{"execute-api:ManageConnections"}]
    assert "${LiveWebSocketApi}/${LiveStage}/POST/@connections/*" in manage[0]["Resource"]["Fn::Sub"]
    # Subscribers are listed, and connections that answer GoneException removed.
    assert _granted("VoteProcessor", {"Fn::GetAtt": ["ConnectionsTable", "Arn"]}) == {
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:BatchWriteItem",
    }


def test_the_stack_outputs_the_websocket_url_and_management_endpoint() -> None:
    outputs = default_template().document["Outputs"]
    assert outputs["LiveWebSocketUrl"]["Value"] == {"Fn::Sub": "${LiveWebSocketApi.ApiEndpoint}/${LiveStage}"}
    assert outputs["LiveManagementEndpoint"]["Value"] == {
        "Fn::Sub": "https://${LiveWebSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${LiveStage}"
    }
