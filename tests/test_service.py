"""ModelService and the backends as constructs: in a team's own stack and VPC, from configs built in Python."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Duration, Size, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Annotations, Match, Template

from crossover import ModelConfig, ModelService, compliance, load_config, size
from crossover.capacity import per_minute
from crossover.config.schema import Endpoint, GpuSpec, LambdaSpec, ModelSpec, Scaling
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.front_door import RealtimeFrontDoor
from crossover.constructs.instance_backends import GpuFleet
from crossover.constructs.lambda_backend import LambdaBackend
from crossover.cost import profile
from crossover.errors import UserError
from tests.conftest import PUBLIC
from tests.lint import cfn_lint

CERTIFICATE = PUBLIC.split("'")[1]


def team_stack(tmp_path: Path, **vpc: Any) -> tuple[App, Stack, ec2.Vpc]:
    """A team's stack with its own VPC (two AZs, a NAT gateway, private subnets with egress by default)."""
    app = App(outdir=str(tmp_path / "out"))
    stack = Stack(app, "Team")
    return app, stack, ec2.Vpc(stack, "Vpc", **{"max_azs": 2, "nat_gateways": 1,
                                                 "restrict_default_security_group": False, **vpc})


def tagger(**changes: Any) -> ModelConfig:
    return ModelConfig(**{"name": "tagger", "backend": "lambda",
                          "model": ModelSpec(artifact="s3://team-models/t.onnx", gmacs=0.3),
                          "lambda_": LambdaSpec(memory_mib=2048, reserved_concurrency=50), **changes})


def detector(**changes: Any) -> ModelConfig:
    return ModelConfig(**{"name": "detector", "backend": "gpu",
                          "model": ModelSpec(artifact="s3://team-models/d.onnx", gmacs=11.51),
                          "scaling": Scaling(min=1, max=4), "gpu": GpuSpec(instance_type="g5.xlarge"), **changes})


def findings(app: App, tmp_path: Path) -> list[dict[str, Any]]:
    """Every cdk-nag finding in ``app`` (the packs on, strict: the team's own fail the synth too), from the
    validation report."""
    compliance.apply(app, strict=True)
    with contextlib.suppress(RuntimeError):  # a finding fails the synth; the report says which
        app.synth()
    report = tmp_path / "out" / "validation-report.json"
    if not report.is_file():
        return []
    return [{"rule": v["ruleName"], "path": r["constructPath"]}
            for plugin in json.loads(report.read_text())["pluginReports"] for v in plugin["violations"]
            for r in v["violatingConstructs"]]


def test_services_in_a_foreign_stack_bring_every_acknowledgement_with_them(tmp_path: Path) -> None:
    # GIVEN a team's stack and VPC with a Lambda service, a public GPU service and a GPU pipeline
    app, stack, vpc = team_stack(tmp_path)
    ModelService(stack, "Tagger", config=tagger(), vpc=vpc)
    public = detector(endpoint=Endpoint(certificate_arn=CERTIFICATE))
    ModelService(stack, "Detector", config=public, vpc=vpc, sizing=size(public, throughput=300.0))
    batch = detector(name="batch", service="pipeline", scaling=Scaling(min=0, max=4), inputs={"s3": ["team-images"]})
    ModelService(stack, "Batch", config=batch, vpc=vpc, sizing=size(batch, throughput=300.0))
    # WHEN the cdk-nag packs run over the app THEN only the team's own VPC has findings: none under a service
    found = findings(app, tmp_path)
    assert found, "the team's VPC has findings of its own: the packs ran"
    assert [f for f in found if not f["path"].startswith("Team/Vpc")] == []


