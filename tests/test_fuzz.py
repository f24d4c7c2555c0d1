"""Property-based fuzzing (hypothesis): no input, however hostile, gets anything but a clear error.

Short runs here (CI, 150 examples per target); longer by hand: ``make fuzz`` (HYPOTHESIS_PROFILE=long,
FUZZ_EXAMPLES examples per target, 20,000 unless set), and scripts/reliability.py reports the counts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from crossover.config import ConfigError, load
from crossover_serving.api import image_bytes
from crossover_serving.deadline import Deadline
from crossover_serving.errors import InputError
from crossover_serving.fetch import FetchPolicy
from crossover_serving.images import MAX_PIXELS, MAX_SCANS, Preprocessor
from crossover_serving.model import Model
from crossover_serving.spec import InputSpec, InputsSpec, Spec
from tests import bombs
from tests.test_lambda_handler import lambda_metrics

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


# --- The Lambda handler, on the real tiny ONNX model: events as anything might send them. ---

FUZZ_BUCKET = "crossover-fuzz"
FUZZ_IMAGE = f"s3://{FUZZ_BUCKET}/in/seed.png"  # the one object an SQS record can succeed with


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.graphs import tiny_classifier

    return tiny_classifier(tmp_path_factory.mktemp("fuzz") / "tiny.onnx")


@pytest.fixture(scope="module")
def tiny_models(tiny_artifact: Path) -> dict[str, Model]:
    """Loaded once for the module: for HTTP events, a model that accepts no references; for SQS records, one
    whose inputs are the fuzz bucket's in/ prefix (a record naming the image there is predicted)."""
    spec = Spec(name="fuzz-tiny", artifact=str(tiny_artifact), input=InputSpec(size=32, resize=32))
    return {"http": Model(spec), "sqs": Model(replace(spec, inputs=InputsSpec(s3=(f"{FUZZ_BUCKET}/in/",))))}


@contextmanager
def _serving(model: Model, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The Lambda handler with ``model`` as the one its init phase loaded; the policy derived from its inputs."""
    from crossover_serving import lambda_handler

    monkeypatch.setattr(lambda_handler, "model", lambda: model)
    lambda_handler.policy.cache_clear()
    try:
        yield lambda_handler.handler
    finally:
        lambda_handler.policy.cache_clear()


EVENT_KEYS = ["httpMethod", "path", "body", "isBase64Encoded", "headers", "rawPath", "requestContext"]
CLEAN_EVENT = {"httpMethod": "POST", "path": "/predict", "headers": {"content-type": "image/png"},
               "isBase64Encoded": True}
EVENT_VARIANTS = {"httpMethod": ["GET", "post", ""], "path": ["/health", "/predict/", "/"],
                  "headers": [{"Content-Type": "IMAGE/JPEG"}, {}, {"content-type": "application/json"},
                              {"content-type": 7}, []],
                  "isBase64Encoded": [False, "true", None]}


@st.composite
def predict_events(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A load balancer event carrying a real or mutated image, some of its fields varied or overwritten with
    anything; and whether it is still a clean request for a seed image, which the model must answer with 200."""
    data = draw(st.sampled_from(SEEDS) | mutated_images())
    event: dict[str, Any] = {**CLEAN_EVENT, "body": base64.b64encode(data).decode()}
    clean = data in SEEDS
    for key, variants in EVENT_VARIANTS.items():
        if draw(st.sampled_from([False, False, False, True])):  # each field varied one time in four
            event[key], clean = draw(st.sampled_from(variants)), False
    if draw(st.sampled_from([False, False, False, True])):
        event.update(draw(st.dictionaries(st.sampled_from(EVENT_KEYS), json_values, min_size=1, max_size=2)))
        clean = False
    return event, clean


@given(case=st.dictionaries(st.sampled_from(EVENT_KEYS), json_values, max_size=7).map(lambda e: (e, False))
       | predict_events())
def test_lambda_http_events_never_raise(case: tuple[dict[str, Any], bool], monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], tiny_models: dict[str, Model]) -> None:
    from tests.test_lambda_handler import Context

    event, clean = case
    with _serving(tiny_models["http"], monkeypatch) as handler:
        capsys.readouterr()
        response = handler(event, Context())
        metrics = lambda_metrics(capsys.readouterr().out)
    # THEN a 2xx-4xx answer, counted by its status class, and never a fault (not a 500, nor a ServerFaults)
    status = response["statusCode"]
    assert 200 <= status < 500, (event, response)
    assert metrics.get(f"Status{status // 100}xx") == 1 and "ServerFaults" not in metrics, (event, metrics)
    if clean:  # the real model ran: its top classes, by its labels
        body = json.loads(response["body"])
        assert status == 200 and body["model"] == "fuzz-tiny" and len(body["top"]) == 5, response


