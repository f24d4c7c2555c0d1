"""The construct library as a CDK engineer uses it: grants, connections and metrics as CDK expects, a team's own
load balancer under a path prefix, props that cannot hold together refused in one line, and CLI modules that
never load the CDK."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from crossover import ModelConfig, ModelService, size
from crossover.config.schema import Canary, Endpoint, GpuSpec, LambdaSpec, ModelSpec, Scaling
from crossover.errors import UserError
from tests import ROOT


def stack_with_load_balancer() -> tuple[Stack, ec2.Vpc, elbv2.ApplicationLoadBalancer]:
    stack = Stack(App(), "Team")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1, restrict_default_security_group=False)
    load_balancer = elbv2.ApplicationLoadBalancer(stack, "LoadBalancer", vpc=vpc)
    load_balancer.add_listener("Http", port=80, open=False,
                               default_action=elbv2.ListenerAction.fixed_response(404))
    return stack, vpc, load_balancer


def model(name: str, **changes: Any) -> ModelConfig:
    return ModelConfig(**{"name": name, "backend": "lambda", "model": ModelSpec(artifact=f"s3://m/{name}.onnx"),
                          "lambda_": LambdaSpec(memory_mib=2048), "scaling": Scaling(min=1, max=2),
                          "gpu": GpuSpec(instance_type="g5.xlarge"), **changes})


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def test_a_canary_on_a_shared_load_balancer_waits_for_both_backends_and_splits_by_weight() -> None:
    # GIVEN two services on one team load balancer, one of them in a canary from lambda to gpu
    stack, vpc, load_balancer = stack_with_load_balancer()
    cats = model("cats", backend="gpu", canary=Canary(from_="lambda", percent=10))
    ModelService(stack, "Cats", config=cats, vpc=vpc, sizing=size(cats, throughput=200.0),
                 load_balancer=load_balancer, path_prefix="/cats")
    dogs = model("dogs")
    ModelService(stack, "Dogs", config=dogs, vpc=vpc, sizing=size(dogs), load_balancer=load_balancer,
                 path_prefix="/dogs")
    template = Template.from_stack(stack).to_json()
    # THEN one load balancer and one listener carry both services' rules, and nothing else was created for them
    assert len(of_type(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")) == 1
    (listener,) = of_type(template, "AWS::ElasticLoadBalancingV2::Listener")
    rules = of_type(template, "AWS::ElasticLoadBalancingV2::ListenerRule")
    assert all(r["Properties"]["ListenerArn"] == {"Ref": listener} for r in rules.values())
    priorities = [r["Properties"]["Priority"] for r in rules.values()]
    assert len(set(priorities)) == len(priorities)
    # AND the cats' forward rule splits 90/10 and changes only once both backends are ready
    forward = rules[next(k for k in rules if k.startswith("CatsFrontDoorForward"))]
    weights = {t["TargetGroupArn"]["Ref"].split("FrontDoor")[1].split("Targets")[0]: t["Weight"]
               for t in forward["Properties"]["Actions"][0]["ForwardConfig"]["TargetGroups"]}
    assert weights == {"Gpu": 10, "Lambda": 90}
    ready = {k for k, r in template["Resources"].items()
             if r["Type"] in ("AWS::AutoScaling::AutoScalingGroup", "AWS::Lambda::Alias") and k.startswith("Cats")}
    assert len(ready) == 2 and ready <= set(forward["DependsOn"])
    # AND each backend's target group is staged on the listener (health-checked before the forward names it), by
    # a rule that asks for the prefix and a header, so it never matches ahead of the forward rule
    staging = [r for k, r in rules.items() if k.startswith("CatsFrontDoor") and "Staging" in k]
    assert len(staging) == 2 and all(r["Properties"]["Priority"] > forward["Properties"]["Priority"] for r in staging)
    # AND the endpoint is the team's load balancer under the prefix
    cats_service = stack.node.find_child("Cats")
    assert isinstance(cats_service, ModelService) and json.dumps(stack.resolve(cats_service.endpoint)).endswith(
        '"/cats"]]}')


@pytest.mark.parametrize(("first", "second"), [("/same", "/same"), ("/team", "/team/cats")])
def test_services_whose_prefixes_overlap_on_one_listener_are_refused_at_synth(first: str, second: str) -> None:
    stack, vpc, load_balancer = stack_with_load_balancer()
    for id, prefix in (("A", first), ("B", second)):
        ModelService(stack, id, config=model(id.lower()), vpc=vpc, load_balancer=load_balancer, path_prefix=prefix)
    with pytest.raises(RuntimeError, match=f"same listener under {first}, which overlaps {second}"):
        App.of(stack).synth()  # type: ignore[union-attr]


def test_on_a_team_listener_clients_are_allowed_on_its_port_and_staging_rules_match_no_request() -> None:
    # GIVEN a service on a team's listener on port 8080
    stack = Stack(App(), "Team")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1, restrict_default_security_group=False)
    load_balancer = elbv2.ApplicationLoadBalancer(stack, "LoadBalancer", vpc=vpc)
    load_balancer.add_listener("Http", port=8080, protocol=elbv2.ApplicationProtocol.HTTP, open=False,
                               default_action=elbv2.ListenerAction.fixed_response(404))
    service = ModelService(stack, "Cats", config=model("cats"), vpc=vpc, load_balancer=load_balancer,
                           path_prefix="/cats")
    # WHEN the team lets its clients call it on the listener's own port
    service.connections.allow_default_port_from(ec2.Peer.ipv4("10.30.0.0/16"))
    template = Template.from_stack(stack).to_json()
    # THEN the load balancer admits them on 8080, and the endpoint names the port
    rules = [rule for group in of_type(template, "AWS::EC2::SecurityGroup").values()
             for rule in group["Properties"].get("SecurityGroupIngress", [])]
    assert {"CidrIp": "10.30.0.0/16", "FromPort": 8080, "ToPort": 8080} in [
        {k: rule.get(k) for k in ("CidrIp", "FromPort", "ToPort")} for rule in rules]
    assert json.dumps(stack.resolve(service.endpoint)).endswith(':8080/cats"]]}')
    # AND the staging rule asks for a source address no client has: even before the forward rule exists
    (staging,) = [r for k, r in of_type(template, "AWS::ElasticLoadBalancingV2::ListenerRule").items()
                  if "Staging" in k]
    assert {"Field": "source-ip", "SourceIpConfig": {"Values": ["255.255.255.255/32"]}} in \
        staging["Properties"]["Conditions"]
    # AND a block of rules outside the listener's priorities is refused
    with pytest.raises(UserError, match="priority 5000 is outside 0 to 4999"):
        ModelService(stack, "Dogs", config=model("dogs"), vpc=vpc, load_balancer=load_balancer,
                     path_prefix="/dogs", priority=5000)


@pytest.mark.parametrize(("props", "config", "says"), [
    ({"path_prefix": "/cats"}, {}, "takes both load_balancer= and path_prefix="),
    ({"load_balancer": True}, {}, "takes both load_balancer= and path_prefix="),
    ({"load_balancer": True, "path_prefix": "/cats/"}, {}, "must start with '/', not end with one"),
    ({"load_balancer": True, "path_prefix": "/cats*"}, {}, "hold no wildcard"),
    ({"load_balancer": True, "path_prefix": "/cats"}, {"endpoint": Endpoint(allowed_cidr="10.0.0.0/8")},
     "TLS and who may reach it are the team's"),
    ({"load_balancer": True, "path_prefix": "/cats"}, {"service": "pipeline", "inputs": {"https": True}},
     "are for realtime services"),
    ({}, {"endpoint": Endpoint(services_per_load_balancer=2)}, "no load_balancer= was given"),
])
def test_props_that_cannot_hold_together_are_refused_in_one_line(props: dict[str, Any], config: dict[str, Any],
                                                                 says: str) -> None:
    stack, vpc, load_balancer = stack_with_load_balancer()
    if props.get("load_balancer"):
        props = {**props, "load_balancer": load_balancer}
    with pytest.raises(UserError, match=f"Team/Cats \\(cats\\): .*{says}") as refused:
        ModelService(stack, "Cats", config=model("cats", **config), vpc=vpc, **props)
    assert "\n" not in str(refused.value)


def test_a_grant_reaches_every_backend_of_a_canary_and_connections_work_both_ways() -> None:
    # GIVEN a service in a canary from lambda to gpu, and a team's bucket and database security group
    stack = Stack(App(), "Team")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1, restrict_default_security_group=False)
    config = model("cats", backend="gpu", canary=Canary(from_="lambda", percent=10))
    service = ModelService(stack, "Cats", config=config, vpc=vpc, sizing=size(config, throughput=200.0))
    bucket = s3.Bucket(stack, "Labels")
    database = ec2.SecurityGroup(stack, "Database", vpc=vpc)
    clients = ec2.SecurityGroup(stack, "Clients", vpc=vpc)
    # WHEN the team uses the CDK idioms on it (they raised a JavaScript TypeError before)
    bucket.grant_read(service)
    database.connections.allow_from(service.backend_connections, ec2.Port.tcp(5432), "models to the database")
    clients.connections.allow_to(service, ec2.Port.tcp(80), "clients to the endpoint")
    template = Template.from_stack(stack).to_json()
    # THEN both backends' roles may read the bucket
    bucket_id = stack.get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]
    policies = of_type(template, "AWS::IAM::Policy")
    granted = {k.split("Role")[0] for k, r in policies.items() if bucket_id in json.dumps(r)}
    assert granted == {"CatsLambda", "CatsGpu"}
    # AND nothing else: the bucket's own policy does not name the roles (the grantee is in the stack's account)
    assert not [r for r in of_type(template, "AWS::S3::BucketPolicy").values()
                if r["Properties"]["Bucket"] == {"Ref": bucket_id}]
    # AND the database admits both backends' security groups on 5432, the endpoint admits the clients on 80
    ingress = [r["Properties"] for r in of_type(template, "AWS::EC2::SecurityGroupIngress").values()]
    to_database = {json.dumps(i["SourceSecurityGroupId"]) for i in ingress if i["FromPort"] == 5432}
    assert len(to_database) == 2 and all("CatsLambda" in s or "CatsGpu" in s for s in to_database)
    assert any(i["FromPort"] == 80 and "Clients" in json.dumps(i["SourceSecurityGroupId"]) for i in ingress)


def test_metric_helpers_take_cdks_options() -> None:
    stack = Stack(App(), "Team")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1, restrict_default_security_group=False)
    realtime = ModelService(stack, "Cats", config=model("cats"), vpc=vpc)
    pipeline = ModelService(stack, "Batch", config=model("batch", service="pipeline", inputs={"https": True}), vpc=vpc)
    latency = realtime.metric_latency(period=Duration.minutes(5))
    assert (latency.metric_name, latency.statistic, latency.period.to_minutes()) == ("LatencyMs", "p99", 5)
    assert latency.dimensions == {"Model": "cats", "service": "crossover"}
    assert realtime.metric_errors(statistic="Maximum").statistic == "Maximum"
    assert realtime.metric_errors().metric_name == "ServerFaults"
    assert pipeline.metric_errors().metric_name == "PipelineFailures"
    requests = realtime.metric_requests(period=Duration.hours(1))
    assert requests.to_metric_config().metric_stat.metric_name == "RequestCount"  # type: ignore[union-attr]
    assert pipeline.metric_requests().to_metric_config().metric_stat.metric_name == (  # type: ignore[union-attr]
        "NumberOfMessagesSent")
    with pytest.raises(UserError, match="grant_submit is for a pipeline"):
        realtime.grant_submit(realtime.backend)


def test_cli_modules_never_load_the_cdk() -> None:
    code = ("import sys, crossover.cli, crossover.advise, crossover.switch, crossover.cost.model, crossover.sizing;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aws_cdk', 'jsii', 'constructs')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_config_error_in_a_team_app_reads_as_one_line(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("from crossover import ModelConfig\nModelConfig(name='cats', backend='gpux', "
                   "model={'artifact': 's3://m/c.onnx'})\n")
    result = subprocess.run([sys.executable, str(app)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line == ("error: ModelConfig: backend: expected one of lambda, gpu, eia, inferentia, cpu, lambda-managed; "
                    "got 'gpux'")
    # AND the app's own errors keep their traceback, a pydantic model of its own included
    app.write_text("import crossover, pydantic\nclass Mine(pydantic.BaseModel):\n    n: int\nMine(n='x')\n")
    result = subprocess.run([sys.executable, str(app)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" in result.stderr and "validation error for Mine" in result.stderr
