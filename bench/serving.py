"""Serving figures: predict() overhead, large-JPEG preprocessing, HTTP throughput, Lambda cold start.

Prints figures (ratios against baselines measured in the same run); not a test. Targets:
  predict() / a hand-written decode (draft) + resize + crop + normalise + session.run on a 1024x768 JPEG:
    <= 1.05x, MobileNetV2 and ResNet-50
  decode + preprocess of a 4000x3000 JPEG: <= 30 ms on one core
    python bench/serving.py [--quick]
"""

from __future__ import annotations

import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from graphs import mobilenet_v2, resnet50  # noqa: E402

from crossover_serving.images import Preprocessor  # noqa: E402
from crossover_serving.model import Model, providers, session_options  # noqa: E402
from crossover_serving.server import InferenceServer, Limits  # noqa: E402
from crossover_serving.spec import InputSpec, Spec  # noqa: E402

QUICK = "--quick" in sys.argv


def jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.open(ROOT / "tests" / "data" / "chelsea.png").convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
        buffer, "JPEG", quality=90)
    return buffer.getvalue()


def median_ms(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def paired_ms(a: Callable[[], object], b: Callable[[], object], n: int) -> tuple[float, float, float]:
    """Median ms of ``a`` and of ``b``, called in turn, and the median ratio b / a of one turn: load from
    elsewhere on the machine falls on both alike."""
    pairs = []
    for i in range(n + 1):
        times = []
        for fn in (a, b):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        if i:  # the first turn warms up
            pairs.append(times)
    first, second = zip(*pairs, strict=True)
    return (statistics.median(first) * 1000, statistics.median(second) * 1000,
            statistics.median(y / x for x, y in pairs))


def naive(session: ort.InferenceSession,
          spec: InputSpec) -> tuple[Callable[[bytes], np.ndarray], Callable[[bytes], object]]:
    """What a competent engineer writes by hand with Pillow, numpy and ONNX Runtime: the floor predict() is held to."""
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    name = session.get_inputs()[0].name

    def tensor(data: bytes) -> np.ndarray:
        im = Image.open(io.BytesIO(data))
        scale = spec.resize / min(im.size)
        # Let libjpeg decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the short side >= resize.
        im.draft("RGB", (round(im.width * scale), round(im.height * scale)))
        rgb = im.convert("RGB")
        side = spec.size * min(rgb.size) / spec.resize  # the centre square that becomes size x size
        left, top = (rgb.width - side) / 2, (rgb.height - side) / 2
        crop = rgb.resize((spec.size, spec.size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        return ((np.asarray(crop, np.float32) / 255 - mean) / std).transpose(2, 0, 1)

    return tensor, lambda data: session.run(None, {name: tensor(data)[None]})


def overhead(folder: Path, photo: bytes) -> None:
    print("\n== predict() vs a hand-written decode + resize + session.run, 1024x768 JPEG, batch 1, "
          "threads = available CPUs ==")
    for name, build in (("MobileNetV2", mobilenet_v2), ("ResNet-50", resnet50)):
        path = build(folder / f"{name}.onnx")
        model = Model(Spec(name=name, artifact=str(path)))
        session = ort.InferenceSession(str(path), sess_options=session_options(len(os.sched_getaffinity(0))),
                                       providers=providers())
        tensor, baseline = naive(session, model.spec.input)
        # Same pixels in, or the ratio compares different work.
        np.testing.assert_allclose(tensor(photo), model.preprocess(photo), atol=1e-4)
        n = 10 if QUICK else (40 if name == "ResNet-50" else 200)
        base_ms, predict_ms, ratio = paired_ms(lambda: baseline(photo), lambda: model.predict(photo), n)  # noqa: B023
        print(f"{name:12s} baseline {base_ms:7.2f} ms   predict() {predict_ms:7.2f} ms   ratio {ratio:.3f}x "
              f"(target <= 1.05) {'OK' if ratio <= 1.05 else 'MISSED'}")


def preprocessing() -> None:
    print("\n== decode + resize + crop + normalise, one thread ==")
    large = jpeg((4000, 3000))
    pre = Preprocessor(InputSpec())
    draft = median_ms(lambda: pre(large), 5 if QUICK else 20)
    full = median_ms(lambda: np.asarray(Image.open(io.BytesIO(large)).convert("RGB")), 3 if QUICK else 10)
    print(f"4000x3000 JPEG: {draft:.1f} ms with draft decoding (target <= 30 ms) "
          f"{'OK' if draft <= 30 else 'MISSED'}; a full decode alone takes {full:.1f} ms ({full / draft:.1f}x)")


def http_load(folder: Path, photo: bytes) -> None:
    print("\n== HTTP on loopback, MobileNetV2, 1024x768 JPEG: gate alone (max_batch 1) vs batching (8) ==")
    path = folder / "MobileNetV2.onnx"
    requests = 60 if QUICK else 300
    for label, max_batch in (("gate alone", 1), ("batching", 8)):
        server = InferenceServer(Spec(name="m", artifact=str(path), max_batch=max_batch),
                                 limits=Limits(max_in_flight=64, max_queue=64, deadline_s=30)).start()
        while not server.ready:
            time.sleep(0.05)
        port = server.port

        def one(_: int) -> float:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # noqa: B023
            started = time.perf_counter()
            connection.request("POST", "/predict", photo, {"Content-Type": "image/jpeg"})
            response = connection.getresponse()
            body = json.loads(response.read())
            connection.close()
            assert response.status == 200, body
            return (time.perf_counter() - started) * 1000

        for concurrency in (1, 4, 16):
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                latencies = sorted(pool.map(one, range(requests)))
            rate = requests / (time.perf_counter() - started)
            p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]
            print(f"{label:10s} concurrency {concurrency:2d}: {rate:6.1f} req/s   "
                  f"p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
        server.drain()


def cold_start(folder: Path) -> None:
    print("\n== Lambda handler cold start: imports + model load (fresh process) ==")
    for name in ("MobileNetV2", "ResNet-50"):
        spec = json.dumps({"name": name, "artifact": str(folder / f"{name}.onnx")})
        code = ("import time; t=time.perf_counter(); import crossover_serving.lambda_handler as h; "
                "print(f'{(time.perf_counter()-t)*1000:.0f}')")
        runs = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                                     env={**os.environ, "CROSSOVER_SPEC": spec,
                                          "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"}).stdout)
                for _ in range(3)]
        print(f"{name:12s} init (imports + load, local disk): median {statistics.median(runs):.0f} ms "
              "(add the S3 download of the model in Lambda)")


def main() -> None:
    print(f"python {sys.version.split()[0]}, onnxruntime {ort.__version__}, {len(os.sched_getaffinity(0))} CPUs, "
          f"providers {ort.get_available_providers()}")
    photo = jpeg((1024, 768))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        overhead(folder, photo)
        preprocessing()
        http_load(folder, photo)
        cold_start(folder)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("\nGPU figures (ResNet-50/152 with CUDA at batch 1/8/32) were not measured: no GPU on this machine.")


if __name__ == "__main__":
    main()
