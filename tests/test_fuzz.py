"""Property-based fuzzing (hypothesis): no input, however hostile, gets anything but a clear error.

Short runs here (CI, 150 examples per target); longer by hand: ``make fuzz`` (HYPOTHESIS_PROFILE=long,
FUZZ_EXAMPLES examples per target, 20,000 unless set), and scripts/reliability.py reports the counts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from crossover.config import ConfigError, load
from crossover_serving.api import image_bytes
from crossover_serving.deadline import Deadline
from crossover_serving.errors import InputError
from crossover_serving.fetch import FetchPolicy
from crossover_serving.images import MAX_PIXELS, MAX_SCANS, Preprocessor
from crossover_serving.spec import InputSpec, Spec
from tests import bombs

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")), deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SEED = Path(__file__).parent / "data" / "chelsea.png"
PREPROCESS = Preprocessor(InputSpec(size=32, resize=36))


def _seed_images() -> list[bytes]:
    image = Image.open(SEED).convert("RGB").resize((64, 48))
    out = []
    for fmt in ("PNG", "JPEG", "WEBP"):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image with bytes flipped, cut or spliced: what a hostile or broken client sends."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


@given(mutated_images())
def test_decoding_never_fails_with_anything_but_an_input_error(data: bytes) -> None:
    try:
        tensor = PREPROCESS(data)
    except InputError as e:
        assert 400 <= e.status < 500 and str(e)
    else:
        assert tensor.shape == (3, 32, 32)


@given(st.binary(max_size=2048), st.sampled_from(["image/png", "application/json", "text/plain", None,
                                                 "application/octet-stream; charset=x", "IMAGE/JPEG"]))
def test_request_bodies_never_fail_with_anything_but_an_input_error(body: bytes, content_type: str | None) -> None:
    try:
        image_bytes(body, content_type, FetchPolicy(), Deadline.after(1))  # nothing declared: never any fetch
    except InputError as e:
        assert 400 <= e.status < 500 and str(e)


# No subnormal floats: they take no path a normal float does not, and a library that another test module
# loads into the same pytest worker can set the CPU's flush-to-zero mode, in which hypothesis refuses them.
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_subnormal=False)
           | st.text(max_size=20))
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=10)


@given(json_values)
def test_json_requests_never_fail_with_anything_but_an_input_error(value: Any) -> None:
    try:
        image_bytes(json.dumps(value).encode(), "application/json", FetchPolicy(), Deadline.after(1))
    except InputError as e:
        assert 400 <= e.status < 500


@given(event=st.dictionaries(st.sampled_from(["httpMethod", "path", "body", "isBase64Encoded", "headers", "rawPath",
                                              "requestContext"]), json_values, max_size=7))
def test_lambda_http_events_never_raise(event: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                        lite0_spec: Any) -> None:
    from crossover_serving import lambda_handler

    monkeypatch.setattr(lambda_handler, "model", lambda: _Stub(lite0_spec))
    try:
        response = lambda_handler._http(event, None)
    except (AttributeError, TypeError):
        pytest.fail(f"event {event!r} crashed the handler")
    assert 200 <= response["statusCode"] < 500


class _Stub:
    """Answers like the model without running it: the fuzz target is the event parsing."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def predict(self, data: bytes) -> list[dict[str, Any]]:
        PREPROCESS(data)
        return [{"label": "x", "score": 1.0}]


SQS_BODIES = st.one_of(
    st.text(max_size=200), json_values.map(json.dumps),
    st.fixed_dictionaries({"id": st.text(max_size=40), "image": st.sampled_from(
        ["s3://crossover-fuzz/missing.png", "s3://", "", "http://169.254.169.254/latest/", "file:///etc/passwd",
         "https://127.0.0.1/x.png"])}).map(json.dumps))
RECEIVES = st.one_of(st.just({}), st.fixed_dictionaries(
    {"ApproximateReceiveCount": st.sampled_from(["1", "3", "99", "x", "", "-1"])}))


