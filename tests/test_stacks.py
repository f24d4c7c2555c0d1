"""Fine-grained assertions on the synthesized templates (one session-scoped synth)."""

from __future__ import annotations

import json
from typing import Any, get_args

from aws_cdk.assertions import Match

from crossover.backends import BACKENDS
from crossover.config import Backend
from crossover.constructs.registry import HOMES, construct
from crossover_serving.spec import Spec
from tests.conftest import Synth


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_one_registry_names_every_backend_the_schema_allows_and_builds_each() -> None:
    assert get_args(Backend) == BACKENDS == tuple(HOMES)
    assert [construct(kind).KIND for kind in BACKENDS] == list(BACKENDS)


def test_lambda_function_is_configured_from_the_config(synth: Synth) -> None:
    synth.templates["resnet152"].has_resource_properties("AWS::Lambda::Function", {
        "Runtime": "python3.13", "Handler": "crossover_serving.lambda_handler.handler", "MemorySize": 3008,
        "Timeout": 30, "ReservedConcurrentExecutions": 100, "Architectures": ["x86_64"],
        "TracingConfig": {"Mode": "Active"}, "LoggingConfig": Match.object_like({"LogFormat": "JSON"}),
        "VpcConfig": Match.object_like({"SubnetIds": Match.any_value()}),
    })
    synth.templates["mobilenet-v2"].has_resource_properties("AWS::Lambda::Function", {
        "MemorySize": 2048, "ReservedConcurrentExecutions": 50})


def test_function_gets_a_serving_spec_that_serving_accepts(synth: Synth) -> None:
    (function,) = resources(synth.raw["ModelStack-resnet152"], "AWS::Lambda::Function").values()
    spec = Spec.from_mapping(json.loads(function["Properties"]["Environment"]["Variables"]["CROSSOVER_SPEC"]))
    assert (spec.name, spec.artifact, spec.input.size) == ("resnet152", "s3://my-models/resnet152/model.onnx", 224)


def test_local_artifact_is_published_as_an_asset_and_read_from_there(synth: Synth) -> None:
    template = synth.raw["ModelStack-efficientnet-lite0"]
    (function,) = resources(template, "AWS::Lambda::Function").values()
    spec_json = function["Properties"]["Environment"]["Variables"]["CROSSOVER_SPEC"]
    rendered = json.dumps(spec_json)
    assert "cdk-hnb659fds-assets" in rendered and ".onnx" in rendered


def test_internal_load_balancer_by_default_on_http_80_from_the_vpc_only(synth: Synth) -> None:
    t = synth.templates["resnet152"]
    t.has_resource_properties("AWS::ElasticLoadBalancingV2::LoadBalancer", {
        "Scheme": "internal", "Type": "application",
        "LoadBalancerAttributes": Match.array_with([
            {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
            {"Key": "access_logs.s3.enabled", "Value": "true"}])})
    t.has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", {"Port": 80, "Protocol": "HTTP"})
    t.has_resource_properties("AWS::EC2::SecurityGroup", {
        "GroupDescription": "Model front door",
        "SecurityGroupIngress": [Match.object_like({"CidrIp": "10.0.0.0/16", "FromPort": 80, "ToPort": 80})]})
    t.has_resource_properties("AWS::ElasticLoadBalancingV2::TargetGroup", {"TargetType": "lambda"})


def test_public_only_with_a_certificate_https_and_redirect(synth: Synth) -> None:
    t = synth.templates["resnet152-public"]
    t.has_resource_properties("AWS::ElasticLoadBalancingV2::LoadBalancer", {"Scheme": "internet-facing"})
    t.has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", {
        "Port": 443, "Protocol": "HTTPS", "SslPolicy": Match.string_like_regexp("TLS13"),
        "Certificates": [{"CertificateArn": Match.string_like_regexp("^arn:aws:acm:")}]})
    t.has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", {
        "Port": 80, "DefaultActions": [Match.object_like({"Type": "redirect",
                                                           "RedirectConfig": Match.object_like({"Port": "443"})})]})
    t.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)
    t.has_resource_properties("AWS::WAFv2::WebACL", {"Scope": "REGIONAL", "Rules": Match.array_with([
        Match.object_like({"Name": "AWSManagedRulesCommonRuleSet"})])})
    t.has_resource_properties("AWS::WAFv2::LoggingConfiguration", {
        "LogDestinationConfigs": [Match.any_value()]})
    # Named from the front door's construct path: two front doors in one stack never share a log group.
    t.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "aws-waf-logs-ModelStackresnet152public-Model-FrontDoor-F3C661D6"})
    synth.templates["resnet152"].resource_count_is("AWS::WAFv2::WebACL", 0)
    outputs = synth.raw["ModelStack-resnet152-public"]["Outputs"]["Endpoint"]["Value"]
    assert "https://" in json.dumps(outputs)


