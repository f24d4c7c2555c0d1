"""The instance HTTP server on loopback: real inference, hostile requests, overload, shutdown."""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from serving.fetch import FetchPolicy
from serving.server import InferenceServer, Limits
from serving.spec import InputSpec, Spec
from tests.conftest import CAT_CLASSES
from tests.graphs import tiny_classifier
from tests.origin import origin

TEST_POLICY = FetchPolicy(schemes=("https", "http"), allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),),
                          max_bytes=2 * 1024 * 1024, connect_timeout_s=0.5, total_timeout_s=1.5)


def start(spec: Spec, limits: Limits = Limits(read_timeout_s=0.5), policy: FetchPolicy = TEST_POLICY
          ) -> InferenceServer:
    server = InferenceServer(("127.0.0.1", 0), spec, limits=limits, policy=policy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.ready and server.load_error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return server


def call(server: InferenceServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=20)
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
    server.drain(5)


def png(**headers: str) -> dict[str, str]:
    return {"Content-Type": "image/png", **headers}


def test_ready_only_after_load_and_warm_up(tmp_path: Path) -> None:
    # GIVEN a model file that is a FIFO, so loading blocks until the test writes the model into it
    model = tiny_classifier(tmp_path / "m.onnx").read_bytes()
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    server = InferenceServer(("127.0.0.1", 0), Spec(name="slow", artifact=str(fifo),
                                                    input=InputSpec(size=32, resize=32)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
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
        server.drain(5)


def test_model_that_fails_to_load_stays_unready(tmp_path: Path) -> None:
    server = start(Spec(name="broken", artifact=str(tmp_path / "missing.onnx")))
    try:
        assert call(server, "GET", "/ready")[:2] == (503, {"status": "failed"})
        assert call(server, "GET", "/health")[0] == 200
    finally:
        server.drain(5)


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


def test_lying_content_length_is_answered_not_hung(lite0_server: InferenceServer) -> None:
    # GIVEN a request announcing 1000 bytes that sends 10 WHEN the body stalls THEN a 400 within the read timeout
    with socket.create_connection(("127.0.0.1", lite0_server.server_address[1]), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
                     + b"\x89PNG\r\n\x1a\n00")
        started = time.monotonic()
        answer = _read_all(sock)
    assert answer.startswith("HTTP/1.1 400") and "incomplete_body" in answer
    assert time.monotonic() - started < 5


def test_oversized_body_is_refused_before_it_is_read(lite0_server: InferenceServer) -> None:
    # GIVEN a request announcing 3 MiB (the test limit is 2 MiB) WHEN only its headers are sent THEN 413 at once
    with socket.create_connection(("127.0.0.1", lite0_server.server_address[1]), timeout=10) as sock:
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
    with socket.create_connection(("127.0.0.1", lite0_server.server_address[1]), timeout=10) as sock:
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
        sock = socket.create_connection(lite0_server.server_address[:2])
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
    connection = http.client.HTTPConnection("127.0.0.1", lite0_server.server_address[1], timeout=10)
    try:
        for _ in range(3):
            connection.request("POST", "/models", body=photos["chelsea_1024"], headers=png())
            response = connection.getresponse()
            assert response.status == 404 and json.loads(response.read())["error"] == "not_found"
        connection.request("POST", "/predict", body=photos["chelsea"], headers=png())
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_a_kept_alive_connection_outlives_the_body_read_timeout(lite0_server: InferenceServer,
                                                                photos: dict[str, bytes]) -> None:
    # GIVEN a connection that sent one image (the body read timeout here is 0.5 s)
    connection = http.client.HTTPConnection("127.0.0.1", lite0_server.server_address[1], timeout=10)
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
    server = InferenceServer(("127.0.0.1", 0), spec)
    sockets: list[socket.socket] = []
    try:
        try:
            # WHEN a load balancer opens 64 connections at once THEN the kernel completes and queues them all
            for _ in range(64):
                sockets.append(socket.create_connection(server.server_address[:2], timeout=2))
        finally:
            threading.Thread(target=server.serve_forever, daemon=True).start()  # so that drain() returns
        sockets[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in sockets[-1].recv(64)  # and the last one is served once the loop runs
    finally:
        for sock in sockets:
            sock.close()
        server.drain(1)


def test_overload_adds_only_503s_and_memory_stays_bounded(tmp_path: Path) -> None:
    # GIVEN a slow model behind a small queue WHEN twice its capacity arrives at once THEN 200 or 503, never 500
    spec = Spec(name="slow", artifact=str(tiny_classifier(tmp_path / "slow.onnx", size=64, heavy=6)),
                input=InputSpec(size=64, resize=64), max_batch=2)
    limits = Limits(max_connections=8, max_queue=4, deadline_s=20, read_timeout_s=2)
    server = start(spec, limits)
    image = (Path(__file__).parent / "data" / "chelsea.png").read_bytes()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(lambda _: call(server, "POST", "/predict", image, png())[0], range(64)))
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(503) > 0 and statuses.count(200) > 0
        retry = call(server, "GET", "/ready")
        assert retry[0] == 200
    finally:
        server.drain(10)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 300, f"peak RSS grew by {grown_mib:.0f} MiB"


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
        server.drain(10)
    for i, body in results:
        assert [t["label"] for t in body["top"]] == [t["label"] for t in alone[i]["top"]]
        assert [t["score"] for t in body["top"]] == pytest.approx([t["score"] for t in alone[i]["top"]], abs=1e-4)
    assert max(batched_sizes) > 1, "concurrent requests should have been batched"


def test_sigterm_style_drain_finishes_requests_in_flight(tmp_path: Path) -> None:
    spec = Spec(name="d", artifact=str(tiny_classifier(tmp_path / "d.onnx", size=64, heavy=8)),
                input=InputSpec(size=64, resize=64))
    server = start(spec)
    image = (Path(__file__).parent / "data" / "coffee.png").read_bytes()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(call, server, "POST", "/predict", image, png()) for _ in range(4)]
        time.sleep(0.05)
        server.drain(20)
        statuses = [f.result()[0] for f in futures]
    assert statuses == [200] * 4
