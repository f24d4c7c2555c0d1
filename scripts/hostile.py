"""The hostile peers' attacks, replayed against the HTTP server on loopback, with what each one costs it.

    python scripts/hostile.py        (scripts/reliability.py runs it for docs/reliability.md)

One server process (``python -m crossover_serving.server``, the efficientnet_lite0 example, a 400 MiB decode
budget, URL fetches allowed to a local origin on 127.0.0.2); each attack is sent, then its answer, the CPU
time the server spent (utime + stime of its process) and the peak of its resident memory above what it held
before (VmHWM, reset before each attack) are read. A fault would print a traceback on the server's stderr:
they are counted. Writes build/reliability/hostile.json and prints a table.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import bombs  # noqa: E402
from tests.origin import origin  # noqa: E402

OUT = ROOT / "build" / "reliability" / "hostile.json"
CONFIG = ROOT / "models" / "efficientnet_lite0.yaml"
TICK = os.sysconf("SC_CLK_TCK")


class Server:
    """The server in its own process, with its CPU time and memory peak readable from /proc."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process, self.port = process, port
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        self.stderr.extend(self.process.stderr)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime

    def memory(self, key: str) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith(key)).split()[1]) * 1024

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def post(self, body: bytes, content_type: str = "image/jpeg", timeout: float = 30) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("POST", "/predict", body, {"Content-Type": content_type})
            response = connection.getresponse()
            answer = json.loads(response.read())
            return response.status, answer.get("error", "ok")
        finally:
            connection.close()


