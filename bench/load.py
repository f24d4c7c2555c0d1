"""Load test: crossover_serving/'s HTTP server on loopback, driven by locust with real photos.

    python bench/load.py [models/efficientnet_lite0.yaml] [--quick]     (make load)

1. Capacity: the offered rate rises by 25% a step until p99 passes the config's ``traffic.p99_ms``
   or anything but 200 comes back, then the gap is halved twice; the sustainable rate is the
   highest step that held. A step that misses is offered once more and counts as missed only if it
   misses again: on CPUs shared with the load generator, one slow window must not end the ramp. The
   figure moves with the machine's state: compare runs only within a session. Each user sends
   one request a second on average, at random (exponential gaps timed from the previous request's
   start, so the load is open-loop): the arrivals the scaling policy's queueing model assumes.
2. Overload: twice that rate. The server must shed with 503 + Retry-After, never answer 500, and
   keep its memory bounded (resident set size sampled throughout, compared with the capacity run).
3. Recovery: back to half the sustainable rate; the time until a whole second is again all 200s
   within the target.

Prints the figures, writes them to build/reliability/load.json (docs/reliability.md reads it) and
the capacity to profiles/<name>.load.json, where they become the cpu backend's planned requests per
instance (scaling target and cost) in place of the queueing-model estimate.
"""

from __future__ import annotations

# locust patches the standard library with gevent at import: it must come first.
from locust import FastHttpUser, task  # isort: skip
from locust.env import Environment  # isort: skip

import datetime
import json
import math
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gevent
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossover.config import load  # noqa: E402
from crossover.cost.bench import machine  # noqa: E402
from crossover.cost.profile import PROFILES, LoadFigure  # noqa: E402

QUICK = "--quick" in sys.argv
STEP_S = 4.0 if QUICK else 8.0
OVERLOAD_S = 6.0 if QUICK else 15.0
RECOVERY_LIMIT_S = 30.0
DATA = ROOT / "tests" / "data"
PHOTOS = [(DATA / f"{name}.png").read_bytes() for name in ("chelsea", "coffee")]
OUT = ROOT / "build" / "reliability" / "load.json"
console = Console(highlight=False)


@dataclass
class Sample:
    at: float
    status: int
    ms: float
    error: str = ""


SAMPLES: list[Sample] = []


class Client(FastHttpUser):
    """One request a second on average, at random: users = offered requests per second."""

    started = 0.0

    def wait_time(self) -> float:
        return max(0.0, self.started + random.expovariate(1.0) - time.monotonic())

    @task
    def predict(self) -> None:
        self.started = time.monotonic()
        photo = PHOTOS[len(SAMPLES) % len(PHOTOS)]
        with self.client.post("/predict", data=photo, headers={"Content-Type": "image/png"},
                              catch_response=True) as response:
            SAMPLES.append(Sample(time.monotonic(), response.status_code, response.request_meta["response_time"],
                                  repr(response.error) if response.status_code == 0 else ""))
            response.success()  # judged below, by status


def p99(samples: list[Sample]) -> float:
    times = sorted(s.ms for s in samples)
    return times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)] if times else math.inf


@dataclass
class Phase:
    name: str
    offered_rps: float
    answered_rps: float
    statuses: dict[int, int]  # 0: no HTTP answer at all (the connection closed or reset)
    p99_ms: float
    max_rss_mib: float
    started: float
    ended: float


class Run:
    def __init__(self, host: str, server: psutil.Process) -> None:
        self.env = Environment(user_classes=[Client], host=host)
        self.runner = self.env.create_local_runner()
        self.server = server
        self.rss: list[tuple[float, float]] = []
        gevent.spawn(self._sample_memory)

    def _sample_memory(self) -> None:
        while True:
            self.rss.append((time.monotonic(), self.server.memory_info().rss / 2**20))
            gevent.sleep(0.25)

    def offer(self, rps: int, seconds: float, name: str) -> Phase:
        self.runner.start(rps, spawn_rate=rps)  # new users start spread over a second, not in a burst
        gevent.sleep(1.5)
        started = time.monotonic()
        gevent.sleep(seconds)
        ended = time.monotonic()
        window = [s for s in SAMPLES if started <= s.at < ended]
        rss = [m for t, m in self.rss if started <= t < ended]
        return Phase(name, rps, len(window) / seconds, dict(Counter(s.status for s in window)), p99(window),
                     max(rss, default=0.0), started, ended)

    def recover(self, rps: int, target_ms: float) -> float:
        """Seconds from now until a whole second of answers is all 200 within ``target_ms``."""
        started = time.monotonic()
        self.runner.start(rps, spawn_rate=rps)
        while time.monotonic() - started < RECOVERY_LIMIT_S:
            gevent.sleep(0.25)
            now = time.monotonic()
            last = [s for s in SAMPLES if now - 1 <= s.at < now]
            if now - 1 >= started and last and all(s.status == 200 for s in last) and p99(last) <= target_ms:
                return now - 1 - started
        return math.inf

    def stop(self) -> None:
        self.runner.quit()


