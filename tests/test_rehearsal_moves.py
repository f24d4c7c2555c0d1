"""The rest of the moves, rehearsed on one emulator for the module (each test deploys the stack it needs under
a name of its own), through `make deploy`'s own path (crossover.deploy.rehearse_on); and the real deploy and
teardown run with credentials that point at the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossover.config import find, load
from crossover.cost.bench import photo
from crossover.deploy import rehearse_on
from crossover.rehearsal import Emulator, bootstrap, emulator, using
from crossover.smoke import SmokeError, endpoint, smoke
from crossover.switch import abort, rewrite_backend, switch
from crossover_serving.server import InferenceServer
from crossover_serving.spec import Spec
from tests import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as a wide terminal shows them: a wrapped cell would split the words the tests look for."""
    from crossover import cli, deploy

    for console in (deploy.console, cli.out, cli.err):
        monkeypatch.setattr(console, "width", 250)
PUBLIC = ("endpoint: {certificate_arn: 'arn:aws:acm:us-east-1:123456789012:certificate/"
          "0b7d8c1e-1111-2222-3333-444455556666'}\n")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator(tmp_path_factory.mktemp("emu") / "emulator.log") as running:
        bootstrap(running)
        yield running


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def _config(models: Path, example: str, name: str, extra: str = "") -> Path:
    text = (ROOT / "models" / f"{example}.yaml").read_text()
    old = next(line for line in text.splitlines() if line.startswith("name:"))
    path = models / f"{name}.yaml"
    path.write_text(text.replace(old, f"name: {name}") + extra)
    return path