SQS_BODIES = st.one_of(
    st.text(max_size=200), json_values.map(json.dumps),
    st.fixed_dictionaries({"id": st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True),
                           "image": st.sampled_from(
        [FUZZ_IMAGE, "s3://crossover-fuzz/missing.png", "s3://crossover-fuzz/in/missing.png", "s3://", "",
         "http://169.254.169.254/latest/", "file:///etc/passwd", "https://127.0.0.1/x.png"])}).map(json.dumps))
RECEIVES = st.one_of(st.just({}), st.fixed_dictionaries(
    {"ApproximateReceiveCount": st.sampled_from(["1", "3", "99", "x", "", "-1"])}))


@pytest.fixture(scope="module")
def fuzz_bucket(aws: str) -> str:
    """The results bucket on the emulator, holding one real image under the SQS model's inputs."""
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=FUZZ_BUCKET)
    s3.put_object(Bucket=FUZZ_BUCKET, Key=FUZZ_IMAGE.removeprefix(f"s3://{FUZZ_BUCKET}/"), Body=SEEDS[0])
    return FUZZ_BUCKET


def _succeeds(body: str) -> str | None:
    """The message id a record's result is written under, when it names the one image that exists."""
    from crossover_serving.pipeline import parse

    try:
        message_id, image = parse(body)
    except InputError:
        return None
    return message_id if image == FUZZ_IMAGE else None


@given(records=st.lists(st.tuples(SQS_BODIES, RECEIVES), min_size=1, max_size=5))
def test_sqs_events_report_every_bad_record_and_never_raise(records: list[tuple[str, dict[str, str]]],
                                                           fuzz_bucket: str, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str],
                                                           tiny_models: dict[str, Model]) -> None:
    """Whole SQS events through the Lambda handler and the real model (hostile bodies, odd receive counts;
    results and error records go to the emulator's S3 on loopback): the batch is answered record by record,
    every record that cannot succeed is reported by its own id, so SQS retries or dead-letters exactly those,
    and each one naming the image that exists gets its prediction."""
    import boto3

    from crossover_serving import lambda_handler
    from tests.test_lambda_handler import Context, sqs_record

    monkeypatch.setenv("RESULTS_BUCKET", fuzz_bucket)
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "3")
    lambda_handler._s3.cache_clear()
    event = {"Records": [{**sqs_record(body), "attributes": receives} for body, receives in records]}
    with _serving(tiny_models["sqs"], monkeypatch) as handler:
        capsys.readouterr()
        response = handler(event, Context())
        metrics = lambda_metrics(capsys.readouterr().out)
    expected = [_succeeds(r["body"]) for r in event["Records"]]
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed == [r["messageId"] for r, ok in zip(event["Records"], expected, strict=True) if ok is None]
    succeeded = [ok for ok in expected if ok is not None]
    assert metrics.get("PipelineResults") == len(succeeded) and metrics.get("PipelineFailures") == len(failed)
    assert "ServerFaults" not in metrics, metrics
    s3 = boto3.client("s3")
    for message_id in succeeded:
        result = json.loads(s3.get_object(Bucket=fuzz_bucket, Key=f"results/{message_id}.json")["Body"].read())
        assert result["id"] == message_id and result["model"] == "fuzz-tiny" and len(result["top"]) == 5


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


def test_base64_bodies_are_checked(monkeypatch: pytest.MonkeyPatch, lite0_spec: Spec) -> None:
    from crossover_serving import lambda_handler

    # The function's spec, as Lambda's init loads it (it routes the path: ModelService(path_prefix=...))
    monkeypatch.setenv("CROSSOVER_SPEC", json.dumps({"name": lite0_spec.name, "artifact": lite0_spec.artifact}))
    lambda_handler.model.cache_clear()
    event = {"httpMethod": "POST", "path": "/predict", "body": base64.b64encode(b"x").decode() + "!",
             "isBase64Encoded": True}
    try:
        assert lambda_handler._http(event, None)["statusCode"] == 400
    finally:
        lambda_handler.model.cache_clear()


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

RAW_DEADLINE_S = 0.5  # the raw server's request deadline (its Limits)


@pytest.fixture(scope="module")
def raw_server(tiny_artifact: Path) -> Iterator[int]:
    from crossover_serving.server import InferenceServer, Limits

    server = InferenceServer(Spec(name="fuzz", artifact=str(tiny_artifact), input=InputSpec(size=32, resize=32)),
                             limits=Limits(deadline_s=RAW_DEADLINE_S)).start()
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


STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


def _answer_owed(sent: bytes) -> bool:
    """Whether the server owes an answer to ``sent``, or may close the connection without a word.

    The server closes without answering only a connection whose request head is not complete by the deadline
    (crossover_serving.server._Connection): there is no request to answer. Every head complete, however
    malformed, is answered: the parser's refusals with a JSON 400 (414/431 over a limit), the rest by the
    application. Here the head always ends: the test appends "Connection: close" CRLF CRLF, and a CR or LF in
    a generated field cannot leave it open (llhttp refuses a bare CR or LF and a folded line with a 400, and
    a CRLF CRLF inside a field ends the head early, a complete head whose request is answered; what follows
    it is that request's body or a next request, moot once the connection closes). A body shorter than its
    Content-Length does not excuse silence either: POST /predict answers it at the deadline (408; 411 or
    413 when refused before the body), and every other route answers without reading it.
    """
    return b"\r\n\r\n" in sent


