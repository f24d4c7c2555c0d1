"""Nothing lost: over random batches, every message ends exactly once as a result or in the DLQ.

Against a local AWS emulator (moto's server: S3 and SQS on loopback), the real worker loop and the
real Lambda handler consume a queue with a redrive policy. Batches mix good images, poison messages,
images that are not images, missing objects and duplicates, and one round crashes mid-batch (its
deletes never happen, as when a process dies or an invocation times out). The consumer is the worker,
the Lambda handler, or both in turns: a pipeline's backend switch, while CloudFormation has created the
new consumer and not yet deleted the old one.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossover_serving import lambda_handler
from crossover_serving.fetch import FetchPolicy
from crossover_serving.model import Model
from crossover_serving.worker import Worker
from tests.test_lambda_handler import Context

MAX_RECEIVES = 2
KINDS = ("good", "poison", "not_an_image", "missing")


def _queues(sqs: Any, tag: str) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName=f"dlq-{tag}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=f"in-{tag}", Attributes={"VisibilityTimeout": "0", "RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": arn, "maxReceiveCount": MAX_RECEIVES})})["QueueUrl"]
    return queue, dlq


def _body(kind: str, index: int, bucket: str) -> str:
    image = {"good": "in/cat.png", "not_an_image": "in/text.png", "missing": "in/nothing.png"}.get(kind)
    return "{poison" if image is None else json.dumps({"id": f"m{index}", "image": f"s3://{bucket}/{image}"})


def _lambda_round(sqs: Any, queue: str, crash: bool) -> None:
    """One Lambda invocation as the SQS event source runs it: receive, invoke, delete what succeeded."""
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
    if not messages:
        return
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:in",
                "awsRegion": "us-east-1"} for m in messages]
    response = lambda_handler.handler({"Records": records}, Context())
    if crash:
        return  # the invocation died after its work: nothing is deleted, everything comes back
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            if m["MessageId"] not in failed]
    if done:
        sqs.delete_message_batch(QueueUrl=queue, Entries=done)


class _CrashingSqs:
    """The real client, except that one delete fails as if the worker process died before it."""

    def __init__(self, client: Any) -> None:
        self.client, self.crash = client, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def delete_message_batch(self, **kwargs: Any) -> Any:
        if self.crash:
            self.crash = False
            raise ConnectionError("worker died before deleting its batch")
        return self.client.delete_message_batch(**kwargs)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=8), duplicates=st.integers(0, 2),
       crash_round=st.integers(0, 3), consumer=st.sampled_from(["worker", "lambda", "both"]))
def test_every_message_ends_once_as_a_result_or_in_the_dead_letter_queue(
        aws: str, lite0: Model, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
        kinds: list[str], duplicates: int, crash_round: int, consumer: str) -> None:
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    tag = uuid.uuid4().hex[:10]
    queue, dlq = _queues(sqs, tag)
    bucket = f"pipe-{tag}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/cat.png", Body=photos["chelsea"])
    s3.put_object(Bucket=bucket, Key="in/text.png", Body=b"plain text, not an image")
    bodies = [_body(kind, i, bucket) for i, kind in enumerate(kinds)]
    bodies += bodies[:duplicates]  # SQS delivers at least once: the same message twice
    sent = {sqs.send_message(QueueUrl=queue, MessageBody=b)["MessageId"]: b for b in bodies}

    monkeypatch.setenv("RESULTS_BUCKET", bucket)
    monkeypatch.setenv("MAX_RECEIVE_COUNT", str(MAX_RECEIVES))
    monkeypatch.setattr(lambda_handler, "model", lambda: lite0)
    policy = FetchPolicy.for_inputs([f"{bucket}/in/"], https=False)  # the config's inputs.s3
    monkeypatch.setattr(lambda_handler, "policy", lambda: policy)
    lambda_handler._s3.cache_clear()
    crashing = _CrashingSqs(sqs)
    worker = Worker(lite0, queue_url=queue, bucket=bucket, sqs=crashing, s3=s3, wait_s=0,
                    max_receive_count=MAX_RECEIVES, policy=policy)
    for round_ in range(12):
        # "both": a switch in progress, when the old and the new consumer drain the same queue in turns.
        if consumer == "lambda" or (consumer == "both" and round_ % 2):
            _lambda_round(sqs, queue, crash=round_ == crash_round)
        else:
            crashing.crash = round_ == crash_round
            worker.poll_once()  # a crash in the delete leaves its batch undeleted

    results = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="results/").get("Contents", [])}
    dead: dict[str, str] = {}
    while batch := sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", []):
        for m in batch:
            dead[m["MessageId"]] = m["Body"]
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
    left = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert left["ApproximateNumberOfMessages"] == left["ApproximateNumberOfMessagesNotVisible"] == "0"
    for message_id, body in sent.items():
        has_result = "image" in body and f"results/{json.loads(body)['id']}.json" in results
        assert has_result != (message_id in dead), f"{body} lost or duplicated (result: {has_result})"
        assert has_result == body.endswith('in/cat.png"}')
    # Each dead-lettered message left its reason, keyed by its id (or its message id when unparseable).
    errors = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="errors/").get("Contents", [])}
    for message_id, body in dead.items():
        key = json.loads(body)["id"] if body.startswith('{"') else message_id
        assert f"errors/{key}.json" in errors, f"no error recorded for {body}"
