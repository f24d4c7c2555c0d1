"""The pipeline message contract, shared by the Lambda SQS adapter and the instance worker.

A message is ``{"id": "<letters, digits, . _ ->", "image": "s3://..." | "https://..."}``; its result
is ``results/<id>.json`` in the results bucket. A message that fails is never deleted: SQS makes it
visible again and, past the queue's receive limit, moves it to the dead-letter queue. On its last
delivery its error is written to ``errors/<id>.json`` (the message id when the body has no usable id),
so the reason is on record beside the message in the dead-letter queue. Recording a failure never
raises: a poison message cannot stop the consumer that meets it.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from crossover_serving.api import json_object, prediction
from crossover_serving.deadline import Deadline
from crossover_serving.errors import InputError
from crossover_serving.fetch import FetchPolicy, fetch
from crossover_serving.model import Model

_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
MESSAGE_SHAPE = '{"id": "<1-200 letters, digits, . _ ->", "image": "s3://..." | "https://..."}'
MESSAGE_DEADLINE_S = 30.0  # one message, from its receipt to its result: fetch, decode and inference


def parse(body: str) -> tuple[str, str]:
    """The message's id and image reference; InputError for anything else."""
    message = json_object(body, "the message", MESSAGE_SHAPE, "bad_message")
    message_id, image = message.get("id"), message.get("image")
    if not isinstance(message_id, str) or not _ID.fullmatch(message_id) or not isinstance(image, str):
        raise InputError(f"expected {MESSAGE_SHAPE}; got {body[:200]!r}", code="bad_message")
    return message_id, image


def result_key(message_id: str) -> str:
    return f"results/{message_id}.json"


def process(body: str, model: Model, s3: Any, bucket: str, policy: FetchPolicy, deadline: Deadline) -> str:
    """Predict one message's image and write its result; returns the result's key."""
    message_id, reference = parse(body)
    result = {"id": message_id, **prediction(model.spec.name, model.predict(fetch(reference, policy, deadline)))}
    key = result_key(message_id)
    # Written once per id: a redelivered duplicate overwrites the same object with the same answer.
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(result).encode(), ContentType="application/json")
    return key


def record_failure(body: str, message_id: str, error: Exception, s3: Any, bucket: str) -> str | None:
    """Write the reason a message failed on its last delivery; returns the record's key, or None when even
    that failed (said on stderr: the message still reaches the dead-letter queue)."""
    try:
        try:
            key_id = parse(body)[0]
        except InputError:
            key_id = message_id if _ID.fullmatch(message_id) else "unnamed"
        key = f"errors/{key_id}.json"
        record = {"id": key_id, "message_id": message_id, "error": type(error).__name__, "message": str(error)}
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode(), ContentType="application/json")
    except Exception as e:  # S3 down, a denied write: the failure itself must not become a crash
        print(f"pipeline: could not record the failure of message {message_id}: {e!r}", file=sys.stderr, flush=True)
        return None
    return key