def test_function_role_reads_only_the_model_object_and_no_action_is_a_wildcard(synth: Synth) -> None:
    template = synth.raw["ModelStack-resnet152"]
    statements = [s for p in resources(template, "AWS::IAM::Policy").values()
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    s3 = [s for s in statements if any(str(a).startswith("s3:") for a in _list(s["Action"]))]
    assert [s["Action"] for s in s3] == ["s3:GetObject"]
    assert ":s3:::my-models/resnet152/model.onnx" in json.dumps(s3[0]["Resource"])
    assert all("*" not in str(action) for s in statements for action in _list(s["Action"]))
    wildcard = {a for s in statements if s["Resource"] == "*" for a in _list(s["Action"])}
    assert wildcard <= {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
                        "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    assert not resources(template, "AWS::IAM::Role")[next(iter(resources(template, "AWS::IAM::Role")))][
        "Properties"].get("ManagedPolicyArns")


def test_access_logs_bucket_is_encrypted_private_and_ssl_only(synth: Synth) -> None:
    t = synth.templates["resnet152"]
    t.has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True}})
    t.has_resource_properties("AWS::S3::BucketPolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})


def test_network_spans_two_azs_with_flow_logs_and_an_s3_endpoint(synth: Synth) -> None:
    template = synth.raw["NetworkStack"]
    subnets = resources(template, "AWS::EC2::Subnet").values()
    azs = {json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets}
    assert len(azs) == 2 and all("Fn::GetAZs" in az for az in azs)  # no lookup: resolved at deploy time
    assert len(resources(template, "AWS::EC2::NatGateway")) == 1
    assert len(resources(template, "AWS::EC2::FlowLog")) == 1
    (endpoint,) = resources(template, "AWS::EC2::VPCEndpoint").values()
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"


def test_front_door_ids_do_not_depend_on_the_model_or_backend(synth: Synth) -> None:
    # The front door's logical ids come from fixed construct paths (FrontDoor/...), never from the
    # backend; the instance-backends issue extends this across all five backends.
    def front_door(stack: str) -> set[str]:
        return {k for k in synth.raw[stack]["Resources"] if k.startswith("ModelFrontDoor")} | set(
            synth.raw[stack]["Outputs"])
    ids = {stack: front_door(stack) for stack in ("ModelStack-resnet152", "ModelStack-mobilenet-v2",
                                                  "ModelStack-efficientnet-lite0")}
    assert len({frozenset(v) for v in ids.values()}) == 1
    assert {"ModelFrontDoorLoadBalancer7C7C1043", "ModelFrontDoorLoadBalancerListener895726E5",
            "ModelFrontDoorSecurityGroup986DE0F3", "Endpoint"} <= ids["ModelStack-resnet152"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_provisioned_concurrency_warms_the_live_alias_the_listener_waits_for(synth: Synth) -> None:
    template = synth.raw["ModelStack-resnet152-warm"]
    (alias_id,) = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::Lambda::Alias"]
    alias = template["Resources"][alias_id]
    assert alias["Properties"]["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 5}
    (listener,) = [v for v in template["Resources"].values() if v["Type"] == "AWS::ElasticLoadBalancingV2::Listener"
                   and v["Properties"]["Port"] == 80]
    assert alias_id in listener["DependsOn"]  # CloudFormation allocates the environments before the move
    # AND they scale on their utilisation, 5 to 20, on the live alias (the one CodeDeploy moves)
    (target,) = [v["Properties"] for v in template["Resources"].values()
                 if v["Type"] == "AWS::ApplicationAutoScaling::ScalableTarget"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (5, 20)
    assert target["ScalableDimension"] == "lambda:function:ProvisionedConcurrency"
    assert {"Ref": alias_id} in target["ResourceId"]["Fn::Join"][1] or alias_id in json.dumps(target["ResourceId"])
    (policy,) = [v["Properties"] for v in template["Resources"].values()
                 if v["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 0.7
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == \
        "LambdaProvisionedConcurrencyUtilization"


def test_a_placeholder_scaling_target_is_a_synth_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aws_cdk.assertions import Annotations

    from crossover.app import build, new_app
    from crossover.config import load
    from tests.conftest import write_config

    path = write_config(tmp_path, "m", "name: m\nbackend: gpu\nmodel: {artifact: s3://team-models/m.onnx}\n")
    app = new_app(outdir=str(tmp_path / "out"))
    stacks = build(app, [load(path)])
    Annotations.from_stack(stacks["m"]).has_warning(
        "/ModelStack-m/Model", Match.string_like_regexp(
            "gpu: no throughput figure for g4dn.xlarge, so its scaling target assumes a placeholder 200 images/s"))


def test_synth_loads_neither_the_serving_runtime_nor_the_cli_s_libraries() -> None:
    import subprocess
    import sys

    # The stacks share names and the input defaults with the serving side through two modules that import
    # nothing, and never load what only the CLI uses (tables, plots).
    code = "import sys, crossover.app; print(sorted(m for m in sys.modules if m.startswith(('aws_lambda_powertools', " \
           "'crossover_serving', 'rich', 'matplotlib'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['crossover_serving', 'crossover_serving.names', 'crossover_serving.spec']"
