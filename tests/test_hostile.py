"""Hostile peers, round 3: each class of attack on the HTTP server, the Lambda handler and the worker.

Every refusal is a 4xx or a 503/502/504 that the metrics count as the client's doing (InputErrors, Shed),
never as a ServerFaults, the one count the rollback alarms read: a client must not be able to roll a
deployment back. Classes: exceptions from a client's bytes; budgets (decode memory given back on every
path, body bytes charged as they arrive); the limits uvicorn lacks (pipelining, heads, bodies on every
path); container parsing; decode estimates; fair pipelines; refusals that reach the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import http.client
import io
import json
import os
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from crossover_serving import lambda_handler
from crossover_serving.budget import MIB, Budget
from crossover_serving.errors import InputError, Overloaded
from crossover_serving.images import MAX_CHUNKS, MAX_HEADER_STEPS, MAX_SCANS, Preprocessor
from crossover_serving.metrics import Recorder
from crossover_serving.model import Model
from crossover_serving.server import MAX_HEAD_BYTES, MAX_HEADERS, MAX_URL_BYTES, Limits
from crossover_serving.spec import InputSpec, Spec
from crossover_serving.worker import Worker
from tests import bombs
from tests.graphs import tiny_classifier
from tests.origin import origin
from tests.test_lambda_handler import INPUTS, Context, alb_event, handler, lambda_metrics, sqs_record  # noqa: F401 - a fixture
from tests.test_server import TEST_POLICY, _server_process, _spec_file, start

PREPROCESS = Preprocessor(InputSpec())


def _with_frame(data: bytes, height: int, width: int, sampling: list[int]) -> bytes:
    """``data`` (a JPEG) with its frame header's size and its components' sampling factors replaced."""
    out = bytearray(data)
    sof = max(out.find(b"\xff\xc0"), out.find(b"\xff\xc2"))
    out[sof + 5:sof + 9] = struct.pack(">HH", height, width)  # FF Cn, length, precision, then height, width
    for i, factors in enumerate(sampling[:out[sof + 9]]):  # then per component: id, sampling, table
        out[sof + 11 + 3 * i] = factors
    return bytes(out)


def sampling_zero_jpeg() -> bytes:
    """A progressive JPEG whose frame header declares sampling factors of 0 (a few hundred bytes that once
    divided by zero in the decode estimate, outside the open's error handling)."""
    return _with_frame(bombs.jpeg(64, 64, progressive=True), 64, 64, [0, 0, 0])


def app5_bomb(segments: int = 400_000) -> bytes:
    """1.6 MB of empty APP5 segments: Pillow walks each one in Python (6 MB of them: 1.9 CPU-s, ~200 MiB)."""
    data = bombs.jpeg(64, 64)
    return data[:2] + b"\xff\xe5\x00\x02" * segments + data[2:]


def png_private_chunks(chunks: int = 150_000) -> bytes:
    data = bombs.png(64, 64)
    return data[:33] + bombs._chunk(b"prVt", b"") * chunks + data[33:]


CLIENT_BYTES = {  # what each answers, wherever it arrives
    "JPEG with sampling factors 0": (sampling_zero_jpeg, 400, "bad_image"),
    "400 k empty APP5 segments": (app5_bomb, 413, "too_many_segments"),
    "150 k private PNG chunks": (png_private_chunks, 413, "too_many_segments"),
}


# --- 1. No exception from a client's bytes is a fault --------------------------------------------------------

def _header_end(data: bytes) -> int:
    return data.find(b"\xff\xda") + 20 if data.startswith(b"\xff\xd8") else data.find(b"IDAT") + 16


HEADERS = st.sampled_from([bombs.jpeg(48, 40), bombs.jpeg(48, 40, progressive=True), bombs.png(48, 40),
                           bombs.png(40, 48, depth=16, colour=6)])


@given(data=HEADERS, edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                                    min_size=1, max_size=4))
@settings(max_examples=300)
def test_any_header_byte_a_client_changes_is_a_4xx_at_worst(data: bytes, edits: list[tuple[float, int]]) -> None:
    """Not a byte pattern but the mechanism: any value in any byte of the structure the parsers and the
    estimate read (frame header, sampling factors, tables, IHDR), decoded end to end."""
    mutated = bytearray(data)
    for where, value in edits:
        mutated[int(where * _header_end(data))] = value
    try:
        PREPROCESS(bytes(mutated))
    except InputError as e:
        assert 400 <= e.status < 500