def test_two_services_in_one_stack_name_nothing_alike(tmp_path: Path) -> None:
    _, stack, vpc = team_stack(tmp_path)
    public = Endpoint(certificate_arn=CERTIFICATE)
    for name in ("a", "b"):
        config = tagger(name=name, endpoint=public)
        ModelService(stack, name.upper(), config=config, vpc=vpc, sizing=size(config))
    resources = Template.from_stack(stack).to_json()["Resources"]

    def names(kind: str, key: str) -> list[str]:
        return [r["Properties"][key] for r in resources.values() if r["Type"] == kind and key in r["Properties"]]

    alarms, dashboards = names("AWS::CloudWatch::Alarm", "AlarmName"), names("AWS::CloudWatch::Dashboard",
                                                                             "DashboardName")
    waf_logs = [n for n in names("AWS::Logs::LogGroup", "LogGroupName") if n.startswith("aws-waf-logs-")]
    assert len(waf_logs) == 2 and len(dashboards) == 2 and len(alarms) > 8
    for physical in (alarms, dashboards, waf_logs):
        assert len(set(physical)) == len(physical), physical
    assert {a.split("-")[1] for a in alarms} == {"a", "b"}  # Team-<model>-<signal>
    # AND the template passes cfn-lint (no physical name twice: E3019 and friends)
    path = tmp_path / "two.json"
    path.write_text(json.dumps(Template.from_stack(stack).to_json()))
    cfn_lint([path])


def test_what_a_team_wires_to(tmp_path: Path) -> None:
    _, stack, vpc = team_stack(tmp_path)
    topic = sns.Topic(stack, "OnCall")
    realtime = ModelService(stack, "Tagger", config=tagger(), vpc=vpc, alarm_topic=topic,
                            allowed_peer=ec2.Peer.ipv4("10.9.0.0/16"))
    pipeline = ModelService(stack, "Batch", config=tagger(name="batch", service="pipeline", inputs={"https": True}),
                            vpc=vpc)
    assert realtime.endpoint is not None and realtime.queue is None
    assert pipeline.endpoint is None and pipeline.queue is not None
    assert isinstance(realtime.backend, LambdaBackend) and realtime.backend.route is not None
    assert pipeline.backend.route is None
    realtime.connections.allow_default_port_from(ec2.Peer.ipv4("10.8.0.0/16"))
    template = Template.from_stack(stack)
    # The front door admits the allowed peer and what the team added, on port 80, nothing else
    template.has_resource_properties("AWS::EC2::SecurityGroup", {"SecurityGroupIngress": Match.array_with([
        Match.object_like({"CidrIp": "10.9.0.0/16", "FromPort": 80}),
        Match.object_like({"CidrIp": "10.8.0.0/16", "FromPort": 80})])})
    alarms = template.to_json()["Resources"]
    realtime_alarms = [r for k, r in alarms.items() if k.startswith("TaggerMonitoring")
                       and r["Type"] == "AWS::CloudWatch::Alarm"]
    assert realtime_alarms and all(r["Properties"]["AlarmActions"] == [{"Ref": stack.get_logical_id(
        topic.node.default_child)}] for r in realtime_alarms)
    assert realtime.rollback_alarm_names == ["Team-tagger-LatencyP99", "Team-tagger-ErrorRate",
                                             "Team-tagger-LambdaErrors"]


def test_a_backend_is_built_from_the_config_with_its_front_door(tmp_path: Path) -> None:
    _, stack, vpc = team_stack(tmp_path)
    front_door = RealtimeFrontDoor(stack, "FrontDoor", vpc=vpc, allowed_peer=ec2.Peer.ipv4("10.0.0.0/8"))
    config = detector()
    fleet = GpuFleet.from_config(stack, "Gpu", config=config, vpc=vpc, front_door=front_door,
                                 sizing=size(config, throughput=250.0))
    assert fleet.route is not None and fleet.grant_principal is fleet.role
    front_door.forward([(fleet.route, 100)], after=[fleet.ready])
    template = Template.from_stack(stack)
    # The scaling target is the rate the cost model plans each instance for, from the number passed in
    planned = per_minute(profile.planned_rate(config, "gpu", 250.0, None).value)
    template.has_resource_properties("AWS::AutoScaling::ScalingPolicy", {
        "TargetTrackingConfiguration": Match.object_like({"TargetValue": planned})})
    template.has_resource_properties("AWS::EC2::LaunchTemplate", {"LaunchTemplateData": Match.object_like(
        {"InstanceType": "g5.xlarge"})})
    # The artifact it was not given is published from the config: exactly that object is readable
    assert "team-models/d.onnx" in json.dumps(template.to_json())


