"""What the deploy publishes for the serving runtime, built on this machine without Docker.

- The Lambda bundle: crossover_serving/ plus its locked dependencies installed for the Lambda platform.
- The instance runtime bundle: every wheel of an instance lock for its platform, the lock itself and
  install.sh (crossover/ami/install-runtime.sh), which installs them with no package index. bootstrap.sh
  runs it at boot, the image pipeline (ImageStack) when it bakes: both install the same set.

Both come from the hashed locks in crossover_serving/locks/ (every transitive dependency; scripts/lock.py)
through a cache keyed by the lock's content, so only the first build touches the network; each bundle after
that is hard links. Run ``python -m crossover.bundle`` to warm the cache ahead of a synth (``make`` does); it
also installs what Lambda's runtime itself provides, with which the tests run the real bundle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from crossover import PROJECT

SERVING = Path(str(files("crossover_serving")))
LOCKS = SERVING / "locks"  # every transitive dependency, with its hashes, per platform (scripts/lock.py)
INSTALL = Path(str(files("crossover") / "ami" / "install-runtime.sh"))
RUNTIME_REQUIREMENTS = PROJECT / "requirements-lambda-runtime.txt"  # the checkout's tests only
# Outside the installed package and the team's project: CROSSOVER_CACHE (make keeps it in the checkout's
# .cache/), else the user's cache folder.
CACHE = Path(os.environ.get("CROSSOVER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "crossover")
PYTHON_VERSION = "3.13"  # the Lambda runtime: the newest that these machines can run (tests/test_lambda_bundle.py)
INSTANCE_PYTHON = "3.11"  # what bootstrap.sh and the image pipeline install from Amazon Linux 2023's packages
NEURON_PYTHON = "3.12"  # the Neuron DLAMI's PyTorch environment (install.sh refuses any other)
# Instance locks: name -> the Python its wheels are for. The flavour names the ONNX Runtime build (gpu: CUDA;
# neuron: none, the DLAMI's torch-neuronx runs the model), the suffix the machine (`uname -m`).
INSTANCE_LOCKS = {"instance-x86_64": INSTANCE_PYTHON, "instance-aarch64": INSTANCE_PYTHON,
                  "gpu-x86_64": INSTANCE_PYTHON, "neuron-x86_64": NEURON_PYTHON}
FLAVOURS = {"onnxruntime": "instance", "onnxruntime-gpu": "gpu", "neuron": "neuron"}  # fleet runtime -> flavour
PLATFORMS = {  # manylinux tags that glibc 2.34 (Amazon Linux 2023: Lambda's and the instances') runs
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                "manylinux2014_aarch64"],
}
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's architecture names -> machine names
LAYOUT = b"no-bin-no-record"  # part of the Lambda cache key: caches built before that change are rebuilt
# What the code bundles leave out of crossover_serving/: the locks travel as installed packages or wheels instead.
SERVING_EXCLUDE = ["__pycache__", "*.pyc", ".*", "requirements*.txt", "locks"]


class BundleError(Exception):
    pass


def _pip(*args: str, what: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise BundleError(f"pip could not fetch {what}:\n{result.stderr.strip()}")


def _platform(python: str, machine: str) -> list[str]:
    return ["--implementation", "cp", "--python-version", python, "--only-binary=:all:",
            *[arg for tag in PLATFORMS[machine] for arg in ("--platform", tag)]]


def _cached(target: Path, fill: Callable[[Path], None]) -> Path:
    """``target``, filled once by ``fill(staging)``: files from a failed build are never taken for a cache."""
    if target.is_dir():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    fill(staging)
    staging.rename(target)
    return target


def _installed(requirements: Path, architecture: str, name: str) -> Path:
    """``requirements`` installed for the Lambda platform into a cache folder keyed by their hash."""
    digest = hashlib.sha256(requirements.read_bytes() + LAYOUT).hexdigest()[:16]

    def fill(staging: Path) -> None:
        print(f"crossover: installing {requirements.name} for Lambda {architecture} (first time only) ...",
              file=sys.stderr)
        _pip("install", "--quiet", "--no-compile", "--target", str(staging),
             *_platform(PYTHON_VERSION, MACHINES[architecture]), "-r", str(requirements),
             what=f"{requirements.name} for Lambda")
        # Console scripts (bin/) start with this machine's interpreter path and RECORD holds their
        # checksums: neither is used in Lambda, and both would make the code asset (and so the function's
        # version, hence a CodeDeploy traffic shift) differ between two checkouts of the same commit.
        shutil.rmtree(staging / "bin", ignore_errors=True)
        for record in staging.glob("*.dist-info/RECORD"):
            record.unlink()

    return _cached(CACHE / "lambda-deps" / f"{name}{architecture}-py{PYTHON_VERSION}-{digest}", fill)


def dependencies(architecture: str) -> Path:
    """The folder of installed dependencies for Lambda on ``architecture`` (x86_64 | arm64), built once per lock:
    pip checks every file against the lock's hashes (a requirement with --hash turns hash-checking on for all)."""
    return _installed(LOCKS / f"lambda-{architecture}.txt", architecture, "")


