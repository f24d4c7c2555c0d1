#!/usr/bin/env python3
"""Regenerate crossover_serving/locks/: every transitive dependency of the serving runtime, pinned with its
hashes, for each platform crossover ships (`make lock`). uv resolves for a platform other than this one.

| lock | from | Python | platform |
|---|---|---|---|
| lambda-x86_64, lambda-arm64 | requirements.txt | the Lambda runtime's | manylinux_2_28 (Lambda's AL2023: glibc 2.34) |
| instance-x86_64, instance-aarch64 | requirements-server.txt | 3.11 (bootstrap.sh) | manylinux_2_28 (AL2023) |
| gpu-x86_64 | requirements-server.txt, onnxruntime swapped for requirements-gpu.txt's | 3.11 | manylinux_2_28 |

The Neuron DLAMI keeps its own environment (torch-neuronx, numpy): its add-ons are not locked here.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING = ROOT / "crossover_serving"
sys.path.insert(0, str(ROOT))

from crossover.bundle import PYTHON_VERSION  # noqa: E402

INSTANCE_PYTHON = "3.11"
# name -> (requirements file, Python, uv platform, whether ONNX Runtime is the GPU build)
LOCKS = {
    "lambda-x86_64": ("requirements.txt", PYTHON_VERSION, "x86_64-manylinux_2_28", False),
    "lambda-arm64": ("requirements.txt", PYTHON_VERSION, "aarch64-manylinux_2_28", False),
    "instance-x86_64": ("requirements-server.txt", INSTANCE_PYTHON, "x86_64-manylinux_2_28", False),
    "instance-aarch64": ("requirements-server.txt", INSTANCE_PYTHON, "aarch64-manylinux_2_28", False),
    "gpu-x86_64": ("requirements-server.txt", INSTANCE_PYTHON, "x86_64-manylinux_2_28", True),
}


def main() -> None:
    (SERVING / "locks").mkdir(exist_ok=True)
    gpu = next(line for line in (SERVING / "requirements-gpu.txt").read_text().splitlines()
               if line.startswith("onnxruntime-gpu=="))
    for name, (source, python, platform, on_gpu) in LOCKS.items():
        with tempfile.TemporaryDirectory() as tmp:
            for file in ("requirements.txt", "requirements-server.txt"):
                lines = (SERVING / file).read_text().splitlines()
                if on_gpu:  # the same pins, with ONNX Runtime's CUDA build in place of the CPU one
                    lines = [gpu if line.startswith("onnxruntime==") else line for line in lines]
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
