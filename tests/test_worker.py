"""The instance SQS worker against a local emulator: results written, failures left for redrive."""

from __future__ import annotations

import json
import uuid

import boto3

from serving.model import Model
from serving.worker import Worker


def test_worker_deletes_only_what_succeeded_and_dead_letters_the_rest(aws: str, lite0: Model,
                                                                      photos: dict[str, bytes]) -> None:
    # GIVEN a queue with a dead-letter queue (max 2 receives) and a mixed set of messages
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    tag = uuid.uuid4().hex[:8]
    dlq = sqs.create_queue(QueueName=f"dlq-{tag}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=f"in-{tag}", Attributes={
        "VisibilityTimeout": "0", "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    })["QueueUrl"]
    bucket = f"results-{tag}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/coffee.png", Body=photos["coffee"])
    bodies = [json.dumps({"id": "coffee", "image": f"s3://{bucket}/in/coffee.png"}), "poison",
              json.dumps({"id": "missing", "image": f"s3://{bucket}/in/nothing.png"})]
    for body in bodies:
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    worker = Worker(lite0, queue_url=queue, bucket=bucket, sqs=sqs, s3=s3, wait_s=0)
    # WHEN the worker polls until the queue is empty
    totals = [0, 0]
    for _ in range(10):
        done, failed = worker.poll_once()
        totals[0] += done
        totals[1] += failed
    # THEN the good message has a result and is gone; each bad one reached the dead-letter queue once
    assert totals[0] == 1
    result = json.loads(s3.get_object(Bucket=bucket, Key="results/coffee.json")["Body"].read())
    assert result["top"][0]["label"] == "espresso"
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert sorted(m["Body"] for m in dead) == sorted(bodies[1:])
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