@given(progressive=st.booleans(), height=st.integers(0, 65535), width=st.integers(0, 65535),
       sampling=st.lists(st.integers(0, 255) | st.sampled_from([0x11, 0x22, 0x21, 0x00, 0x10, 0x01]),
                         min_size=3, max_size=3))
@settings(max_examples=300)
def test_any_frame_header_is_a_4xx_at_worst(progressive: bool, height: int, width: int, sampling: list[int]) -> None:
    """The frame header the estimate and the draft read: any size and any sampling factors, 0 included."""
    data = _with_frame(bombs.jpeg(40, 32, progressive=progressive), height, width, sampling)
    try:
        opened = PREPROCESS.open(data)
        if opened.decode_bytes < 64 * MIB:
            PREPROCESS.decode(opened)
    except InputError as e:
        assert 400 <= e.status < 500


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    artifact = tiny_classifier(tmp_path_factory.mktemp("hostile") / "tiny.onnx")
    return Spec(name="tiny", artifact=str(artifact), input=InputSpec(size=32, resize=36), backend="cpu")


class Counted:
    """A started server whose metrics are kept in memory: ``counts()`` is what it would publish."""

    def __init__(self, spec: Spec, limits: Limits = Limits(deadline_s=2.0), **kwargs: Any) -> None:
        self.server = start(spec, limits, **kwargs)
        self.published: list[dict[str, Any]] = []
        self.server.metrics = Recorder(spec.name, backend=spec.backend, publish=self.published.extend,
                                       interval_s=3600)

    def counts(self) -> dict[str, float]:
        self.server.metrics.flush()
        totals: dict[str, float] = {}
        for datum in self.published:
            totals[datum["MetricName"]] = totals.get(datum["MetricName"], 0) + sum(datum["Counts"])
        return totals

    def post(self, body: bytes, content_type: str = "image/jpeg") -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            connection.request("POST", "/predict", body, {"Content-Type": content_type})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


@pytest.fixture(scope="module")
def counted(tiny: Spec) -> Iterator[Counted]:
    served = Counted(tiny, Limits(deadline_s=2.0, decode_budget_mib=256))
    yield served
    served.server.drain()


@pytest.mark.parametrize("name", CLIENT_BYTES)
def test_the_server_refuses_hostile_bytes_without_a_fault(counted: Counted, name: str) -> None:
    make, status, code = CLIENT_BYTES[name]
    before = counted.counts()
    answer = counted.post(make())
    assert (answer[0], answer[1]["error"]) == (status, code)
    after = counted.counts()
    assert after.get("ServerFaults", 0) == before.get("ServerFaults", 0) == 0
    assert after["InputErrors"] == before.get("InputErrors", 0) + 1


def test_urls_a_client_or_its_origin_breaks_are_refused_without_a_fault(counted: Counted) -> None:
    with origin(b"") as (base, hits):
        # A lone surrogate in the JSON, and an origin whose redirect is a broken IPv6 URL
        surrogate = counted.post(b'{"url": "https://example.com/\\ud800.png"}', "application/json")
        redirect = counted.post(json.dumps({"url": f"{base}/redirect?to=https://[x/"}).encode(), "application/json")
        assert hits == ["/redirect?to=https://[x/"]  # the origin was really asked
    assert (surrogate[0], surrogate[1]["error"]) == (400, "bad_url")
    assert (redirect[0], redirect[1]["error"]) == (502, "fetch_failed")
    assert counted.counts().get("ServerFaults", 0) == 0


