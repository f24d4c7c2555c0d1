"""The instance SQS worker against a local emulator: results written, failures left for redrive."""

from __future__ import annotations

import json
import uuid

import boto3

from crossover_serving import pipeline
from crossover_serving.fetch import FetchPolicy
from crossover_serving.model import Model
from crossover_serving.worker import Worker


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
    worker = Worker(lite0, queue_url=queue, bucket=bucket, sqs=sqs, s3=s3, wait_s=0,
                    policy=FetchPolicy.for_inputs([bucket], https=False))
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


POISON = {
    "deeply nested JSON": "[" * 100_000 + "]" * 100_000,  # RecursionError in json.loads
    "a huge integer": '{"id": "n", "image": "s3://x/y", "n": ' + "9" * 5000 + "}",  # ValueError in json.loads
    "a null id": json.dumps({"id": None, "image": "s3://x/y.png"}),  # once written as results/None.json
    "an id with a trailing newline": json.dumps({"id": "cat\n", "image": "s3://x/y.png"}),  # `$` matched before \n
    "a list": "[1, 2]",
}


def test_no_poison_message_stops_the_worker_or_costs_the_good_ones(aws: str, lite0: Model,
                                                                   photos: dict[str, bytes]) -> None:
    # GIVEN one good message and every poison a hostile round found, in the same batches
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    tag = uuid.uuid4().hex[:8]
    queue = sqs.create_queue(QueueName=f"poison-{tag}", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    bucket = f"poison-{tag}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/coffee.png", Body=photos["coffee"])
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"id": "good", "image": f"s3://{bucket}/in/coffee.png"}))
    for body in POISON.values():
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    worker = Worker(lite0, queue_url=queue, bucket=bucket, sqs=sqs, s3=s3, wait_s=0,
                    policy=FetchPolicy.for_inputs([bucket], https=False))
    # WHEN the worker polls (each delivery is the last: max_receive_count 1)
    done = sum(worker.poll_once()[0] for _ in range(3))
    # THEN it never raised, the good message has its result and is gone, and every poison has its record
    assert done == 1
    assert json.loads(s3.get_object(Bucket=bucket, Key="results/good.json")["Body"].read())["id"] == "good"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert "results/None.json" not in keys and not any("\n" in k for k in keys)
    errors = [json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys if k.startswith("errors/")]
    assert len({e["message_id"] for e in errors}) == len(POISON)
    assert all(e["error"] == "InputError" for e in errors), errors


def test_recording_a_failure_never_raises(lite0: Model) -> None:
    class BrokenS3:
        def put_object(self, **_kwargs: object) -> None:
            raise ConnectionError("S3 is down")

    assert pipeline.record_failure("[" * 100_000, "m-1", ValueError("x"), BrokenS3(), "bucket") is None


def test_a_queue_outage_is_waited_out(lite0: Model) -> None:
    # GIVEN a queue that fails twice, then stops the worker
    calls: list[str] = []

    class FlakySQS:
        def receive_message(self, **_kwargs: object) -> dict[str, object]:
            calls.append("receive")
            if len(calls) == 3:
                worker.stop.set()
                return {}
            raise ConnectionError("SQS is unreachable")

    worker = Worker(lite0, queue_url="q", bucket="b", sqs=FlakySQS(), s3=None, wait_s=0)
    worker.run()  # THEN it retried instead of exiting
    assert calls == ["receive"] * 3
