"""The Lambda adapter with real events: ALB, function URL, and SQS batches against a local emulator."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from crossover_serving import lambda_handler
from crossover_serving.spec import Spec
from tests import bombs
from tests.conftest import CAT_CLASSES, ROOT

INPUTS = "crossover-test-inputs"  # the bucket the test spec declares as its inputs.s3


@dataclass
class Context:
    """The attributes of the Lambda runtime's context object that the handler reads."""

    function_name: str = "crossover-test"
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:crossover-test"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, lite0_spec: Spec) -> Iterator[Any]:
    spec = {"name": lite0_spec.name, "artifact": lite0_spec.artifact,
            "input": {"size": 224, "resize": 256, "mean": list(lite0_spec.input.mean),
                      "std": list(lite0_spec.input.std)}, "inputs": {"s3": [f"{INPUTS}/"]}}
    monkeypatch.setenv("CROSSOVER_SPEC", json.dumps(spec))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "crossover")
    lambda_handler.model.cache_clear()
    lambda_handler.policy.cache_clear()
    yield lambda_handler.handler
    lambda_handler.model.cache_clear()
    lambda_handler.policy.cache_clear()


def lambda_metrics(out: str) -> dict[str, float]:
    """The metric values the handler's embedded-metric-format lines on stdout carry, summed by name."""
    totals: dict[str, float] = {}
    for line in out.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(value if isinstance(value, list)
                                                                             else [value])
    return totals


def alb_event(body: bytes, content_type: str = "image/png", path: str = "/predict") -> dict[str, Any]:
    return {"requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:"
                                                          "targetgroup/t/0123456789abcdef"}},
            "httpMethod": "POST", "path": path, "queryStringParameters": {},
            "headers": {"content-type": content_type, "host": "internal-lb"},
            "body": base64.b64encode(body).decode(), "isBase64Encoded": True}


def url_event(body: bytes, content_type: str = "image/png") -> dict[str, Any]:
    return {"version": "2.0", "rawPath": "/predict", "rawQueryString": "",
            "headers": {"content-type": content_type},
            "requestContext": {"http": {"method": "POST", "path": "/predict"}, "requestId": "r"},
            "body": base64.b64encode(body).decode(), "isBase64Encoded": True}


def test_alb_event_predicts_a_cat(handler: Any, photos: dict[str, bytes]) -> None:
    response = handler(alb_event(photos["chelsea"]), Context())
    assert response["statusCode"] == 200 and response["isBase64Encoded"] is False
    body = json.loads(response["body"])
    assert body["model"] == "efficientnet-lite0" and body["top"][0]["label"] in CAT_CLASSES


def test_function_url_event_predicts_espresso(handler: Any, photos: dict[str, bytes]) -> None:
    response = handler(url_event(photos["coffee"]), Context())
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["top"][0]["label"] == "espresso"


@pytest.mark.parametrize(("event", "status", "code"), [
    (alb_event(b""), 400, "empty"),
    (alb_event(b"garbage" * 20, "application/octet-stream"), 415, "unsupported_format"),
    (alb_event(b'{"url": "http://169.254.169.254/"}', "application/json"), 403, "forbidden_url"),
    ({**alb_event(b""), "body": "%%%not-base64", "isBase64Encoded": True}, 400, "bad_body"),
    (alb_event(b"x", path="/admin"), 404, "not_found"),
])
def test_bad_requests_get_json_errors(handler: Any, event: dict[str, Any], status: int, code: str) -> None:
    response = handler(event, Context())
    assert (response["statusCode"], json.loads(response["body"])["error"]) == (status, code)


def test_health_checks_answer(handler: Any) -> None:
    event = {**alb_event(b""), "httpMethod": "GET", "path": "/health"}
    assert handler(event, Context())["statusCode"] == 200


def sqs_record(body: str) -> dict[str, Any]:
    return {"messageId": str(uuid.uuid4()), "receiptHandle": "h", "body": body, "attributes": {},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:in", "awsRegion": "us-east-1"}


def test_sqs_batch_writes_results_and_reports_each_failure(handler: Any, aws: str, monkeypatch: pytest.MonkeyPatch,
                                                           photos: dict[str, bytes]) -> None:
    # GIVEN images in a bucket of the local emulator and a batch mixing good and poison messages
    s3 = boto3.client("s3")
    bucket = f"results-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    images = _inputs(s3, photos)
    monkeypatch.setenv("RESULTS_BUCKET", bucket)
    lambda_handler._s3.cache_clear()
    records = [sqs_record(json.dumps({"id": "cat-1", "image": f"s3://{images}/in/cat.png"})),
               sqs_record("{not json"),
               sqs_record(json.dumps({"id": "bad-image", "image": f"s3://{images}/in/text.png"})),
               sqs_record(json.dumps({"id": "../escape", "image": f"s3://{images}/in/cat.png"})),
               sqs_record(json.dumps({"id": "meta", "image": "http://169.254.169.254/latest/"})),
               sqs_record(json.dumps({"id": "elsewhere", "image": f"s3://{bucket}/in/cat.png"}))]
    # WHEN the handler runs the batch
    response = handler({"Records": records}, Context())
    # THEN only the good message has a result, and every other one is reported by its own id
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed == [r["messageId"] for r in records[1:]] and all(failed)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="results/").get("Contents", [])]
    assert keys == ["results/cat-1.json"]
    result = json.loads(s3.get_object(Bucket=bucket, Key="results/cat-1.json")["Body"].read())
    assert result["id"] == "cat-1" and result["top"][0]["label"] in CAT_CLASSES


