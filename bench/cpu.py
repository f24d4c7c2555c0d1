"""CPU calibration: what one core of this machine does with ONNX Runtime, against the cost model's per-core rate.

    python bench/cpu.py [--quick]

Builds torchvision-shaped ResNet-50, ResNet-152 and MobileNetV2 (bench/graphs.py: same layers and multiply-adds,
random weights), runs each on one thread (median of several images after a warm-up) and on every core, and
prints GFLOP/s per core (2 x multiply-adds / latency) beside the figure crossover.cost.profile prices for this
machine's vector units (``profile.isa_of_host``), with their ratio. Prints figures; it is not a test. Run it on
the instance family you price (or on Lambda) to see how far the table is from your hardware.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphs import mobilenet_v2, resnet50, resnet152

from crossover.cost import profile

MODELS = (("ResNet-50", resnet50, 4.09), ("ResNet-152", resnet152, 11.51), ("MobileNetV2", mobilenet_v2, 0.30))


def latency_ms(path: Path, threads: int, runs: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    session.run(None, {name: image})  # warm-up: allocations and kernel choice
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: image})
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    quick = "--quick" in sys.argv
    cores = len(os.sched_getaffinity(0))
    isa = profile.isa_of_host()
    priced = profile.CORE_GFLOPS[isa]
    print(f"host: {profile.host_cpu()}; vector units: {isa}; {cores} cores; ONNX Runtime {ort.__version__}")
    print(f"the cost model prices one {isa} core at {priced:g} GFLOP/s ({profile.ISA_SOURCES[isa]})")
    with tempfile.TemporaryDirectory() as tmp:
        for name, build, gmacs in MODELS:
            path = build(Path(tmp) / f"{name}.onnx")
            one = latency_ms(path, 1, 5 if quick else 15)
            every = latency_ms(path, cores, 5 if quick else 15)
            per_core = 2 * gmacs / (one / 1000)  # GFLOP an image over seconds an image
            scaling = one / every
            print(f"{name:12s} 1 thread {one:7.1f} ms = {per_core:6.1f} GFLOP/s per core "
                  f"({per_core / priced:.2f}x the table); {cores} threads {every:7.1f} ms ({scaling:.2f}x, "
                  f"{scaling / cores:.0%} per core)")


if __name__ == "__main__":
    main()
