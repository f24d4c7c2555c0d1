"""Boot cost of the serving runtime: what an instance on a stock image does before it can load the model.

Prints figures; it is not a test. For each flavour (CPU, GPU) it times, into a fresh Python 3.11 environment
(the instances' Python) on this machine:
- offline: the runtime bundle the deploy publishes, unzipped and installed by its own install.sh with no
  package index (what bootstrap.sh does now, after an in-region S3 download of the same bytes);
- online: the pinned requirements installed from PyPI with pip's cache off (what bootstrap.sh did before:
  every boot resolved and downloaded through the NAT gateway).
It reports seconds, bytes, and the ratio of the two times measured in the same run. The bundle's download
from S3 is not timed here (no AWS); its bytes are reported, with what they would cost through a NAT gateway.
Run: `.venv/bin/python bench/boot.py` (needs python3.11 on PATH and PyPI for the online baseline).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossover import bundle  # noqa: E402

FLAVOURS = {"cpu": "instance-x86_64", "gpu": "gpu-x86_64"}
PLAIN_PIP = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # PyPI alone, whatever this machine's pip.conf adds
NAT_USD_PER_GB = 0.045  # data processed by a NAT gateway (crossover/cost/prices.yaml)


def fresh_venv(folder: Path) -> Path:
    python = shutil.which("python3.11")
    if python is None:
        sys.exit("bench/boot.py: python3.11 (the instances' Python) must be on PATH")
    subprocess.run([python, "-m", "venv", str(folder)], check=True)
    return folder


def offline(lock: str, work: Path) -> tuple[float, int]:
    """Seconds to unzip and install the runtime bundle of ``lock``, and the zip's bytes."""
    archive = work / "runtime.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:  # as cdk deploy packs the asset
        for file in sorted(bundle.wheels(lock).iterdir()):
            zipped.write(file, file.name)
    venv = fresh_venv(work / "offline")
    started = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-m", "zipfile", "-e", str(archive), str(work / "runtime")],
                   check=True)
    subprocess.run(["bash", str(work / "runtime" / "install.sh"), str(venv)], check=True, env=PLAIN_PIP)
    return time.perf_counter() - started, archive.stat().st_size


def online(lock: str, work: Path) -> float:
    """Seconds for the pre-bundle boot install: the flavour's pinned requirements from PyPI, no cache."""
    requirements = work / "requirements.txt"
    lines = [line.split("#")[0].strip() for name in ("requirements.txt", "requirements-server.txt")
             for line in (bundle.SERVING / name).read_text().splitlines() if "==" in line.split("#")[0]]
    if lock.startswith("gpu-"):
        gpu = next(line for line in (bundle.SERVING / "requirements-gpu.txt").read_text().splitlines()
                   if line.startswith("onnxruntime-gpu=="))
        lines = [gpu if line.startswith("onnxruntime==") else line for line in lines]
    requirements.write_text("\n".join(lines) + "\n")
    venv = fresh_venv(work / "online")
    started = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-cache-dir", "-r", str(requirements)], check=True, env=PLAIN_PIP)
    return time.perf_counter() - started


def main() -> None:
    table = Table(title="instance boot: serving runtime install into a fresh Python 3.11 environment")
    for column in ("flavour", "lock", "bundle MB", "offline s", "online s", "offline/online",
                   "NAT $ per boot (online)"):
        table.add_column(column, justify="right")
    for flavour, lock in FLAVOURS.items():
        with tempfile.TemporaryDirectory() as tmp:
            seconds, size = offline(lock, Path(tmp))
            baseline = online(lock, Path(tmp))
        table.add_row(flavour, lock, f"{size / 1e6:.0f}", f"{seconds:.1f}", f"{baseline:.1f}",
                      f"{seconds / baseline:.2f}", f"{size / 1e9 * NAT_USD_PER_GB:.4f}")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
