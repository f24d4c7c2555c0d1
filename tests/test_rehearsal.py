"""Rehearsals as a user runs them: `make deploy` / `make rehearse` / `make destroy REHEARSE=1` and the crossover CLI,
one persisted emulator per test (each deploys the state it needs), the real CDK CLI, change sets and all."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crossover import cli, deploy
from crossover.rehearsal import account, events_since, split, template, updates
from tests import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as a wide terminal shows them: a wrapped cell would split the words the tests look for."""
    from crossover import cli, deploy

    for console in (deploy.console, cli.out, cli.err):
        monkeypatch.setattr(console, "width", 250)
LISTENER = "ModelFrontDoorLoadBalancerListener895726E5"


@dataclass
class User:
    """A checkout's user with no AWS credentials: their models folder and their rehearsal state."""
    models: Path
    capfd: pytest.CaptureFixture[str]

    def make(self, *argv: str) -> tuple[int, str]:
        """`make deploy | rehearse | destroy`'s command: python -m crossover.deploy ARGV."""
        self.capfd.readouterr()
        code = deploy.main(list(argv))
        return code, "".join(self.capfd.readouterr())

    def crossover(self, *argv: str) -> tuple[int, str]:
        self.capfd.readouterr()
        code = cli.main([*argv, "--models", str(self.models)])
        return code, "".join(self.capfd.readouterr())


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> Iterator[User]:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "models" / "resnet152.yaml", models)
    for key in [k for k in os.environ if k.startswith(("AWS_", "CDK_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CROSSOVER_MODELS", str(models))
    monkeypatch.setenv("CROSSOVER_REHEARSAL_STATE", str(tmp_path / "rehearsal"))
    yield User(models, capfd)


def _ok(result: tuple[int, str]) -> str:
    code, out = result
    assert code == 0, out[-4000:]
    assert "Traceback" not in out
    return out


def test_the_readme_canary_then_promote_then_teardown(user: User) -> None:
    # GIVEN resnet152 on lambda: `make deploy MODEL=resnet152` with no credentials rehearses, from an empty account
    out = _ok(user.make("resnet152", "--fresh"))
    assert "No AWS credentials found: rehearsing on a local AWS emulator" in out
    assert "starting from an empty account (--fresh)" in out
    assert "yes  listener created after the lambda alias was ready" in out and "listener: lambda 100%" in out
    # WHEN the canary of docs/switching.md: crossover switch resnet152 gpu --canary 10, then make rehearse
    _ok(user.crossover("switch", "resnet152", "gpu", "--canary", "10"))
    out = _ok(user.make("resnet152", "--rehearse"))
    # THEN it starts from what the first rehearsal left, and updates that stack in two steps
    assert re.search(r"starting from what the rehearsal of \S+ \S+ left: ModelStack-resnet152 on lambda 100%: "
                     r"CREATE_COMPLETE", out), out[:2000]
    assert "a canary deploy takes two updates" in out and "update 1 of 2" in out and "update 2 of 2" in out
    # AND the CDK CLI's progress lines show each resource's events with their status
    assert re.search(r"CREATE_COMPLETE\s+\| AWS::AutoScaling::AutoScalingGroup\s+\| Model/Gpu/Group/ASG", out)
    # AND the guarantees read from them: the listener moved only to what was ready, in each update
    assert "yes  listener changed after the gpu group was ready" in out
    assert "yes  listener changed; gpu was ready before this update" in out
    assert "NO " not in out and "listener: lambda 90% / gpu 10%" in out
    # WHEN promoted THEN gpu takes everything and lambda goes only after the listener moved
    _ok(user.crossover("switch", "resnet152", "--promote"))
    out = _ok(user.make("resnet152", "--rehearse"))
    assert "yes  lambda removed after the listener moved" in out and "listener: gpu 100%" in out
    # AND CloudFormation's own events, read back from the persisted account, agree
    with account() as emu:
        canary_create, canary_split, promotion = [e for _, e in updates(events_since(
            emu, "ModelStack-resnet152", None))][-3:]
        order = [(x, s) for x, _, s in canary_create]
        (group,) = {x for x, _ in order if x.startswith("ModelGpuGroupASG")}
        assert order.index((group, "CREATE_COMPLETE")) < order.index((LISTENER, "UPDATE_IN_PROGRESS"))
        assert {x for x, _, _ in canary_split} == {LISTENER}  # the split alone: nothing else changes
        order = [(x, s) for x, _, s in promotion]
        moved = order.index((LISTENER, "UPDATE_COMPLETE"))
        gone = [i for i, (x, s) in enumerate(order) if x.startswith("ModelLambda") and s == "DELETE_COMPLETE"]
        assert gone and min(gone) > moved
    # WHEN torn down: make destroy MODEL=resnet152 REHEARSE=1
    out = _ok(user.make("resnet152", "--rehearse", "--destroy"))  # not asked: it is the emulator's
    assert "turned off the deletion protection of the endpoint" in out and "ModelStack-resnet152: deleted" in out
    assert re.search(r"kept: the load balancer's access-log bucket modelstack-resnet\S+ \(retained", out)
    assert "NetworkStack (VPC, NAT gateway: about $37 a month) now serves no model" in out
    with account() as emu:
        assert template(emu, "ModelStack-resnet152") == {}


def test_a_failed_move_rolls_back_then_the_same_move_succeeds(user: User) -> None:
    _ok(user.make("resnet152", "--rehearse", "--fresh"))
    _ok(user.crossover("switch", "resnet152", "cpu"))
    # WHEN the cpu fleet never becomes ready (its instances never signal)
    code, out = user.make("resnet152", "--rehearse", "--fail", "cpu")
    # THEN the update fails on the group, rolls back, the listener still forwards to lambda, and one line says so
    assert code == 1
    assert re.search(r"CREATE_FAILED\s+\| AWS::AutoScaling::AutoScalingGroup\s+\| Model/Cpu/Group/ASG", out)
    assert "Failed to receive 2 resource signal(s) within the specified duration" in out  # scaling.min: 2
    assert "update 1 of 1 (UPDATE_ROLLBACK_COMPLETE" in out
    assert "\nthe move to cpu failed and was rolled back; lambda still serves\n" in out
    assert re.search(r"backends\s+│ lambda\s+│ yes", out)  # the checks read what the stack still is
    with account() as emu:
        assert split(emu, "ModelStack-resnet152") == [("lambda", 100.0)]
        assert not [x for x in template(emu, "ModelStack-resnet152") if x.startswith("ModelCpu")]
    # WHEN the same move is rehearsed again, the backend healthy THEN it goes through from the rolled-back stack
    out = _ok(user.make("resnet152", "--rehearse"))
    assert "yes  listener changed after the cpu group was ready" in out
    assert "yes  lambda removed after the listener moved" in out and "listener: cpu 100%" in out


def test_the_pipeline_loop_and_a_pipeline_switch(user: User, tmp_path: Path) -> None:
    pipeline = (ROOT / "models" / "efficientnet_lite0.yaml").read_text().replace(
        "name: efficientnet-lite0", "name: lite-pipe").replace("service: realtime", "service: pipeline").replace(
        "../build/models/", f"{ROOT}/build/models/").replace("scaling: {min: 1, max: 4}", "scaling: {min: 0, max: 4}")
    (user.models / "lite-pipe.yaml").write_text(pipeline + "inputs: {s3: [team-images/in/]}\n")
    _ok(user.make("lite-pipe", "--rehearse", "--fresh"))
    # WHEN a local photo is enqueued, the queue worked here and the results collected, all against the rehearsal
    photo = tmp_path / "cat.jpg"
    from crossover.cost.bench import photo as sample

    photo.write_bytes(sample())
    assert "1 messages queued" in _ok(user.crossover("enqueue", "lite-pipe", str(photo), "--rehearsal"))
    assert "processed 1 messages, 0 failed" in _ok(user.crossover("work", "lite-pipe"))
    out = _ok(user.crossover("results", "lite-pipe", "--rehearsal", "--out", str(tmp_path / "got")))
    # THEN the image went through the emulator's S3 and its result came back
    assert "1 results and 0 errors" in out
    (result,) = (tmp_path / "got" / "results").iterdir()
    assert result.name.startswith("cat.jpg-") and '"model": "lite-pipe"' in result.read_text()
    # WHEN the pipeline moves to cpu THEN its queue and results bucket stay, and lambda goes once cpu is ready
    with account() as emu:
        before = {k: v["Type"] for k, v in template(emu, "ModelStack-lite-pipe").items()
                  if v["Type"] in ("AWS::SQS::Queue", "AWS::S3::Bucket")}
    _ok(user.crossover("switch", "lite-pipe", "cpu"))
    out = _ok(user.make("lite-pipe", "--rehearse"))
    assert "yes  lambda removed after the new backend was ready" in out
    with account() as emu:
        after = template(emu, "ModelStack-lite-pipe")
    assert all(k in after for k in before) and len(before) == 3  # queue, dead letters, results


def test_a_teams_own_app_is_rehearsed_with_the_same_checks(user: User) -> None:
    # GIVEN examples/existing_vpc: the team's stack, VPC and load balancer, a Lambda model and a GPU model under two
    # path prefixes of it, configs in Python
    code, out = user.crossover("rehearse", "TeamInference", "--app", f"{sys.executable} app.py",
                               "--dir", str(ROOT / "examples" / "existing_vpc"), "--fresh")
    # THEN it deploys into the persisted emulator and reads back both services and their backends
    assert code == 0, out[-4000:]
    assert "TeamInference: CREATE_COMPLETE" in out
    assert "yes  listener rule created after the lambda alias was ready" in out
    assert "yes  listener rule created after the gpu group was ready" in out
    assert re.search(r"backends\s+│ gpu, lambda\s+│ yes", out)
    assert len(re.findall(r"│ load balancer\s+│ internal", out)) == 1  # the team's one, both services on it
    # WHEN the team moves its tagger from lambda to cpu (one field of its config) and rehearses again
    moved = user.models.parent / "team-app"
    shutil.copytree(ROOT / "examples" / "existing_vpc", moved, ignore=shutil.ignore_patterns("cdk.out"))
    app = moved / "app.py"
    app.write_text(app.read_text().replace('name="tagger", backend="lambda"', 'name="tagger", backend="cpu"', 1))
    code, out = user.crossover("rehearse", "TeamInference", "--app", f"{sys.executable} app.py", "--dir", str(moved))
    # THEN on the shared load balancer the tagger's rule moved only once cpu was ready, and lambda went after it
    assert code == 0, out[-4000:]
    assert "yes  listener rule changed after the cpu group was ready" in out
    assert "yes  lambda removed after the listener moved" in out
    assert re.search(r"backends\s+│ cpu, gpu\s+│ yes", out)
