"""Deploy rehearsals: the real CDK CLI deploying real stacks into a local AWS emulator on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossover.cost.bench import photo
from crossover.rehearsal import Emulator, RehearsalError, bootstrap, check, deploy, emulator
from crossover.smoke import SmokeError, endpoint, smoke
from crossover.switch import rewrite_backend
from crossover_serving.server import InferenceServer
from crossover_serving.spec import Spec
from tests import ROOT

pytestmark = pytest.mark.slow
PUBLIC = ("endpoint: {certificate_arn: 'arn:aws:acm:us-east-1:123456789012:certificate/"
          "0b7d8c1e-1111-2222-3333-444455556666'}\n")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rehearsal-models")
    shutil.copy(ROOT / "models" / "resnet152.yaml", folder / "resnet152.yaml")
    broken = (ROOT / "models" / "resnet152.yaml").read_text().replace("name: resnet152", "name: broken")
    (folder / "broken.yaml").write_text(broken + PUBLIC)
    pipeline = (ROOT / "models" / "mobilenet_v2.yaml").read_text().replace("service: realtime", "service: pipeline")
    (folder / "pipe.yaml").write_text(pipeline.replace("name: mobilenet-v2 ", "name: pipe ")
                                      .replace("scaling: {min: 1, max: 4}", "scaling: {min: 0, max: 4}")
                                      + "inputs: {s3: [my-images]}\n")
    return folder


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator(tmp_path_factory.mktemp("emu") / "emulator.log") as running:
        bootstrap(running)
        yield running


def test_lambda_then_switch_to_gpu_keeps_the_load_balancer(emu: Emulator, models: Path,
                                                           tmp_path: Path) -> None:
    # GIVEN resnet152 deployed on lambda (a first deploy: no alarms yet to guard it)
    assert deploy(emu, "ModelStack-resnet152", models=models, outdir=tmp_path / "out1") == []
    status, checks = check(emu, "ModelStack-resnet152", "lambda")
    assert status == "CREATE_COMPLETE" and all(c.ok for c in checks), checks
    lb = _load_balancer(emu)
    # AND it watches its volume against the band in which lambda is the backend to run (no lower edge)
    (band,) = emu.client("cloudwatch").describe_alarms(AlarmNames=["ModelStack-resnet152-VolumeAboveBand"])[
        "MetricAlarms"]
    assert band["Threshold"] > 68_453_753 and band["AlarmDescription"].endswith("crossover switch resnet152 gpu")
    assert any(m.get("Expression") == "FILL(count, 0) * 30.4167" for m in band["Metrics"])
    # WHEN its config is switched to gpu and deployed again
    config = models / "resnet152.yaml"
    config.write_text(rewrite_backend(config.read_text(), "gpu")[0])
    triggers = deploy(emu, "ModelStack-resnet152", models=models, outdir=tmp_path / "out2")
    # THEN the update was guarded by the rollback alarms both backends have (the load balancer's)
    assert sorted(t.rsplit(":", 1)[-1] for t in triggers) == ["ModelStack-resnet152-ErrorRate",
                                                              "ModelStack-resnet152-LatencyP99"]
    # AND the same stack is updated, the load balancer is the same one, and the fleet is there
    status, checks = check(emu, "ModelStack-resnet152", "gpu")
    assert status == "UPDATE_COMPLETE" and all(c.ok for c in checks), checks
    assert _load_balancer(emu) == lb
    assert {c.what for c in checks} >= {"Auto Scaling group", "launch template"}
    # AND, from CloudFormation's stack events, the listener moved only once the fleet was complete (its
    # instances signalled), and the Lambda backend went only after that
    order = _last_update(emu, "ModelStack-resnet152")
    assert order.index(("ModelGpuGroupASG7B86813B", "CREATE_COMPLETE")) < order.index((LISTENER, "UPDATE_IN_PROGRESS"))
    assert _removed_after_the_move(order, "Lambda")


def test_fleet_to_lambda_canary_and_promote_move_traffic_only_to_what_is_ready(emu: Emulator, models: Path,
                                                                               tmp_path: Path) -> None:
    from crossover.config import load
    from crossover.switch import promote, switch

    config = models / "resnet152.yaml"
    # GIVEN resnet152 on gpu (the test above) WHEN moved back to lambda
    config.write_text(rewrite_backend(config.read_text(), "lambda")[0])
    deploy(emu, "ModelStack-resnet152", models=models, outdir=tmp_path / "out1")
    order = _last_update(emu, "ModelStack-resnet152")
    assert order.index(("ModelLambdaLive9DD49F0A", "CREATE_COMPLETE")) < order.index((LISTENER, "UPDATE_IN_PROGRESS"))
    assert _removed_after_the_move(order, "Gpu")
    # WHEN a canary moves 10% to cpu: two updates
    switch(load(config), "cpu", canary=10)
    triggers = deploy(emu, "ModelStack-resnet152", models=models, outdir=tmp_path / "out2", canary=True)
    stages = _updates(emu, "ModelStack-resnet152")[-2:]
    # THEN the first created the cpu fleet and moved the listener (cpu at weight 0) only once it was complete
    first = stages[0]
    assert first.index(("ModelCpuGroupASGFA1BF2E5", "CREATE_COMPLETE")) < first.index((LISTENER, "UPDATE_IN_PROGRESS"))
    # AND the Lambda backend is kept: nothing goes but lambda's volume alarms (cpu is too slow for resnet152's p99,
    # so it has no band of its own)
    deleted = {e[0] for e in first if e[1].startswith("DELETE")}
    assert sorted(d.removeprefix("ModelMonitoring")[:14] for d in deleted) == ["VolumeAboveBan", "VolumeBelowBan"]
    # AND the second gave the canary its share, judged by the canary's own alarms
    assert {t.rsplit(":", 1)[-1] for t in triggers} >= {"ModelStack-resnet152-CanaryLatencyP99",
                                                        "ModelStack-resnet152-CanaryErrorRate"}
    assert _weights(emu) == {"Cpu": 10, "Lambda": 90}
    # WHEN the canary is promoted THEN cpu takes everything and the Lambda backend goes after the move
    promote(load(config))
    deploy(emu, "ModelStack-resnet152", models=models, outdir=tmp_path / "out3")
    assert _removed_after_the_move(_last_update(emu, "ModelStack-resnet152"), "Lambda")
    assert _weights(emu) == {"Cpu": 100}
    status, checks = check(emu, "ModelStack-resnet152", "cpu")
    assert status == "UPDATE_COMPLETE" and all(c.ok for c in checks), checks


LISTENER = "ModelFrontDoorLoadBalancerListener895726E5"


def _updates(emu: Emulator, stack: str) -> list[list[tuple[str, str]]]:
    """Each update's resource events, (logical id, status) in the order they happened."""
    pages = emu.client("cloudformation").get_paginator("describe_stack_events").paginate(StackName=stack)
    events = sorted((e for page in pages for e in page["StackEvents"]), key=lambda e: e["Timestamp"])
    updates: list[list[tuple[str, str]]] = [[]]
    for event in events:
        if event["ResourceType"] != "AWS::CloudFormation::Stack":
            updates[-1].append((event["LogicalResourceId"], event["ResourceStatus"]))
        elif event["ResourceStatus"].endswith("_COMPLETE"):  # the stack's own event closes each update
            updates.append([])
    return [update for update in updates if update]