def start_server(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "crossover_serving.server", "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
                if b" 200 " in sock.recv(64):
                    return process, host
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server for {config} did not become ready")


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    config_path = Path(args[0] if args else ROOT / "models" / "efficientnet_lite0.yaml")
    config = load(config_path).config
    target = config.traffic.p99_ms
    cpus = len(os.sched_getaffinity(0))
    process, host = start_server(config_path)
    run = Run(host, psutil.Process(process.pid))
    console.print(f"[bold]{config.name}[/bold] on {host}: p99 target {target} ms, {cpus} CPUs, real photos; "
                  "the load generator shares these CPUs")
    phases: list[Phase] = []
    try:
        run.offer(4, 2.0, "warm-up")

        def step(rps: int, retry: bool = True) -> Phase | None:
            """Offer ``rps``; the phase if it held the target with nothing but 200s (at the first try or
            the second), else None."""
            phase = run.offer(rps, STEP_S, f"step {rps} req/s" + ("" if retry else " again"))
            phases.append(phase)
            held = set(phase.statuses) == {200} and phase.p99_ms <= target
            console.print(f"  {phase.name}: answered {phase.answered_rps:.1f}/s, p99 {phase.p99_ms:.0f} ms, "
                          f"statuses {phase.statuses} -> {'held' if held else 'over'}")
            if not held and retry:
                return step(rps, retry=False)
            return phase if held else None

        # Up by 25% until a step misses, then halve the gap twice between the last held and the missed.
        rps, sustainable, missed = 5, None, 0
        while not missed:
            if (phase := step(rps)) is not None:
                sustainable, rps = phase, max(rps + 1, round(rps * 1.25))
            else:
                missed = rps
        for _ in range(2 if sustainable else 0):
            middle = round((sustainable.offered_rps + missed) / 2)
            if middle in (sustainable.offered_rps, missed):
                break
            if (phase := step(middle)) is not None:
                sustainable = phase
            else:
                missed = middle
        if sustainable is None:
            raise SystemExit(f"even {phases[0].offered_rps:.0f} req/s missed the {target} ms target")
        overload = run.offer(round(2 * sustainable.offered_rps), OVERLOAD_S, "2x sustainable")
        phases.append(overload)
        recovery_s = run.recover(round(sustainable.offered_rps / 2), target)
    finally:
        run.stop()
        process.terminate()
        process.wait(timeout=30)
    sheds = {s: n for s, n in overload.statuses.items() if s != 200}  # 0 (no answer) fails the check too
    host_machine = machine()
    figures = {
        "model": config.name, "machine": host_machine, "cpus": cpus, "p99_target_ms": target,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sustainable_rps": sustainable.answered_rps, "sustainable_p99_ms": sustainable.p99_ms,
        "overload": asdict(overload), "overload_only_503": set(sheds) <= {503},
        "overload_5xx_other_than_503": sum(n for s, n in sheds.items() if s >= 500 and s != 503),
        "rss_mib_at_capacity": sustainable.max_rss_mib, "rss_mib_at_overload": overload.max_rss_mib,
        "recovery_s": recovery_s, "steps": [asdict(p) for p in phases],
        "overload_connection_errors": dict(Counter(s.error for s in SAMPLES if s.status == 0 and
                                                   overload.started <= s.at < overload.ended)),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    LoadFigure(requests_per_second=sustainable.answered_rps, p99_ms=target, cpus=cpus,
               machine=host_machine).write(config.name, PROFILES)
    report(figures)
    return 0 if figures["overload_only_503"] and math.isfinite(recovery_s) else 1


def report(f: dict[str, Any]) -> None:
    table = Table(title=f"load test: {f['model']} on {f['machine']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    overload = f["overload"]
    table.add_row(f"sustainable req/s at p99 <= {f['p99_target_ms']} ms", f"{f['sustainable_rps']:.1f}")
    table.add_row("  its p99", f"{f['sustainable_p99_ms']:.0f} ms")
    table.add_row(f"2x ({overload['offered_rps']:.0f} req/s offered): statuses", str(overload["statuses"]))
    table.add_row("  answered 200 per second, their p99",
                  f"{overload['statuses'].get(200, 0) / OVERLOAD_S:.1f}, {overload['p99_ms']:.0f} ms")
    if f["overload_connection_errors"]:
        errors = ", ".join(f"{error} x{n}" for error, n in f["overload_connection_errors"].items())
        table.add_row("  no answer at all (status 0)", errors)
    table.add_row("  5xx other than 503", str(f["overload_5xx_other_than_503"]))
    capacity, overloaded = f["rss_mib_at_capacity"], f["rss_mib_at_overload"]
    table.add_row("server RSS at capacity / at 2x",
                  f"{capacity:.0f} / {overloaded:.0f} MiB ({overloaded / capacity:.2f}x)")
    table.add_row("recovery after the burst", f"{f['recovery_s']:.1f} s")
    console.print(table)
    console.print(f"wrote {OUT.relative_to(ROOT)}, and {PROFILES.name}/{f['model']}.load.json: the cpu backend's "
                  "planned requests per instance (scaling target and `crossover cost`)")


if __name__ == "__main__":
    sys.exit(main())
