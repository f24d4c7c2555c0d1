"""`crossover bench`: measure this machine's latency and throughput for a model with crossover_serving/.

One inference thread (so the figure scales to other machines' cores and Lambda's vCPU share), a
synthetic 1024x768 JPEG through the whole path (decode, preprocess, inference), then batched
throughput. The profile lands in profiles/<name>.json, labelled with the machine, for `crossover cost`.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress

from crossover.cost.profile import PROFILES, isa_of_host
from crossover_serving.model import Model
from crossover_serving.spec import Spec

BATCHES = (1, 4, 8)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} CPUs available"


def photo() -> bytes:
    """A deterministic 1024x768 JPEG with photo-like gradients and noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:768, 0:1024]
    base = np.stack([x / 4, y / 3, (x + y) / 7], axis=-1) % 255
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def import_s() -> float:
    """Seconds a fresh interpreter takes to import what a Lambda environment imports during init."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import crossover_serving.lambda_handler"], check=True)
    return time.perf_counter() - started


def run(spec: Spec, *, repeat: int = 20, folder: Path = PROFILES) -> Path:
    image = photo()
    imports = min(import_s() for _ in range(3))  # the first run also warms the file cache
    with Progress(transient=True) as progress:
        task = progress.add_task(f"bench {spec.name}", total=1 + repeat + len(BATCHES))
        started = time.perf_counter()
        model = Model(spec, threads=1)
        load_s = time.perf_counter() - started
        model.predict(image)  # warm-up
        progress.advance(task)
        latencies = []
        for _ in range(repeat):
            started = time.perf_counter()
            model.predict(image)
            latencies.append((time.perf_counter() - started) * 1000)
            progress.advance(task)
        tensor = model.preprocess(image)
        throughput = {}
        for batch in BATCHES:
            batch_size = batch if model.batchable else 1
            rounds = max(2, repeat // batch)
            started = time.perf_counter()
            for _ in range(rounds):
                model.predict_batch([tensor] * batch_size)
            throughput[batch_size] = rounds * batch_size / (time.perf_counter() - started)
            progress.advance(task)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.json"
    path.write_text(json.dumps({
        "model": spec.name, "machine": machine(), "isa": isa_of_host(), "threads": 1,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "latency_ms": round(statistics.median(latencies), 3),
        "images_per_second": round(max(throughput.values()), 3),
        "images_per_second_by_batch": {str(k): round(v, 3) for k, v in throughput.items()},
        "load_s": round(load_s, 3),
        "import_s": round(imports, 3),
        "model_mb": round(artifact.stat().st_size / 1e6, 1) if (artifact := Path(spec.artifact)).is_file() else None,
    }, indent=2) + "\n")
    return path