def _rehearse(emu: Emulator, models: Path, name: str, tmp_path: Path,
              capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capfd.readouterr()
    with using(emu, CROSSOVER_MODELS=str(models)):
        code = rehearse_on(emu, find(name, models), assembly=tmp_path / "cdk.out")
    return code, "".join(capfd.readouterr())


def _ok(result: tuple[int, str]) -> str:
    code, out = result
    assert code == 0 and "NO " not in out, out[-4000:]
    return out


def test_a_canary_into_lambda_managed_aborted_leaves_the_old_backend_alone(
        emu: Emulator, models: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = _config(models, "resnet152", "aborted")
    _ok(_rehearse(emu, models, "aborted", tmp_path, capfd))
    # WHEN a canary moves a tenth of the requests onto Lambda Managed Instances
    switch(load(config), "lambda-managed", canary=10)
    out = _ok(_rehearse(emu, models, "aborted", tmp_path, capfd))
    # THEN the canary's checks expect both functions, the new one on its capacity provider as the Lambda API
    # describes it, and the listener waited for its alias (a version is active once its environments run)
    assert "listener: lambda 90% / lambda-managed 10%" in out
    assert "yes  listener changed after the lambda-managed alias was ready" in out
    for needed in ("lambda target group", "lambda-managed target group", "Lambda alias live",
                   "lambda-managed alias live", "c7i.xlarge, at most 400 vCPUs, 1 per environment"):
        assert needed in out
    # WHEN aborted THEN lambda takes everything back, and the capacity provider and its function go only after
    # the listener moved
    abort(load(config))
    out = _ok(_rehearse(emu, models, "aborted", tmp_path, capfd))
    assert "yes  lambda-managed removed after the listener moved" in out and "listener: lambda 100%" in out


def test_a_rolling_update_then_fleet_to_fleet_then_into_lambda_managed(emu: Emulator, models: Path, tmp_path: Path,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    config = _config(models, "resnet152", "rolling")
    config.write_text(rewrite_backend(config.read_text(), "eia")[0])
    out = _ok(_rehearse(emu, models, "rolling", tmp_path, capfd))
    assert "Elastic Inference accelerator │ eia1.medium" in out or "eia1.medium" in out
    # WHEN the same backend changes its instance type THEN the group rolls, the listener stays as it was
    config.write_text(config.read_text().replace("eia: {instance_type: c5.large", "eia: {instance_type: c5.xlarge"))
    out = _ok(_rehearse(emu, models, "rolling", tmp_path, capfd))
    assert "yes  the eia group was ready; no listener changed" in out and "listener: eia 100%" in out
    # WHEN it moves to another fleet THEN the listener waits for the new group, the old one goes after the move
    config.write_text(rewrite_backend(config.read_text(), "cpu")[0])
    out = _ok(_rehearse(emu, models, "rolling", tmp_path, capfd))
    assert "yes  listener changed after the cpu group was ready" in out
    assert "yes  eia removed after the listener moved" in out and "listener: cpu 100%" in out
    # WHEN it moves out of the fleet onto Lambda Managed Instances THEN the listener waits for the alias, the
    # fleet goes after
    config.write_text(rewrite_backend(config.read_text(), "lambda-managed")[0])
    out = _ok(_rehearse(emu, models, "rolling", tmp_path, capfd))
    assert "yes  listener changed after the lambda-managed alias was ready" in out
    assert "yes  cpu removed after the listener moved" in out and "listener: lambda-managed 100%" in out


def test_spot_rehearsal_deploys_the_mixed_group(emu: Emulator, models: Path, tmp_path: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    config = _config(models, "resnet152", "spot")
    config.write_text(rewrite_backend(config.read_text(), "cpu")[0].replace(
        "cpu: {instance_type: c7i.large}",
        "cpu: {instance_type: c7i.large, spot: {on_demand_base: 2, instance_types: [c6i.large, c7a.large]}}"))
    out = _ok(_rehearse(emu, models, "spot", tmp_path, capfd))
    assert "c7i.large, c6i.large, c7a.large; on-demand base 2" in out


def _make_deploy(name: str, tmp_path: Path, models: Path) -> subprocess.CompletedProcess[str]:
    """`make deploy MODEL=<name>`'s command, on a machine with no AWS credentials at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", CROSSOVER_MODELS=str(models),
               CROSSOVER_REHEARSAL_STATE=str(tmp_path / "rehearsal"))
    return subprocess.run([sys.executable, "-m", "crossover.deploy", name], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)


def test_make_deploy_that_fails_says_why_and_still_stops_the_emulator(tmp_path: Path, models: Path) -> None:
    # GIVEN a public endpoint whose ACM certificate does not exist in the account; another config is broken
    _config(models, "resnet152", "broken", PUBLIC)
    (models / "other.yaml").write_text("name: other\nbackend: gpus\n")
    result = _make_deploy("broken", tmp_path, models)
    # THEN the broken neighbour is no obstacle, and the failure names the resource and the reason
    assert result.returncode == 1
    printed = result.stdout  # the CDK CLI's own lines (its events and errors) too, in order
    assert "ModelFrontDoorLoadBalancerListener" in printed and "certificate was not found" in printed
    assert "Traceback" not in printed + result.stderr
    pid = int(result.stdout.split("(pid ", 1)[1].split(")", 1)[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # AND nothing was left in the checkout's cdk.out
    assert not (ROOT / "cdk.out" / "ModelStack-broken.template.json").exists()


def test_smoke_finds_the_endpoint_in_the_stack_outputs_and_checks_the_answer(
        emu: Emulator, lite0_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
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
    with pytest.raises(SmokeError, match=r"ModelStack-missing is not deployed here .*make deploy MODEL=missing$"):
        endpoint(emu.client("cloudformation"), "ModelStack-missing")


def test_a_real_deploy_and_teardown_with_credentials(
        emu: Emulator, models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    from crossover.deploy import confirmed, destroy, main, real_deploy

    config = _config(models, "mobilenet_v2", "real")
    config.write_text(config.read_text().replace("s3://my-models/", "s3://team-models/"))
    monkeypatch.setattr("crossover.deploy.ASSEMBLY", tmp_path / "cdk.out")
    with using(emu, CROSSOVER_MODELS=str(models)):
        artifact = load(config).config.model.artifact
        # GIVEN credentials WHEN the artifact names a bucket nobody uploaded to THEN nothing is deployed, and why
        if artifact.startswith("s3://"):
            assert main(["real"]) == 1
            assert f"model.artifact {artifact} cannot be read with these credentials" in capfd.readouterr().out
            bucket, _, key = artifact.removeprefix("s3://").partition("/")
            emu.client("s3").create_bucket(Bucket=bucket)
            emu.client("s3").put_object(Bucket=bucket, Key=key, Body=b"onnx")
        # WHEN the user answers no THEN the account, the region and the diff were shown, and nothing deployed
        asked: list[str] = []
        assert real_deploy(load(config), ask=lambda q: asked.append(q) or "n",
                           assembly=tmp_path / "cdk.out") == 1
        out = capfd.readouterr().out  # the CDK CLI's diff too
        assert "ModelStack-real in account 123456789012, region us-east-1: what the deploy changes (cdk diff):" in out
        assert "[+] AWS::ElasticLoadBalancingV2::LoadBalancer Model/FrontDoor/LoadBalancer" in out
        assert asked == ["Deploy ModelStack-real to account 123456789012 in us-east-1? [y/N] "]
        assert "ModelStack-real: not deployed" in out
        # AND with no terminal to ask on and no YES=1 it refuses (pytest's stdin is no terminal); YES=1 agrees
        assert not confirmed("Deploy?", yes=False, ask=None) and confirmed("Deploy?", yes=True, ask=None)
        capfd.readouterr()
        # WHEN agreed THEN the change sets deploy it, outputs and all (the emulator now keeps them, as AWS does)
        assert real_deploy(load(config), yes=True, assembly=tmp_path / "cdk.out") == 0
        (stack,) = emu.client("cloudformation").describe_stacks(StackName="ModelStack-real")["Stacks"]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        assert {o["OutputKey"] for o in stack["Outputs"]} >= {"Endpoint", "RollbackAlarms"}
        assert "its endpoint is internal: run `crossover smoke real` from inside the VPC" in capfd.readouterr().out
        # WHEN torn down and the user answers no THEN nothing is deleted; yes: protection off, deleted, what stays
        item = load(config)
        assert destroy(item, ask=lambda q: "no") == 1
        assert "ModelStack-real: not deleted" in capfd.readouterr().out
        assert destroy(item, ask=lambda q: "y") == 0
        out = capfd.readouterr().out
        assert "turned off the deletion protection of the endpoint" in out and "ModelStack-real: deleted" in out
        assert "kept: the load balancer's access-log bucket modelstack-real" in out
        with pytest.raises(Exception, match="does not exist"):
            emu.client("cloudformation").describe_stacks(StackName="ModelStack-real")
        # AND a second destroy finds nothing to remove
        assert destroy(item, yes=True) == 0
        assert "ModelStack-real is not deployed in account 123456789012" in capfd.readouterr().out


def test_the_cdk_cli_never_outlives_the_deploy_that_started_it() -> None:
    # (A CLI left running keeps cdk.out's lock, and the next deploy fails on it.)
    from crossover.rehearsal import child

    with pytest.raises(KeyboardInterrupt), child(["sleep", "60"]) as process:
        raise KeyboardInterrupt
    assert process.returncode is not None
