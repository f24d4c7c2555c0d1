"""The request contract shared by every adapter: what a body may be, and what comes back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from crossover_serving.deadline import Deadline
from crossover_serving.errors import InputError
from crossover_serving.fetch import FetchPolicy, check_s3, fetch

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "application/octet-stream"}
MAX_JSON_BYTES = 16 * 1024  # a JSON request names one image; a URL fits many times over
REFERENCE_SHAPE = '{"url": "https://..."} or {"s3": "s3://bucket/key"}'


@dataclass(frozen=True)
class Reference:
    """An image named by the request instead of sent in it: an https:// URL or an s3:// URI."""

    uri: str


def json_object(text: bytes | str, what: str, shape: str, code: str) -> dict[str, Any]:
    """``text`` as a JSON object, or an InputError that says what is wrong with it: however deep or
    long its values, parsing fails with a 4xx, never with Python's RecursionError or ValueError."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                         f"expected {shape}", code=code) from None
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text; expected {shape}", code=code) from None
    except RecursionError:
        raise InputError(f"{what} nests too deeply to be {shape}", code=code) from None
    except ValueError:  # an integer with thousands of digits
        raise InputError(f"{what} holds a number too long to read; expected {shape}", code=code) from None
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object: {shape}", code=code)
    return value


def parse(body: bytes, content_type: str | None, policy: FetchPolicy) -> bytes | Reference:
    """The image a request carries: its bytes, or a :class:`Reference` that ``policy`` admits."""
    if len(body) > policy.max_bytes:
        raise InputError(f"the body is {len(body):,} bytes; the limit is {policy.max_bytes:,}", status=413,
                         code="too_large")
    kind = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if kind in IMAGE_TYPES:
        return body
    if kind != "application/json":
        raise InputError(f"unsupported Content-Type {kind[:100]!r}; send image/jpeg, image/png, image/webp or "
                         "application/json", status=415, code="unsupported_media_type")
    if len(body) > MAX_JSON_BYTES:
        raise InputError(f"a JSON request is at most {MAX_JSON_BYTES:,} bytes; this one is {len(body):,}",
                         status=413, code="too_large")
    request = json_object(body, "the body", REFERENCE_SHAPE, "bad_json")
    if len(request) != 1 or not isinstance(next(iter(request.values())), str):
        raise InputError(f"expected {REFERENCE_SHAPE}", code="bad_json")
    (key, uri), = request.items()
    if key == "s3" and uri.startswith("s3://"):
        check_s3(uri, policy)
        return Reference(uri)
    if key == "url" and not uri.startswith("s3://"):
        return Reference(uri)
    raise InputError(f"expected {REFERENCE_SHAPE}", code="bad_json")


def image_bytes(body: bytes, content_type: str | None, policy: FetchPolicy, deadline: Deadline) -> bytes:
    """The image's bytes, fetched by ``deadline`` when the request names it."""
    parsed = parse(body, content_type, policy)
    return parsed if isinstance(parsed, bytes) else fetch(parsed.uri, policy, deadline)


def prediction(model_name: str, top: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": model_name, "top": top}
