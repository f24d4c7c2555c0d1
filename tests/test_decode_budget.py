"""Decoding within known CPU and memory: scan bombs refused up front, decode estimates that hold.

The estimate (crossover_serving.images.decode_bytes) is what the servers admit images by, so it is checked
against the real peak for every format, mode and extreme shape: the peak resident memory (VmHWM) above
what the process held before decoding.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from crossover_serving.budget import MIB
from crossover_serving.errors import InputError
from crossover_serving.images import MAX_SCANS, Preprocessor
from crossover_serving.spec import InputSpec
from tests import bombs
from tests.conftest import ROOT

PREPROCESS = Preprocessor(InputSpec())

# Each image decoded in a child forked from an interpreter that has decoded nothing (a parent's freed heap
# would be reused without raising the child's resident memory), its peak reset before decoding.
PEAK = """
import os, sys
from pathlib import Path
from crossover_serving.images import Preprocessor
from crossover_serving.spec import InputSpec

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024

preprocess = Preprocessor(InputSpec())
for path in sys.argv[1:]:
    data = Path(path).read_bytes()
    child = os.fork()
    if child == 0:
        opened = preprocess.open(data)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        before = status("VmRSS")
        preprocess.decode(opened)
        print(Path(path).name, opened.decode_bytes, status("VmHWM") - before, flush=True)
        os._exit(0)
    os.waitpid(child, 0)
"""


def _grey_column(rows: int) -> bytes:
    """A 1-pixel-wide grey PNG (its rows compressed at once: a row at a time takes seconds)."""
    header = struct.pack(">IIBBBBB", 1, rows, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + bombs._chunk(b"IHDR", header) + \
        bombs._chunk(b"IDAT", zlib.compress(b"\0\x12" * rows, 9)) + bombs._chunk(b"IEND", b"")


def _pillow(mode: str, size: tuple[int, int], kind: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, kind, **options)
    return buffer.getvalue()


# Every format and mode the decoders produce, at the shapes that stress each term of the estimate: row
# pointers (1 pixel wide), the PNG inflater's rows (1 pixel tall), DCT coefficients (progressive), copies.
SHAPES = {
    "grey PNG 1 x 40,000,000": lambda: _grey_column(40_000_000),
    "RGBA PNG 40,000,000 x 1": lambda: bombs.png(40_000_000, 1, colour=6),
    "grey PNG 40 x 1,000,000": lambda: bombs.png(40, 1_000_000, colour=0),
    "RGB PNG 8000 x 5000": lambda: bombs.png(8000, 5000),
    "16-bit RGBA PNG 8000 x 5000": lambda: bombs.png(8000, 5000, depth=16, colour=6),
    "16-bit grey PNG 8000 x 5000": lambda: bombs.png(8000, 5000, depth=16, colour=0),
    "palette PNG 6000 x 6000": lambda: _pillow("P", (6000, 6000), "PNG"),
    "1-bit PNG 6000 x 6000": lambda: _pillow("1", (6000, 6000), "PNG"),
    "grey+alpha PNG 6000 x 6000": lambda: _pillow("LA", (6000, 6000), "PNG"),
    "baseline JPEG 8000 x 5000": lambda: bombs.jpeg(8000, 5000),
    "grey JPEG 8000 x 5000": lambda: _pillow("L", (8000, 5000), "JPEG"),
    "CMYK JPEG 6000 x 6000": lambda: _pillow("CMYK", (6000, 6000), "JPEG"),
    "progressive 4:4:4 JPEG 8000 x 5000": lambda: bombs.jpeg(8000, 5000, progressive=True, subsampling=0),
    "JPEG 65000 x 615": lambda: bombs.jpeg(65000, 615),
    "JPEG 615 x 65000": lambda: bombs.jpeg(615, 65000),
    "JPEG 640 x 480": lambda: bombs.jpeg(640, 480),
    "lossless WebP 8000 x 5000": lambda: bombs.webp(8000, 5000),
    "lossy WebP 16383 x 2400": lambda: _pillow("RGB", (16383, 2400), "WEBP"),
    "RGBA WebP 6000 x 6000": lambda: _pillow("RGBA", (6000, 6000), "WEBP", lossless=True),
}


@pytest.mark.slow
def test_the_decode_estimate_holds_for_every_image_shape(tmp_path: Path) -> None:
    paths = []
    for i, make in enumerate(SHAPES.values()):
        paths.append(tmp_path / str(i))
        paths[-1].write_bytes(make())
    result = subprocess.run([sys.executable, "-c", PEAK, *map(str, paths)], capture_output=True, text=True, cwd=ROOT,
                            timeout=300, check=True)
    measured = {list(SHAPES)[int(name)]: (int(estimate), int(peak))
                for name, estimate, peak in (line.split() for line in result.stdout.splitlines())}
    assert measured.keys() == SHAPES.keys(), result.stderr
    # Never under the peak (admission would let memory grow past the budget), and within 1.25x of it (or
    # 2 MiB for images that peak at a few MiB, where the allocator's reuse blurs what is measured).
    wrong = {shape: (f"{estimate / MIB:.1f} MiB estimated", f"{peak / MIB:.1f} MiB measured")
             for shape, (estimate, peak) in measured.items()
             if not peak <= estimate <= max(1.25 * peak, peak + 2 * MIB)}
    assert not wrong, wrong


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
