"""Decoding within known CPU and memory: scan bombs refused up front, decode estimates that hold.

The estimate (crossover_serving.images.decode_bytes) is what the servers admit images by, so it is checked
against the real peak: each image is decoded in a fresh interpreter, and its peak resident memory
(VmHWM) above what it held before decoding is compared with the estimate.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossover_serving.errors import InputError
from crossover_serving.images import MAX_SCANS, Preprocessor
from crossover_serving.spec import InputSpec
from tests import bombs
from tests.conftest import ROOT

PREPROCESS = Preprocessor(InputSpec())

PEAK = """
import sys
from pathlib import Path
from crossover_serving.images import Preprocessor
from crossover_serving.spec import InputSpec

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024

data = Path(sys.argv[1]).read_bytes()
preprocess = Preprocessor(InputSpec())
opened = preprocess.open(data)
before = status("VmRSS")
preprocess.decode(opened)
print(opened.decode_bytes, status("VmHWM") - before)
"""

BOMBS = {
    "lossless WebP 8000x5000": lambda: bombs.webp(8000, 5000),
    "16-bit RGBA PNG 8000x5000": lambda: bombs.png(8000, 5000, depth=16, colour=6),
    "16-bit grey PNG 8000x5000": lambda: bombs.png(8000, 5000, depth=16, colour=0),
    "progressive 4:4:4 JPEG 8000x5000": lambda: bombs.jpeg(8000, 5000, progressive=True, subsampling=0),
    "baseline JPEG 8000x5000": lambda: bombs.jpeg(8000, 5000),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", BOMBS)
def test_the_decode_estimate_covers_the_measured_peak(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "image"
    path.write_bytes(BOMBS[kind]())
    result = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, cwd=ROOT,
                            timeout=120, check=True)
    estimate, measured = (int(x) for x in result.stdout.split())
    # Never under (admission would let memory grow past the budget), and not far over (it would refuse
    # images that fit): within 8 MiB or 10% above the peak.
    assert measured <= estimate <= max(measured * 1.1, measured + 8 * 2**20), (kind, estimate, measured)


def test_a_jpeg_that_repeats_its_scans_is_refused_before_decoding() -> None:
    # GIVEN a progressive JPEG whose last scan repeats 1,000 times (it decoded for tens of seconds)
    data = bombs.many_scans(2000, 1500, 1000)
    started = time.process_time()
    with pytest.raises(InputError) as caught:
        PREPROCESS(data)
    # THEN it is refused from its header alone, in milliseconds
    assert (caught.value.status, caught.value.code) == (413, "too_many_scans")
    assert time.process_time() - started < 0.5


def test_an_ordinary_progressive_jpeg_is_decoded() -> None:
    data = bombs.jpeg(640, 480, progressive=True)
    assert 1 < data.count(b"\xff\xda") <= MAX_SCANS
    assert PREPROCESS(data).shape == (3, 224, 224)