def test_handler_module_never_imports_the_kit() -> None:
    for path in (ROOT / "crossover_serving").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (aws_cdk|crossover)\b", text, re.M), path


def _inputs(s3: Any, photos: dict[str, bytes]) -> str:
    """The declared input bucket, with a cat and a text file that is not an image."""
    s3.create_bucket(Bucket=INPUTS)
    s3.put_object(Bucket=INPUTS, Key="in/cat.png", Body=photos["chelsea"])
    s3.put_object(Bucket=INPUTS, Key="in/text.png", Body=b"not an image")
    return INPUTS


def test_a_poison_message_on_its_last_delivery_leaves_its_record(handler: Any, aws: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN messages that once escaped the failure recording (RecursionError, ValueError in json.loads)
    s3 = boto3.client("s3")
    bucket = f"results-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("RESULTS_BUCKET", bucket)
    lambda_handler._s3.cache_clear()
    records = [sqs_record("[" * 100_000 + "]" * 100_000), sqs_record('{"id": "n", "n": ' + "9" * 5000 + "}")]
    # WHEN they fail on their last delivery (MAX_RECEIVE_COUNT defaults to 1)
    response = handler({"Records": records}, Context())
    # THEN both are reported and both have their errors/ record, under their message ids
    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == {r["messageId"] for r in records}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="errors/").get("Contents", [])}
    assert keys == {f"errors/{r['messageId']}.json" for r in records}


@pytest.mark.parametrize(("event", "status", "code"), [
    ([1, 2, 3], 400, "bad_event"),
    ("a string", 400, "bad_event"),
    ({}, 404, "not_found"),
    ({**alb_event(b""), "isBase64Encoded": False, "body": "\ud800"}, 415, "unsupported_format"),
    (alb_event(b"[" * 8000 + b"]" * 8000, "application/json"), 400, "bad_json"),
    (alb_event(b'{"url": "' + b"9" * 5000 + b'"}', "application/json"), 403, "forbidden_url"),
    (alb_event(b'{"url": 1' + b"0" * 5000 + b"}", "application/json"), 400, "bad_json"),
    (alb_event(b'{"s3": "s3://another-bucket/cat.png"}', "application/json"), 403, "forbidden_url"),
])
def test_every_event_gets_an_answer(handler: Any, event: Any, status: int, code: str) -> None:
    response = handler(event, Context())
    assert (response["statusCode"], json.loads(response["body"])["error"]) == (status, code)


def test_a_fault_is_a_json_500_without_internals(handler: Any, monkeypatch: pytest.MonkeyPatch,
                                                 photos: dict[str, bytes]) -> None:
    def broken(_tensors: object) -> None:
        raise RuntimeError("internal detail /opt/secret")

    monkeypatch.setattr(lambda_handler.model(), "predict_batch", broken)
    response = handler(alb_event(photos["chelsea"]), Context())
    assert response["statusCode"] == 500 and json.loads(response["body"])["error"] == "internal"
    assert "secret" not in response["body"]


def test_an_image_too_large_for_the_functions_memory_is_refused(handler: Any, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    # GIVEN a function of 512 MB and a 1.6 KB lossless WebP of 8000 x 5000 (~600 MB to decode)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
    lambda_handler.model.cache_clear()
    response = handler(alb_event(bombs.webp(8000, 5000), "image/webp"), Context())
    assert (response["statusCode"], json.loads(response["body"])["error"]) == (413, "too_large_to_decode")


def test_under_a_path_prefix_the_function_answers_the_prefixed_path(handler: Any, monkeypatch: pytest.MonkeyPatch,
                                                                    photos: dict[str, bytes]) -> None:
    # GIVEN the function behind a shared load balancer's /cats rule
    spec = json.loads(os.environ["CROSSOVER_SPEC"])
    monkeypatch.setenv("CROSSOVER_SPEC", json.dumps({**spec, "path_prefix": "/cats"}))
    lambda_handler.model.cache_clear()
    # WHEN the load balancer passes /cats/predict on THEN it is answered as /predict; /dogs/predict is not
    answer = handler(alb_event(photos["chelsea"], path="/cats/predict"), Context())
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["top"][0]["label"] in CAT_CLASSES
    assert handler(alb_event(photos["chelsea"], path="/dogs/predict"), Context())["statusCode"] == 404
