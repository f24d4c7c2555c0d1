"""Lambda entry point ``crossover_serving.lambda_handler.handler``: ALB, function-URL and SQS events.

The model loads during the init phase (once per execution environment; on Lambda Managed Instances, once in
each of the environment's processes, which the runtime starts for its concurrent requests), from the spec in
CROSSOVER_SPEC. SQS records follow crossover_serving.pipeline's contract; each result is written to
``s3://$RESULTS_BUCKET/results/<id>.json`` and failures are reported per record, so only those are
retried and, past the queue's receive limit, land in the queue's dead-letter queue. Every HTTP event
gets an answer: bad requests a JSON 4xx, a fault of ours a JSON 500 counted as ``ServerFaults``
(the function's own Errors metric then counts only crashes and timeouts). A request's deadline is the
HTTP server's, or less when the invocation has less time left (Lambda Managed Instances do not stop an
invocation at its timeout: the deadline is what ends its work).
"""

from __future__ import annotations

import base64
import json
import os
import time
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from crossover_serving import pipeline
from crossover_serving.api import image_bytes, prediction
from crossover_serving.deadline import Deadline
from crossover_serving.errors import InputError
from crossover_serving.fetch import FetchPolicy
from crossover_serving.model import Model
from crossover_serving.names import NAMESPACE, SERVICE
from crossover_serving.spec import Spec

logger = Logger()
metrics = Metrics(namespace=NAMESPACE)
# A batch whose records all failed is still answered record by record (not by raising): SQS redelivers
# exactly the reported ones either way, and the metrics below see every batch.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
HTTP_DEADLINE_S = 10.0  # as the instance server's (crossover_serving.server.Limits.deadline_s)
MARGIN_S = 1.0  # kept back from the invocation's remaining time to answer before Lambda stops it
MESSAGE_FLOOR_S = 3.0  # kept for each record of a batch still to run: a fetch, a decode and an inference
FAULT = {"error": "internal", "message": "the function failed on this request; the fault is logged and counted"}


@cache
def model() -> Model:
    return Model(Spec.from_mapping(json.loads(os.environ["CROSSOVER_SPEC"])))


@cache
def policy() -> FetchPolicy:
    inputs = model().spec.inputs
    return FetchPolicy.for_inputs(inputs.s3, inputs.https)


def _deadline(context: Any, seconds: float, *, after: int = 0) -> Deadline:
    """``seconds`` from now, or less if the invocation ends sooner. ``after``: the records of its batch still to
    run after this one, each of which keeps a floor of the time left (``MESSAGE_FLOOR_S``, or an equal share
    when less is left): a slow record cannot leave its batch-mates no time at all (they would fail on every
    delivery, untried, until dead-lettered), and a record early in a batch still gets all the rest."""
    remaining = getattr(context, "get_remaining_time_in_millis", lambda: seconds * 1000 + MARGIN_S * 1000)()
    left = remaining / 1000 - MARGIN_S
    floor = min(MESSAGE_FLOOR_S, left / (after + 1))
    return Deadline.after(max(0.0, min(seconds, left - after * floor)))