def _final_answer(received: bytes, head_only: bool) -> tuple[int, dict[str, str], bytes] | None:
    """The first final response in ``received`` (interim 1xx ones, a 100 Continue, skipped): its status,
    headers and body; None while it is incomplete."""
    while (end := received.find(b"\r\n\r\n")) >= 0:
        line = STATUS_LINE.match(received)
        assert line, f"not an HTTP/1.1 status line: {received[:200]!r}"
        fields = received[line.end():end].decode("latin-1").split("\r\n") if line.end() < end else []
        headers = {}
        for field in fields:
            name, colon, value = field.partition(":")
            assert colon, f"not a header line: {field!r} in {received[:300]!r}"
            headers[name.strip().lower()] = value.strip()
        status, rest = int(line[1]), received[end + 4:]
        if status < 200:
            received = rest
            continue
        length = headers.get("content-length", "")
        assert length.isdigit(), f"an answer without its Content-Length: {received[:300]!r}"
        if head_only:  # the answer to a HEAD request has its headers only
            return status, headers, b""
        if len(rest) < int(length):
            return None
        return status, headers, rest[:int(length)]
    return None


@given(method=METHODS, target=TARGETS, version=VERSIONS,
       headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6), body=st.binary(max_size=64))
# The paths random bytes seldom reach, every run: bodies short of their Content-Length (408 at the deadline, or
# 411/413 when refused first; 200 at once where the body is not read), interim 100 Continue answers, HEAD
# (headers only), and CR/LF inside fields (a folded line; a head ended early, the rest read as a next request).
@example(method=b"POST", target=b"/predict", version=b"HTTP/1.1", headers=[(b"Content-Length", b"99")], body=b"x")
@example(method=b"POST", target=b"/predict", version=b"HTTP/1.1", headers=[(b"Transfer-Encoding", b"chunked")],
         body=b"5\r\nab")
@example(method=b"POST", target=b"/predict", version=b"HTTP/1.1", headers=[(b"Content-Length", b"99999999")],
         body=b"")
@example(method=b"GET", target=b"/health", version=b"HTTP/1.0", headers=[(b"Content-Length", b"5")], body=b"")
@example(method=b"POST", target=b"/predict", version=b"HTTP/1.1",
         headers=[(b"Expect", b"100-continue"), (b"Content-Length", b"3")], body=b"abc")
@example(method=b"HEAD", target=b"/health", version=b"HTTP/1.1", headers=[], body=b"")
@example(method=b"GET", target=b"/health", version=b"HTTP/1.1", headers=[(b"X", b"a\r\n b")], body=b"")
@example(method=b"GET", target=b"/health", version=b"HTTP/1.1",
         headers=[(b"Content-Length", b"5"), (b"X", b"\r\n\r\n")], body=b"")
def test_raw_requests_always_get_an_answer_and_never_a_500(raw_server: int, method: bytes, target: bytes,
                                                           version: bytes, headers: list[tuple[bytes, bytes]],
                                                           body: bytes) -> None:
    head = method + b" " + target + b" " + version + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    sent = head + b"Connection: close\r\n\r\n" + body
    owed, head_only = _answer_owed(sent), method == b"HEAD"
    answer, received, reset = None, b"", False
    # A socket timeout (TimeoutError) fails the test: every connection is answered or closed by then.
    with socket.create_connection(("127.0.0.1", raw_server), timeout=RAW_DEADLINE_S + 4.5) as sock:
        try:
            sock.sendall(sent)
            while (answer := _final_answer(received, head_only)) is None and (chunk := sock.recv(65536)):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):  # the server stopped reading: what it sent is here
            reset, answer = True, _final_answer(received, head_only)
    # THEN an answer whenever one is owed, and whatever arrives is a whole HTTP/1.1 answer with a JSON body
    # (never a bare close, a partial answer or uvicorn's plain-text 400), and never a 5xx: the server is ready
    # (no 503 not_ready) and its deadline is far above what any of these requests needs (no 503 deadline).
    if answer is None:
        assert not owed, f"no answer ({'reset' if reset else 'closed'}, {received[:200]!r}) to {head[:300]!r}"
        assert not received, f"a partial answer: {received[:300]!r}"
        return
    status, answer_headers, answer_body = answer
    assert 200 <= status < 500, received[:300]
    assert answer_headers.get("content-type") == "application/json", received[:300]
    if not head_only:
        assert isinstance(json.loads(answer_body), dict), received[:300]


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
