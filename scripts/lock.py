#!/usr/bin/env python3
"""Regenerate crossover_serving/locks/: every transitive dependency of the serving runtime, pinned with its
hashes, for each platform crossover ships (`make lock`). uv resolves for a platform other than this one.

| lock | from | Python | platform |
|---|---|---|---|
| lambda-x86_64, lambda-arm64 | requirements.txt | the Lambda runtime's | manylinux_2_28 (Lambda's AL2023: glibc 2.34) |
| instance-x86_64, instance-aarch64 | requirements-server.txt | 3.11 (bootstrap.sh) | manylinux_2_28 (AL2023) |
| gpu-x86_64 | requirements-server.txt, onnxruntime swapped for requirements-gpu.txt's | 3.11 | manylinux_2_28 |
| neuron-x86_64 | requirements-server.txt less onnxruntime and numpy (the DLAMI has its own) | 3.12 | manylinux_2_28 |
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING = ROOT / "crossover_serving"
sys.path.insert(0, str(ROOT))

from crossover.bundle import INSTANCE_LOCKS, PYTHON_VERSION  # noqa: E402

# name -> (requirements file, Python); the platform is the name's suffix
LOCKS = {"lambda-x86_64": ("requirements.txt", PYTHON_VERSION), "lambda-arm64": ("requirements.txt", PYTHON_VERSION),
         **{name: ("requirements-server.txt", python) for name, python in INSTANCE_LOCKS.items()}}
UV_PLATFORMS = {"x86_64": "x86_64-manylinux_2_28", "arm64": "aarch64-manylinux_2_28",
                "aarch64": "aarch64-manylinux_2_28"}


def flavoured(lines: list[str], flavour: str) -> list[str]:
    """The same pins with the flavour's ONNX Runtime: its CUDA build on gpu, none on neuron (nor numpy: the
    DLAMI's torch-neuronx environment brings both its own and the model runs on torch)."""
    if flavour == "gpu":
        gpu = next(line for line in (SERVING / "requirements-gpu.txt").read_text().splitlines()
                   if line.startswith("onnxruntime-gpu=="))
        return [gpu if line.startswith("onnxruntime==") else line for line in lines]
    if flavour == "neuron":
        return [line for line in lines if not line.startswith(("onnxruntime==", "numpy=="))]
    return lines


def main() -> None:
    (SERVING / "locks").mkdir(exist_ok=True)
    for name, (source, python) in LOCKS.items():
        flavour, machine = name.split("-")
        platform = UV_PLATFORMS[machine]
        with tempfile.TemporaryDirectory() as tmp:
            for file in ("requirements.txt", "requirements-server.txt"):
                lines = flavoured((SERVING / file).read_text().splitlines(), flavour)
                (Path(tmp) / file).write_text("\n".join(lines) + "\n")
            out = SERVING / "locks" / f"{name}.txt"
            subprocess.run([sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--generate-hashes",
                            "--no-header", "--no-annotate", "--python-version", python, "--python-platform",
                            platform, str(Path(tmp) / source), "-o", str(out)], check=True)
            out.write_text(f"# {name}: {source} for Python {python} on {platform} (scripts/lock.py; `make lock`)\n"
                           + out.read_text())
            print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