@pytest.mark.parametrize("name", CLIENT_BYTES)
def test_lambda_refuses_hostile_bytes_without_a_fault(handler: Any, name: str,  # noqa: F811 - the fixture
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    make, status, code = CLIENT_BYTES[name]
    response = handler(alb_event(make(), "image/jpeg"), Context())
    assert (response["statusCode"], json.loads(response["body"])["error"]) == (status, code)
    metrics = lambda_metrics(capsys.readouterr().out)
    assert metrics["InputErrors"] == 1 and "ServerFaults" not in metrics


def test_the_worker_records_hostile_images_as_input_errors(aws: str, tiny: Spec) -> None:
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    tag = uuid.uuid4().hex[:8]
    queue = sqs.create_queue(QueueName=f"hostile-{tag}")["QueueUrl"]
    s3.create_bucket(Bucket=tag)
    for name, (make, _, _) in CLIENT_BYTES.items():
        s3.put_object(Bucket=tag, Key=f"in/{len(name)}", Body=make())
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"id": f"m{len(name)}", "image":
                                                                 f"s3://{tag}/in/{len(name)}"}))
    sqs.send_message(QueueUrl=queue, MessageBody='{"id": "surrogate", "image": "s3://' + tag + '/\\ud800"}')
    worker = Worker(Model(tiny), queue_url=queue, bucket=tag, sqs=sqs, s3=s3, wait_s=0)
    worker.policy = worker.policy.for_inputs([tag], https=False)
    assert worker.poll_once() == (0, 4)
    errors = [json.loads(s3.get_object(Bucket=tag, Key=o["Key"])["Body"].read())
              for o in s3.list_objects_v2(Bucket=tag, Prefix="errors/")["Contents"]]
    assert sorted(e["error"] for e in errors) == ["InputError"] * 4, errors


# --- 2. Every refusal path: the client's doing, never a fault ------------------------------------------------

@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    """A model whose one inference takes longer than the deadline below (~0.15 s on this 2-core machine)."""
    artifact = tiny_classifier(tmp_path_factory.mktemp("slow") / "slow.onnx", size=224, heavy=8)
    return Spec(name="slow", artifact=str(artifact), input=InputSpec(size=224, resize=224), backend="gpu")


def test_no_refusal_path_counts_a_server_fault(counted: Counted, slow_model: Spec, photos: dict[str, bytes]) -> None:
    answers = {}
    with origin(b"") as (base, _):
        answers["fetch 504"] = counted.post(json.dumps({"url": f"{base}/slow-headers"}).encode(), "application/json")
        answers["fetch 502"] = counted.post(json.dumps({"url": f"{base}/missing.png"}).encode(), "application/json")
    answers["too large to decode"] = counted.post(bombs.webp(8000, 5000), "image/webp")
    # The in-flight limit is reached while a body arrives: shed
    counted.server.in_flight = counted.server.limits.max_in_flight
    try:
        answers["shed 503"] = counted.post(photos["chelsea_1024"])
    finally:
        counted.server.in_flight = 0
    slow = Counted(slow_model, Limits(deadline_s=0.05))  # its inference alone takes ~0.15 s
    try:
        answers["deadline 503"] = slow.post(photos["chelsea_1024"])
        slow_counts = slow.counts()
    finally:
        slow.server.drain()
    assert {k: (status, body.get("error")) for k, (status, body) in answers.items()} == {
        "fetch 504": (504, "fetch_timeout"), "fetch 502": (502, "fetch_failed"),
        "too large to decode": (413, "too_large_to_decode"), "shed 503": (503, "overloaded"),
        "deadline 503": (503, "deadline")}
    counts = counted.counts()
    assert counts.get("ServerFaults", 0) == 0 and slow_counts.get("ServerFaults", 0) == 0
    assert slow_counts["Shed"] == 1 and counts["Shed"] >= 1


def test_no_refusal_path_counts_a_fault_on_lambda(handler: Any, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambda_handler, "policy", functools.cache(lambda: TEST_POLICY))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
    lambda_handler.model.cache_clear()
    with origin(b"") as (base, _):
        answers = [handler(alb_event(json.dumps({"url": f"{base}/{path}"}).encode(), "application/json"),
                           Context())["statusCode"] for path in ("slow-headers", "missing.png")]
    answers.append(handler(alb_event(bombs.webp(8000, 5000), "image/webp"), Context())["statusCode"])
    answers.append(handler(alb_event(b'{"s3": "s3://elsewhere/x.png"}', "application/json"), Context())["statusCode"])
    assert answers == [504, 502, 413, 403]
    metrics = lambda_metrics(capsys.readouterr().out)
    assert metrics["InputErrors"] == 4 and "ServerFaults" not in metrics


