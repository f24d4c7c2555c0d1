"""The kit as a team gets it: a wheel installed into a fresh virtual environment outside the checkout, and the
example team app (examples/existing_vpc) synthesized from there with the real CDK CLI, cdk-nag and cfn-lint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ROOT
from tests.lint import cfn_lint

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "existing_vpc"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with only the wheel built from this checkout (and what it declares it needs)."""
    work = tmp_path_factory.mktemp("package")
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--wheel-dir", str(dist), str(ROOT)], check=True, capture_output=True)
    (wheel,) = dist.glob("crossover_cdk-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # The versions the checkout pins (its lock), so pip takes them from its cache instead of resolving anew.
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout
    (work / "constraints.txt").write_text(frozen)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-c",
                    str(work / "constraints.txt"), str(wheel)], check=True, capture_output=True)
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Nothing from the checkout on the path but the pinned Node and CDK CLI; the Lambda dependency cache is shared.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(ROOT / "node_modules" / ".bin"), "/usr/bin", "/bin"])
    env.setdefault("CROSSOVER_CACHE", str(ROOT / ".cache"))
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_declares_its_dependencies_and_ships_its_data(installed: Path, tmp_path: Path) -> None:
    code = """
import importlib.metadata, importlib.resources, json, re, crossover
print(importlib.metadata.metadata("crossover-cdk")["Name"])
data = [("crossover", "ami/bootstrap.sh"), ("crossover", "ami/components/crossover-hardening.yaml"),
        ("crossover", "cost/prices.yaml"), ("crossover_serving", "requirements.txt"),
        ("crossover_serving", "labels/imagenet.txt")]
print(crossover.__file__)
required = [re.split(r"[<>=\\[ ;]", r)[0] for r in importlib.metadata.requires("crossover-cdk") if "extra ==" not in r]
print(json.dumps(required))
print(all(importlib.resources.files(package).joinpath(name).is_file() for package, name in data))
"""
    result = run(installed, "python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # The distribution has a name of its own ("crossover" on PyPI is an unrelated project); the import name stays
    name, location, requires, data = result.stdout.splitlines()
    assert name == "crossover-cdk"
    assert location.startswith(str(installed)), "crossover was imported from outside the virtual environment"
    assert {"aws-cdk-lib", "cdk-nag", "constructs", "pydantic"} <= set(json.loads(requires))
    assert data == "True"
    site = next((installed / "lib").glob("python3*/site-packages"))
    assert not (site / "serving").exists() and (site / "crossover_serving").is_dir()
    # AND the runtime package imports nothing of the CDK side
    result = run(installed, "python", "-c", "import sys, crossover_serving.names, crossover_serving.spec; "
                 "print([m for m in sys.modules if m.startswith(('aws_cdk', 'crossover.'))])", cwd=tmp_path)
    assert result.stdout.strip() == "[]", result.stderr


def test_the_example_team_app_synthesizes_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    # GIVEN the example app copied away from the checkout
    app = tmp_path / "team-app"
    shutil.copytree(EXAMPLE, app)
    # WHEN the pinned CDK CLI synthesizes it with the wheel's Python (cdk-nag packs on: a finding fails it)
    result = run(installed, str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "--no-notices",
                 "--app", f"{installed / 'bin' / 'python'} app.py", "--output", str(tmp_path / "out"), cwd=app)
    assert result.returncode == 0, result.stdout + result.stderr
    template_path = tmp_path / "out" / "TeamInference.template.json"
    template = json.loads(template_path.read_text())
    # THEN both models are in the team's stack and VPC, on the team's one load balancer, each under its prefix
    assert {"TaggerEndpoint", "DetectorEndpoint"} <= set(template["Outputs"])
    resources = template["Resources"]
    kinds = [r["Type"] for r in resources.values()]
    assert kinds.count("AWS::ElasticLoadBalancingV2::LoadBalancer") == 1 and kinds.count("AWS::EC2::VPC") == 1
    assert "AWS::Lambda::Function" in kinds and "AWS::AutoScaling::AutoScalingGroup" in kinds
    (listener,) = [k for k, r in resources.items() if r["Type"] == "AWS::ElasticLoadBalancingV2::Listener"]
    rules = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"]
    assert all(rule["ListenerArn"] == {"Ref": listener} for rule in rules)
    forwards = {c["PathPatternConfig"]["Values"][0] for rule in rules for c in rule["Conditions"]
                if rule["Actions"][0]["Type"] == "forward" and len(rule["Conditions"]) == 1}
    assert forwards == {"/tagger", "/detector"}
    assert template["Outputs"]["DetectorEndpoint"]["Value"]["Fn::Join"][1][-1] == "/detector"
    # AND the team's grant reached both backends' roles (the Lambda function's and the instances')
    labels = next(k for k in resources if k.startswith("Labels") and resources[k]["Type"] == "AWS::S3::Bucket")
    granted = [k for k, r in resources.items() if r["Type"] == "AWS::IAM::Policy" and labels in json.dumps(r)]
    assert sorted(k.split("Role")[0] for k in granted) == ["DetectorGpu", "TaggerLambda"]
    # AND the team's own alarm watches the detector's serving latency (p99, milliseconds)
    slow = next(r["Properties"] for k, r in resources.items() if k.startswith("DetectorSlow"))
    assert (slow["MetricName"], slow["ExtendedStatistic"]) == ("LatencyMs", "p99")
    assert {"Name": "Model", "Value": "detector"} in slow["Dimensions"]
    # AND cfn-lint finds no error in it (its exit code says so too), nor any warning but W3005
    cfn_lint([template_path])