@contextlib.contextmanager
def server() -> Iterator[Server]:
    process = subprocess.Popen([sys.executable, "-m", "crossover_serving.server", "--config", str(CONFIG), "--host",
                                "127.0.0.1", "--port", "0", "--decode-budget-mib", "400", "--allow-network",
                                "127.0.0.2/32"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    port = int(process.stderr.readline().rsplit(":", 1)[1])
    for _ in range(600):
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
            break
        time.sleep(0.1)
    try:
        yield Server(process, port)
    finally:
        process.terminate()
        process.wait(timeout=60)


def stream(port: int, head: bytes, chunk: bytes = b"", count: int = 0, timeout: float = 30) -> tuple[bytes, int]:
    """Send ``head``, then ``chunk`` ``count`` times or until the server stops reading; the whole answer, and
    the bytes of ``chunk`` sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head)
            for _ in range(count):
                sock.sendall(chunk)
                sent += len(chunk)
        answer = b""
        with contextlib.suppress(OSError):
            while received := sock.recv(1 << 20):
                answer += received
    return answer, sent


def raw(port: int, data: bytes) -> bytes:
    return stream(port, data)[0]


def counted(answers: Counter[str]) -> str:
    return ", ".join(f"{n} x {answer}" for answer, n in answers.most_common())


def status_of(answer: bytes) -> str:
    if not answer:
        return "closed, no answer"
    head, _, body = answer.partition(b"\r\n\r\n")
    code = json.loads(body).get("error", "ok") if body.startswith(b"{") else "?"
    return f"{head[9:12].decode()} {code}"


def photo() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(ROOT / "tests" / "data" / "chelsea.png").convert("RGB").resize((1024, 768)).save(buffer, "JPEG")
    return buffer.getvalue()


def grey_column(rows: int) -> bytes:
    header = struct.pack(">IIBBBBB", 1, rows, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + bombs._chunk(b"IHDR", header) + \
        bombs._chunk(b"IDAT", zlib.compress(b"\0\x12" * rows, 9)) + bombs._chunk(b"IEND", b"")


def sampling_zero() -> bytes:
    data = bytearray(bombs.jpeg(64, 64, progressive=True))
    sof = data.find(b"\xff\xc2")
    for i in range(data[sof + 9]):
        data[sof + 11 + 3 * i] = 0
    return bytes(data)


def app5_bomb() -> bytes:
    data = bombs.jpeg(64, 64)
    return data[:2] + b"\xff\xe5\x00\x02" * 1_500_000 + data[2:]


def png_chunks() -> bytes:
    data = bombs.png(64, 64)
    return data[:33] + bombs._chunk(b"prVt", b"") * 500_000 + data[33:]


def attacks(s: Server, cat: bytes) -> list[tuple[str, str, Callable[[], str]]]:
    """(class, attack, send it and say the answer)."""

    def redirect() -> str:
        with origin(b"") as (base, _):
            return " ".join(map(str, s.post(json.dumps({"url": f"{base}/redirect?to=https://[x/"}).encode(),
                                            "application/json")))

    def burst_then_photo() -> str:
        large = bombs.png(6000, 6000)  # ~140 MiB each to decode: two fit at a time, the rest wait for memory
        with ThreadPoolExecutor(32) as pool:
            statuses = Counter(f"{st} {code}" for st, code in pool.map(lambda _: s.post(large, "image/png"),
                                                                       range(32)))
        after = s.post(cat)
        return f"{counted(statuses)}; then a photo: {after[0]} {after[1]}"

    def squatters() -> str:
        socks = []
        for _ in range(44):
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 6100000\r\n\r\n")
            socks.append(sock)
        time.sleep(0.5)
        answers = Counter(" ".join(map(str, s.post(cat))) for _ in range(20))
        for sock in socks:
            sock.close()
        return f"20 uploads meanwhile: {counted(answers)}"

    def pipelined() -> str:
        count = 40_000
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as sock:
            requests = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * count
            sender = threading.Thread(target=sock.sendall, args=(requests,))
            sender.start()
            received = b""
            while received.count(b"HTTP/1.1 200") < count and (chunk := sock.recv(1 << 20)):
                received += chunk
            sender.join()
        return f"{received.count(b'HTTP/1.1 200'):,} x 200, in order"

    def header_flood() -> str:
        answer, sent = stream(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-A: b\r\n" * 8192, 3200)
        return f"{status_of(answer)}; cut off after {sent / 2**20:.1f} MiB sent"

    def trickle() -> str:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as sock:
            sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            with contextlib.suppress(OSError):
                while time.monotonic() - started < 40:
                    sock.sendall(b"x")
                    time.sleep(0.1)
        return f"closed after {time.monotonic() - started:.1f} s (deadline 10 s + 1 s)"

    def line_ends() -> str:
        started = time.monotonic()
        answer, _ = stream(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n",
                           b"\r\n\r\n" * 65536, 32)
        return f"{status_of(answer)}, closed after {time.monotonic() - started:.1f} s"

    def contention() -> str:
        def p50(n: int) -> float:
            times = []
            for _ in range(n):
                started = time.perf_counter()
                s.post(cat)
                times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000

        alone = p50(20)
        stop = threading.Event()
        bomb = app5_bomb()

        def attacker() -> None:
            while not stop.is_set():
                s.post(bomb)

        threads = [threading.Thread(target=attacker) for _ in range(4)]
        for thread in threads:
            thread.start()
        attacked = p50(20)
        stop.set()
        for thread in threads:
            thread.join()
        return f"a photo's p50 {alone:.0f} ms alone, {attacked:.0f} ms meanwhile"

    def sent_first() -> str:
        big = 6 * 2**20 + 1
        return status_of(raw(s.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                             b"Content-Type: image/jpeg\r\n\r\n" % big + b"x" * big))

    def post(body: bytes, kind: str = "image/jpeg") -> Callable[[], str]:
        return lambda: " ".join(map(str, s.post(body, kind)))

    return [
        ("exception from a client's bytes", "progressive JPEG whose frame declares sampling factors 0 (600 B)",
         post(sampling_zero())),
        ("exception from a client's bytes", 'JSON URL holding a lone surrogate ("\\ud800")',
         post(b'{"url": "https://example.com/\\ud800.png"}', "application/json")),
        ("exception from a client's bytes", "an origin whose redirect Location is `https://[x/`", redirect),
        ("decode budget", "32 PNGs of 6000 x 6000 (~140 MiB each to decode) at once, then a photo",
         burst_then_photo),
        ("body budget", "44 connections announcing 6.1 MB bodies and sending nothing", squatters),
        ("limits uvicorn lacks", "one connection pipelining 40,000 GET /health (1.3 MB)", pipelined),
        ("limits uvicorn lacks", "one head of 200 MiB of small headers", header_flood),
        ("limits uvicorn lacks", "a body trickled to /health, a byte every 0.1 s", trickle),
        ("limits uvicorn lacks", "8 MiB of CRLF CRLF as the body of a GET /health", line_ends),
        ("container parsing", "6 MB JPEG of 1.5 M empty APP5 segments", post(app5_bomb())),
        ("container parsing", "6 MB PNG of 500 k empty private chunks", post(png_chunks(), "image/png")),
        ("container parsing", "4 clients sending that JPEG in a loop while one sends photos", contention),
        ("decode estimate", "1 x 40,000,000 grey PNG (78 KB; peaks at ~800 MiB), decode budget 400 MiB",
         post(grey_column(40_000_000), "image/png")),
        ("refusals reach the client", "a 6 MiB + 1 body sent whole before reading the answer", sent_first),
        ("refusals reach the client", "POST /predict/", lambda: status_of(raw(
            s.port, b"POST /predict/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))),
        ("refusals reach the client", "GET /predict with Upgrade: websocket", lambda: status_of(raw(
            s.port, b"GET /predict HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n"))),
    ]


def run() -> dict[str, Any]:
    cat = photo()
    rows = []
    with server() as s:
        for kind, attack, send in attacks(s, cat):
            s.reset_peak()
            rss, cpu = s.memory("VmRSS"), s.cpu_s()
            answer = send()
            time.sleep(0.2)  # work the server finishes after answering (decodes that outlived their requests)
            rows.append({"class": kind, "attack": attack, "answer": answer, "cpu_s": s.cpu_s() - cpu,
                         "peak_mib": max(0, s.memory("VmHWM") - rss) / 2**20})
            print(f"{kind:32s} {attack[:60]:60s} {answer[:70]:70s} {rows[-1]['cpu_s']:6.2f} CPU-s "
                  f"{rows[-1]['peak_mib']:7.1f} MiB", flush=True)
        faults = sum(line.startswith("Traceback") for line in s.stderr)
    return {"rows": rows, "faults": faults, "machine": f"{os.cpu_count()} CPUs",
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> int:
    figures = run()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=1))
    print(f"server faults (tracebacks): {figures['faults']}; wrote {OUT.relative_to(ROOT)}")
    return 0 if figures["faults"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