@given(records=st.lists(st.tuples(SQS_BODIES, RECEIVES), min_size=1, max_size=5))
def test_sqs_events_report_every_bad_record_and_never_raise(records: list[tuple[str, dict[str, str]]], aws: str,
                                                           monkeypatch: pytest.MonkeyPatch, lite0_spec: Any) -> None:
    """Whole SQS events through the Lambda handler (hostile bodies, odd receive counts; error records go
    to the emulator's S3 on loopback): the batch is answered record by record and every record that
    cannot succeed is reported by its own id, so SQS retries or dead-letters exactly those."""
    import boto3

    from crossover_serving import lambda_handler
    from tests.test_lambda_handler import Context, sqs_record

    boto3.client("s3").create_bucket(Bucket="crossover-fuzz")
    monkeypatch.setenv("RESULTS_BUCKET", "crossover-fuzz")
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "3")
    monkeypatch.setattr(lambda_handler, "model", lambda: _Stub(lite0_spec))
    lambda_handler._s3.cache_clear()
    event = {"Records": [{**sqs_record(body), "attributes": receives} for body, receives in records]}
    response = lambda_handler.handler(event, Context())
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed == [r["messageId"] for r in event["Records"]]  # no image exists: nothing can succeed


@given(value=json_values,
       key=st.sampled_from(["name", "backend", "model", "scaling", "lambda", "gpu", "pipeline", "nope"]))
def test_config_loader_never_shows_a_traceback(tmp_path_factory: pytest.TempPathFactory, value: Any,
                                              key: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    base = {"name": "fuzz", "backend": "lambda", "model": {"artifact": "s3://bkt/m.onnx"}}
    path = folder / "m.yaml"
    path.write_text(json.dumps({**base, key: value}))  # JSON is YAML
    try:
        load(path)
    except ConfigError as e:
        assert all(str(p).startswith(str(path)) for p in e.problems)


@given(data=st.binary(max_size=512))
def test_config_loader_survives_arbitrary_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "m.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError):
        load(path)


def test_base64_bodies_are_checked() -> None:
    from crossover_serving import lambda_handler

    event = {"httpMethod": "POST", "path": "/predict", "body": base64.b64encode(b"x").decode() + "!",
             "isBase64Encoded": True}
    assert lambda_handler._http(event, None)["statusCode"] == 400


@given(body=st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_pipeline_messages_never_fail_with_anything_but_an_input_error(body: str) -> None:
    from crossover_serving.pipeline import parse

    try:
        message_id, image = parse(body)
    except InputError as e:
        assert e.code == "bad_message"
    else:
        assert message_id and isinstance(image, str)


# --- Raw HTTP: request lines and headers as a hostile client writes them, to a real server on loopback. ---

@pytest.fixture(scope="module")
def raw_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    from crossover_serving.server import InferenceServer, Limits
    from tests.graphs import tiny_classifier

    artifact = tiny_classifier(tmp_path_factory.mktemp("fuzz") / "tiny.onnx")
    server = InferenceServer(Spec(name="fuzz", artifact=str(artifact), input=InputSpec(size=32, resize=32)),
                             limits=Limits(deadline_s=0.5)).start()
    import time

    started = time.monotonic()
    while not server.ready:  # a model that fails to load never gets ready: fail, never hang
        assert time.monotonic() - started < 60, "the fuzz server did not load its model"
        time.sleep(0.02)
    yield server.port
    server.drain()


METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"get", b"P\x00ST", b"", b"CONNECT"]) | \
    st.binary(min_size=1, max_size=8)
TARGETS = st.sampled_from([b"/predict", b"/health", b"/ready", b"*", b"http://x/predict", b"/predict?x=1#f",
                           b"/%00", b"/../../etc/passwd", "/prédict".encode(), b"/" + b"a" * 9000]) | \
    st.binary(max_size=40)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 extra", b"", b"HTTP/9"])
HEADER_NAMES = st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Content-Type", b"Host", b"Expect",
                                b"Connection", b"content-length", b"X-\x00", b" Content-Length", b""]) | \
    st.binary(max_size=12)