def test_constructs_take_l2_arguments(tmp_path: Path) -> None:
    _, stack, vpc = team_stack(tmp_path)
    front_door = RealtimeFrontDoor(stack, "FrontDoor", vpc=vpc, allowed_peer=ec2.Peer.ipv4("10.0.0.0/8"),
                                   idle_timeout=Duration.seconds(30))
    artifact = ModelArtifact(stack, "Artifact", s3_uri="s3://team-models/t.onnx")
    function = LambdaBackend(stack, "Fn", vpc=vpc, artifact=artifact, spec=tagger().serving_spec(artifact.s3_uri),
                             front_door=front_door, memory_size=Size.gibibytes(2), timeout=Duration.minutes(1))
    assert function.route is not None
    front_door.forward([(function.route, 100)], after=[function.ready])
    Template.from_stack(stack).has_resource_properties("AWS::Lambda::Function", {"MemorySize": 2048, "Timeout": 60})


def test_a_front_door_that_forwards_nowhere_does_not_synthesize(tmp_path: Path) -> None:
    app, stack, vpc = team_stack(tmp_path)
    RealtimeFrontDoor(stack, "FrontDoor", vpc=vpc, allowed_peer=ec2.Peer.ipv4("10.0.0.0/8"))
    with pytest.raises(RuntimeError, match="no backend behind this front door: call forward"):
        app.synth()


def test_isolated_subnets_are_used_with_a_warning_and_public_only_is_refused(tmp_path: Path) -> None:
    _, stack, vpc = team_stack(tmp_path, nat_gateways=0, subnet_configuration=[
        ec2.SubnetConfiguration(name="Isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)])
    ModelService(stack, "Tagger", config=tagger(), vpc=vpc)
    Annotations.from_stack(stack).has_warning("/Team/Tagger", Match.string_like_regexp("private subnets are isolated"))
    _, stack, vpc = team_stack(tmp_path / "public", nat_gateways=0, subnet_configuration=[
        ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC)])
    with pytest.raises(UserError, match="Team/Tagger: the VPC has no private subnets"):
        ModelService(stack, "Tagger", config=tagger(), vpc=vpc)


def test_an_unmeasured_fleet_says_so_and_a_measured_one_does_not(tmp_path: Path) -> None:
    _, stack, vpc = team_stack(tmp_path)
    unmeasured = detector(model=ModelSpec(artifact="s3://team-models/d.onnx"))  # no gmacs, no figure
    ModelService(stack, "Guess", config=unmeasured, vpc=vpc, sizing=size(unmeasured))
    known = unmeasured.model_copy(update={"name": "known"})
    ModelService(stack, "Known", config=known, vpc=vpc, sizing=size(known, throughput=120.0))
    warnings = Annotations.from_stack(stack).find_warning("*", Match.string_like_regexp("placeholder"))
    assert [w.id for w in warnings] == ["/Team/Guess"]  # where the fleet is built: its ModelService
    # AND a throughput for a backend with no instances is refused, with what to give instead
    with pytest.raises(UserError, match="and lambda runs no Auto Scaling group of its own; give lambda"):
        size(tagger(), throughput=10.0)


def test_load_config_makes_local_artifacts_absolute(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    (tmp_path / "m.yaml").write_text("name: m\nbackend: lambda\nmodel: {artifact: m.onnx}\n")
    assert load_config(tmp_path / "m.yaml").model.artifact == str(tmp_path / "m.onnx")