def _respond(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "statusDescription": f"{status}", "isBase64Encoded": False,
            "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def _get(mapping: Any, key: str, kind: type, default: Any) -> Any:
    """``mapping[key]`` when both are of the expected shape: events from the wire are not trusted."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, kind) else default


def _http(event: dict[str, Any], context: Any) -> dict[str, Any]:
    http = _get(_get(event, "requestContext", dict, {}), "http", dict, {})
    method = _get(event, "httpMethod", str, "") or _get(http, "method", str, "")
    path = model().spec.route(_get(event, "path", str, "") or _get(event, "rawPath", str, "") or "/")
    if path in ("/health", "/ready") and method == "GET":
        return _respond(200, {"status": "ok", "model": model().spec.name})
    if path != "/predict":
        return _respond(404, {"error": "not_found", "message": "POST an image to /predict"})
    if method != "POST":
        return _respond(405, {"error": "method_not_allowed", "message": "use POST"})
    raw = _get(event, "body", str, "")
    try:
        # surrogatepass: a JSON event can carry lone surrogates; they become bytes the parser refuses.
        body = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") is True \
            else raw.encode("utf-8", "surrogatepass")
    except ValueError:
        return _respond(400, {"error": "bad_body", "message": "the body is not valid base64"})
    headers = {str(k).lower(): v for k, v in _get(event, "headers", dict, {}).items() if isinstance(v, str)}
    started = time.perf_counter()
    try:
        top = model().predict(image_bytes(body, headers.get("content-type"), policy(),
                                          _deadline(context, HTTP_DEADLINE_S)))
    except InputError as e:
        metrics.add_metric(name="InputErrors", unit=MetricUnit.Count, value=1)
        return _respond(e.status, e.body())
    metrics.add_metric(name="LatencyMs", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000)
    return _respond(200, prediction(model().spec.name, top))


@cache
def _s3() -> Any:
    import boto3  # in the Lambda runtime; only the pipeline path writes to S3

    return boto3.client("s3")


def _record(record: SQSRecord, context: Any, after: int) -> None:
    bucket = os.environ["RESULTS_BUCKET"]
    try:
        pipeline.process(record.body, model(), _s3(), bucket, policy(),
                         _deadline(context, pipeline.MESSAGE_DEADLINE_S, after=after))
    except Exception as error:
        receives = str(_get(record.raw_event, "attributes", dict, {}).get("ApproximateReceiveCount", "1"))
        if not receives.isdigit() or int(receives) >= int(os.environ.get("MAX_RECEIVE_COUNT", "1")):
            pipeline.record_failure(record.body, record.message_id, error, _s3(), bucket)
        raise  # reported as this record's failure: SQS redelivers it or moves it to the dead-letter queue


def _is_sqs_batch(records: list[Any]) -> bool:
    """Records SQS could have sent: each one can then be reported by its id (a direct invocation may send
    anything under "Records")."""
    return all(isinstance(r, dict) and isinstance(r.get("messageId"), str) and isinstance(r.get("body"), str)
               for r in records)


def _batch(records: list[Any], event: dict[str, Any], context: Any) -> dict[str, Any]:
    if not records:
        return {"batchItemFailures": []}
    after = iter(range(len(records) - 1, -1, -1))  # records still to run after the one starting
    batch: dict[str, Any] = dict(process_partial_response(
        event=event, record_handler=lambda record: _record(record, context, next(after)), processor=processor,
        context=context))
    failed = len(batch["batchItemFailures"])
    metrics.add_metric(name="PipelineFailures", unit=MetricUnit.Count, value=failed)
    metrics.add_metric(name="PipelineResults", unit=MetricUnit.Count, value=len(records) - failed)
    return batch


def _fault() -> None:
    """Counted for the model, and for its backend alone (crossover_serving.metrics.PER_BACKEND): a canary is
    judged by its own faults."""
    spec = model().spec
    metrics.add_metric(name="ServerFaults", unit=MetricUnit.Count, value=1)
    with single_metric(name="ServerFaults", unit=MetricUnit.Count, value=1, namespace=NAMESPACE,
                       default_dimensions={"Model": spec.name, "service": SERVICE}) as metric:
        metric.add_dimension(name="Backend", value=spec.backend or "lambda")


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    metrics.add_dimension(name="Model", value=model().spec.name)
    records = event.get("Records") if isinstance(event, dict) else None
    if isinstance(records, list) and _is_sqs_batch(records):
        return _batch(records, event, context)
    try:
        response = _http(event, context) if isinstance(event, dict) and records is None else _respond(
            400, {"error": "bad_event", "message": "expected a load balancer, function URL or SQS event"})
    except Exception:  # a fault of ours, never of the request: logged, counted, answered without internals
        logger.exception("request failed")
        _fault()
        response = _respond(500, FAULT)
    metrics.add_metric(name=f"Status{response['statusCode'] // 100}xx", unit=MetricUnit.Count, value=1)
    return response


if "CROSSOVER_SPEC" in os.environ:
    model()  # load during init, which is not billed against the first request's latency budget
