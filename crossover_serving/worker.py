"""The SQS worker loop for pipelines on instances:
``python -m crossover_serving.worker --config SPEC --queue-url URL --results-bucket BUCKET``.

Long-polls the queue, runs each message (crossover_serving.pipeline) under its own deadline, deletes a message
only after its result is written, and leaves failures for SQS to redeliver and, past the receive
limit, move to the dead-letter queue. A batch is kept invisible (its visibility timeout renewed, the
queue's own) while the worker works through it, however long that takes: no message of it is handed to
another consumer, and done twice, while it waits its turn. No message can stop it: each one's failure is caught and
recorded, the messages of a batch that succeeded are deleted whatever happened to the others, and a
queue or S3 outage is waited out. SIGTERM, or a spot interruption notice (``--watch-spot``), stops it: the
message in hand is finished, the rest of its batch released to the queue at once, for another worker.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crossover_serving import pipeline
from crossover_serving.deadline import Deadline
from crossover_serving.errors import ModelLoadError
from crossover_serving.fetch import FetchPolicy
from crossover_serving.interruption import SpotWatch
from crossover_serving.metrics import MetricUnit, Recorder
from crossover_serving.model import Model
from crossover_serving.spec import load


class Worker:
    def __init__(self, model: Model, *, queue_url: str, bucket: str, sqs: Any, s3: Any, max_receive_count: int = 1,
                 policy: FetchPolicy | None = None, wait_s: int = 20, metrics: Recorder | None = None,
                 deadline_s: float = pipeline.MESSAGE_DEADLINE_S) -> None:
        self.model, self.queue_url, self.bucket, self.max_receive_count = model, queue_url, bucket, max_receive_count
        inputs = model.spec.inputs
        self.policy = policy or FetchPolicy.for_inputs(inputs.s3, inputs.https)
        self.sqs, self.s3, self.wait_s, self.deadline_s = sqs, s3, wait_s, deadline_s
        self._visibility_s: int | None = None  # the queue's visibility timeout, read once
        self.metrics = metrics or Recorder(model.spec.name, backend=model.spec.backend)
        self.stop = threading.Event()
        self.leaving: str | None = None  # why this instance is going away (a spot notice)

    def _handle(self, message: dict[str, Any]) -> bool:
        """Run one message; True if its result is written. Never raises."""
        started = time.perf_counter()
        body, message_id = str(message.get("Body", "")), str(message.get("MessageId", ""))
        try:
            pipeline.process(body, self.model, self.s3, self.bucket, self.policy, Deadline.after(self.deadline_s))
        except Exception as e:  # bad input or not, the loop goes on: SQS redelivers or dead-letters it
            print(f"worker: message {message_id} failed: {e!r}", file=sys.stderr, flush=True)
            receives = str(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            if not receives.isdigit() or int(receives) >= self.max_receive_count:
                pipeline.record_failure(body, message_id, e, self.s3, self.bucket)
            return False
        self.metrics.add("LatencyMs", MetricUnit.Milliseconds, (time.perf_counter() - started) * 1000)
        return True

    def poll_once(self) -> tuple[int, int]:
        """One receive and its processing; returns (succeeded, failed)."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=self.wait_s,
                                            AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
        done: list[dict[str, str]] = []
        handled = 0
        try:
            with self._hidden(messages) as hidden:
                for message in messages:
                    if self.stop.is_set():
                        break
                    handled += 1
                    if self._handle(message):
                        done.append({"Id": str(len(done)), "ReceiptHandle": message["ReceiptHandle"]})
                    else:  # left to reappear when its timeout ends, for SQS to redeliver or dead-letter
                        hidden.remove(message)
        finally:  # whatever stopped the batch, what succeeded is not run again
            if done:
                self._delete(done)
            if handled < len(messages):
                self._release(messages[handled:])
        failed = handled - len(done)
        # The same two counts the Lambda handler writes: the FailedMessages alarm reads them.
        if messages:
            self.metrics.add("PipelineResults", MetricUnit.Count, len(done))
            self.metrics.add("PipelineFailures", MetricUnit.Count, failed)
        return len(done), failed

    def _delete(self, done: list[dict[str, str]]) -> None:
        try:
            response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)
        except Exception as e:  # the messages become visible again and are redone: their results are the same
            print(f"worker: could not delete {len(done)} finished message(s): {e!r}", file=sys.stderr, flush=True)
            return
        for failure in response.get("Failed", []):
            print(f"worker: could not delete a finished message: {failure}", file=sys.stderr, flush=True)

    def visibility_s(self) -> int:
        if self._visibility_s is None:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout"])
            self._visibility_s = int(attributes["Attributes"]["VisibilityTimeout"])
        return self._visibility_s

    @contextmanager
    def _hidden(self, messages: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Renew the visibility timeout of the batch's messages every third of it until the batch is through:
        ten slow messages run one after another outlast any fixed timeout, and a message that reappears is run
        twice. Yields the messages renewed: one taken out of it (a failure) is left to its timeout."""
        hidden = list(messages)
        through = threading.Event()
        seconds = self.visibility_s() if messages else 0

        def renew() -> None:
            while not through.wait(seconds / 3):
                if kept := list(hidden):
                    self._set_visibility(kept, seconds, "keep hidden")

        renewer = threading.Thread(target=renew, name="visibility", daemon=True)
        if seconds:
            renewer.start()
        try:
            yield hidden
        finally:
            through.set()
            if renewer.is_alive():
                renewer.join()

    def _release(self, messages: list[dict[str, Any]]) -> None:
        """Make messages this worker will not run visible again now, rather than when their timeout ends."""
        self._set_visibility(messages, 0, "release")

    def _set_visibility(self, messages: list[dict[str, Any]], seconds: int, what: str) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
                   for i, m in enumerate(messages)]
        try:
            self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as e:  # they become visible when their visibility timeout ends: sooner or later, not lost
            print(f"worker: could not {what} {len(entries)} message(s): {e!r}", file=sys.stderr, flush=True)

    def leave(self, reason: str) -> None:
        """The instance is going away (crossover_serving.interruption): take no more messages."""
        self.leaving = reason
        self.stop.set()

    def run(self) -> None:
        pause = 1.0
        while not self.stop.is_set():
            try:
                self.poll_once()
                pause = 1.0
            except Exception as e:  # the queue is unreachable: wait and try again, never exit
                print(f"worker: receiving failed, retrying in {pause:g} s: {e!r}", file=sys.stderr, flush=True)
                self.stop.wait(pause)
                pause = min(30.0, pause * 2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossover_serving.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="models/<name>.yaml, or a JSON serving spec")
    parser.add_argument("--queue-url", required=True, help="the queue to consume")
    parser.add_argument("--results-bucket", required=True, help="where results/ and errors/ are written")
    parser.add_argument("--max-receive-count", type=int, default=1, help="the queue's redrive limit")
    parser.add_argument("--watch-spot", action="store_true",
                        help="stop taking messages on a spot interruption notice or rebalance recommendation")
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
    terminated = threading.Event()

    def stop(*_: object) -> None:
        terminated.set()
        worker.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    if args.watch_spot:
        SpotWatch(worker.leave).start()
    worker.run()
    if worker.leaving is not None:  # exiting now would only have systemd start a worker that takes messages
        terminated.wait()
    worker.metrics.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
