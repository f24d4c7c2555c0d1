"""A local HTTP origin on loopback for URL-fetch tests: good images, redirects, slow heads and bodies, endless ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Origin(BaseHTTPRequestHandler):
    image = b""
    hits: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path.startswith("/image"):  # any name: a path may be percent-encoded UTF-8
            self._body(self.image, "image/png")
        elif self.path == "/slow-headers":  # a status line and headers dripped a byte every 50 ms (bounded: 20 s)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"a" * 400
            for byte in head:
                if not self._write(bytes([byte])):
                    return
                time.sleep(0.05)
        elif self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":  # headers at once, then one byte every 0.2 s (bounded: 10 s)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(50):
                if not self._write(b"x"):
                    return
                time.sleep(0.2)
        elif self.path == "/endless":  # no length, bytes until the client hangs up (bounded: 64 MiB)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            chunk = b"\x89PNG" + b"\x00" * 65532
            for _ in range(1024):
                if not self._write(chunk):
                    return
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
        else:
            self._body(b"missing", "text/plain", 404)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _body(self, data: bytes, kind: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._write(data)


@contextmanager
def origin(image: bytes, host: str = "127.0.0.2") -> Iterator[tuple[str, list[str]]]:
    """Serve on ``host`` (a loopback address); yields the base URL and the list of paths requested."""
    hits: list[str] = []
    handler = type("Origin", (_Origin,), {"image": image, "hits": hits})
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
