"""The Lambda bundle: crossover_serving/ plus its pinned dependencies for the Lambda platform, built without Docker.

pip downloads manylinux wheels for the function's Python and architecture into a cache keyed by the
lock (crossover_serving/locks/lambda-<architecture>.txt: every transitive dependency, hashed), so only the
first build touches the network; each bundle after that is hard links.
Run ``python -m crossover.bundle [x86_64|arm64 ...]`` to warm the cache ahead of a synth (``make`` does);
it also installs what Lambda's runtime itself provides, with which the tests run the real bundle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

from crossover import PROJECT

SERVING = Path(str(files("crossover_serving")))
LOCKS = SERVING / "locks"  # every transitive dependency, with its hashes, per platform (scripts/lock.py)
RUNTIME_REQUIREMENTS = PROJECT / "requirements-lambda-runtime.txt"  # the checkout's tests only
# Outside the installed package and the team's project: CROSSOVER_CACHE (make keeps it in the checkout's
# .cache/), else the user's cache folder.
CACHE = Path(os.environ.get("CROSSOVER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "crossover") / "lambda-deps"
PYTHON_VERSION = "3.13"  # the Lambda runtime: the newest that these machines can run (tests/test_lambda_bundle.py)
PLATFORMS = {
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "arm64": ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
}
LAYOUT = b"no-bin-no-record"  # part of the cache key: caches built before that change are rebuilt
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "requirements*.txt", "locks")


class BundleError(Exception):
    pass


def _installed(requirements: Path, architecture: str, name: str) -> Path:
    """``requirements`` installed for the Lambda platform into a cache folder keyed by their hash."""
    digest = hashlib.sha256(requirements.read_bytes() + LAYOUT).hexdigest()[:16]
    target = CACHE / f"{name}{architecture}-py{PYTHON_VERSION}-{digest}"
    if target.is_dir():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    platforms = [arg for p in PLATFORMS[architecture] for arg in ("--platform", p)]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
               "--target", str(staging), "--implementation", "cp", "--python-version", PYTHON_VERSION,
               "--only-binary=:all:", *platforms, "-r", str(requirements)]
    print(f"crossover: installing {requirements.name} for Lambda {architecture} (first time only) ...", file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BundleError(f"pip could not fetch {requirements.name} for Lambda:\n{result.stderr.strip()}")
    # Console scripts (bin/) start with this machine's interpreter path and RECORD holds their
    # checksums: neither is used in Lambda, and both would make the code asset (and so the function's
    # version, hence a CodeDeploy traffic shift) differ between two checkouts of the same commit.
    shutil.rmtree(staging / "bin", ignore_errors=True)
    for record in staging.glob("*.dist-info/RECORD"):
        record.unlink()
    # Files from a partial download must never be mistaken for a finished cache.
    staging.rename(target)
    return target


def dependencies(architecture: str) -> Path:
    """The folder of installed dependencies for ``architecture``, built once per lock: pip checks every
    file against the lock's hashes (a requirement with --hash turns hash-checking on for all)."""
    return _installed(LOCKS / f"lambda-{architecture}.txt", architecture, "")


def runtime(architecture: str = "x86_64") -> Path:
    """What Lambda's runtime provides beside the function (its interface client, boto3), for running the
    real bundle here as Lambda would (tests/test_lambda_bundle.py)."""
    return _installed(RUNTIME_REQUIREMENTS, architecture, "runtime-")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build(output_dir: Path, architecture: str) -> None:
    """Write the function's code into ``output_dir``: dependencies at the top, ``crossover_serving/`` beside them."""
    shutil.copytree(dependencies(architecture), output_dir, copy_function=_link_or_copy, dirs_exist_ok=True)
    shutil.copytree(SERVING, output_dir / "crossover_serving", ignore=IGNORED, dirs_exist_ok=True)


if __name__ == "__main__":
    for arch in sys.argv[1:] or ["x86_64"]:
        print(dependencies(arch))
    print(runtime())
