"""The SQS worker loop for pipelines on instances:
``python -m serving.worker --config SPEC --queue-url URL --results-bucket BUCKET``.

Long-polls the queue, runs each message (serving.pipeline), deletes a message only after its result
is written, and leaves failures for SQS to redeliver and, past the receive limit, move to the
dead-letter queue. SIGTERM stops polling; the batch in hand is finished first.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving import pipeline
from serving.errors import ModelLoadError
from serving.fetch import FetchPolicy
from serving.metrics import MetricUnit, Recorder
from serving.model import Model
from serving.spec import load


class Worker:
    def __init__(self, model: Model, *, queue_url: str, bucket: str, sqs: Any, s3: Any, max_receive_count: int = 1,
                 policy: FetchPolicy = FetchPolicy(), wait_s: int = 20, metrics: Recorder | None = None) -> None:
        self.model, self.queue_url, self.bucket, self.max_receive_count = model, queue_url, bucket, max_receive_count
        self.sqs, self.s3, self.policy, self.wait_s = sqs, s3, policy, wait_s
        self.metrics = metrics or Recorder(model.spec.name)
        self.stop = threading.Event()

    def poll_once(self) -> tuple[int, int]:
        """One receive and its processing; returns (succeeded, failed)."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=self.wait_s,
                                            AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
        done: list[dict[str, str]] = []
        failed = 0
        for message in messages:
            started = time.perf_counter()
            try:
                pipeline.process(message["Body"], self.model, self.s3, self.bucket, self.policy)
            except Exception as e:  # bad input or not, the loop goes on: SQS redelivers or dead-letters it
                failed += 1
                print(f"worker: message {message['MessageId']} failed: {e!r}", file=sys.stderr, flush=True)
                if int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)) >= self.max_receive_count:
                    pipeline.record_failure(message["Body"], message["MessageId"], e, self.s3, self.bucket)
                continue
            done.append({"Id": str(len(done)), "ReceiptHandle": message["ReceiptHandle"]})
            self.metrics.add("LatencyMs", MetricUnit.Milliseconds, (time.perf_counter() - started) * 1000)
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)
        # The same two counts the Lambda handler writes: the FailedMessages alarm reads them.
        if messages:
            self.metrics.add("PipelineResults", MetricUnit.Count, len(done))
            self.metrics.add("PipelineFailures", MetricUnit.Count, failed)
        return len(done), failed

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll_once()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--results-bucket", required=True)
    parser.add_argument("--max-receive-count", type=int, default=1, help="the queue's redrive limit")
    args = parser.parse_args(argv)
    import boto3

    try:
        model = Model(load(args.config))
    except (ModelLoadError, OSError, ValueError, KeyError, TypeError) as e:
        print(f"worker: {e}", file=sys.stderr)
        return 1
    worker = Worker(model, queue_url=args.queue_url, bucket=args.results_bucket, sqs=boto3.client("sqs"),
                    s3=boto3.client("s3"), max_receive_count=args.max_receive_count)
    worker.metrics.watch_gpus()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop.set())
    worker.run()
    worker.metrics.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
