"""Decode an untrusted image and turn it into the model's input tensor, within known CPU and memory.

Only JPEG, PNG and WebP are opened (never EPS, PDF or other formats whose decoders run code or
external programs); Pillow's decompression-bomb limit is an error, not a warning; truncated files are
errors. Decoding happens in two steps: :meth:`Preprocessor.open` reads the header alone and says
how many bytes decoding will hold (:func:`decode_bytes`, calibrated against measured peaks by
tests/test_decode_budget.py), so a caller can admit the image against a memory budget before
:meth:`Preprocessor.decode` spends it. A JPEG's decoding time grows with its number of scans, which a
few hundred kilobytes can repeat thousands of times: more than ``MAX_SCANS`` is refused up front.
Large JPEGs are decoded in draft mode at the smallest DCT scale that still covers the crop.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from crossover_serving.errors import InputError
from crossover_serving.spec import InputSpec

FORMATS = ("JPEG", "PNG", "WEBP")
MAX_PIXELS = 40_000_000  # a 8000 x 5000 photo; above this Pillow refuses (decompression bombs)
# A progressive JPEG from libjpeg has 10 scans, one from mozjpeg a few more; each scan costs a pass
# over every block of the image (~12 ms at 40 megapixels on one core).
MAX_SCANS = 64
_SOS = b"\xff\xda"  # start of scan: in entropy-coded data 0xFF is always followed by 0x00 or a restart
_OVERHEAD = 8 * 1024 * 1024  # the decoders' working buffers, measured


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's in-memory image: one band in 1 byte (or 2 for 16-bit), more in 4."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_bytes(image: Image.Image, *, full_size: tuple[int, int], scans: int) -> int:
    """What decoding ``image`` (opened, drafted, not loaded; ``full_size`` before the draft) and
    converting it to RGB holds at its peak.

    Pillow keeps 2+ bands in 4 bytes a pixel; a mode other than RGB is converted into a second image.
    A JPEG with more than one scan is decoded through a buffer of every DCT coefficient at full
    resolution (2 bytes a sample, whatever the draft scale). Pillow's WebP decoder holds the RGBA
    output of libwebp, a copy of it and the image: ~16 bytes a pixel, lossy or lossless alike.
    """
    width, height = image.size
    pixels = width * height
    if image.format == "WEBP":
        return pixels * 16 + _OVERHEAD
    total = pixels * (_pixel_bytes(image.mode) + (0 if image.mode == "RGB" else 4))
    if image.format == "JPEG" and (scans > 1 or image.info.get("progressive")):
        full_width, full_height = full_size
        layers = getattr(image, "layer", [])
        h_max = max((h for _, h, _, _ in layers), default=1)
        v_max = max((v for _, _, v, _ in layers), default=1)
        blocks = sum(-(-full_width * h // (8 * h_max)) * -(-full_height * v // (8 * v_max)) for _, h, v, _ in layers)
        total += blocks * 64 * 2
    return total + _OVERHEAD


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
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.offset = (-np.asarray(spec.mean, np.float32) / std).astype(np.float32)

    def open(self, data: bytes) -> Opened:
        """Read the header, choose the draft scale and estimate the decode; refuse what is too costly."""
        image = _open(data)
        scans = data.count(_SOS) if image.format == "JPEG" else 1
        if scans > MAX_SCANS:
            raise InputError(f"the JPEG has {scans:,} scans; at most {MAX_SCANS} are decoded (each one costs a "
                             "pass over the whole image)", status=413, code="too_many_scans")
        size, resize = self.spec.size, self.spec.resize
        width, height = image.size
        ratio = resize / min(width, height)
        # Crop box in source pixels: the centre square that becomes size x size after the resize.
        side = size / ratio
        left, top = (width - side) / 2, (height - side) / 2
        side_x = side_y = side
        if image.format == "JPEG":
            # Draft decoding picks a DCT scale (1/2, 1/4, 1/8) that keeps the image at least this big.
            image.draft("RGB", (max(1, round(width * ratio)), max(1, round(height * ratio))))
            scale_x, scale_y = image.size[0] / width, image.size[1] / height
            left, top, side_x, side_y = left * scale_x, top * scale_y, side * scale_x, side * scale_y
        estimate = decode_bytes(image, full_size=(width, height), scans=scans)
        return Opened(image, (left, top, left + side_x, top + side_y), estimate)

    def decode(self, opened: Opened) -> np.ndarray:
        """Decode the pixels and make the model's input tensor."""
        size = self.spec.size
        try:
            opened.image.load()
            rgb = opened.image if opened.image.mode == "RGB" else opened.image.convert("RGB")
            tensor = rgb.resize((size, size), Image.Resampling.BILINEAR, box=opened.box)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"the image could not be decoded: {e}", code="bad_image") from None
        finally:
            opened.image.close()
        array = np.asarray(tensor, np.float32)  # a fresh array: normalise it in place, no temporaries
        array *= self.scale
        array += self.offset
        return np.ascontiguousarray(array.transpose(2, 0, 1)) if self.spec.layout == "nchw" else array

    def __call__(self, data: bytes) -> np.ndarray:
        return self.decode(self.open(data))


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InputError("the request has no image: the body is empty", code="empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise Image.DecompressionBombError("too many pixels")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"the image has more than {MAX_PIXELS:,} pixels", status=413, code="too_many_pixels") from None
    except UnidentifiedImageError:
        raise InputError(f"the body is not an image in an accepted format ({', '.join(FORMATS)})",
                         status=415, code="unsupported_format") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"the image could not be decoded: {e}", code="bad_image") from None
    if image.size[0] < 1 or image.size[1] < 1:
        raise InputError("the image has no pixels", code="bad_image")
    return image
