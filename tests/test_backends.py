"""The instance backends, and switching between any two of the five backends."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from crossover.backends import KINDS
from crossover.capacity import scaling_target
from crossover.config import BACKEND_IDS
from tests import ROOT
from tests.conftest import BACKENDS, EXAMPLES, Synth, stack_of

NAMES = ["resnet152", "mobilenet-v2", "efficientnet-lite0"]
assert len(NAMES) == len(EXAMPLES)
FLEETS = [b for b in BACKENDS if KINDS[b].fleet]


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def one(template: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = resources(template, kind).values()
    return found["Properties"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_every_example_synthesizes_on_every_backend(synth: Synth, name: str, backend: str) -> None:
    template = synth.raw[stack_of(name, backend)]
    kinds = {r["Type"] for r in template["Resources"].values()}
    expected = "AWS::AutoScaling::AutoScalingGroup" if KINDS[backend].fleet else "AWS::Lambda::Function"
    assert expected in kinds and "AWS::ElasticLoadBalancingV2::LoadBalancer" in kinds


def front_door(template: dict[str, Any]) -> dict[str, Any]:
    """Everything a client depends on: the front door's resources and outputs, minus the wiring to the
    backend (target group, forward action, egress to the backend), which a switch updates in place."""
    wiring = {"AWS::ElasticLoadBalancingV2::TargetGroup", "AWS::EC2::SecurityGroupEgress",
              "AWS::ElasticLoadBalancingV2::ListenerRule"}
    kept = {k: v for k, v in template["Resources"].items()
            if k.startswith("ModelFrontDoor") and v["Type"] not in wiring}
    for resource in kept.values():
        resource.get("Properties", {}).pop("DefaultActions", None)  # names the target group
        resource.get("Properties", {}).pop("SecurityGroupEgress", None)  # names the backend's security group
        resource.pop("DependsOn", None)  # the listener waits for the backend it forwards to
    return {"resources": kept, "endpoint": template["Outputs"]["Endpoint"]}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("source", BACKENDS)
def test_switching_any_backend_to_any_other_keeps_the_front_door(synth: Synth, name: str, source: str) -> None:
    # GIVEN the model on `source` WHEN moved to each other backend THEN the same load balancer, listener,
    # security group and Endpoint output, with the same logical ids and properties
    before = front_door(json.loads(json.dumps(synth.raw[stack_of(name, source)])))
    assert {"ModelFrontDoorLoadBalancer7C7C1043", "ModelFrontDoorLoadBalancerListener895726E5",
            "ModelFrontDoorSecurityGroup986DE0F3"} <= set(before["resources"])
    for target in BACKENDS:
        after = front_door(json.loads(json.dumps(synth.raw[stack_of(name, target)])))
        assert after == before, f"{source} -> {target} changed the front door"


@pytest.mark.parametrize("backend", FLEETS)
def test_launch_template_requires_imdsv2_and_encrypts_the_root_volume(synth: Synth, backend: str) -> None:
    data = one(synth.raw[stack_of("resnet152", backend)], "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpPutResponseHopLimit": 1, "HttpTokens": "required"}
    (volume,) = data["BlockDeviceMappings"]
    assert volume["Ebs"]["Encrypted"] is True and volume["Ebs"]["VolumeType"] == "gp3"
    assert "NetworkInterfaces" not in data  # no public address: private subnets, no association
    expected = {"gpu": "g4dn.xlarge", "eia": "c5.large", "inferentia": "inf2.xlarge", "cpu": "c7i.large"}[backend]
    assert data["InstanceType"] == expected


@pytest.mark.parametrize(("backend", "parameter"), [
    ("gpu", "deeplearning"), ("inferentia", "neuron"), ("cpu", "al2023"), ("eia", "al2023")])
def test_images_come_from_public_ssm_parameters_at_deploy_time(synth: Synth, backend: str, parameter: str) -> None:
    template = synth.raw[stack_of("resnet152", backend)]
    ssm = {k: v for k, v in template["Parameters"].items() if v.get("Default", "").startswith("/aws/service/")}
    assert len(ssm) == 1 and parameter in next(iter(ssm.values()))["Default"]


def test_graviton_types_get_the_arm64_image(tmp_path: Path) -> None:
    from crossover.app import build, new_app
    from crossover.config import load

    config = tmp_path / "g.yaml"
    config.write_text("name: grav\nbackend: cpu\nmodel: {artifact: s3://bkt/m.onnx}\ncpu: {instance_type: c7g.large}\n")
    app = new_app(outdir=str(tmp_path / "out"))
    build(app, [load(config)])
    template = app.synth().get_stack_by_name("ModelStack-grav").template
    defaults = [p["Default"] for p in template["Parameters"].values() if "Default" in p]
    assert any("al2023-ami-kernel" in d and "arm64" in d for d in defaults)


def test_pinned_ami_is_used_as_is(tmp_path: Path) -> None:
    from crossover.app import build, new_app
    from crossover.config import load

    config = tmp_path / "p.yaml"
    config.write_text("name: pinned\nbackend: gpu\nmodel: {artifact: s3://bkt/m.onnx}\n"
                      "gpu: {ami_id: ami-0123456789abcdef0}\n")
    app = new_app(outdir=str(tmp_path / "out"))
    build(app, [load(config)])
    template = app.synth().get_stack_by_name("ModelStack-pinned").template
    assert one(template, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["ImageId"] == "ami-0123456789abcdef0"


@pytest.mark.parametrize("backend", FLEETS)
def test_group_is_health_checked_by_the_load_balancer_and_updates_safely(synth: Synth, backend: str) -> None:
    template = synth.raw[stack_of("resnet152", backend)]
    (group,) = resources(template, "AWS::AutoScaling::AutoScalingGroup").values()
    props = group["Properties"]
    assert props["HealthCheckType"] == "ELB" and props["HealthCheckGracePeriod"] == 900
    assert (props["MinSize"], props["MaxSize"]) == ("2", "6") and "DesiredCapacity" not in props
    assert len(props["VPCZoneIdentifier"]) == 2  # private subnets in two AZs
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["MinInstancesInService"] == 2 and rolling["MaxBatchSize"] == 1 and rolling["WaitOnResourceSignals"]
    assert group["CreationPolicy"]["ResourceSignal"]["Count"] == 2
    target_group = one(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert (target_group["TargetType"], target_group["Port"], target_group["HealthCheckPath"]) == (
        "instance", 8080, "/ready")


@pytest.mark.parametrize("backend", FLEETS)
def test_scaling_tracks_requests_per_target_from_throughput_and_p99(synth: Synth, backend: str) -> None:
    policy = one(synth.raw[stack_of("resnet152", backend)], "AWS::AutoScaling::ScalingPolicy")
    tracking = policy["TargetTrackingConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ALBRequestCountPerTarget"
    # resnet152 sets model.gmacs, so the target follows the same estimate `crossover cost` shows
    from crossover.config import load
    from crossover.cost.profile import images_per_second

    config = load(ROOT / "models" / "resnet152.yaml").config
    figure = images_per_second(config, backend, None)
    assert figure is not None and figure.source.startswith("estimate")
    assert tracking["TargetValue"] == scaling_target(figure.value, 300)


def test_scaling_target_follows_queueing() -> None:
    # 20 img/s (50 ms each) and a 300 ms p99: M/D/1's p99 50 x (1 + ln(100 rho) / (2 (1 - rho))) reaches 300 ms
    # at rho = 59.2%: 50 x (1 + ln(59.2) / 0.817) = 299.8 ms; so 20 x 0.592 x 60 = 710 requests a minute
    assert scaling_target(20, 300) == 710
    assert 50 * (1 + math.log(100 * 710 / 1200) / (2 * (1 - 710 / 1200))) <= 300
    assert 50 * (1 + math.log(100 * 711 / 1200) / (2 * (1 - 711 / 1200))) > 300
    assert scaling_target(20, 10_000) == 960  # loose target: capped at 80% utilisation
    assert scaling_target(5, 100) == 240  # impossible target (200 ms each): planned for throughput, at 80%


def logical_id(template: dict[str, Any], prefix: str, kind: str) -> str:
    """The one resource of ``kind`` whose logical id starts with ``prefix`` (ids end in a path hash)."""
    (found,) = [k for k, v in template["Resources"].items() if k.startswith(prefix) and v["Type"] == kind]
    return found


@pytest.mark.parametrize("backend", FLEETS)
def test_instances_accept_only_the_front_door_on_the_inference_port(synth: Synth, backend: str) -> None:
    template = synth.raw[stack_of("resnet152", backend)]
    group = logical_id(template, f"Model{BACKEND_IDS[backend]}SecurityGroup", "AWS::EC2::SecurityGroup")
    ingress = [r["Properties"] for r in resources(template, "AWS::EC2::SecurityGroupIngress").values()
               if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group, "GroupId"]}]
    assert len(ingress) == 1
    assert ingress[0]["FromPort"] == ingress[0]["ToPort"] == 8080
    assert ingress[0]["SourceSecurityGroupId"] == {"Fn::GetAtt": ["ModelFrontDoorSecurityGroup986DE0F3", "GroupId"]}


@pytest.mark.parametrize("backend", FLEETS)
def test_instance_role_is_least_privilege(synth: Synth, backend: str) -> None:
    template = synth.raw[stack_of("resnet152", backend)]
    role_policy = next(p for k, p in resources(template, "AWS::IAM::Policy").items()
                       if k.startswith(f"Model{BACKEND_IDS[backend]}Role"))
    statements = role_policy["Properties"]["PolicyDocument"]["Statement"]
    actions = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    expected = {"s3:GetObject", "logs:CreateLogStream", "logs:PutLogEvents", "cloudwatch:PutMetricData",
                "cloudformation:SignalResource", "elasticloadbalancing:DescribeTargetHealth"}
    assert actions == expected | ({"elastic-inference:Connect"} if backend == "eia" else set())
    assert not any("*" in action for action in actions)
    for s in statements:
        if s["Resource"] == "*" and s["Action"] == "cloudwatch:PutMetricData":
            assert s["Condition"] == {"StringEquals": {"cloudwatch:namespace": "crossover"}}
        elif s["Resource"] == "*":  # a read-only Describe action, which takes no resource
            assert s["Action"] == "elasticloadbalancing:DescribeTargetHealth"
    s3_objects = [json.dumps(s["Resource"]) for s in statements if s["Action"] == "s3:GetObject"]
    assert any("my-models/resnet152/model.onnx" in r for r in s3_objects)
    assert all(r.rstrip('"]}').endswith((".zip", ".onnx")) for r in s3_objects)  # objects, never buckets


def test_eia_adds_the_accelerator_endpoint_and_connect_permission(synth: Synth) -> None:
    template = synth.raw[stack_of("resnet152", "eia")]
    data = one(template, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert data["ElasticInferenceAccelerators"] == [{"Count": 1, "Type": "eia1.medium"}]
    endpoint = one(template, "AWS::EC2::VPCEndpoint")
    assert endpoint["VpcEndpointType"] == "Interface" and endpoint["PrivateDnsEnabled"] is True
    assert "elastic-inference.runtime" in json.dumps(endpoint["ServiceName"])
    rules = [r["Properties"] for r in resources(template, "AWS::EC2::SecurityGroupIngress").values()
             if r["Properties"]["FromPort"] == 443]
    fleet = logical_id(template, "ModelEiaSecurityGroup", "AWS::EC2::SecurityGroup")
    assert len(rules) == 1 and rules[0]["SourceSecurityGroupId"] == {"Fn::GetAtt": [fleet, "GroupId"]}
    lt = next(r for r in template["Resources"].values() if r["Type"] == "AWS::EC2::LaunchTemplate")
    assert lt["Metadata"]["cfn-lint"] == {"config": {"ignore_checks": ["E3002"]}}


def test_only_eia_stacks_carry_the_ei_acknowledgements(synth: Synth) -> None:
    for stack, template in synth.raw.items():
        findings = {e["finding"] for r in template["Resources"].values()
                    for e in r.get("Metadata", {}).get("crossover:acknowledged", [])}
        has_ei = any("F3002" in f or "E3002" in f for f in findings)
        on_eia = stack.endswith("-eia") or "-eia-from-" in stack or stack.endswith("-from-eia")  # canaries too
        assert has_ei == on_eia, stack


def test_user_data_boots_the_serving_bundle_and_signals_when_ready(synth: Synth) -> None:
    data = one(synth.raw[stack_of("resnet152", "gpu")], "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    script = "".join(p if isinstance(p, str) else "<token>" for p in data["UserData"]["Fn::Base64"]["Fn::Join"][1])
    assert "trap exitTrap EXIT" in script and "cfn-signal" in script
    assert "CROSSOVER_RUNTIME=onnxruntime-gpu" in script
    spec = json.loads(script.split("export CROSSOVER_SPEC_JSON='", 1)[1].split("'\n", 1)[0])
    assert (spec["artifact"], spec["max_batch"]) == ("/opt/crossover/model", 8)
    assert (ROOT / "crossover" / "ami" / "bootstrap.sh").read_text() in script


@pytest.mark.parametrize("script", sorted((ROOT / "crossover" / "ami").rglob("*.sh")), ids=lambda p: p.name)
def test_instance_scripts_pass_bash_n_and_shellcheck(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "shellcheck"), "-s", "bash", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_inferentia_with_a_neuron_artifact_serves_it_from_the_neuron_environment(tmp_path: Path) -> None:
    from crossover.app import build, new_app
    from crossover.config import load

    (tmp_path / "model.neuron.pt").write_bytes(b"compiled")
    config = tmp_path / "n.yaml"
    config.write_text("name: neuron\nbackend: inferentia\nmodel: {artifact: s3://bkt/m.onnx}\n"
                      "inferentia: {neuron_artifact: model.neuron.pt}\n")
    loaded = load(config)
    assert loaded.warnings == []
    app = new_app(outdir=str(tmp_path / "out"))
    build(app, [loaded])
    template = app.synth().get_stack_by_name("ModelStack-neuron").template
    data = one(template, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    script = "".join(p if isinstance(p, str) else "<token>" for p in data["UserData"]["Fn::Base64"]["Fn::Join"][1])
    assert "CROSSOVER_RUNTIME=neuron" in script and '"format":"neuron"' in script
    statements = [s for p in resources(template, "AWS::IAM::Policy").values()
                  for s in p["Properties"]["PolicyDocument"]["Statement"] if s["Action"] == "s3:GetObject"]
    assert not any("bkt/m.onnx" in json.dumps(s["Resource"]) for s in statements)  # reads only what it runs


def test_inferentia_without_a_neuron_artifact_warns_it_runs_on_cpus(tmp_path: Path) -> None:
    from crossover.config import load

    config = tmp_path / "c.yaml"
    config.write_text("name: cpuonly\nbackend: inferentia\nmodel: {artifact: s3://bkt/m.onnx}\n")
    (warning,) = load(config).warnings
    assert "runs on the instance's CPUs, not its NeuronCores" in warning