# --- 3. The decode budget is given back on every path -----------------------------------------------------------

@given(waits=st.lists(st.tuples(st.integers(1, 100), st.sampled_from(["deadline", "cancel", "done"]),
                                st.floats(0, 0.02)), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_whatever_ends_a_wait_the_budget_ends_where_it_started(waits: list[tuple[int, str, float]]) -> None:
    """Waiters that reach their deadline, are cancelled (the request's own timeout, a disconnect) or are
    granted, in any order and at any moment: every byte granted is given back exactly once."""
    async def run() -> Budget:
        budget = Budget(100, "test")
        holder = budget.try_take(100)
        assert holder
        loop = asyncio.get_running_loop()

        async def wait(size: int, ending: str) -> None:
            with pytest.raises((Overloaded, asyncio.CancelledError)) if ending != "done" else _nothing():
                await budget.take(size, loop.time() + (0.01 if ending == "deadline" else 5))
                budget.give(size)

        tasks = [asyncio.create_task(wait(size, ending)) for size, ending, _ in waits]
        await asyncio.sleep(0)
        for task, (_, ending, at) in zip(tasks, waits, strict=True):
            if ending == "cancel":
                loop.call_later(at, task.cancel)
        loop.call_later(0.015, budget.give, 100)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.02)  # the holder has given its bytes back
        return budget

    budget = asyncio.run(run())
    assert budget.used == 0 and not budget._waiters


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_decode_cancelled_while_queued_gives_its_memory_back(tiny: Spec, photos: dict[str, bytes]) -> None:
    served = Counted(tiny, Limits(deadline_s=1.0, decode_budget_mib=64))
    server = served.server
    assert server.decoding is not None
    try:
        # GIVEN decode memory all held, so the request's image waits for it once opened
        assert server.decoding.try_take(server.decoding.limit)
        answer: list[tuple[int, dict[str, Any]]] = []
        thread = threading.Thread(target=lambda: answer.append(served.post(photos["chelsea_1024"])))
        thread.start()
        deadline = time.monotonic() + 5
        while not server.decoding._waiters and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.decoding._waiters, "the request never waited for decode memory"
        # WHEN every decoder is busy as the memory is granted, so its decode is queued until the deadline passes
        busy = [server._decoders.submit(time.sleep, 1.5) for _ in range(server._decoders._max_workers)]
        server.decoding.give(server.decoding.limit)
        thread.join()
        for job in busy:
            job.result()
        # THEN it was answered 503 and its memory is free again: the next image is decoded, not turned away
        assert answer[0][0] == 503
        assert server.decoding.used == 0
        assert served.post(photos["chelsea_1024"])[0] == 200
    finally:
        server.drain()


# --- 4. An announced length reserves nothing -------------------------------------------------------------------

def test_connections_that_announce_bodies_and_send_nothing_hold_no_budget(tiny: Spec,
                                                                          photos: dict[str, bytes]) -> None:
    served = Counted(tiny, Limits(deadline_s=3.0, body_budget_mib=4))
    squatters = []
    try:
        # GIVEN 40 connections, each announcing a 2 MB body (20x the body budget) and sending none of it
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", served.server.port))
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 2000000\r\n\r\n")
            squatters.append(sock)
        time.sleep(0.2)
        # THEN they hold nothing, and an upload goes through
        assert served.server.bodies.used == 0
        assert served.post(photos["chelsea_1024"])[0] == 200
    finally:
        for sock in squatters:
            sock.close()
        served.server.drain()
    assert served.counts().get("Shed", 0) == 0


def test_bodies_past_the_budget_are_shed_and_read_off(tiny: Spec, photos: dict[str, bytes]) -> None:
    served = Counted(tiny, Limits(deadline_s=3.0, body_budget_mib=1))
    try:
        held = served.server.bodies.try_take(served.server.bodies.limit)  # bodies arriving elsewhere fill it
        assert held
        status, body = served.post(photos["chelsea_1024"])
        served.server.bodies.give(served.server.bodies.limit)
        assert (status, body["error"]) == (503, "overloaded") and served.server.bodies.used == 0
        assert served.post(photos["chelsea_1024"])[0] == 200
    finally:
        served.server.drain()


def test_clients_naming_a_stalling_origin_leave_room_for_images_sent(tiny: Spec, photos: dict[str, bytes]) -> None:
    served = Counted(tiny, Limits(deadline_s=3.0, max_in_flight=4, max_fetches=2))
    try:
        with origin(b"") as (base, _), ThreadPoolExecutor(2) as pool:
            # GIVEN two requests whose origin drips its head until their deadline, holding the fetch slots
            stalled = [pool.submit(served.post, json.dumps({"url": f"{base}/slow-headers"}).encode(),
                                   "application/json") for _ in range(2)]
            started = time.monotonic()
            while served.server.fetching < 2 and time.monotonic() - started < 5:
                time.sleep(0.01)
            # WHEN a third names it too, and a client sends its image
            third = served.post(json.dumps({"url": f"{base}/slow-headers"}).encode(), "application/json")
            sent = served.post(photos["chelsea_1024"])
            # THEN the third is shed at once, the image is answered, and the stalled ones end at their deadline
            assert (third[0], third[1]["error"]) == (503, "overloaded") and sent[0] == 200
            assert [f.result()[0] for f in stalled] == [504, 504]
    finally:
        served.server.drain()
    assert served.server.fetching == 0


# --- 5. Limits uvicorn lacks ------------------------------------------------------------------------------------

def _exchange(port: int, raw: bytes, *, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused mid-send: answered first
            sock.sendall(raw)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])


