"""Image bombs, one kind per format: small files that cost a decoder far more than their size."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, *, depth: int = 8, colour: int = 2) -> bytes:
    """A valid PNG of one flat colour: ``colour`` 0 grey, 2 RGB, 6 RGBA; ``depth`` 8 or 16 bits."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\0" + b"\x12\x34"[: depth // 8] * channels * width
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png_header(width: int, height: int) -> bytes:
    """A PNG header announcing ``width`` x ``height`` with almost no data: refused by its size alone."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        _chunk(b"IEND", b"")


def webp(width: int, height: int) -> bytes:
    """A lossless WebP of one flat colour: a couple of kilobytes that decode into hundreds of megabytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


def jpeg(width: int, height: int, *, progressive: bool = False, subsampling: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buffer, "JPEG", quality=90, progressive=progressive,
                                                           subsampling=subsampling)
    return buffer.getvalue()


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan (its SOS segment and entropy-coded data) in a JPEG."""
    i, scans = 2, []
    while i < len(data) and data[i + 1] != 0xD9:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        end = i + 2 + length
        if marker == 0xDA:
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
            scans.append((i, end))
        i = end
    return scans


def many_scans(width: int, height: int, repeats: int) -> bytes:
    """A progressive JPEG whose last refinement scan repeats ``repeats`` times: a few hundred kilobytes that
    libjpeg decodes in time linear in the number of scans (minutes of CPU for thousands)."""
    data = jpeg(width, height, progressive=True)
    start, end = _scans(data)[-1]
    return data[:end] + data[start:end] * repeats + data[end:]