def _last_update(emu: Emulator, stack: str) -> list[tuple[str, str]]:
    return _updates(emu, stack)[-1]


def _removed_after_the_move(order: list[tuple[str, str]], backend: str) -> bool:
    """Every resource of ``backend`` was deleted, each after the listener's update completed."""
    moved = order.index((LISTENER, "UPDATE_COMPLETE"))
    deleted = [i for i, (logical, status) in enumerate(order)
               if logical.startswith("Model" + backend) and status.startswith("DELETE")]
    return bool(deleted) and min(deleted) > moved


def _weights(emu: Emulator) -> dict[str, int]:
    """The public listener's forward weights by backend id, read back from the load balancer."""
    elbv2 = emu.client("elbv2")
    (listener,) = [x for x in elbv2.describe_listeners(LoadBalancerArn=_load_balancer(emu))["Listeners"]
                   if x["Port"] == 80]
    (action,) = listener["DefaultActions"]
    groups = action.get("ForwardConfig", {}).get("TargetGroups") or [{"TargetGroupArn": action["TargetGroupArn"],
                                                                      "Weight": 100}]
    names = {g["TargetGroupArn"]: g["TargetGroupName"] for g in elbv2.describe_target_groups()["TargetGroups"]}
    resources = emu.client("cloudformation").list_stack_resources(StackName="ModelStack-resnet152")
    by_arn = {r["PhysicalResourceId"]: r["LogicalResourceId"] for r in resources["StackResourceSummaries"]}
    assert names
    return {by_arn[g["TargetGroupArn"]].removeprefix("ModelFrontDoor").split("Targets")[0]: g.get("Weight", 100)
            for g in groups}