@pytest.mark.slow
def test_pipelined_requests_are_answered_one_at_a_time_in_bounded_memory(tiny: Spec, tmp_path: Path) -> None:
    requests = 40_000
    with _server_process(_spec_file(tmp_path, tiny)) as (port, pid):
        before = _rss_kib(pid)
        peak = before
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            # WHEN one connection pipelines 40,000 GET /health (1 MB) without reading
            pipelined = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * requests
            sender = threading.Thread(target=sock.sendall, args=(pipelined,))
            sender.start()
            received = b""
            while received.count(b"HTTP/1.1 200") < requests:
                chunk = sock.recv(1 << 20)
                assert chunk, "the server closed the connection"
                received += chunk
                peak = max(peak, _rss_kib(pid))
            sender.join()
    # THEN every one is answered, in order, and the server's memory barely moved (uvicorn: ~100 MiB/s)
    assert received.count(b"HTTP/1.1 200") == requests
    assert (peak - before) / 1024 < 32, (before, peak)


@pytest.mark.slow
def test_a_head_of_endless_headers_is_refused_in_bounded_memory(tiny: Spec, tmp_path: Path) -> None:
    with _server_process(_spec_file(tmp_path, tiny)) as (port, pid):
        before = _rss_kib(pid)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            sent, answer = 0, b""
            try:  # 200 MiB of small headers, as fast as the server takes them
                while sent < 200 * MIB:
                    sock.sendall(b"X-A: b\r\n" * 8192)
                    sent += 8 * 8192
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass  # the answer was written, then the connection closed on unread headers
        grown = (_rss_kib(pid) - before) / 1024
    assert sent < 8 * MIB  # it was cut off early
    assert answer.startswith(b"HTTP/1.1 431") or answer == b"", answer[:200]
    assert grown < 32, grown


@pytest.mark.parametrize(("case", "raw", "status", "code"), [
    ("URL", b"GET /health?" + b"a" * (MAX_URL_BYTES + 1) + b" HTTP/1.1\r\n\r\n", 414, "url_too_long"),
    ("header count", b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431,
     "too_many_headers"),
    ("one long header", b"GET /health HTTP/1.1\r\nX-A: " + b"b" * MAX_HEAD_BYTES * 5 + b"\r\n\r\n", 431,
     "head_too_large"),
    ("a whole head in one read", b"GET /health HTTP/1.1\r\n" + b"X-A: " + b"b" * 1200 + b"\r\n" * 1 +
     (b"X-B: " + b"b" * 1200 + b"\r\n") * (MAX_HEADERS - 2) + b"\r\n", 431, "head_too_large"),
])
def test_heads_over_a_limit_get_a_json_answer(counted: Counted, case: str, raw: bytes, status: int,
                                              code: str) -> None:
    answer = _exchange(counted.server.port, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status), (case, answer[:200])
    assert json.loads(body)["error"] == code


