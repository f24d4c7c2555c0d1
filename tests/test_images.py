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
from tests.conftest import Synth

SERVING, AMI = ROOT / "crossover_serving", ROOT / "crossover" / "ami"

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


def test_runtime_component_pins_match_serving_requirements() -> None:
    pins = {name: version for requirements in ("requirements.txt", "requirements-server.txt")
            for name, version in re.findall(r"^([a-z0-9-]+)==([0-9.]+)", (SERVING / requirements).read_text(),
                                            re.M)}
    baked = "\n".join(c for p in load(AMI / "components" / "crossover-serving-runtime.yaml")["phases"]
                      for s in p["steps"] for c in s.get("inputs", {}).get("commands", []))
    found = dict(re.findall(r"([a-z0-9-]+)==([0-9.]+)", baked))
    # ONNX Runtime comes in through the Runtime parameter, in the build each image runs (tested below)
    assert '"{{ Runtime }}"' in baked and found == {k: v for k, v in pins.items() if k != "onnxruntime"}


@pytest.mark.parametrize(("backend", "runtime"), [("gpu", "onnxruntime-gpu==1.31.1"), ("cpu", "onnxruntime==1.32.0")])
def test_each_image_bakes_the_onnx_runtime_build_its_fleet_runs(synth: Synth, backend: str, runtime: str) -> None:
    pinned = (SERVING / ("requirements-gpu.txt" if backend == "gpu" else "requirements.txt")).read_text()
    assert runtime in [line.split()[0] for line in pinned.splitlines() if line and not line.startswith("#")]
    (recipe,) = [r["Properties"] for r in synth.raw[f"ImageStack-{backend}"]["Resources"].values()
                 if r["Type"] == "AWS::ImageBuilder::ImageRecipe"]
    parameters = [p for c in recipe["Components"] for p in c.get("Parameters", [])]
    assert parameters == [{"Name": "Runtime", "Value": [runtime]}]


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
