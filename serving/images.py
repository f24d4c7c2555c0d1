"""Decode an untrusted image and turn it into the model's input tensor.

Only JPEG, PNG and WebP are opened (never EPS, PDF or other formats whose decoders run code or
external programs); Pillow's decompression-bomb limit is an error, not a warning; truncated files are
errors. Large JPEGs are decoded in draft mode at the smallest DCT scale that still covers the crop.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from serving.errors import InputError
from serving.spec import InputSpec

FORMATS = ("JPEG", "PNG", "WEBP")
MAX_PIXELS = 40_000_000  # a 8000 x 5000 photo; above this Pillow refuses (decompression bombs)


class Preprocessor:
    """Resize the short side to ``resize``, centre-crop ``size``, normalise: one float32 tensor per image."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        std = np.asarray(spec.std, np.float32)
        # (pixel / 255 - mean) / std == pixel * scale + offset: one multiply-add per value.
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.offset = (-np.asarray(spec.mean, np.float32) / std).astype(np.float32)

    def __call__(self, data: bytes) -> np.ndarray:
        image = _open(data)
        size, resize = self.spec.size, self.spec.resize
        width, height = image.size
        ratio = resize / min(width, height)
        # Crop box in source pixels: the centre square that becomes size x size after the resize.
        side = size / ratio
        left, top = (width - side) / 2, (height - side) / 2
        if image.format == "JPEG":
            # Draft decoding picks a DCT scale (1/2, 1/4, 1/8) that keeps the image at least this big.
            image.draft("RGB", (max(1, round(width * ratio)), max(1, round(height * ratio))))
            scale_x, scale_y = image.size[0] / width, image.size[1] / height
            left, top, side_x, side_y = left * scale_x, top * scale_y, side * scale_x, side * scale_y
        else:
            side_x = side_y = side
        try:
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            tensor = rgb.resize((size, size), Image.Resampling.BILINEAR,
                                box=(left, top, left + side_x, top + side_y))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"the image could not be decoded: {e}", code="bad_image") from None
        array = np.asarray(tensor, np.float32)  # a fresh array: normalise it in place, no temporaries
        array *= self.scale
        array += self.offset
        return np.ascontiguousarray(array.transpose(2, 0, 1)) if self.spec.layout == "nchw" else array


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
