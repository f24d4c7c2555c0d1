"""The instance HTTP server: ``python -m serving.server --config models/<name>.yaml --port 8080``.

``POST /predict`` (image bytes, or JSON naming a URL / S3 object) answers
``{"model": ..., "top": [{"label": ..., "score": ...}, ...]}``; ``GET /health`` says the process is
alive; ``GET /ready`` answers 503 until the model is loaded and one warm-up inference ran. Images are
decoded on the request threads; the model runs behind a gate (one batch at a time per accelerator)
that batches whatever is queued. When the queue or the connection limit is full the server answers
503 with Retry-After instead of queueing without bound. SIGTERM stops accepting, finishes the
requests in flight, then exits. There are no management or debug endpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from serving.api import image_bytes, prediction
from serving.batching import Batcher, Overloaded
from serving.errors import InputError, ModelLoadError
from serving.fetch import FetchPolicy, parse_networks
from serving.metrics import MetricUnit, Recorder
from serving.model import Model
from serving.spec import Spec, load


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64  # requests being read, decoded or waiting; more get 503 at once
    max_queue: int = 32  # decoded images waiting for the model
    deadline_s: float = 10.0  # from the request's arrival to its answer
    read_timeout_s: float = 5.0  # a body that stops arriving (a lying Content-Length) is abandoned
    # How long a kept-alive connection may wait for its next request: longer than the load balancer's
    # idle timeout (60 s), as AWS advises, or the server may close a connection the load balancer is
    # reusing at that moment, and the request on it becomes a 502.
    keep_alive_s: float = 75.0


class InferenceServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: when load rises and clients (a load balancer) open
    # connections faster than the accept loop takes them, the kernel drops the rest and their requests
    # get no answer (found by bench/load.py at twice capacity, with the kernel's ListenOverflows rising).
    request_queue_size = 1024  # the kernel caps it at net.core.somaxconn
    block_on_close = False

    def __init__(self, address: tuple[str, int], spec: Spec, *, limits: Limits = Limits(),
                 policy: FetchPolicy = FetchPolicy()) -> None:
        super().__init__(address, _Handler)
        self.spec, self.limits, self.policy = spec, limits, policy
        self.model: Model | None = None
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        self.in_flight = 0
        self._idle = threading.Condition()
        self.metrics = Recorder(spec.name)
        self.metrics.watch_gpus()
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            model = Model(self.spec)
            model.warm_up()
        except ModelLoadError as e:
            self.load_error = str(e)
            self.metrics.add("ModelLoadFailures", MetricUnit.Count, 1)
            print(f"serving: {e}", file=sys.stderr, flush=True)
            return
        self.model = model
        self.metrics.add("ModelLoadSeconds", MetricUnit.Seconds, time.perf_counter() - started)
        self.batcher = Batcher(model.predict_batch, max_batch=model.max_batch, max_queue=self.limits.max_queue,
                               on_batch=self._on_batch)

    def _on_batch(self, size: int, millis: float) -> None:
        self.metrics.add("BatchSize", MetricUnit.Count, size)
        self.metrics.add("InferenceMs", MetricUnit.Milliseconds, millis)
        if self.batcher is not None:
            self.metrics.add("QueueDepth", MetricUnit.Count, self.batcher.depth())

    def track(self, delta: int) -> None:
        with self._idle:
            self.in_flight += delta
            self._idle.notify_all()

    def drain(self, timeout_s: float) -> None:
        """Stop accepting, then wait for the requests in flight (at most ``timeout_s``)."""
        self.shutdown()
        with self._idle:
            self._idle.wait_for(lambda: self.in_flight == 0, timeout=timeout_s)
        if self.batcher is not None:
            self.batcher.close()
        self.metrics.close()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: InferenceServer
    protocol_version = "HTTP/1.1"
    server_version = "crossover"
    sys_version = ""

    def handle(self) -> None:
        # A client that resets the connection while its request is being read has nobody left to answer.
        with contextlib.suppress(ConnectionResetError):
            super().handle()

    def handle_one_request(self) -> None:
        # Reading a body shortens the socket's timeout; waiting for the next request must not inherit it
        # (found by bench/load.py: clients idle a few seconds found their connection closed).
        self.connection.settimeout(self.server.limits.keep_alive_s)
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logs come from the load balancer; metrics from the Recorder

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        try:
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left before its answer (a timeout, a shed load test)

    def _error(self, error: InputError) -> None:
        self.close_connection = True  # the rest of a refused body is never read: drop the connection
        self.server.metrics.add("InputErrors", MetricUnit.Count, 1)
        self._send(error.status, error.body())

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "alive"})
        elif self.path == "/ready":
            if self.server.ready:
                self._send(200, {"status": "ready", "model": self.server.spec.name})
            else:
                self._send(503, {"status": "loading" if self.server.load_error is None else "failed"},
                           {"Retry-After": "5"})
        else:
            self._send(404, {"error": "not_found", "message": "POST an image to /predict"})

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._refuse(404, {"error": "not_found", "message": "POST an image to /predict"})
            return
        if not self.server.slots.acquire(blocking=False):
            self.server.metrics.add("Shed", MetricUnit.Count, 1)
            self._refuse(503, {"error": "overloaded", "message": "too many requests in flight"}, {"Retry-After": "1"})
            return
        self.server.track(+1)
        try:
            self._predict()
        finally:
            self.server.track(-1)
            self.server.slots.release()

    def _refuse(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        """Answer without using the request's body, reading it off first (when its announced size is within
        the limit): closing on an unread body resets the connection, and the client would lose the answer
        (found by bench/load.py: shed 503s arrived as "connection closed")."""
        length = self.headers.get("Content-Length", "")
        self.close_connection = True
        if length.isdigit() and int(length) <= self.server.policy.max_bytes and "Transfer-Encoding" not in self.headers:
            self.connection.settimeout(self.server.limits.read_timeout_s)
            with contextlib.suppress(TimeoutError):
                self.close_connection = len(self.rfile.read(int(length))) != int(length)
        self._send(status, body, headers)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None or not length.isdigit():
            raise InputError("a Content-Length header is required (chunked bodies are not accepted)",
                             status=411, code="length_required")
        if int(length) > self.server.policy.max_bytes:
            raise InputError(f"the body is {int(length):,} bytes; the limit is {self.server.policy.max_bytes:,}",
                             status=413, code="too_large")
        self.connection.settimeout(self.server.limits.read_timeout_s)
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:
            body = b""
        if len(body) != int(length):
            raise InputError(f"the body ended after {len(body):,} of the {int(length):,} bytes that "
                             "Content-Length announced", status=400, code="incomplete_body")
        return body

    def _predict(self) -> None:
        started = time.perf_counter()
        server = self.server
        if server.batcher is None or server.model is None:
            self._refuse(503, {"error": "not_ready", "message": "the model is still loading"}, {"Retry-After": "5"})
            return
        try:
            data = image_bytes(self._read_body(), self.headers.get("Content-Type"), server.policy)
            tensor = server.model.preprocess(data)
            remaining = server.limits.deadline_s - (time.perf_counter() - started)
            top = server.batcher.submit(tensor, max(remaining, 0.001))
        except InputError as e:
            self._error(e)
            return
        except Overloaded:
            server.metrics.add("Shed", MetricUnit.Count, 1)
            self._send(503, {"error": "overloaded", "message": "the model's queue is full"}, {"Retry-After": "1"})
            return
        except TimeoutError:
            self._send(503, {"error": "deadline", "message": "no answer within the deadline"}, {"Retry-After": "1"})
            return
        server.metrics.add("LatencyMs", MetricUnit.Milliseconds, (time.perf_counter() - started) * 1000)
        self._send(HTTPStatus.OK, prediction(server.spec.name, top))


def serve(server: InferenceServer, *, drain_s: float = 30.0) -> None:
    """Serve until SIGTERM/SIGINT, then drain gracefully."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    stop.wait()
    server.drain(drain_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="models/<name>.yaml, or a JSON serving spec")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--allow-network", action="append", default=[],
                        help="TESTING ONLY: let URL fetches reach this private network (CIDR); repeatable")
    args = parser.parse_args(argv)
    try:
        spec = load(args.config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"serving: cannot read {args.config}: {e}", file=sys.stderr)
        return 1
    policy = FetchPolicy(allowed_networks=parse_networks(args.allow_network),
                         schemes=("https", "http") if args.allow_network else ("https",))
    server = InferenceServer((args.host, args.port), spec, policy=policy)
    print(f"serving {spec.name} on http://{args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