@pytest.mark.parametrize("path", [b"/health", b"/nowhere", b"/predict"])
def test_a_body_dripped_to_any_path_is_cut_off_at_the_deadline(tiny: Spec, path: bytes) -> None:
    served = Counted(tiny, Limits(deadline_s=1.0))
    try:
        with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as sock:
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 6 and not closed:
                try:
                    sock.sendall(b"x")
                    time.sleep(0.1)
                    sock.setblocking(False)
                    try:
                        closed = sock.recv(65536) == b"" or closed
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
        assert closed and time.monotonic() - started < 3, "a dripped body held the connection"
    finally:
        served.server.drain()


# --- 6. Container parsing is capped before Pillow walks it ------------------------------------------------------

@given(segments=st.integers(0, 3 * MAX_HEADER_STEPS), kind=st.sampled_from([b"\xff\xe5\x00\x02", b"\xff\xfe\x00\x02",
                                                                          b"\xff", b"\x00"]))
@settings(max_examples=40, deadline=None)
def test_jpeg_header_steps_are_capped(segments: int, kind: bytes) -> None:
    data = bombs.jpeg(64, 48)
    bomb = data[:2] + kind * segments + data[2:]
    started = time.process_time()
    try:
        assert PREPROCESS(bomb).shape == (3, 224, 224)
        assert segments <= MAX_HEADER_STEPS
    except InputError as e:
        assert (e.status, e.code) in ((413, "too_many_segments"), (400, "bad_image"), (415, "unsupported_format"))
        assert e.code != "too_many_segments" or segments > MAX_HEADER_STEPS - 20
    assert time.process_time() - started < 0.5


@given(chunks=st.integers(0, 2 * MAX_CHUNKS), kind=st.sampled_from([b"prVt", b"tEXt", b"IDAT"]),
       after=st.booleans())
@settings(max_examples=30, deadline=None)
def test_png_chunks_are_capped(chunks: int, kind: bytes, after: bool) -> None:
    data = bombs.png(64, 48)
    chunk = bombs._chunk(kind, b"" if kind != b"tEXt" else b"k\0v")
    at = len(data) - 12 if after else 33
    bomb = data[:at] + chunk * chunks + data[at:]
    try:
        PREPROCESS(bomb)
        assert chunks + 3 <= MAX_CHUNKS
    except InputError as e:
        assert (e.status, e.code) in ((413, "too_many_segments"), (400, "bad_image"))
        assert e.code != "too_many_segments" or chunks + 3 > MAX_CHUNKS


# --- 7. Decode estimates admit what fits and nothing more --------------------------------------------------------

def _tall_grey_png() -> bytes:
    """78 KB: a 1 x 40,000,000 grey PNG, ~800 MiB to decode (Pillow's row pointers, then the RGB copy)."""
    rows = 40_000_000
    header = struct.pack(">IIBBBBB", 1, rows, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + bombs._chunk(b"IHDR", header) + \
        bombs._chunk(b"IDAT", zlib.compress(b"\0\x12" * rows, 9)) + bombs._chunk(b"IEND", b"")


@pytest.mark.slow
def test_images_larger_than_the_budget_are_refused_by_their_estimate(tiny: Spec, handler: Any,  # noqa: F811
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tall = _tall_grey_png()
    estimate = PREPROCESS.open(tall).decode_bytes
    assert estimate > 790 * MIB
    served = Counted(tiny, Limits(deadline_s=3.0, decode_budget_mib=400))
    try:
        status, body = served.post(tall, "image/png")
        assert (status, body["error"]) == (413, "too_large_to_decode")
    finally:
        served.server.drain()
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "768")
    lambda_handler.model.cache_clear()
    response = handler(alb_event(tall, "image/png"), Context())
    assert (response["statusCode"], json.loads(response["body"])["error"]) == (413, "too_large_to_decode")


# --- 8. Pipelines: no record starved, no message done twice ------------------------------------------------------

class _Remaining(Context):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.until = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.until - time.monotonic()) * 1000)


