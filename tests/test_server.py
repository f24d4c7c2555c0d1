"""The instance HTTP server on loopback: real inference, hostile requests, overload, shutdown."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import ipaddress
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from crossover_serving.fetch import FetchPolicy
from crossover_serving.metrics import Recorder
from crossover_serving.server import FAULT, NOT_FOUND, InferenceServer, Limits
from crossover_serving.spec import InputSpec, Spec
from tests import bombs
from tests.conftest import CAT_CLASSES, ROOT
from tests.graphs import tiny_classifier
from tests.origin import origin

TEST_POLICY = FetchPolicy(schemes=("https", "http"), allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),),
                          max_bytes=2 * 1024 * 1024, connect_timeout_s=0.5, total_timeout_s=1.5)


def start(spec: Spec, limits: Limits = Limits(deadline_s=3.0), policy: FetchPolicy = TEST_POLICY
          ) -> InferenceServer:
    server = InferenceServer(spec, limits=limits, policy=policy).start()
    deadline = time.monotonic() + 30
    while not server.ready and server.load_error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return server


def call(server: InferenceServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def lite0_server(lite0_spec: Spec) -> Iterator[InferenceServer]:
    server = start(lite0_spec)
    yield server
    server.drain()


def png(**headers: str) -> dict[str, str]:
    return {"Content-Type": "image/png", **headers}


def test_ready_only_after_load_and_warm_up(tmp_path: Path) -> None:
    # GIVEN a model file that is a FIFO, so loading blocks until the test writes the model into it
    model = tiny_classifier(tmp_path / "m.onnx").read_bytes()
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    server = InferenceServer(Spec(name="slow", artifact=str(fifo), input=InputSpec(size=32, resize=32))).start()
    try:
        assert call(server, "GET", "/health")[0] == 200
        assert call(server, "GET", "/ready")[:2] == (503, {"status": "loading"})
        assert call(server, "POST", "/predict", b"x", png())[0] == 503
        fifo.write_bytes(model)
        deadline = time.monotonic() + 10
        while not server.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert call(server, "GET", "/ready")[:2] == (200, {"status": "ready", "model": "slow"})
    finally:
        server.drain()


def test_model_that_fails_to_load_stays_unready(tmp_path: Path) -> None:
    server = start(Spec(name="broken", artifact=str(tmp_path / "missing.onnx")))
    try:
        assert call(server, "GET", "/ready")[:2] == (503, {"status": "failed"})
        assert call(server, "GET", "/health")[0] == 200
    finally:
        server.drain()


def test_predicts_real_photos(lite0_server: InferenceServer, photos: dict[str, bytes]) -> None:
    status, body, _ = call(lite0_server, "POST", "/predict", photos["chelsea"], png())
    assert status == 200 and body["model"] == "efficientnet-lite0" and body["top"][0]["label"] in CAT_CLASSES
    status, body, _ = call(lite0_server, "POST", "/predict", photos["chelsea_1024"], {"Content-Type": "image/jpeg"})
    assert body["top"][0]["label"] in CAT_CLASSES
    status, body, _ = call(lite0_server, "POST", "/predict", photos["coffee"], png())
    assert body["top"][0]["label"] == "espresso"


def test_predicts_from_an_allowed_url(lite0_server: InferenceServer, photos: dict[str, bytes]) -> None:
    with origin(photos["coffee"]) as (base, _hits):
        status, body, _ = call(lite0_server, "POST", "/predict", json.dumps({"url": base + "/image"}).encode(),
                               {"Content-Type": "application/json"})
    assert status == 200 and body["top"][0]["label"] == "espresso"


def _bomb() -> bytes:
    """A valid PNG header announcing 60000 x 60000 pixels, in a few dozen bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        chunk(b"IEND", b"")


