"""The serving runtime's locks agree with its requirements, and everything that installs it uses them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crossover import bundle
from tests import ROOT

SERVING = ROOT / "crossover_serving"
LOCKS = sorted((SERVING / "locks").glob("*.txt"))
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)")


def pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line in a requirements file and those it includes (-r)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("-r "):
            found |= pins(path.parent / line.split()[1])
        elif match := PIN.match(line):
            found[match[1].lower()] = match[2]
    return found


def test_every_platform_crossover_ships_has_a_lock() -> None:
    assert {p.stem for p in LOCKS} == {"lambda-x86_64", "lambda-arm64", "instance-x86_64", "instance-aarch64",
                                      "gpu-x86_64", "neuron-x86_64"}


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.stem)
def test_a_lock_holds_every_pin_of_its_requirements_at_the_same_version_with_hashes(lock: Path) -> None:
    # The header names the requirements file it was resolved from (scripts/lock.py writes it).
    source = re.search(r"^# [\w-]+: (requirements[\w-]*\.txt) ", lock.read_text(), re.M)
    assert source, f"{lock.name} has no header naming its requirements file: regenerate it with `make lock`"
    wanted = pins(SERVING / source[1])
    if lock.stem.startswith("gpu-"):  # ONNX Runtime's CUDA build, pinned on its own, replaces the CPU build
        wanted.pop("onnxruntime")
        wanted |= pins(SERVING / "requirements-gpu.txt")
    locked = pins(lock)
    if lock.stem.startswith("neuron-"):  # the Neuron DLAMI's environment keeps its own numpy; torch runs the model
        wanted.pop("onnxruntime")
        wanted.pop("numpy")
        assert not {"onnxruntime", "numpy"} & set(locked)
    differ = {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version}
    assert differ == {}, f"{lock.name} disagrees with {source[1]} (requirement, lock): run `make lock`"
    # Every package in it, transitive ones too, carries at least one hash (pip then checks them all).
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().split("\n", 1)[1].strip())
    assert entries and all("--hash=sha256:" in entry for entry in entries), lock.name


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lambda_bundle_installs_exactly_its_lock() -> None:
    # The dependencies every Lambda bundle is built from (the warm cache make setup filled)
    folder = bundle.dependencies("x86_64")
    installed = dict(d.name.removesuffix(".dist-info").rsplit("-", 1) for d in folder.glob("*.dist-info"))
    lock = pins(SERVING / "locks" / "lambda-x86_64.txt")
    assert {normal(n): v for n, v in installed.items()} == {normal(n): v for n, v in lock.items()}


def test_instances_install_the_lock_of_their_platform_and_flavour_with_no_index() -> None:
    for runtime in bundle.FLAVOURS:  # every fleet runtime on its machines names a lock that exists
        machines = ("x86_64", "aarch64") if runtime == "onnxruntime" else ("x86_64",)
        for machine in machines:
            assert (SERVING / "locks" / f"{bundle.instance_lock(runtime, machine)}.txt").is_file()
    with pytest.raises(bundle.BundleError, match="no gpu runtime for aarch64"):
        bundle.instance_lock("onnxruntime-gpu", "aarch64")
    install = (ROOT / "crossover" / "ami" / "install-runtime.sh").read_text()
    assert "--no-index" in install and "--require-hashes" in install
    bootstrap = (ROOT / "crossover" / "ami" / "bootstrap.sh").read_text()
    assert 'bash "$home/runtime/install.sh" "$venv"' in bootstrap and "pip install" not in bootstrap