def test_a_slow_record_leaves_its_batch_mates_their_share(handler: Any, aws: str,  # noqa: F811
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          photos: dict[str, bytes]) -> None:
    s3 = boto3.client("s3")
    bucket = f"share-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=INPUTS)
    s3.put_object(Bucket=INPUTS, Key="in/cat.png", Body=photos["chelsea"])
    monkeypatch.setenv("RESULTS_BUCKET", bucket)
    monkeypatch.setattr(lambda_handler, "policy", functools.cache(lambda: dataclasses.replace(
        TEST_POLICY, s3_prefixes=(f"{INPUTS}/",), total_timeout_s=30)))
    lambda_handler._s3.cache_clear()
    with origin(b"") as (base, _):
        # GIVEN a batch whose first record names an origin that never finishes, with 7 s left to the invocation
        records = [sqs_record(json.dumps({"id": "slow", "image": f"{base}/slow"})),
                   *(sqs_record(json.dumps({"id": f"cat-{i}", "image": f"s3://{INPUTS}/in/cat.png"}))
                     for i in range(3))]
        started = time.monotonic()
        response = handler({"Records": records}, _Remaining(7))
    # THEN the slow one gave up at its share (a quarter of the time left), and the others all ran
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [records[0]["messageId"]]
    assert time.monotonic() - started < 6
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="results/")["Contents"]}
    assert keys == {f"results/cat-{i}.json" for i in range(3)}


def test_a_batch_slower_than_the_visibility_timeout_is_done_once(aws: str, tiny: Spec) -> None:
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    tag = uuid.uuid4().hex[:8]
    queue = sqs.create_queue(QueueName=f"visible-{tag}", Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    s3.create_bucket(Bucket=tag)
    with origin(bombs.png(64, 64)) as (base, hits):
        for i in range(3):  # each takes ~1.2 s: the slow origin's head, then the image
            sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"id": f"m{i}", "image": f"{base}/image{i}"}))
        policy = dataclasses.replace(TEST_POLICY, total_timeout_s=10)
        worker = Worker(Model(tiny), queue_url=queue, bucket=tag, sqs=sqs, s3=s3, wait_s=0, policy=policy)
        slow = worker.model.predict

        def predict(image: bytes) -> list[dict[str, Any]]:
            time.sleep(1.2)  # a heavy model: the batch takes 3.6 s against a 2 s visibility timeout
            return slow(image)

        worker.model.predict = predict  # type: ignore[method-assign]
        rivals: list[dict[str, Any]] = []

        def rival_consumer() -> None:
            while not hits:  # from the moment the worker holds the batch
                time.sleep(0.01)
            for _ in range(12):
                rivals.extend(sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                                  VisibilityTimeout=0).get("Messages", []))
                time.sleep(0.3)

        rival = threading.Thread(target=rival_consumer)
        rival.start()
        done = worker.poll_once()
        rival.join()
    # THEN the whole batch was done by this worker, once, and no rival consumer was handed any of it
    assert done == (3, 0) and rivals == [], rivals
    assert sorted(hits) == ["/image0", "/image1", "/image2"]


# --- 9. Refusals reach the client ----------------------------------------------------------------------------------

def test_refusals_before_the_body_still_reach_a_client_that_sends_it_first(counted: Counted) -> None:
    big = counted.server.policy.max_bytes + 1
    for head, status in ((b"Content-Length: %d\r\n" % big, 413), (b"Transfer-Encoding: chunked\r\n", 411)):
        body = b"x" * big if status == 413 else b"%x\r\n%s\r\n0\r\n\r\n" % (big, b"x" * big)
        answer = _exchange(counted.server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           + head + b"\r\n" + body)
        assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:200]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] in ("too_large", "length_required")


