"""Decode an untrusted image and turn it into the model's input tensor, within known CPU and memory.

Only JPEG, PNG and WebP are opened (never EPS, PDF or other formats whose decoders run code or
external programs); Pillow's decompression-bomb limit is an error, not a warning; truncated files are
errors, and so is anything else the decoders raise on a client's bytes: a request can cause a 4xx,
never a 500. Decoding happens in two steps: :meth:`Preprocessor.open` reads the header alone and says
how many bytes decoding will hold (:func:`decode_bytes`, checked against measured peaks by
tests/test_decode_budget.py), so a caller can admit the image against a memory budget before
:meth:`Preprocessor.decode` spends it. Work that grows with what a few bytes can repeat is counted
before Pillow sees the file, and refused past a cap: a JPEG's scans (each one a pass over the whole
image, ``MAX_SCANS``), the steps of Pillow's JPEG header parser and the chunks of a PNG (each one a
trip through Python, ``MAX_HEADER_STEPS``, ``MAX_CHUNKS``). Large JPEGs are decoded in draft mode at the
smallest DCT scale that still covers the crop.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from crossover_serving.errors import InputError
from crossover_serving.spec import InputSpec

FORMATS = ("JPEG", "PNG", "WEBP")
# Pillow opens a JPEG that carries a multi-picture (MPF) header as "MPO": the same decoder, the same costs.
JPEG = ("JPEG", "MPO")
MAX_PIXELS = 40_000_000  # a 8000 x 5000 photo; above this Pillow refuses (decompression bombs)
# A progressive JPEG from libjpeg has 10 scans, one from mozjpeg a few more; each scan costs a pass
# over every block of the image (~12 ms at 40 megapixels on one core).
MAX_SCANS = 64
_SOS = b"\xff\xda"  # start of scan: in entropy-coded data 0xFF is always followed by 0x00 or a restart
# Pillow parses a JPEG's header in Python, one marker segment, fill byte or stray byte at a time: a camera's
# JPEG takes ~15 steps; 6 MB of empty APP segments took 1.5 million (2-4 CPU-s and 200 MiB to open).
MAX_HEADER_STEPS = 1024
# Pillow reads every PNG chunk in Python. libpng writes 8 KiB IDAT chunks, so 4,096 of them hold 32 MiB:
# more than any body the server accepts. Empty private chunks can pack 500,000 into 6 MB.
MAX_CHUNKS = 4096
_PNG = b"\x89PNG\r\n\x1a\n"
_FILL = re.compile(rb"\xff+")
_OVERHEAD = 3 * 1024 * 1024 // 2  # the decoders' own working memory (libjpeg, zlib, libwebp), measured
_ROW = 8  # Pillow keeps a pointer per row of every image: a 1-pixel-wide image costs 8 bytes a pixel more


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's in-memory image: one band in 1 byte (or 2 for 16-bit), more in 4."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_bytes(image: Image.Image, *, full_size: tuple[int, int], scans: int, row_bytes: int,
                 box: tuple[float, float, float, float], size: int) -> int:
    """What decoding ``image`` (opened, drafted, not loaded; ``full_size`` before the draft), converting it to
    RGB and making the ``size`` x ``size`` tensor of ``box`` holds at its peak.

    Two moments can be the peak: while the decoder runs (the image and the decoder's buffers) and while the
    image is converted (the image and its RGB copy). Pillow keeps 2+ bands in 4 bytes a pixel, and a pointer
    per row of every image. A JPEG with more than one scan is decoded through a buffer of every DCT
    coefficient at full resolution (2 bytes a sample, whatever the draft scale). A PNG is inflated through
    two raw rows (``row_bytes`` each: the current one and the one its filter reads). Pillow's WebP decoder
    holds the RGBA output of libwebp, a copy of it and the image: ~16 bytes a pixel, lossy or lossless alike.
    Then the resize: one pass across the box's rows at the tensor's width, and the tensor itself.
    """
    width, height = image.size
    pixels = width * height
    decoded = pixels * _pixel_bytes(image.mode) + height * _ROW
    converted = decoded + (0 if image.mode == "RGB" else pixels * 4 + height * _ROW)
    if image.format == "WEBP":
        decoding = pixels * 16 + height * _ROW
    elif image.format == "PNG":
        decoding = decoded + 2 * row_bytes
    elif image.format in JPEG and (scans > 1 or image.info.get("progressive")):
        full_width, full_height = full_size
        layers = getattr(image, "layer", [])
        h_max = max((h for _, h, _, _ in layers), default=1)
        v_max = max((v for _, _, v, _ in layers), default=1)
        blocks = sum(-(-full_width * h // (8 * h_max)) * -(-full_height * v // (8 * v_max)) for _, h, v, _ in layers)
        decoding = decoded + blocks * 64 * 2
    else:
        decoding = decoded
    box_rows = int(box[3]) - int(box[1]) + 3  # the rows the vertical filter reads, with its support
    # The horizontal pass (RGB, 4 bytes a pixel), the resized image, its bytes as an array, the float32 tensor.
    tensor = size * box_rows * 4 + box_rows * _ROW + size * size * (4 + 3 + 12)
    return max(decoding, converted) + tensor + _OVERHEAD


def _count_sos(data: bytes) -> int:
    """``data.count(_SOS)`` at numpy's speed: Python's two-byte search runs at ~1 GB/s (0.1 ms a photo)."""
    array = np.frombuffer(data, np.uint8)
    return int(np.count_nonzero(array[1:][array[:-1] == 0xFF] == 0xDA))


def container_steps(data: bytes) -> int:
    """The steps Pillow's Python parsers take through the file's structure before any pixel (JPEG: header
    steps up to the first scan; PNG: every chunk), counted in C-speed jumps and stopped past the caps."""
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header_steps(data)
    if data.startswith(_PNG):
        return _png_chunks(data)
    return 0


def _jpeg_header_steps(data: bytes) -> int:
    """Pillow's JpegImageFile._open reads a marker at a time and skips each fill or stray byte by itself; its
    frame (SOFn) handler loops over every 3-byte component entry, its DQT handler over every 65-byte table."""
    i, steps = 2, 0
    while i + 1 < len(data) and steps <= MAX_HEADER_STEPS:
        if data[i] != 0xFF:  # stray bytes up to the next 0xFF: a step each
            following = data.find(b"\xff", i)
            following = len(data) if following < 0 else following
            steps, i = steps + following - i, following
            continue
        fill = _FILL.match(data, i)
        assert fill is not None
        steps, i = steps + fill.end() - i - 1, fill.end() - 1  # fill bytes before a marker: a step each
        if i + 1 >= len(data):
            break
        marker, steps = data[i + 1], steps + 1
        if marker == 0xDA:  # the first scan: Pillow's header parsing ends here
            break
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD9:  # standalone: no length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            steps += length // 3
        elif marker == 0xDB:
            steps += length // 65
        i += 2 + length
    return steps


def _png_chunks(data: bytes) -> int:
    i, chunks = len(_PNG), 0
    while i + 8 <= len(data) and chunks <= MAX_CHUNKS:
        length, kind = struct.unpack_from(">I4s", data, i)
        chunks += 1
        if kind == b"IEND":
            break
        i += 12 + length
    return chunks


def png_row_bytes(data: bytes) -> int:
    """The bytes of one raw (filtered) row of a PNG, from its IHDR chunk: width x channels x bit depth."""
    header = data.find(b"IHDR")  # the first chunk in a valid PNG; Pillow reads it wherever it is
    if header < 0 or header + 14 > len(data):
        return 0
    width, depth, colour = (int(field) for field in struct.unpack_from(">I4xBB", data, header + 4))
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)
    return -(-width * channels * depth // 8) + 1


@dataclass
class Opened:
    """An image whose header has been read: its pixels are not decoded yet."""

    image: Image.Image
    box: tuple[float, float, float, float]  # the source region that becomes the crop
    decode_bytes: int  # what decode() will hold at its peak


class Preprocessor:
    """Resize the short side to ``resize``, centre-crop ``size``, normalise: one float32 tensor per image."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        std = np.asarray(spec.std, np.float32)
        # (pixel / 255 - mean) / std == pixel * scale + offset: one multiply-add per value.
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        offset = (-np.asarray(spec.mean, np.float32) / std).astype(np.float32)
        # Shaped for a multiply-add over long runs of one channel (NCHW) or whole rows (NHWC): over the
        # 3-value pixels themselves numpy's inner loop is 3 long, and normalising took ~0.45 ms an image.
        if spec.layout == "nchw":
            self.scale, self.offset = scale[:, None, None], offset[:, None, None]
        else:
            self.scale, self.offset = np.tile(scale, spec.size), np.tile(offset, spec.size)

    def open(self, data: bytes) -> Opened:
        """Read the header, choose the draft scale and estimate the decode; refuse what is too costly."""
        steps = container_steps(data)
        jpeg = data.startswith(b"\xff\xd8")
        if steps > (MAX_HEADER_STEPS if jpeg else MAX_CHUNKS):
            what = (f"header takes over {MAX_HEADER_STEPS:,} parsing steps (marker segments and their entries, "
                    f"fill or stray bytes)" if jpeg else f"has over {MAX_CHUNKS:,} chunks")
            raise InputError(f"the image's {what}: more than is read", status=413, code="too_many_segments")
        image = _open(data)
        scans = _count_sos(data) if image.format in JPEG else 1
        if scans > MAX_SCANS:
            raise InputError(f"the JPEG has {scans:,} scans; at most {MAX_SCANS} are decoded (each one costs a "
                             "pass over the whole image)", status=413, code="too_many_scans")
        with _refusing("the image's header is not valid"):
            return self._plan(image, data, scans)

    def _plan(self, image: Image.Image, data: bytes, scans: int) -> Opened:
        size, resize = self.spec.size, self.spec.resize
        width, height = image.size
        ratio = resize / min(width, height)
        # Crop box in source pixels: the centre square that becomes size x size after the resize.
        side = size / ratio
        left, top = (width - side) / 2, (height - side) / 2
        side_x = side_y = side
        if image.format in JPEG:
            # Draft decoding picks a DCT scale (1/2, 1/4, 1/8) that keeps the image at least this big.
            image.draft("RGB", (max(1, round(width * ratio)), max(1, round(height * ratio))))
            scale_x, scale_y = image.size[0] / width, image.size[1] / height
            left, top, side_x, side_y = left * scale_x, top * scale_y, side * scale_x, side * scale_y
        box = (left, top, left + side_x, top + side_y)
        row_bytes = png_row_bytes(data) if image.format == "PNG" else 0
        estimate = decode_bytes(image, full_size=(width, height), scans=scans, row_bytes=row_bytes, box=box,
                                size=size)
        return Opened(image, box, estimate)

    def decode(self, opened: Opened) -> np.ndarray:
        """Decode the pixels and make the model's input tensor."""
        size = self.spec.size
        try:
            with _refusing("the image could not be decoded"):
                opened.image.load()
                rgb = opened.image if opened.image.mode == "RGB" else opened.image.convert("RGB")
                tensor = rgb.resize((size, size), Image.Resampling.BILINEAR, box=opened.box)
        finally:
            opened.image.close()
        pixels = np.asarray(tensor)  # size x size x 3 bytes
        array: np.ndarray
        if self.spec.layout == "nchw":
            array = np.empty((3, size, size), np.float32)
            np.copyto(array, pixels.transpose(2, 0, 1))  # converted and transposed in one pass
            rows = array
        else:
            array = pixels.astype(np.float32)
            rows = array.reshape(size, -1)
        rows *= self.scale  # in place: no temporaries
        rows += self.offset
        return array

    def __call__(self, data: bytes) -> np.ndarray:
        return self.decode(self.open(data))


@contextmanager
def _refusing(what: str) -> Iterator[None]:
    """Whatever a decoder raises on a client's bytes is the bytes' fault: a 400 that says so, never a 500.
    (Pillow's own errors and the arithmetic of a corrupt header alike: a JPEG frame that declares sampling
    factors of 0 divided by zero.) MemoryError is not the bytes' fault: the estimate admitted them."""
    try:
        yield
    except (InputError, MemoryError):
        raise
    except Exception as e:
        raise InputError(f"{what}: {str(e) or type(e).__name__}"[:500], code="bad_image") from None


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InputError("the request has no image: the body is empty", code="empty")
    with _refusing("the image could not be decoded"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=FORMATS)
                if image.size[0] * image.size[1] > MAX_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"the image has more than {MAX_PIXELS:,} pixels", status=413,
                             code="too_many_pixels") from None
        except UnidentifiedImageError:
            raise InputError(f"the body is not an image in an accepted format ({', '.join(FORMATS)})",
                             status=415, code="unsupported_format") from None
    if image.size[0] < 1 or image.size[1] < 1:
        raise InputError("the image has no pixels", code="bad_image")
    return image