HEADER_VALUES = st.sampled_from([b"0", b"5", b"-1", b"99999999999999999999", "²".encode(), b"0x10", b" 5 ",
                                 b"chunked", b"chunked, identity", b"100-continue", b"image/png",
                                 b"application/json", b"close", b"a" * 20000]) | st.binary(max_size=24)


@given(method=METHODS, target=TARGETS, version=VERSIONS,
       headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6), body=st.binary(max_size=64))
def test_raw_requests_always_get_an_answer_and_never_a_500(raw_server: int, method: bytes, target: bytes,
                                                           version: bytes, headers: list[tuple[bytes, bytes]],
                                                           body: bytes) -> None:
    head = method + b" " + target + b" " + version + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    with socket.create_connection(("127.0.0.1", raw_server), timeout=5) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n" + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    # An answer (or, for a head that never completes, a closed connection) within the deadline; never a fault.
    if answer:
        assert answer.startswith(b"HTTP/1.1 ") and answer[9:12].isdigit(), answer[:100]
        assert not answer.startswith(b"HTTP/1.1 5") or answer.startswith(b"HTTP/1.1 503"), answer[:300]


# --- JSON that nests deeper or holds longer numbers than any parser should be asked to read. ---

@given(depth=st.integers(1, 6000), digits=st.integers(1, 6000), shape=st.sampled_from(["list", "object", "number"]))
def test_deep_or_long_json_is_a_4xx(depth: int, digits: int, shape: str) -> None:
    from crossover_serving.pipeline import parse

    number = "1" + "0" * digits
    text = {"list": "[" * depth + "]" * depth, "object": '{"a":' * depth + "1" + "}" * depth,
            "number": '{"url": ' + number + ', "id": ' + number + "}"}[shape]
    for run in (lambda: image_bytes(text.encode(), "application/json", FetchPolicy(), Deadline.after(1)),
                lambda: parse(text)):
        try:
            run()
        except InputError as e:
            assert 400 <= e.status < 500


# --- Image bombs, per format: headers announcing any size, depth or colour type, scans repeated. ---

def _png_header(width: int, height: int, depth: int, colour: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunk = bombs._chunk
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _sized_jpeg(width: int, height: int, progressive: bool) -> bytes:
    """A small JPEG whose frame header is rewritten to announce ``width`` x ``height``."""
    data = bytearray(bombs.jpeg(16, 16, progressive=progressive))
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _sized_webp(width: int, height: int) -> bytes:
    """A small lossless WebP whose VP8L header is rewritten to announce ``width`` x ``height``."""
    data = bytearray(bombs.webp(16, 16))
    bits = (width - 1) | ((height - 1) << 14) | (int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1))
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


IMAGE_BOMBS = st.one_of(
    st.builds(_png_header, st.integers(1, 70000), st.integers(1, 70000), st.sampled_from([1, 2, 4, 8, 16]),
              st.sampled_from([0, 2, 3, 4, 6])),
    st.builds(_sized_jpeg, st.integers(1, 65535), st.integers(1, 65535), st.booleans()),
    st.builds(_sized_webp, st.integers(1, 16384), st.integers(1, 16384)),
    st.builds(bombs.many_scans, st.integers(8, 64), st.integers(8, 64), st.integers(0, 3 * MAX_SCANS)),
)


@given(IMAGE_BOMBS)
def test_image_bombs_are_refused_or_priced_before_decoding(data: bytes) -> None:
    try:
        opened = PREPROCESS.open(data)
    except InputError as e:
        assert e.status in (400, 413, 415)
        return
    width, height = opened.image.size
    assert width * height <= MAX_PIXELS and data.count(b"\xff\xda") <= MAX_SCANS
    assert opened.decode_bytes >= width * height  # at least a byte a pixel, at the draft scale
    if opened.decode_bytes < 64 * 2**20:  # cheap enough to decode here: it must decode or be refused cleanly
        try:
            PREPROCESS.decode(opened)
        except InputError as e:
            assert e.status == 400
