"""SnapStart (`lambda.snapstart`): the function's versions start from a snapshot taken after init, and init
leaves nothing in that snapshot that a restore would make stale: the model is loaded, no SDK client or
connection survives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from crossover.config import ConfigError, load
from tests import ROOT
from tests.conftest import variant

EXAMPLE = ROOT / "models" / "resnet152.yaml"


def test_snapstart_applies_to_the_published_versions_the_live_alias_names(tmp_path: Path) -> None:
    from crossover.app import build, new_app

    loaded = load(variant(EXAMPLE, tmp_path, "snap", **{"lambda": "{memory_mib: 3008, snapstart: true}"}))
    app = new_app(outdir=str(tmp_path / "out"))
    build(app, [loaded])
    stack = app.synth().get_stack_by_name("ModelStack-snap")
    resources = stack.template["Resources"]
    (function,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert function["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    (alias,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Alias"]
    (version_id,) = [k for k, r in resources.items() if r["Type"] == "AWS::Lambda::Version"]
    assert alias["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    assert not [m for m in stack.messages if "snapStartRequirePublish" in str(m.entry.data)]


def test_snapstart_and_provisioned_concurrency_are_one_or_the_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="snapstart and provisioned_concurrency: Lambda does not combine them"):
        load(variant(EXAMPLE, tmp_path, "both", **{"lambda": "{snapstart: true, provisioned_concurrency: 2}"}))


def test_init_loads_the_model_and_keeps_no_sdk_client(aws: str, tmp_path: Path) -> None:
    # GIVEN the example model in S3 (the emulator), as a deployed function reads it during init
    bucket = f"snap-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(ROOT / "build" / "models" / "efficientnet_lite0.onnx"), bucket, "model.onnx")
    spec = {"name": "snap", "artifact": f"s3://{bucket}/model.onnx", "labels": "imagenet",
            "input": {"size": 224, "resize": 256, "mean": [0.498, 0.498, 0.498], "std": [0.502, 0.502, 0.502]}}
    # WHEN the handler module initialises in a fresh interpreter, as Lambda's init phase runs it
    probe = ("import gc, botocore.client, crossover_serving.lambda_handler as h; gc.collect(); "
             "print(h.model.cache_info().currsize, h._s3.cache_info().currsize, "
             "sum(isinstance(o, botocore.client.BaseClient) for o in gc.get_objects()))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "CROSSOVER_SPEC": json.dumps(spec)})
    # THEN the model is loaded (in the snapshot), and no S3 client or its connections outlive init
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "0", "0"]
