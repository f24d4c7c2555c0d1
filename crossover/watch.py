"""`crossover watch`: send a real photo to a model's endpoint at a steady rate and count what comes back.

This is how a move is proven on a real account: run it while `make deploy` switches the backend (or
`make deploy WATCH=1`), and the tally says whether any request got anything but a 200. Requests are
sent open-loop (each on its own schedule, whether or not earlier ones have answered), so a stall shows
as answers missing rather than as a slower sender. Each second prints what came back in it; a request
without an HTTP answer within the timeout counts as status 0.
"""

from __future__ import annotations

import http.client
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

NO_ANSWER = 0


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, status: int, latency_ms: float) -> None:
        self.statuses[status] += 1
        if status != NO_ANSWER:
            self.latencies_ms.append(latency_ms)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.sent - self.statuses[200]

    def percentile(self, p: float) -> float | None:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else None

    def line(self) -> str:
        statuses = ", ".join(f"{'no answer' if s == NO_ANSWER else s}: {n}" for s, n in sorted(self.statuses.items()))
        p50, p99 = self.percentile(50), self.percentile(99)
        timing = f"p50 {p50:.0f} ms, p99 {p99:.0f} ms" if p50 is not None and p99 is not None else "no answers"
        return f"{statuses or 'nothing'}; {timing}"


def _post(url: str, image: bytes, timeout_s: float) -> int:
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.netloc, timeout=timeout_s)
    try:
        connection.request("POST", (parts.path.rstrip("/") or "") + "/predict", body=image,
                           headers={"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return NO_ANSWER
    finally:
        connection.close()


def watch(url: str, image: bytes, *, rate: float, duration_s: float, timeout_s: float = 10.0,
          report: Callable[[int, Tally], None] = lambda _second, _tally: None,
          stop: threading.Event | None = None) -> Tally:
    """Send ``rate`` requests a second for ``duration_s`` (or until ``stop``); ``report`` gets each second's
    tally of the answers that came back in it. Returns the whole tally once every request has answered
    or timed out."""
    total, seconds = Tally(), dict[int, Tally]()
    lock = threading.Lock()
    started = time.monotonic()

    def one() -> None:
        sent = time.monotonic()
        status = _post(url, image, timeout_s)
        done = time.monotonic()
        with lock:
            total.add(status, (done - sent) * 1000)
            seconds.setdefault(int(done - started), Tally()).add(status, (done - sent) * 1000)

    count = math.ceil(rate * duration_s)
    reported = 0
    with ThreadPoolExecutor(max_workers=max(4, min(512, math.ceil(rate * timeout_s)))) as pool:
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            pool.submit(one)
            while reported < int(time.monotonic() - started):
                with lock:
                    report(reported, seconds.pop(reported, Tally()))
                reported += 1
    with lock:
        for second in sorted(seconds):
            report(second, seconds[second])
    return total
