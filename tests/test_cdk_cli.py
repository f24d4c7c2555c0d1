"""The real pinned CDK CLI synthesizes offline, and cfn-lint finds no error in what it writes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from crossover import bundle
from tests import ROOT
from tests.lint import cfn_lint

pytestmark = pytest.mark.slow
NO_AWS = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("CDK_")}


@pytest.fixture(scope="module")
def cdk_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cdk.out"
    env = {**NO_AWS, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
           "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run(["npx", "cdk", "synth", "--quiet", "--output", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_cli_writes_every_stack_without_lookups(cdk_out: Path) -> None:
    names = {p.name for p in cdk_out.glob("*.template.json")}
    assert {"NetworkStack.template.json", "ModelStack-resnet152.template.json"} <= names
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    assert not manifest.get("missing"), "synth needed a context lookup"
    template = json.loads((cdk_out / "ModelStack-resnet152.template.json").read_text())
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::Lambda::Function"} <= kinds


def test_cfn_lint_reports_no_error(cdk_out: Path) -> None:
    cfn_lint(sorted(cdk_out.glob("*.template.json")))  # exit code and findings: W3005 at most


def test_function_names_its_staged_code_for_local_tools(cdk_out: Path) -> None:
    # The CLI asks for asset metadata; SAM's local invoke finds a function's code by it.
    template = json.loads((cdk_out / "ModelStack-resnet152.template.json").read_text())
    (function,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    metadata = function["Metadata"]
    assert (metadata["aws:asset:property"], metadata["aws:asset:is-bundled"]) == ("Code", True)
    staged = metadata["aws:asset:path"]
    assert function["Properties"]["Code"]["S3Key"] == f"{staged.removeprefix('asset.')}.zip"
    assert (cdk_out / staged).is_dir()


def test_lambda_bundle_holds_serving_and_its_dependencies_within_lambda_limits(cdk_out: Path) -> None:
    template = json.loads((cdk_out / "ModelStack-resnet152.template.json").read_text())
    (function,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    asset = cdk_out / f"asset.{function['Metadata']['aws:asset:path'].removeprefix('asset.')}"
    assert (asset / "crossover_serving" / "lambda_handler.py").is_file()
    assert (asset / "crossover_serving" / "labels" / "imagenet.txt").is_file()
    assert (asset / "onnxruntime").is_dir() and (asset / "PIL").is_dir() and (asset / "numpy").is_dir()
    assert not list(asset.glob("crossover_serving/**/__pycache__"))
    # Nothing that depends on where the checkout is: the same commit must give the same asset (and so
    # the same Lambda version) everywhere, or every deploy from a new clone would shift traffic.
    assert not (asset / "bin").exists() and not list(asset.glob("*.dist-info/RECORD"))
    assert not [f for f in asset.rglob("*") if f.is_file() and str(ROOT).encode() in f.read_bytes()]
    # The Lambda platform's wheels, not this machine's: CPython 3.13 extension modules.
    assert list(asset.glob("numpy/_core/_multiarray_umath.cpython-313-x86_64-linux-gnu.so"))
    size = sum(f.stat().st_size for f in asset.rglob("*") if f.is_file())
    assert size < 250 * 1024 * 1024, f"bundle is {size / 2**20:.0f} MiB; Lambda allows 250 MiB unzipped"
    assert bundle.PYTHON_VERSION == "3.13"
