"""`crossover smoke <name>`: send a real request to a deployed model and check the answer.

The endpoint comes from the stack's `Endpoint` output. The check is the contract clients rely on:
HTTP 200, ``{"model": <name>, "top": [{"label": str, "score": float}, ...]}`` with scores in [0, 1]
in descending order, and how long it took.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from crossover.config.schema import STACK_PREFIX
from crossover.errors import UserError


class SmokeError(UserError):
    pass


@dataclass(frozen=True)
class SmokeResult:
    endpoint: str
    latency_ms: float
    top: list[dict[str, Any]]


def stack_outputs(cloudformation: Any, stack: str, required: str) -> dict[str, str]:
    """The deployed stack's outputs; SmokeError if it is not deployed here or has no ``required`` output."""
    from botocore.exceptions import ClientError

    try:
        (description,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as e:
        raise SmokeError(f"{stack} is not deployed here ({e.response['Error'].get('Message', 'not found')}); "
                         f"deploy it first: make deploy MODEL={stack.removeprefix(STACK_PREFIX)}") from None
    outputs = {o["OutputKey"]: str(o["OutputValue"]) for o in description.get("Outputs", [])}
    if required not in outputs:
        raise SmokeError(f"{stack} ({description['StackStatus']}) has no {required} output"
                         + (": it is not a pipeline" if required == "QueueUrl" else ""))
    return outputs


def endpoint(cloudformation: Any, stack: str) -> str:
    return stack_outputs(cloudformation, stack, "Endpoint")["Endpoint"]


def smoke(url: str, model: str, image: bytes, *, timeout_s: float = 30.0) -> SmokeResult:
    request = urllib.request.Request(url.rstrip("/") + "/predict", data=image,
                                     headers={"Content-Type": "image/jpeg"}, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise SmokeError(f"{url}/predict answered HTTP {e.code}: {e.read()[:300]!r}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise SmokeError(f"cannot reach {url}: {e} (an internal endpoint is reachable only from inside its VPC)"
                         ) from None
    latency_ms = (time.perf_counter() - started) * 1000
    top = body.get("top") if isinstance(body, dict) else None
    if body.get("model") != model or not isinstance(top, list) or not top:
        raise SmokeError(f"unexpected answer from {url}/predict: {json.dumps(body)[:300]}")
    scores = [t.get("score") for t in top]
    if not all(isinstance(t.get("label"), str) for t in top) or not all(
            isinstance(s, float | int) and 0 <= s <= 1 for s in scores) or scores != sorted(scores, reverse=True):
        raise SmokeError(f"malformed top-k from {url}/predict: {json.dumps(top)[:300]}")
    return SmokeResult(url, latency_ms, top)
