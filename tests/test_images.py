"""crossover/ami/: the Image Builder component documents are well-formed, and ImageStack-* synthesizes them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from crossover.stacks.image import component_files
from tests import ROOT
from tests.conftest import Synth, stack_of
from tests.test_boot import user_data

AMI = ROOT / "crossover" / "ami"

# Image Builder's step actions (component document reference); anything else is a typo.
ACTIONS = {"ExecuteBash", "ExecuteBinary", "ExecuteDocument", "ExecutePowerShell", "UpdateOS", "Reboot",
           "S3Download", "S3Upload", "WebDownload", "SetFileEncoding", "SetFileOwner", "SetFolderOwner",
           "SetFilePermissions", "SetFolderPermissions", "SetRegistry", "CreateFile", "CreateFolder",
           "CreateSymlink", "DeleteFile", "DeleteFolder", "ListFiles", "MoveFile", "MoveFolder", "CopyFile",
           "CopyFolder", "ReadFile", "AppendFile", "InstallMSI", "UninstallMSI", "Assert", "InspectorCisScan"}
PHASES = {"build", "validate", "test"}


def load(path: Path) -> dict[str, Any]:
    data = YAML(typ="safe", pure=True).load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("path", component_files(), ids=lambda p: p.name)
def test_component_document_is_well_formed(path: Path, tmp_path: Path) -> None:
    doc = load(path)
    assert doc["name"] == path.stem and doc["description"]
    assert str(doc["schemaVersion"]) == "1.0"
    phases = [p["name"] for p in doc["phases"]]
    assert set(phases) <= PHASES and len(phases) == len(set(phases)) and "build" in phases
    declared = {next(iter(p)) for p in doc.get("parameters", [])}
    for phase in doc["phases"]:
        names = [step["name"] for step in phase["steps"]]
        assert len(names) == len(set(names)), f"duplicate step names in {phase['name']}"
        for step in phase["steps"]:
            assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", step["name"]), step["name"]
            assert step["action"] in ACTIONS, f"unknown action {step['action']}"
            if step["action"] == "ExecuteBash":
                commands = step["inputs"]["commands"]
                assert commands and all(isinstance(c, str) for c in commands)
                used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", "\n".join(commands)))
                assert used <= declared, f"undeclared parameters {used - declared}"
                script = tmp_path / f"{step['name']}.sh"
                script.write_text("\n".join(commands) + "\n")
                assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_the_runtime_component_installs_the_bundle_with_its_own_install_script() -> None:
    commands = [c for p in load(AMI / "components" / "crossover-serving-runtime.yaml")["phases"] for s in p["steps"]
                for c in s.get("inputs", {}).get("commands", [])]
    # No pins of its own and no index: what fleets install at boot (tests/test_boot.py runs that script)
    assert not [c for c in commands if "pip install" in c or "==" in c]
    assert 'aws s3 cp --only-show-errors "{{ RuntimeBundle }}" /tmp/crossover-runtime.zip' in commands
    assert "bash /tmp/crossover-runtime/install.sh /opt/crossover/venv" in commands


def runtime_bundle_key(value: object) -> str:
    """The S3 object key of a ``s3://<assets bucket>/<key>`` string that CloudFormation joins."""
    joined = "".join(p if isinstance(p, str) else "<token>" for p in value["Fn::Join"][1])  # type: ignore[index]
    match = re.fullmatch(r"s3://<token>/(\w+\.zip)", joined)
    assert match, joined
    return match[1]


@pytest.mark.parametrize("backend", ["gpu", "cpu"])
def test_each_image_bakes_the_very_runtime_bundle_its_fleet_installs(synth: Synth, backend: str) -> None:
    (recipe,) = [r["Properties"] for r in synth.raw[f"ImageStack-{backend}"]["Resources"].values()
                 if r["Type"] == "AWS::ImageBuilder::ImageRecipe"]
    (parameter,) = [p for c in recipe["Components"] for p in c.get("Parameters", [])]
    assert parameter["Name"] == "RuntimeBundle"
    baked = runtime_bundle_key(parameter["Value"][0])
    script = user_data(synth.raw[stack_of("resnet152", backend)])
    booted = re.search(r"^export CROSSOVER_RUNTIME_BUNDLE=s3://<token>/(\w+\.zip)$", script, re.M)
    assert booted and booted[1] == baked  # one asset: the same lock, wheels and install.sh


@pytest.mark.parametrize("backend", ["gpu", "cpu"])
def test_image_stack_builds_the_components_into_an_encrypted_imdsv2_pipeline(synth: Synth, backend: str) -> None:
    template = synth.raw[f"ImageStack-{backend}"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in template["Resources"].values():
        by_type.setdefault(resource["Type"], []).append(resource["Properties"])
    assert len(by_type["AWS::ImageBuilder::Component"]) == len(component_files())
    (recipe,) = by_type["AWS::ImageBuilder::ImageRecipe"]
    assert len(recipe["Components"]) == len(component_files())
    assert recipe["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    (infra,) = by_type["AWS::ImageBuilder::InfrastructureConfiguration"]
    assert infra["InstanceMetadataOptions"] == {"HttpPutResponseHopLimit": 1, "HttpTokens": "required"}
    (pipeline,) = by_type["AWS::ImageBuilder::ImagePipeline"]
    assert pipeline["ImageTestsConfiguration"]["ImageTestsEnabled"] is True


def test_an_image_stack_is_built_for_the_fleet_kinds_in_use_or_asked_for() -> None:
    from crossover.app import IMAGES_CONTEXT, build, new_app
    from crossover.config import load_all, model_files
    from crossover.errors import UserError

    def stacks(images: str | None = None) -> list[str]:
        app = new_app()
        if images is not None:
            app.node.set_context(IMAGES_CONTEXT, images)
        build(app, load_all(model_files(ROOT / "models")))
        return sorted(child.node.id for child in app.node.children if child.node.id.startswith("ImageStack-"))

    # GIVEN the examples, every one on lambda THEN no image pipeline is synthesized (nothing would boot from it)
    assert stacks() == []
    # AND asked for (cdk deploy ImageStack-gpu -c crossover:images=gpu, to bake before a move) it is
    assert stacks("gpu") == ["ImageStack-gpu"] and stacks("gpu, cpu") == ["ImageStack-cpu", "ImageStack-gpu"]
    with pytest.raises(UserError, match="expected kinds of gpu, cpu; got tpu"):
        stacks("tpu")