HOSTILE = [
    ("empty body", b"", png(), 400, "empty"),
    ("random bytes", bytes(range(256)) * 8, {"Content-Type": "application/octet-stream"}, 415, "unsupported_format"),
    ("text", b"just some text", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("text as image", b"just some text", png(), 415, "unsupported_format"),
    ("EPS disguised as PNG", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\nshowpage\n", png(), 415,
     "unsupported_format"),
    ("PDF disguised as PNG", b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", png(), 415, "unsupported_format"),
    ("decompression bomb", "bomb", png(), 413, "too_many_pixels"),
    ("invalid JSON", b'{"url": ', {"Content-Type": "application/json"}, 400, "bad_json"),
    ("JSON of the wrong shape", b'{"path": "/etc/passwd"}', {"Content-Type": "application/json"}, 400, "bad_json"),
    ("file URL", b'{"url": "file:///etc/passwd"}', {"Content-Type": "application/json"}, 403, "forbidden_url"),
    ("metadata URL", b'{"url": "http://169.254.169.254/latest/meta-data/"}', {"Content-Type": "application/json"},
     403, "forbidden_url"),
    ("IPv4-mapped metadata", b'{"url": "http://[::ffff:169.254.169.254]/"}', {"Content-Type": "application/json"},
     403, "forbidden_url"),
    ("decimal IP", b'{"url": "http://2852039166/"}', {"Content-Type": "application/json"}, 403, "forbidden_url"),
    ("hex IP", b'{"url": "http://0xa9fea9fe/"}', {"Content-Type": "application/json"}, 403, "forbidden_url"),
    ("loopback", b'{"url": "http://127.0.0.1:1/"}', {"Content-Type": "application/json"}, 403, "forbidden_url"),
]


@pytest.mark.parametrize(("case", "body", "headers", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_requests_get_a_json_4xx_and_the_server_stays_ready(
        lite0_server: InferenceServer, photos: dict[str, bytes], case: str, body: bytes | str,
        headers: dict[str, str], status: int, code: str) -> None:
    data = _bomb() if body == "bomb" else body
    assert isinstance(data, bytes)
    got_status, got, _ = call(lite0_server, "POST", "/predict", data, headers)
    assert (got_status, got["error"]) == (status, code), got
    assert got["message"]
    assert call(lite0_server, "GET", "/ready")[0] == 200


@pytest.mark.parametrize("cut", ["jpeg", "png"])
def test_truncated_images_are_refused(lite0_server: InferenceServer, photos: dict[str, bytes], cut: str) -> None:
    data = photos["chelsea_1024"] if cut == "jpeg" else photos["chelsea"]
    status, body, _ = call(lite0_server, "POST", "/predict", data[: len(data) // 2], {"Content-Type": f"image/{cut}"})
    assert (status, body["error"]) == (400, "bad_image")
    assert call(lite0_server, "GET", "/ready")[0] == 200


def test_redirect_to_metadata_and_slow_origins_are_refused(lite0_server: InferenceServer) -> None:
    with origin(b"") as (base, _hits):
        redirect = json.dumps({"url": f"{base}/redirect?to=http://169.254.169.254/latest/"}).encode()
        assert call(lite0_server, "POST", "/predict", redirect, {"Content-Type": "application/json"})[0] == 403
        slow = json.dumps({"url": f"{base}/slow"}).encode()
        assert call(lite0_server, "POST", "/predict", slow, {"Content-Type": "application/json"})[0] == 504
        endless = json.dumps({"url": f"{base}/endless"}).encode()
        assert call(lite0_server, "POST", "/predict", endless, {"Content-Type": "application/json"})[0] == 413
    assert call(lite0_server, "GET", "/ready")[0] == 200


def test_lying_content_length_is_answered_at_the_deadline(lite0_server: InferenceServer) -> None:
    # GIVEN a request announcing 1000 bytes that sends 10 WHEN the body stalls THEN a 408 at the deadline (3 s)
    with socket.create_connection(("127.0.0.1", lite0_server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
                     + b"\x89PNG\r\n\x1a\n00")
        answer = _read_all(sock)
    assert answer.startswith("HTTP/1.1 408") and "body_timeout" in answer
    assert 2.5 < time.monotonic() - started < 5


def test_oversized_body_is_refused_before_it_is_read(lite0_server: InferenceServer) -> None:
    # GIVEN a request announcing 3 MiB (the test limit is 2 MiB) WHEN only its headers are sent THEN 413 at once
    with socket.create_connection(("127.0.0.1", lite0_server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 3145728\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith("HTTP/1.1 413") and "too_large" in answer
    assert call(lite0_server, "GET", "/ready")[0] == 200


def _read_all(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_missing_content_length_is_refused(lite0_server: InferenceServer) -> None:
    with socket.create_connection(("127.0.0.1", lite0_server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert _read_all(sock).startswith("HTTP/1.1 411")


def test_a_client_that_hangs_up_before_its_answer_is_no_error(lite0_server: InferenceServer,
                                                               photos: dict[str, bytes],
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    # GIVEN requests whose clients reset the connection while the model runs, or halfway through the headers
    body = photos["chelsea_1024"]
    whole = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    for request in [whole] * 5 + [whole[:30]] * 5:
        sock = socket.create_connection(("127.0.0.1", lite0_server.port))
        sock.sendall(request)
        time.sleep(0.01)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
        sock.close()
    time.sleep(0.5)  # the answers are written to the dead connections
    # THEN nothing is printed (no traceback) and the server still answers
    assert "Traceback" not in capfd.readouterr().err
    assert call(lite0_server, "GET", "/ready")[0] == 200


def test_unknown_paths_and_no_management_endpoints(lite0_server: InferenceServer) -> None:
    for path in ("/", "/models", "/metrics", "/debug", "/admin"):
        assert call(lite0_server, "GET", path)[0] == 404
    assert call(lite0_server, "POST", "/models", b"x")[0] == 404


def test_a_refused_request_is_answered_and_its_connection_carries_the_next(lite0_server: InferenceServer,
                                                                           photos: dict[str, bytes]) -> None:
    # GIVEN a keep-alive connection WHEN a request is refused without its body being used (a wrong path;
    # a shed request takes the same path) THEN the client reads the answer, and the next request on the
    # same connection is parsed as a request, not as the leftover body
    connection = http.client.HTTPConnection("127.0.0.1", lite0_server.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("POST", "/models", body=photos["chelsea_1024"], headers=png())
            response = connection.getresponse()
            assert response.status == 404 and json.loads(response.read())["error"] == "not_found"
        connection.request("POST", "/predict", body=photos["chelsea"], headers=png())
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_a_kept_alive_connection_outlives_a_pause_between_requests(lite0_server: InferenceServer,
                                                                photos: dict[str, bytes]) -> None:
    # GIVEN a connection that sent one image (the body read timeout here is 0.5 s)
    connection = http.client.HTTPConnection("127.0.0.1", lite0_server.port, timeout=10)
    try:
        connection.request("POST", "/predict", body=photos["chelsea"], headers=png())
        assert connection.getresponse().read()
        # WHEN its client is idle for longer than that THEN its next request is still answered on it
        time.sleep(1.0)
        connection.request("POST", "/predict", body=photos["chelsea"], headers=png())
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_a_burst_of_new_connections_is_queued_not_dropped(tmp_path: Path) -> None:
    # GIVEN a server whose accept loop is not taking connections (as when its CPUs are saturated)
    spec = Spec(name="tiny", artifact=str(tiny_classifier(tmp_path / "tiny.onnx")), input=InputSpec(size=32, resize=32))
    server = InferenceServer(spec)
    sockets: list[socket.socket] = []
    try:
        try:
            # WHEN a load balancer opens 64 connections at once THEN the kernel completes and queues them all
            for _ in range(64):
                sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
        finally:
            server.start()
        sockets[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in sockets[-1].recv(64)  # and the last one is served once the loop runs
    finally:
        for sock in sockets:
            sock.close()
        server.drain()


@pytest.mark.slow
def test_overload_adds_only_503s_and_memory_stays_bounded(tmp_path: Path) -> None:
    # GIVEN a server process (its own memory, read from /proc) with the production limits: 64 requests in
    # flight, 32 images queued for a slow model
    spec = Spec(name="slow", artifact=str(tiny_classifier(tmp_path / "slow.onnx", size=64, heavy=8)),
                input=InputSpec(size=64, resize=64))
    image = (Path(__file__).parent / "data" / "chelsea.png").read_bytes()

    def memory_mib(pid: int) -> tuple[float, float]:
        """The process's resident memory now (VmRSS) and its peak so far (VmHWM), in MiB."""
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    with _server_process(_spec_file(tmp_path, spec)) as (port, pid):
        rss_before, _ = memory_mib(pid)

        def send(_: int) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("POST", "/predict", body=image, headers=png())
                response = connection.getresponse()
                assert response.getheader("Content-Type") == "application/json" and json.loads(response.read())
                return response.status
            finally:
                connection.close()

        # WHEN 96 clients post at once, more than the server admits
        with ThreadPoolExecutor(max_workers=96) as pool:
            statuses = list(pool.map(send, range(96)))
        _, peak = memory_mib(pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as ready:
            assert ready.status == 200
    # THEN each is answered 200 or shed with 503, never a 500
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0 and statuses.count(200) > 0, statuses
    # AND the server's peak memory grew by what the admitted requests hold (bodies and decoded images, ~1 MiB
    # each; ~30 MiB measured), not by what arrived
    grown_mib = peak - rss_before
    assert grown_mib < 150, f"the server's peak RSS grew by {grown_mib:.0f} MiB"


def test_batching_answers_each_caller_with_its_own_result(tmp_path: Path) -> None:
    spec = Spec(name="b", artifact=str(tiny_classifier(tmp_path / "b.onnx", size=64, heavy=2)),
                input=InputSpec(size=64, resize=64), max_batch=8)
    server = start(spec)
    images = {}
    from PIL import Image

    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (80, 80), colour).save(path)
        images[i] = path.read_bytes()
    try:
        alone = {i: call(server, "POST", "/predict", data, png())[1] for i, data in images.items()}
        batched_sizes: list[int] = []
        server.batcher._on_batch = lambda size, ms: batched_sizes.append(size)  # type: ignore[union-attr]
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda i: (i % 4, call(server, "POST", "/predict", images[i % 4], png())[1]),
                                    range(48)))
    finally:
        server.drain()
    for i, body in results:
        assert [t["label"] for t in body["top"]] == [t["label"] for t in alone[i]["top"]]
        assert [t["score"] for t in body["top"]] == pytest.approx([t["score"] for t in alone[i]["top"]], abs=1e-4)
    assert max(batched_sizes) > 1, "concurrent requests should have been batched"


def test_sigterm_style_drain_finishes_requests_in_flight(tiny_spec: Spec) -> None:
    # GIVEN four requests held in the server: read, decoded and waiting for the model, which a gate holds
    server = start(tiny_spec, Limits(deadline_s=20))
    assert server.batcher is not None
    gate, run = threading.Event(), server.batcher._run

    def held(tensors: Any) -> Any:
        gate.wait(15)
        return run(tensors)

    server.batcher._run = held
    image = (Path(__file__).parent / "data" / "coffee.png").read_bytes()
    drainer = threading.Thread(target=server.drain)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(call, server, "POST", "/predict", image, png()) for _ in range(4)]
            waited = time.monotonic() + 15
            while server.in_flight < 4 and time.monotonic() < waited:
                time.sleep(0.01)
            assert server.in_flight == 4, "the four requests should be in flight before the drain starts"
            # WHEN the server drains (what SIGTERM does): it stops listening, then waits for them
            drainer.start()
            while server.socket.fileno() != -1 and time.monotonic() < waited:
                time.sleep(0.01)
            assert server.socket.fileno() == -1, "the drain should have closed the listening socket"
            drainer.join(0.5)
            assert drainer.is_alive() and not any(f.done() for f in futures), "the drain did not wait for them"
            gate.set()
            # THEN each is answered with its prediction, and only then does the drain end
            statuses = [f.result()[0] for f in futures]
            drainer.join(15)
            assert not drainer.is_alive()
    finally:
        gate.set()
        if drainer.ident is None:  # failed before the drain began
            server.drain()
        else:
            drainer.join(15)
    assert statuses == [200] * 4 and server.in_flight == 0


# --- A hostile round (issue 13): each test reproduces one finding against the server before its fix. ---

def _exchange(port: int, raw: bytes) -> str:
    """Send ``raw`` (a request asking for Connection: close) and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(raw)
        return _read_all(sock)


def _post(body: bytes, content_type: str = "application/json") -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Spec:
    return Spec(name="tiny", artifact=str(tiny_classifier(tmp_path / "tiny.onnx")), input=InputSpec(size=32, resize=32))


NO_ANSWER_BEFORE = [  # requests that once got no HTTP answer: the connection closed, a traceback in the log
    ("a URL with an unclosed IPv6 bracket", _post(b'{"url": "http://[::1/cat.png"}'), "400", "bad_url"),
    ("deeply nested JSON", _post(b"[" * 8000 + b"]" * 8000), "400", "bad_json"),
    ("a huge integer in the JSON", _post(b'{"url": 1' + b"0" * 5000 + b"}"), "400", "bad_json"),
    ("a Content-Length of digits int() refuses",
     b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb2\r\n\r\nab", "400", "bad_request"),
    ("a request target that is not ASCII", b"POST /pr\xc3\xa9dict HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
     "400", "bad_request"),
]


@pytest.mark.parametrize(("case", "raw", "status", "code"), NO_ANSWER_BEFORE, ids=[c[0] for c in NO_ANSWER_BEFORE])
def test_parsing_corners_get_a_json_4xx(lite0_server: InferenceServer, case: str, raw: bytes, status: str,
                                        code: str) -> None:
    answer = _exchange(lite0_server.port, raw)
    assert answer.startswith(f"HTTP/1.1 {status}"), answer[:200]
    assert json.loads(answer.split("\r\n\r\n", 1)[1])["error"] == code
    assert call(lite0_server, "GET", "/ready")[0] == 200


def test_a_url_whose_path_is_not_ascii_is_fetched(lite0_server: InferenceServer, photos: dict[str, bytes]) -> None:
    with origin(photos["coffee"]) as (base, hits):
        status, body, _ = call(lite0_server, "POST", "/predict", json.dumps({"url": base + "/image-café.png"}).encode(),
                               {"Content-Type": "application/json"})
    assert status == 200 and body["top"][0]["label"] == "espresso" and hits == ["/image-caf%C3%A9.png"]


def test_refusals_name_the_rule_not_the_address(lite0_server: InferenceServer) -> None:
    status, body, _ = call(lite0_server, "POST", "/predict", b'{"url": "http://localhost:1/cat.png"}',
                           {"Content-Type": "application/json"})
    assert (status, body["error"]) == (403, "forbidden_url")
    assert "127.0.0.1" not in body["message"] and "::1" not in body["message"]


def test_a_head_dripped_a_byte_at_a_time_is_cut_off_at_the_deadline(lite0_server: InferenceServer) -> None:
    # GIVEN a client that sends a request head one byte every 50 ms, for ever (the deadline is 3 s)
    with socket.create_connection(("127.0.0.1", lite0_server.port), timeout=10) as sock:
        started = time.monotonic()
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 1000
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - started > 6:
                break
        closed = closed or sock.recv(64) == b""
    # THEN the server closed the connection at the deadline
    assert closed and time.monotonic() - started < 5


def test_a_connection_that_sends_nothing_is_closed(tiny_spec: Spec) -> None:
    server = start(tiny_spec, Limits(keep_alive_s=1))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            started = time.monotonic()
            assert sock.recv(64) == b""
        assert 0.8 < time.monotonic() - started < 3
    finally:
        server.drain()


def test_dripping_bodies_do_not_shut_others_out(tiny_spec: Spec, photos: dict[str, bytes]) -> None:
    # GIVEN a server that takes 4 requests at a time, and 16 clients dripping their bodies a byte at a time
    server = start(tiny_spec, Limits(max_in_flight=4, deadline_s=4))
    drippers = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(16)]
    answers: list[bytes] = []

    def drip(sock: socket.socket) -> None:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n")
        try:
            for _ in range(100):
                sock.sendall(b"x")
                time.sleep(0.1)
        except OSError:
            pass
        answers.append(sock.recv(64))

    threads = [threading.Thread(target=drip, args=(sock,)) for sock in drippers]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        # WHEN someone else sends a whole image THEN it is answered while they drip
        assert call(server, "POST", "/predict", photos["chelsea"], png())[0] == 200
        for thread in threads:
            thread.join()
        # AND every dripping body was cut off at the deadline with a 408
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers
    finally:
        for sock in drippers:
            sock.close()
        server.drain()


def test_a_fault_is_a_json_500_counted_as_a_server_fault_and_client_errors_are_not(
        tiny_spec: Spec, photos: dict[str, bytes], capfd: pytest.CaptureFixture[str]) -> None:
    server = start(tiny_spec)
    published: list[dict[str, Any]] = []
    server.metrics = Recorder("tiny", publish=published.extend, interval_s=3600)
    assert server.model is not None

    def broken(_tensors: object) -> None:
        raise RuntimeError("internal detail /opt/secret")

    try:
        assert call(server, "POST", "/predict", b"not an image", png())[0] == 415
        server.batcher._run = broken  # type: ignore[union-attr]
        status, body, _ = call(server, "POST", "/predict", photos["chelsea"], png())
        server.metrics.flush()
    finally:
        server.drain()
    assert (status, body) == (500, FAULT)
    counts = {d["MetricName"]: sum(d["Counts"]) for d in published}
    assert counts["ServerFaults"] == 1 and counts["InputErrors"] == 1
    assert "RuntimeError: internal detail" in capfd.readouterr().err  # the operator sees the traceback


@contextlib.contextmanager
def _server_process(spec: Path, *args: str, file_limit: int | None = None) -> Iterator[tuple[int, int]]:
    """``python -m crossover_serving.server`` in its own process; yields its port and pid once it is ready."""
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (file_limit, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))) if file_limit else None
    process = subprocess.Popen([sys.executable, "-m", "crossover_serving.server", "--config", str(spec), "--host",
                                "127.0.0.1", "--port", "0", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               preexec_fn=limit)
    try:
        assert process.stderr is not None
        port = int(process.stderr.readline().rsplit(":", 1)[1])
        for _ in range(300):
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/ready",
                                                                      timeout=1) as response:
                if response.status == 200:
                    break
            time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


def _spec_file(tmp_path: Path, spec: Spec) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": spec.name, "artifact": spec.artifact,
                                "input": {"size": spec.input.size, "resize": spec.input.resize}}))
    return path


@pytest.mark.slow
def test_a_thousand_idle_connections_leave_health_answering(tiny_spec: Spec, tmp_path: Path) -> None:
    # GIVEN a server started with the usual 1,024 descriptors (its service raises the hard limit)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    idle: list[socket.socket] = []
    try:
        with _server_process(_spec_file(tmp_path, tiny_spec), file_limit=1024) as (port, _pid):
            # WHEN 1,100 clients open a connection each and send nothing
            idle += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(1100)]
            # THEN a health check still gets its answer at once
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                assert response.status == 200
            assert time.monotonic() - started < 2
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_large_decodes_wait_for_memory_instead_of_growing_the_process(tiny_spec: Spec, tmp_path: Path) -> None:
    # GIVEN a server whose decoding may hold 700 MiB, and eight 1.6 KB WebPs that each need ~610 MiB
    bomb = bombs.webp(8000, 5000)
    with _server_process(_spec_file(tmp_path, tiny_spec), "--decode-budget-mib", "700") as (port, pid):
        status_file = Path(f"/proc/{pid}/status")
        rss_before = int(next(x for x in status_file.read_text().splitlines() if x.startswith("VmRSS")).split()[1])

        def send(_: int) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("POST", "/predict", body=bomb, headers={"Content-Type": "image/webp"})
            return connection.getresponse().status

        # WHEN all eight arrive at once
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(send, range(8)))
        peak = int(next(x for x in status_file.read_text().splitlines() if x.startswith("VmHWM")).split()[1])
    # THEN each was decoded in turn or refused with 503 at its deadline, and memory stayed near the budget
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    grown_mib = (peak - rss_before) / 1024
    assert grown_mib < 700 + 150, f"the server grew by {grown_mib:.0f} MiB"


def test_under_a_path_prefix_it_answers_the_prefixed_paths_and_no_other(lite0_spec: Spec,
                                                                         photos: dict[str, bytes]) -> None:
    # GIVEN a model served under /cats on a shared load balancer
    server = start(dataclasses.replace(lite0_spec, path_prefix="/cats"))
    try:
        # WHEN a client posts to /cats/predict THEN it is answered as /predict
        status, body, _ = call(server, "POST", "/cats/predict", photos["chelsea"], png())
        assert status == 200 and body["top"][0]["label"] in CAT_CLASSES
        # AND the load balancer's health check and local tools still find /ready; another prefix is a 404
        assert call(server, "GET", "/ready")[0] == 200 and call(server, "GET", "/cats/ready")[0] == 200
        assert call(server, "POST", "/dogs/predict", photos["chelsea"], png())[:2] == (404, NOT_FOUND)
        assert call(server, "POST", "/catsx/predict", photos["chelsea"], png())[0] == 404
    finally:
        server.drain()