@pytest.mark.parametrize(("raw", "status"), [
    (b"POST /predict/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 404),
    (b"GET /predict HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 405),
])
def test_every_answer_carries_its_json_body(counted: Counted, raw: bytes, status: int) -> None:
    head, _, body = _exchange(counted.server.port, raw, timeout=5).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status), head
    assert json.loads(body)["error"]


@pytest.mark.parametrize("event", [{"Records": []}, {"Records": [1]}, {"Records": [{"messageId": "m"}]},
                                   {"Records": "x"}])
def test_lambda_answers_any_records_shape(handler: Any, event: dict[str, Any]) -> None:  # noqa: F811
    response = handler(event, Context())
    assert response == {"batchItemFailures": []} if event["Records"] == [] else response["statusCode"] == 400


# --- A review's findings: parse cost and timers on one connection, MPO, frame entries, Expect, ordering -----

@pytest.mark.slow
def test_line_ends_streamed_as_a_body_cost_the_server_next_to_nothing(tiny: Spec, tmp_path: Path) -> None:
    """A body of CRLF CRLF once cut the parse into a piece per 4 bytes, each copying the rest: 1 MiB held the
    event loop for a second."""
    with _server_process(_spec_file(tmp_path, tiny)) as (port, pid):
        stat = Path(f"/proc/{pid}/stat")

        def cpu() -> float:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n")
            for _ in range(32):
                sock.sendall(b"\r\n\r\n" * 65536)  # 8 MiB in all
        spent = cpu() - before
    assert spent < 2, spent  # ~16 CPU-s before: a feed per 4 bytes


@pytest.mark.parametrize("stray", [b"\r\n", b"\r\n" * 1000])
def test_stray_line_ends_after_an_answer_do_not_keep_a_connection_open(tiny: Spec, stray: bytes) -> None:
    served = Counted(tiny, Limits(deadline_s=1.0, keep_alive_s=1.0))
    try:
        with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):  # the whole answer, its head and its body
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            sock.sendall(stray)
            assert sock.recv(65536) == b""  # closed by the server
            assert time.monotonic() - started < 3
    finally:
        served.server.drain()


def test_a_jpeg_read_as_mpo_has_its_scans_capped() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (120, 60, 30)).save(buffer, "MPO", save_all=True, progressive=True,
                                                     append_images=[Image.new("RGB", (8, 8))])
    data = buffer.getvalue()
    start, end = bombs._scans(data)[-1]
    repeated = data[:end] + data[start:end] * (2 * MAX_SCANS) + data[end:]
    assert Image.open(io.BytesIO(repeated)).format == "MPO"
    with pytest.raises(InputError) as caught:
        PREPROCESS.open(repeated)
    assert (caught.value.status, caught.value.code) == (413, "too_many_scans")


def test_frame_headers_are_counted_entry_by_entry() -> None:
    """95 frame segments of 21,000 components each: 102 markers, but ~2 M entries Pillow loops over."""
    data = bombs.jpeg(64, 48)
    sof = data.find(b"\xff\xc0")
    length = int.from_bytes(data[sof + 2:sof + 4], "big")
    frame = b"\xff\xc2" + (8 + 3 * 21000).to_bytes(2, "big") + data[sof + 4:sof + 9] + b"\x00" + b"\x01\x11\x00" * 21000
    bomb = data[:sof] + frame * 95 + data[sof:sof + 2 + length] + data[sof + 2 + length:]
    with pytest.raises(InputError) as caught:
        PREPROCESS.open(bomb)
    assert (caught.value.status, caught.value.code) == (413, "too_many_segments")


def test_a_refusal_a_client_waits_to_send_its_body_for_is_answered_at_once(counted: Counted) -> None:
    big = counted.server.policy.max_bytes + 1
    with socket.create_connection(("127.0.0.1", counted.server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % big)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 1, answer[:100]


def test_a_pipelined_refusal_waits_for_the_answer_before_it(counted: Counted, photos: dict[str, bytes]) -> None:
    image = photos["chelsea_1024"]
    answer = _exchange(counted.server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(image) + image +
                       b"GET /" + b"a" * (MAX_URL_BYTES + 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 414" in answer, answer[:300]


@pytest.mark.parametrize(("left_s", "after", "given_s"), [
    (60.0, 9, 30.0),  # a full batch with time to spare: the first record may take its whole deadline
    (31.0, 9, 3.0),  # 30 s of a 31 s invocation: 3 s kept for each of the 9 after it, 3 s left for it
    (11.0, 9, 1.0),  # less than 3 s each: an equal share
    (11.0, 0, 10.0),  # the last record: all that is left
])
def test_a_record_may_use_what_its_batch_mates_do_not_need(left_s: float, after: int, given_s: float) -> None:
    deadline = lambda_handler._deadline(_Remaining(left_s), 30.0, after=after)
    assert deadline.remaining() == pytest.approx(given_s, abs=0.05)
