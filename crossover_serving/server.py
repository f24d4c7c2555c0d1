"""The instance HTTP server: ``python -m crossover_serving.server --config models/<name>.yaml --port 8080``.

``POST /predict`` (image bytes, or JSON naming a URL / S3 object) answers
``{"model": ..., "top": [{"label": ..., "score": ...}, ...]}``; ``GET /health`` says the process is
alive; ``GET /ready`` answers 503 until the model is loaded and one warm-up inference ran. There are
no management or debug endpoints. SIGTERM stops accepting, finishes the requests in flight, then exits.

It runs on uvicorn (asyncio and llhttp through httptools): an idle or slow connection costs a socket, not a thread. Each
request has one deadline from its first byte to its answer, covering the head, the body, a fetch,
decoding and the model; what misses it is cut off and answered (408 for a body that did not arrive,
503 otherwise). Capacity is admitted, never queued without bound: request bodies against a byte
budget, decoding against a memory budget (crossover_serving.budget), work in flight against a count, images
against the model's queue (crossover_serving.batching); what does not fit gets 503 with Retry-After. Every
request gets a JSON answer: parsing corners are 4xx, anything unexpected a 500 without internals,
logged and counted as ``ServerFaults``, the only server status that rollback alarms count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from crossover_serving.api import parse, prediction
from crossover_serving.batching import Batcher
from crossover_serving.budget import MIB, Budget, Lease, available_memory
from crossover_serving.deadline import Deadline
from crossover_serving.errors import InputError, ModelLoadError, Overloaded
from crossover_serving.fetch import FetchPolicy, fetch, parse_networks
from crossover_serving.images import Opened
from crossover_serving.interruption import SpotWatch
from crossover_serving.metrics import MetricUnit, Recorder
from crossover_serving.model import Model
from crossover_serving.spec import Spec, load

NOT_FOUND = {"error": "not_found", "message": "POST an image to /predict"}
FAULT = {"error": "internal", "message": "the server failed on this request; the fault is logged and counted"}
DECODE_SHARE = 0.5  # of the memory left after the model loads: several images decode at once
# A request's head: what the load balancer forwards at most (a 16 KiB request line or header, 64 KiB in all).
MAX_HEAD_BYTES = 64 * 1024
MAX_URL_BYTES = 16 * 1024
MAX_HEADERS = 100
BODY_GRACE_S = 1.0  # past the deadline, for the application's own answer to a late body (408) to be sent
CHUNKED_SLICE = 16 * 1024  # a chunked body is parsed in slices: what follows it is never parsed far ahead
_CRLFS = re.compile(rb"(?:\r\n)*")


@dataclass(frozen=True)
class Limits:
    max_in_flight: int = 64  # requests being fetched, decoded or waiting for the model; more get 503 at once
    # Of those, fetching the image a request names: an origin that stalls holds its slot until the deadline, and
    # clients naming one must not take every slot from requests that carry their image.
    max_fetches: int = 32
    max_queue: int = 32  # decoded images waiting for the model
    deadline_s: float = 10.0  # from a request's first byte to its answer
    # How long a connection may wait for its next request: longer than the load balancer's idle timeout
    # (60 s), as AWS advises, or the server may close a connection the load balancer is reusing at that
    # moment, and the request on it becomes a 502.
    keep_alive_s: float = 75.0
    max_connections: int = 4096  # open connections, idle ones included; past it new ones are closed
    body_budget_mib: int = 256  # request bodies being received at once
    decode_budget_mib: int | None = None  # None: DECODE_SHARE of the memory left after the model loads
    drain_s: float = 30.0  # on SIGTERM, how long requests in flight may take to finish


class _Connection(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 connection (llhttp's parser) with the limits it lacks:

    - a connection that sends nothing is closed after ``keep_alive_s``; once a request's first byte arrives,
      the whole request (head and body, on every path) must arrive within the deadline, or the connection
      is closed (uvicorn's own timer stops at the first byte, and every byte re-arms its keep-alive: a head,
      or a body sent to /health, dripped a byte at a time held a connection forever);
    - a head is at most ``MAX_HEAD_BYTES`` (431), its URL ``MAX_URL_BYTES`` (414), ``MAX_HEADERS`` header
      lines (431): llhttp buffers a header however long, and uvicorn keeps every one;
    - one request at a time: while one is answered, the bytes after it are held and reading is paused, and
      the parser is fed one head at a time (uvicorn parses a whole read of pipelined requests, queueing a
      request object for each: ~100 MiB/s of memory from one connection sending GET /health);
    - past ``max_connections`` new connections are closed at once.

    The first byte's time goes to the application, whose deadline it starts. Malformed HTTP gets a JSON 400."""

    limits: ClassVar[Limits]
    _timer: asyncio.TimerHandle | None = None
    _held = b""  # received, not yet parsed: what follows a request that is still being answered
    _phase = "idle"  # of the request being parsed: "idle" (between requests), "head", then "body"
    _content_length: int | None = None  # of its body; None: chunked
    _head_bytes = 0  # received while its head is incomplete
    _header_bytes = 0  # the request line's and header lines' lengths
    _header_count = 0
    _refusal: tuple[int, str, str] | None = None  # a head the parser refused: answered once nothing is in flight

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.close()
            return
        self._arm(self.limits.keep_alive_s)

    def data_received(self, data: bytes) -> None:
        self._held += data
        self._feed()

    def _feed(self) -> None:
        """Hand the parser what it may parse now, a piece at a time, cut where llhttp's callbacks change what
        comes next: a head up to its end, a body up to its length (a chunked one in slices). Stop while a
        request waits behind the one being answered (uvicorn's pipeline): the rest stays held, reading
        paused, until that answer is sent. Bytes are sliced from one buffer, never copied twice."""
        held, start = self._held, 0
        while start < len(held) and not self.pipeline and self.parser is not None and self._refusal is None \
                and not self.transport.is_closing():
            if self._phase == "body":
                size = CHUNKED_SLICE if self._content_length is None else max(1, self._content_length)
                cut = min(len(held), start + size)
            else:
                if self._phase == "idle":  # line ends between requests: llhttp skips them, and so do we, at once
                    start = _CRLFS.match(held, start).end()  # type: ignore[union-attr]
                    if start == len(held):
                        break
                end = held.find(b"\r\n\r\n", start)
                cut = len(held) if end < 0 else end + 4
            piece, start = held[start:cut], cut
            phase = self._phase
            super().data_received(piece)
            if phase == "body" and self._content_length is not None:
                self._content_length -= len(piece)
            if self._phase == "head":  # still incomplete: llhttp holds what it has of it
                self._head_bytes += len(piece)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse_head(431, "head_too_large", f"the request's head is over {MAX_HEAD_BYTES:,} bytes")
        self._held = held[start:]
        if self._refusal is not None and not self._answering():
            self._refuse(*self._refusal)
        elif self._held:
            self.flow.pause_reading()

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["state"]["arrival"] = time.monotonic()
        self._phase, self._content_length = "head", None
        self._head_bytes = self._header_bytes = self._header_count = 0
        # The whole request, head and body, on every path, within the deadline. The application answers a
        # body that misses it with 408 first; this closes what it does not read (a body sent to /health).
        self._arm(self.limits.deadline_s + BODY_GRACE_S)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._header_bytes += len(url)
        if len(self.url) > MAX_URL_BYTES:
            self._refuse_head(414, "url_too_long", f"the URL is over {MAX_URL_BYTES:,} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase == "body":  # a chunked body's trailers: nothing of the request the application reads
            return
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > MAX_HEADERS:
            self._refuse_head(431, "too_many_headers", f"more than {MAX_HEADERS} header lines")
        elif self._header_bytes > MAX_HEAD_BYTES:  # a head that arrived whole, in one read
            self._refuse_head(431, "head_too_large", f"the request's head is over {MAX_HEAD_BYTES:,} bytes")
        if name.lower() == b"content-length" and value.strip().isdigit():
            self._content_length = int(value)
        if self._refusal is None:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._phase = "body"
        if self._refusal is None:  # a refused head starts no request
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = "idle"
        if self._refusal is None:
            super().on_message_complete()
        self._idle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._idle()
        self._feed()  # the next request, if one was held back, or a refusal that waited for this answer

    def _idle(self) -> None:
        """Nothing in flight and nothing being received: the connection is idle from now, whatever stray line
        ends it is sent (uvicorn's keep-alive timer restarts at every byte); or the application is answering,
        within its own deadline."""
        if self._answering():
            self._disarm()
        elif self._phase == "idle" and not self.pipeline:
            self._arm(self.limits.keep_alive_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._held = b""
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self.transport.close)  # no complete request: nothing to answer

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse_head(self, status: int, code: str, message: str) -> None:
        """Note the first limit a head broke: the parser goes on to its end, starting no request, and the
        answer is sent once it stops and any request before it on this connection is answered."""
        self._refusal = self._refusal or (status, code, message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer what the parser could not hand the application, and close."""
        if self.transport.is_closing():
            return
        body = json.dumps({"error": code, "message": message}).encode()
        reason = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:  # llhttp refused the bytes: answered as any refused head
        self._refuse_head(400, "bad_request", "the request is not valid HTTP/1.1")


class _Refused(InputError):
    """Refused before the body was read: the connection closes after the answer."""


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _listen(host: str, port: int) -> socket.socket:
    """Bound and listening at once, with a deep backlog: connections a load balancer opens while the server
    starts or is saturated wait in the kernel instead of being dropped (socketserver's backlog of 5 lost
    requests at twice capacity, found by bench/load.py)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def _raise_file_limit(wanted: int = 65536) -> None:
    """Every connection is a descriptor: the usual soft limit of 1,024 would refuse connections long before
    memory runs out (bootstrap.sh raises the hard limit for the service)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class InferenceServer:
    """The model behind the HTTP API on ``host``:``port`` (0: any free port, see :attr:`port`).

    Listening starts at construction; :meth:`serve` runs on this thread until SIGTERM or SIGINT,
    :meth:`start` on a background thread until :meth:`drain`. ``policy`` None: the spec's inputs.
    """

    def __init__(self, spec: Spec, *, limits: Limits = Limits(), policy: FetchPolicy | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.spec, self.limits = spec, limits
        self.policy = policy or FetchPolicy.for_inputs(spec.inputs.s3, spec.inputs.https)
        self.model: Model | None = None
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        self.metrics = Recorder(spec.name, backend=spec.backend)
        self.metrics.watch_gpus()
        self.in_flight = 0
        self.leaving: str | None = None  # why this instance is going away (a spot notice): it is not ready
        self.bodies = Budget(limits.body_budget_mib * MIB, "request bodies")
        self.decoding: Budget | None = None  # sized once the model is loaded
        self._decoders = ThreadPoolExecutor(len(os.sched_getaffinity(0)), thread_name_prefix="decode")
        self.fetching = 0
        self._fetchers = ThreadPoolExecutor(limits.max_fetches, thread_name_prefix="fetch")
        _raise_file_limit()
        self.socket = _listen(host, port)
        protocol = type("Connection", (_Connection,), {"limits": limits})
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            self._app(), http=protocol, lifespan="off", log_config=None, log_level="warning", access_log=False,
            proxy_headers=False, server_header=False, headers=[("server", "crossover")], ws="none",
            timeout_keep_alive=int(limits.keep_alive_s), timeout_graceful_shutdown=int(limits.drain_s),
            backlog=1024))
        self._thread: threading.Thread | None = None
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def leave(self, reason: str) -> None:
        """The instance is going away (crossover_serving.interruption): fail the readiness check from now on, so
        the load balancer stops sending requests here and drains this target, while every request that still
        arrives, and each one in flight, is answered as before."""
        self.leaving = reason

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
        budget = self.limits.decode_budget_mib
        self.decoding = Budget(budget * MIB if budget else available_memory(DECODE_SHARE), "decoding this image")
        self.metrics.add("ModelLoadSeconds", MetricUnit.Seconds, time.perf_counter() - started)
        self.batcher = Batcher(model.predict_batch, max_batch=model.max_batch, max_queue=self.limits.max_queue,
                               on_batch=self._on_batch)

    def _on_batch(self, size: int, millis: float) -> None:
        self.metrics.add("BatchSize", MetricUnit.Count, size)
        self.metrics.add("InferenceMs", MetricUnit.Milliseconds, millis)
        if self.batcher is not None:
            self.metrics.add("QueueDepth", MetricUnit.Count, self.batcher.depth())

    def _app(self) -> Starlette:
        async def not_found(_request: Request, _exc: Exception) -> Response:
            return _json(404, NOT_FOUND)

        async def not_allowed(_request: Request, exc: Exception) -> Response:
            allow = getattr(exc, "headers", None) or {}
            return _json(405, {"error": "method_not_allowed", "message": f"use {allow.get('Allow', 'POST')}"}, allow)

        routes = (("/predict", self._predict, "POST"), ("/health", self._health, "GET"), ("/ready", self._ready, "GET"))
        prefixes = dict.fromkeys(["", self.spec.path_prefix])  # under a shared load balancer's prefix too
        app = Starlette(routes=[Route(prefix + path, handler, methods=[method])
                                for prefix in prefixes for path, handler, method in routes],
                        exception_handlers={404: not_found, 405: not_allowed})
        app.router.redirect_slashes = False  # /predict/ is a 404 with its JSON body, not a bare 307
        return app

    async def _health(self, _request: Request) -> Response:
        return _json(200, {"status": "alive"})

    async def _ready(self, _request: Request) -> Response:
        if self.leaving is not None:
            return _json(503, {"status": "leaving"})
        if self.ready:
            return _json(200, {"status": "ready", "model": self.spec.name})
        return _json(503, {"status": "loading" if self.load_error is None else "failed"}, {"Retry-After": "5"})

    async def _predict(self, request: Request) -> Response:
        deadline = Deadline.after(self.limits.deadline_s, start=request.scope["state"].get("arrival"))
        try:
            response = await self._answer(request, deadline)
        except _Refused as e:
            self.metrics.add("InputErrors", MetricUnit.Count, 1)
            # The body is read off first (closing on unread bytes would reset the connection), unless the client
            # waits for "100 Continue" to send it: reading would invite the very body being refused.
            if request.headers.get("expect", "").lower() != "100-continue":
                with contextlib.suppress(TimeoutError, ClientDisconnect):
                    await self._discard(request, deadline)
            return _json(e.status, e.body(), {"Connection": "close"})
        except InputError as e:
            self.metrics.add("InputErrors", MetricUnit.Count, 1)
            return _json(e.status, e.body())
        except Overloaded as e:
            self.metrics.add("Shed", MetricUnit.Count, 1)
            return _json(503, {"error": "overloaded", "message": str(e)}, {"Retry-After": "1"})
        except TimeoutError:
            self.metrics.add("Shed", MetricUnit.Count, 1)
            return _json(503, {"error": "deadline", "message": f"no answer within the {deadline.seconds:g} s "
                                                               "deadline"}, {"Retry-After": "1"})
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        except Exception:  # a fault of ours, never of the request: logged, counted, answered without internals
            traceback.print_exc(file=sys.stderr)
            self.metrics.add("ServerFaults", MetricUnit.Count, 1)
            return _json(500, FAULT)
        self.metrics.add("LatencyMs", MetricUnit.Milliseconds, (deadline.seconds - deadline.remaining()) * 1000)
        return response

    async def _discard(self, request: Request, deadline: Deadline) -> None:
        """Read a refused request's body off without keeping it: closing on an unread body resets the
        connection, and the client would lose the answer (found by bench/load.py for shed 503s)."""
        async with asyncio.timeout_at(deadline.at):
            async for _ in request.stream():
                pass

    async def _answer(self, request: Request, deadline: Deadline) -> Response:
        length = request.headers.get("content-length")
        if length is None or "transfer-encoding" in request.headers:
            raise _Refused("a Content-Length header is required (chunked bodies are not accepted)", status=411,
                           code="length_required")
        size = int(length)  # llhttp accepts only digits here
        if size > self.policy.max_bytes:
            raise _Refused(f"the body is {size:,} bytes; the limit is {self.policy.max_bytes:,}", status=413,
                           code="too_large")
        if not self.ready:
            await self._discard(request, deadline)
            return _json(503, {"error": "not_ready", "message": "the model is still loading"}, {"Retry-After": "5"})
        lease = self.bodies.lease()
        try:
            body = await self._body(request, deadline, lease)
            if self.in_flight >= self.limits.max_in_flight:
                raise Overloaded("too many requests in flight")
            self.in_flight += 1
            try:
                return await self._run(body, request.headers.get("content-type"), deadline)
            finally:
                self.in_flight -= 1
        finally:
            lease.release()

    async def _body(self, request: Request, deadline: Deadline, lease: Lease) -> bytes:
        """The body, charged to the body budget as its bytes arrive (an announced length reserves nothing, so
        connections that announce and send nothing hold nothing). Past the budget the rest is read off and
        dropped, and the request shed."""
        chunks, full = [], False
        try:
            async with asyncio.timeout_at(deadline.at):
                async for chunk in request.stream():
                    full = full or not lease.try_take(len(chunk))
                    if not full:
                        chunks.append(chunk)
        except TimeoutError:
            raise _Refused(f"the body did not arrive within the {deadline.seconds:g} s deadline", status=408,
                           code="body_timeout") from None
        if full:
            raise Overloaded("too many request bodies are being received")
        return b"".join(chunks)

    async def _run(self, body: bytes, content_type: str | None, deadline: Deadline) -> Response:
        model, batcher, decoding = self.model, self.batcher, self.decoding
        assert model is not None and batcher is not None and decoding is not None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline.at):
            parsed = parse(body, content_type, self.policy)
            data = parsed if isinstance(parsed, bytes) else await self._fetch(parsed.uri, deadline)
            prepared = await loop.run_in_executor(self._decoders, self._prepare, model, decoding, data)
            if isinstance(prepared, Opened):  # its memory was not free: wait for it, then decode
                await decoding.take(prepared.decode_bytes, deadline.at)
                prepared = await self._decode_taken(model, decoding, prepared)
            top = await asyncio.wrap_future(batcher.enqueue(prepared, deadline.at))
        return _json(200, prediction(self.spec.name, top))

    async def _fetch(self, uri: str, deadline: Deadline) -> bytes:
        if self.fetching >= self.limits.max_fetches:
            raise Overloaded("too many image fetches in flight")
        self.fetching += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._fetchers, fetch, uri, self.policy, deadline)
        finally:
            self.fetching -= 1

    @staticmethod
    def _prepare(model: Model, decoding: Budget, image: bytes) -> np.ndarray | Opened:
        """Open and decode in one trip to a decoding thread when the memory is free (one wake-up of the event
        loop a request instead of three: measured, the wake-ups cost the server ~10% of its throughput); the
        opened image comes back undecoded when its memory must be waited for."""
        opened = model.preprocess.open(image)
        if not decoding.try_take(opened.decode_bytes):
            return opened
        return InferenceServer._decode(model, decoding, opened)

    @staticmethod
    def _decode(model: Model, decoding: Budget, opened: Opened) -> np.ndarray:
        """Decode an image whose memory is taken, and give it back when decoding really ends (even if the
        request stopped waiting for it)."""
        try:
            return model.preprocess.decode(opened)
        finally:
            decoding.give(opened.decode_bytes)

    async def _decode_taken(self, model: Model, decoding: Budget, opened: Opened) -> np.ndarray:
        future = self._decoders.submit(self._decode, model, decoding, opened)

        def never_ran(done: Future[np.ndarray]) -> None:
            if done.cancelled():  # cancelled while queued for a decoder (the deadline passed): _decode never ran
                decoding.give(opened.decode_bytes)

        future.add_done_callback(never_ran)
        return await asyncio.wrap_future(future)

    def start(self) -> InferenceServer:
        """Serve on a background thread (tests, an embedding process) until :meth:`drain`."""
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self.socket]},
                                        name="http", daemon=True)
        self._thread.start()
        while not self._uvicorn.started and self._thread.is_alive():
            time.sleep(0.01)
        return self

    def drain(self) -> None:
        """Stop a started server: stop accepting, finish the requests in flight, then release everything."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self._close()

    def serve(self) -> None:
        """Serve on this thread until SIGTERM or SIGINT, then drain (uvicorn's graceful shutdown)."""
        # uvicorn re-raises the signal once it has shut down; a handler of our own makes that a clean exit.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        self._uvicorn.run(sockets=[self.socket])
        self._close()

    def _close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self._decoders.shutdown(wait=False, cancel_futures=True)
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        self.metrics.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossover_serving.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="models/<name>.yaml, or a JSON serving spec")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: every interface)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free one)")
    parser.add_argument("--decode-budget-mib", type=int,
                        help="memory image decoding may hold at once (default: half of what is free after loading)")
    parser.add_argument("--watch-spot", action="store_true",
                        help="leave (fail /ready) on a spot interruption notice or rebalance recommendation")
    parser.add_argument("--allow-network", action="append", default=[],
                        help="TESTING ONLY: let URL fetches reach this private network (CIDR), over HTTP too; "
                             "repeatable")
    args = parser.parse_args(argv)
    try:
        spec = load(args.config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"serving: cannot read {args.config}: {e}", file=sys.stderr)
        return 1
    policy = FetchPolicy.for_inputs(spec.inputs.s3, spec.inputs.https)
    if args.allow_network:
        policy = FetchPolicy(schemes=("https", "http"), s3_prefixes=policy.s3_prefixes,
                             allowed_networks=parse_networks(args.allow_network))
    server = InferenceServer(spec, policy=policy, host=args.host, port=args.port,
                             limits=Limits(decode_budget_mib=args.decode_budget_mib))
    print(f"serving {spec.name} on http://{args.host}:{server.port}", file=sys.stderr, flush=True)
    if args.watch_spot:
        SpotWatch(server.leave).start()
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