def runtime(architecture: str = "x86_64") -> Path:
    """What Lambda's runtime provides beside the function (its interface client, boto3), for running the
    real bundle here as Lambda would (tests/test_lambda_bundle.py)."""
    return _installed(RUNTIME_REQUIREMENTS, architecture, "runtime-")


def instance_lock(runtime: str, machine: str) -> str:
    """The lock that an instance running ``runtime`` (a fleet's: onnxruntime | onnxruntime-gpu | neuron) on
    ``machine`` (x86_64 | aarch64) installs."""
    lock = f"{FLAVOURS[runtime]}-{machine}"
    if lock not in INSTANCE_LOCKS:
        raise BundleError(f"crossover ships no {FLAVOURS[runtime]} runtime for {machine} instances "
                          f"(locks: {', '.join(INSTANCE_LOCKS)})")
    return lock


def runtime_digest(lock: str) -> str:
    """What identifies an instance runtime bundle: its asset hash, and what install.sh stamps into the
    environment it installs (bootstrap.sh skips the install when a baked image holds this one)."""
    return hashlib.sha256((LOCKS / f"{lock}.txt").read_bytes() + INSTALL.read_bytes()).hexdigest()


def wheels(lock: str) -> Path:
    """The instance runtime bundle for ``lock``: its wheels, ``requirements.txt`` (the lock) and ``install.sh``,
    in a cache folder keyed by :func:`runtime_digest`. pip checks every wheel against the lock's hashes."""
    requirements = LOCKS / f"{lock}.txt"

    def fill(staging: Path) -> None:
        print(f"crossover: downloading the {lock} runtime's wheels (first time only) ...", file=sys.stderr)
        _pip("download", "--quiet", "--no-deps", "--require-hashes", "--dest", str(staging),
             *_platform(INSTANCE_LOCKS[lock], lock.split("-")[1]), "-r", str(requirements), what=f"the {lock} lock")
        shutil.copyfile(requirements, staging / "requirements.txt")
        shutil.copyfile(INSTALL, staging / "install.sh")
        (staging / "digest").write_text(runtime_digest(lock) + "\n")

    return _cached(CACHE / "instance-runtime" / f"{lock}-{runtime_digest(lock)[:16]}", fill)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link(source: Path, output_dir: Path) -> None:
    """``source``'s files into ``output_dir``, as hard links where the file system allows (no copy of the bytes)."""
    shutil.copytree(source, output_dir, copy_function=_link_or_copy, dirs_exist_ok=True)


def build(output_dir: Path, architecture: str) -> None:
    """Write the function's code into ``output_dir``: dependencies at the top, ``crossover_serving/`` beside them."""
    link(dependencies(architecture), output_dir)
    shutil.copytree(SERVING, output_dir / "crossover_serving", ignore=shutil.ignore_patterns(*SERVING_EXCLUDE),
                    dirs_exist_ok=True)


def warm() -> None:
    """Fill the cache for every bundle crossover builds, so that synths after this stay offline."""
    for architecture in MACHINES:
        print(dependencies(architecture))
    print(runtime())
    for lock in INSTANCE_LOCKS:
        print(wheels(lock))


if __name__ == "__main__":
    warm()