def test_eia_rehearsal_keeps_the_accelerator(emu: Emulator, models: Path, tmp_path: Path) -> None:
    config = models / "resnet152.yaml"
    config.write_text(rewrite_backend(config.read_text(), "eia")[0])
    deploy(emu, "ModelStack-resnet152", models=models, outdir=tmp_path / "out")
    _, checks = check(emu, "ModelStack-resnet152", "eia")
    accelerator = next(c for c in checks if c.what == "Elastic Inference accelerator")
    assert accelerator.found == "eia1.medium" and all(c.ok for c in checks), checks


def test_spot_rehearsal_deploys_the_mixed_group(emu: Emulator, models: Path, tmp_path: Path) -> None:
    config = models / "resnet152.yaml"
    config.write_text(rewrite_backend(config.read_text(), "cpu")[0].replace(
        "cpu: {instance_type: c7i.large}",
        "cpu: {instance_type: c7i.large, spot: {on_demand_base: 2, instance_types: [c6i.large, c7a.large]}}"))
    deploy(emu, "ModelStack-resnet152", models=models, outdir=tmp_path / "out")
    _, checks = check(emu, "ModelStack-resnet152", "cpu")
    spot = next(c for c in checks if c.what == "spot")
    assert spot.found == "c7i.large, c6i.large, c7a.large; on-demand base 2"
    assert all(c.ok for c in checks), checks


def test_failed_create_names_the_resource_and_the_reason(emu: Emulator, models: Path, tmp_path: Path) -> None:
    # GIVEN a public endpoint whose ACM certificate does not exist in the account
    with pytest.raises(RehearsalError) as caught:
        deploy(emu, "ModelStack-broken", models=models, outdir=tmp_path / "out")
    message = str(caught.value)
    assert "ModelStack-broken failed to deploy" in message
    assert "ModelFrontDoorLoadBalancerListener" in message and "certificate was not found" in message, message


