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
                                      "gpu-x86_64"}


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


def test_instances_install_the_lock_of_their_platform_and_flavour() -> None:
    bootstrap = (ROOT / "crossover" / "ami" / "bootstrap.sh").read_text()
    assert "--require-hashes" in bootstrap and '"$serving/locks/$flavour-$(uname -m).txt"' in bootstrap
    for flavour, machines in (("instance", ("x86_64", "aarch64")), ("gpu", ("x86_64",))):
        for machine in machines:  # every lock the script can name exists
            assert (SERVING / "locks" / f"{flavour}-{machine}.txt").is_file()
