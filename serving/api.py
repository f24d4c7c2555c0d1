"""The request contract shared by every adapter: what a body may be, and what comes back."""

from __future__ import annotations

import json
from typing import Any

from serving.errors import InputError
from serving.fetch import FetchPolicy, fetch

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "application/octet-stream"}


def image_bytes(body: bytes, content_type: str | None, policy: FetchPolicy) -> bytes:
    """Raw image bytes, or the bytes behind ``{"url": "https://..."}`` / ``{"s3": "s3://..."}``."""
    if len(body) > policy.max_bytes:
        raise InputError(f"the body is {len(body):,} bytes; the limit is {policy.max_bytes:,}", status=413,
                         code="too_large")
    kind = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if kind in IMAGE_TYPES:
        return body
    if kind != "application/json":
        raise InputError(f"unsupported Content-Type {kind!r}; send image/jpeg, image/png, image/webp or "
                         "application/json", status=415, code="unsupported_media_type")
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"the body is not valid JSON: {e}", code="bad_json") from None
    if not isinstance(request, dict) or len(request) != 1 or not isinstance(next(iter(request.values())), str):
        raise InputError('expected {"url": "https://..."} or {"s3": "s3://bucket/key"}', code="bad_json")
    (key, reference), = request.items()
    if key == "url" and not reference.startswith("s3://"):
        return fetch(reference, policy)
    if key == "s3" and reference.startswith("s3://"):
        return fetch(reference, policy)
    raise InputError('expected {"url": "https://..."} or {"s3": "s3://bucket/key"}', code="bad_json")


def prediction(model_name: str, top: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": model_name, "top": top}