def _make_deploy(name: str, tmp_path: Path, models: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`make deploy MODEL=<name>`'s command, on a machine with no AWS credentials at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", **({"CROSSOVER_MODELS": str(models)} if models else {}))
    return subprocess.run([sys.executable, "-m", "crossover.deploy", name], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)


def _assert_stopped(output: str) -> None:
    pid = int(output.split("(pid ", 1)[1].split(")", 1)[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_make_deploy_without_credentials_rehearses_and_leaves_no_process(tmp_path: Path) -> None:
    result = _make_deploy("resnet152", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ModelStack-resnet152: CREATE_COMPLETE" in result.stdout
    assert "Lambda function" in result.stdout and "the emulator was stopped" in result.stdout
    _assert_stopped(result.stdout)


def test_make_deploy_that_fails_says_why_and_still_stops_the_emulator(tmp_path: Path, models: Path) -> None:
    result = _make_deploy("broken", tmp_path, models)
    assert result.returncode == 1
    assert "ModelFrontDoorLoadBalancerListener" in result.stdout and "certificate was not found" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    _assert_stopped(result.stdout)


def _load_balancer(emu: Emulator) -> str:
    resources = emu.client("cloudformation").list_stack_resources(StackName="ModelStack-resnet152")
    (arn,) = [r["PhysicalResourceId"] for r in resources["StackResourceSummaries"]
              if r["LogicalResourceId"] == "ModelFrontDoorLoadBalancer7C7C1043"]
    return str(arn)


def test_smoke_finds_the_endpoint_in_the_stack_outputs_and_checks_the_answer(
        emu: Emulator, lite0_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from crossover.config import load
    from crossover.deploy import watching

    # GIVEN a stack whose Endpoint output points at a real server on loopback
    server = InferenceServer(lite0_spec).start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {"Endpoint": {"Value": url}}}
        emu.client("cloudformation").create_stack(StackName="ModelStack-smoke", TemplateBody=json.dumps(template))
        assert endpoint(emu.client("cloudformation"), "ModelStack-smoke") == url
        while not server.ready:
            time.sleep(0.05)
        result = smoke(url, "efficientnet-lite0", photo())
        assert result.latency_ms > 0 and len(result.top) == 5
        with pytest.raises(SmokeError, match="unexpected answer"):
            smoke(url, "another-model", photo())
        # AND make deploy WATCH=1 watches that endpoint while its block runs, then prints the tally
        for key, value in emu.env().items():
            if key.startswith("AWS_"):
                monkeypatch.setenv(key, value)
        smoke_config = tmp_path / "smoke.yaml"
        smoke_config.write_text((ROOT / "models" / "resnet152.yaml").read_text().replace("name: resnet152",
                                                                                       "name: smoke"))
        with watching(load(smoke_config), True):
            time.sleep(1.5)
        printed = capsys.readouterr().out
        assert f"watching {url}/predict" in printed and "watch tally: " in printed and "; 0 not 200" in printed
    finally:
        server.drain()
    with pytest.raises(SmokeError, match="ModelStack-missing is not deployed here"):
        endpoint(emu.client("cloudformation"), "ModelStack-missing")


def test_pipeline_switch_keeps_the_queue_and_the_bucket(emu: Emulator, models: Path, tmp_path: Path) -> None:
    deploy(emu, "ModelStack-pipe", models=models, outdir=tmp_path / "out1")
    status, checks = check(emu, "ModelStack-pipe", "lambda")
    assert status == "CREATE_COMPLETE" and all(c.ok for c in checks), checks
    before = _physical(emu, "ModelStack-pipe", "ModelFrontDoorQueueF6AFEA90", "ModelFrontDoorResultsD8909F87")
    config = models / "pipe.yaml"
    config.write_text(rewrite_backend(config.read_text(), "cpu")[0])
    deploy(emu, "ModelStack-pipe", models=models, outdir=tmp_path / "out2")
    status, checks = check(emu, "ModelStack-pipe", "cpu")
    assert status == "UPDATE_COMPLETE" and all(c.ok for c in checks), checks
    assert _physical(emu, "ModelStack-pipe", "ModelFrontDoorQueueF6AFEA90", "ModelFrontDoorResultsD8909F87") == before


def _physical(emu: Emulator, stack: str, *logical: str) -> list[str]:
    resources = emu.client("cloudformation").list_stack_resources(StackName=stack)["StackResourceSummaries"]
    found = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}
    return [found[name] for name in logical]


def _as_the_account(emu: Emulator, models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process and the CDK CLI it runs see the emulator as the AWS account behind the credentials."""
    for key in [k for k in os.environ if k.startswith(("AWS_", "CDK_"))]:
        monkeypatch.delenv(key)
    for key, value in emu.env().items():
        if key.startswith(("AWS_", "CDK_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("CROSSOVER_MODELS", str(models))


def test_a_real_deploy_checks_first_shows_account_region_and_diff_and_asks(
        emu: Emulator, models: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    from crossover.config import load
    from crossover.deploy import confirmed, main, real_deploy

    _as_the_account(emu, models, monkeypatch)
    text = (ROOT / "models" / "resnet152.yaml").read_text().replace("name: resnet152", "name: real")
    (models / "real.yaml").write_text(text.replace("s3://my-models/resnet152/", "s3://team-models/resnet152/"))
    # GIVEN credentials WHEN the artifact names a bucket nobody uploaded to THEN nothing is deployed, and why
    assert main(["real"]) == 1
    out = capfd.readouterr().out
    assert "model.artifact s3://team-models/resnet152/model.onnx cannot be read with these credentials" in out
    # WHEN the model is there and the user answers no THEN the account, the region and the diff were shown
    s3 = emu.client("s3")
    s3.create_bucket(Bucket="team-models")
    s3.put_object(Bucket="team-models", Key="resnet152/model.onnx", Body=b"onnx")
    asked: list[str] = []
    assert real_deploy(load(models / "real.yaml"), ask=lambda q: asked.append(q) or "n") == 1
    out = "".join(capfd.readouterr())  # the CDK CLI writes its diff to stderr
    assert "ModelStack-real in account 123456789012, region us-east-1: what the deploy changes (cdk diff):" in out
    assert "[+] AWS::ElasticLoadBalancingV2::LoadBalancer Model/FrontDoor/LoadBalancer" in out
    assert asked == ["Deploy ModelStack-real to account 123456789012 in us-east-1? [y/N] "]
    assert "ModelStack-real: not deployed" in out
    with pytest.raises(Exception, match="does not exist"):
        emu.client("cloudformation").describe_stacks(StackName="ModelStack-real")
    # AND with no terminal to ask on and no YES=1 it refuses (pytest's stdin is no terminal); YES=1 agrees
    assert not confirmed("Deploy?", yes=False, ask=None) and confirmed("Deploy?", yes=True, ask=None)
    assert "Not asked: no terminal to answer on. Run with YES=1" in capfd.readouterr().out


def test_destroy_asks_turns_off_deletion_protection_and_says_what_stays(
        emu: Emulator, models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    from crossover.config import load
    from crossover.deploy import destroy

    # GIVEN a model deployed with the endpoint's deletion protection on (the default)
    text = (ROOT / "models" / "mobilenet_v2.yaml").read_text().replace("name: mobilenet-v2 ", "name: gone ")
    (models / "gone.yaml").write_text(text)
    deploy(emu, "ModelStack-gone", models=models, outdir=tmp_path / "out")
    (lb,) = [r for r in emu.client("cloudformation").list_stack_resources(StackName="ModelStack-gone")[
        "StackResourceSummaries"] if r["ResourceType"] == "AWS::ElasticLoadBalancingV2::LoadBalancer"]
    attributes = emu.client("elbv2").describe_load_balancer_attributes(LoadBalancerArn=lb["PhysicalResourceId"])
    assert {"Key": "deletion_protection.enabled", "Value": "true"} in attributes["Attributes"]
    with pytest.raises(Exception, match="OperationNotPermitted"):  # as AWS: protected means not deletable
        emu.client("elbv2").delete_load_balancer(LoadBalancerArn=lb["PhysicalResourceId"])
    _as_the_account(emu, models, monkeypatch)
    # WHEN the user answers no THEN nothing is deleted
    item = load(models / "gone.yaml")
    assert destroy(item, ask=lambda q: "no") == 1
    assert "ModelStack-gone: not deleted" in capfd.readouterr().out
    # WHEN yes THEN protection goes off explicitly, the stack is deleted, and what is kept is said
    assert destroy(item, ask=lambda q: "y") == 0
    out = capfd.readouterr().out
    assert f"turned off the deletion protection of the endpoint {lb['PhysicalResourceId']}" in out
    assert "ModelStack-gone: deleted" in out and "kept: the load balancer's access-log bucket" in out
    # AND the network stays while another model stack uses it, or the command that removes it is given
    others = sorted(x["StackName"] for x in emu.client("cloudformation").list_stacks()["StackSummaries"]
                    if x["StackName"].startswith("ModelStack-") and x["StackStatus"] != "DELETE_COMPLETE")
    assert (f"kept: NetworkStack (VPC, NAT gateway), used by {', '.join(others)}" if others else
            "NetworkStack (VPC, NAT gateway: about $33 a month) now serves no model: remove it with "
            "`npx cdk destroy NetworkStack`") in out
    with pytest.raises(Exception, match="does not exist"):
        emu.client("cloudformation").describe_stacks(StackName="ModelStack-gone")
    # AND a second destroy finds nothing to remove
    assert destroy(item, yes=True) == 0
    assert "ModelStack-gone is not deployed in account 123456789012" in capfd.readouterr().out


def test_a_teams_own_app_with_two_models_in_one_stack_deploys(emu: Emulator, tmp_path: Path) -> None:
    # GIVEN examples/existing_vpc: the team's stack and VPC, a Lambda model and a GPU model, configs in Python
    from crossover.rehearsal import CDK

    # WHEN the real CDK CLI deploys it into the emulator
    result = subprocess.run([CDK, "deploy", "TeamInference", "--app", f"{sys.executable} app.py", "--output",
                             str(tmp_path / "out"), "--require-approval", "never", "--method=direct", "--no-notices"],
                            cwd=ROOT / "examples" / "existing_vpc", env=emu.env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # THEN one stack holds both services, each behind its own load balancer and with its own alarms
    cloudformation = emu.client("cloudformation")
    (stack,) = cloudformation.describe_stacks(StackName="TeamInference")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert stack["StackStatus"] == "CREATE_COMPLETE" and outputs["TaggerEndpoint"] != outputs["DetectorEndpoint"]
    kinds = [r["ResourceType"] for r in cloudformation.list_stack_resources(StackName="TeamInference")[
        "StackResourceSummaries"]]
    assert kinds.count("AWS::ElasticLoadBalancingV2::LoadBalancer") == 2
    assert "AWS::Lambda::Function" in kinds and "AWS::AutoScaling::AutoScalingGroup" in kinds
    alarms = emu.client("cloudwatch").describe_alarms(AlarmNamePrefix="TeamInference-")["MetricAlarms"]
    assert {a["AlarmName"].split("-")[1] for a in alarms} == {"tagger", "detector"}
