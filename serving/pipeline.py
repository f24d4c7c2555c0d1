"""The pipeline message contract, shared by the Lambda SQS adapter and the instance worker.

A message is ``{"id": "<letters, digits, . _ ->", "image": "s3://..." | "https://..."}``; its result
is ``results/<id>.json`` in the results bucket. A message that fails is never deleted: SQS makes it
visible again and, past the queue's receive limit, moves it to the dead-letter queue. On its last
delivery its error is written to ``errors/<id>.json`` (the message id when the body has no usable id),
so the reason is on record beside the message in the dead-letter queue.
"""

from __future__ import annotations

import json
import re
from typing import Any

from serving.api import prediction
from serving.errors import InputError
from serving.fetch import FetchPolicy, fetch
from serving.model import Model

_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
MESSAGE_SHAPE = '{"id": "<letters, digits, . _ ->", "image": "s3://..." | "https://..."}'


def parse(body: str) -> tuple[str, str]:
    """The message's id and image reference; InputError for anything else."""
    try:
        message = json.loads(body)
    except json.JSONDecodeError as e:
        raise InputError(f"the message is not JSON ({e}); expected {MESSAGE_SHAPE}", code="bad_message") from None
    if not isinstance(message, dict) or not isinstance(message.get("image"), str) \
            or not _ID.match(str(message.get("id", ""))):
        raise InputError(f"expected {MESSAGE_SHAPE}; got {body[:200]!r}", code="bad_message")
    return str(message["id"]), message["image"]


def result_key(message_id: str) -> str:
    return f"results/{message_id}.json"


def process(body: str, model: Model, s3: Any, bucket: str, policy: FetchPolicy) -> str:
    """Predict one message's image and write its result; returns the result's key."""
    message_id, reference = parse(body)
    result = {"id": message_id, **prediction(model.spec.name, model.predict(fetch(reference, policy)))}
    key = result_key(message_id)
    # Written once per id: a redelivered duplicate overwrites the same object with the same answer.
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(result).encode(), ContentType="application/json")
    return key


def record_failure(body: str, message_id: str, error: Exception, s3: Any, bucket: str) -> str:
    """Write the reason a message failed on its last delivery; returns the record's key."""
    try:
        key_id = parse(body)[0]
    except InputError:
        key_id = message_id
    key = f"errors/{key_id}.json"
    record = {"id": key_id, "message_id": message_id, "error": type(error).__name__, "message": str(error)}
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode(), ContentType="application/json")
    return key
