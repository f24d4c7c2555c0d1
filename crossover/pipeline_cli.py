"""`crossover enqueue` and `crossover results`: feed a deployed pipeline and drain what it wrote."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.progress import Progress

from crossover.smoke import SmokeError


def message_id(uri: str) -> str:
    """A stable id for an image: its file name (safe characters only) and a short hash of the whole URI."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", uri.rstrip("/").rsplit("/", 1)[-1])[:80] or "image"
    return f"{stem}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}"


def enqueue(sqs: Any, queue_url: str, uris: Iterable[str]) -> int:
    """Send one message per URI, ten at a time; returns how many were sent. Refuses non-S3/HTTPS URIs."""
    pending = list(uris)
    bad = [u for u in pending if not u.startswith(("s3://", "https://"))]
    if bad:
        raise SmokeError(f"only s3:// and https:// images can be enqueued; got {bad[:3]}")
    sent = 0
    with Progress(transient=True) as progress:
        task = progress.add_task("enqueue", total=len(pending))
        for start in range(0, len(pending), 10):
            chunk = pending[start:start + 10]
            entries = [{"Id": str(i), "MessageBody": json.dumps({"id": message_id(u), "image": u})}
                       for i, u in enumerate(chunk)]
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if response.get("Failed"):
                raise SmokeError(f"the queue refused {len(response['Failed'])} messages: {response['Failed'][:2]}")
            sent += len(chunk)
            progress.advance(task, len(chunk))
    return sent


def upload(s3: Any, inputs: list[str], uris: Iterable[str]) -> list[str]:
    """Local image files put into S3 under the first declared input (``bucket`` or ``bucket/prefix/``, created if
    missing: the rehearsal's emulator starts without it); their s3:// URIs. URIs pass as they are."""
    refs = []
    for uri in uris:
        path = Path(uri)
        if uri.startswith(("s3://", "https://")) or not path.is_file():
            refs.append(uri)
            continue
        if not inputs:
            raise SmokeError(f"{uri} is a local file; the pipeline declares no inputs.s3 to put it in")
        bucket, _, prefix = inputs[0].partition("/")
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)
        key = f"{prefix.rstrip('/') + '/' if prefix else ''}{path.name}"
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        refs.append(f"s3://{bucket}/{key}")
    return refs


def collect(s3: Any, bucket: str, out: Path) -> tuple[int, int]:
    """Download results/ and errors/ into ``out``; returns (results, errors)."""
    counts = []
    for prefix in ("results/", "errors/"):
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents", [])]
        (out / prefix).mkdir(parents=True, exist_ok=True)
        with Progress(transient=True) as progress:
            task = progress.add_task(prefix.rstrip("/"), total=len(keys))
            for key in keys:
                (out / key).write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                progress.advance(task)
        counts.append(len(keys))
    return counts[0], counts[1]
