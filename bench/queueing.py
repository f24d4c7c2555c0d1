"""The queueing model behind the scaling target (crossover.capacity, M/D/1) against a load test on this machine.

    python bench/queueing.py [build/reliability/load.json]      (after make load)

bench/load.py offers rising rates to crossover_serving/'s HTTP server and records each step's p99. Here the
server's capacity mu is the most it answered with 200 a second in any step, and what a request takes with no
queue is the p99 of
the lightest step; each model adds its wait at the step's utilisation (answered / mu) to that. Printed per step:
the measured p99, M/D/1's (crossover.capacity) and M/M/1's (what crossover used before: exponential service
times), then the rate each model would plan the server for at the test's target against the rate the test
sustained. Prints figures; it is not a test.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossover import capacity

ROOT = Path(__file__).resolve().parent.parent


def mm1_wait_ms(mu: float, rate: float) -> float:
    """M/M/1's 99th-percentile time in system beyond one mean service time: ln(100) / (mu - rate) - 1 / mu."""
    return math.inf if rate >= mu else (math.log(100) / (mu - rate) - 1 / mu) * 1000


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "reliability" / "load.json"
    if not path.is_file():
        sys.exit(f"{path}: no load test here; run make load first")
    test = json.loads(path.read_text())
    steps = [s for s in test["steps"] if set(s["statuses"]) == {"200"}]  # steps that shed say nothing of latency
    if not steps:
        sys.exit(f"{path}: no step of the load test answered every request; nothing to compare")
    mu = max(s["statuses"].get("200", 0) / max(s["ended"] - s["started"], 1e-9) for s in test["steps"])
    service = 1000 / mu
    base = min(steps, key=lambda s: s["answered_rps"])["p99_ms"] - service  # what no queue adds to a service time
    print(f"{test['model']} on {test['machine']} ({test['measured_at']}): capacity {mu:.1f} req/s "
          f"(s = {service:.1f} ms), p99 without a queue {base + service:.0f} ms")
    print(f"{'offered':>8} {'answered':>9} {'rho':>5} {'measured p99':>13} {'M/D/1':>7} {'M/M/1':>7}")
    for s in sorted(steps, key=lambda s: s["answered_rps"]):
        rho = min(s["answered_rps"] / mu, 0.999)
        md1 = base + capacity.p99_ms(mu, rho)
        mm1 = base + service + mm1_wait_ms(mu, s["answered_rps"])
        print(f"{s['offered_rps']:8.0f} {s['answered_rps']:9.1f} {rho:5.2f} {s['p99_ms']:11.0f} ms {md1:5.0f} ms "
              f"{mm1:5.0f} ms")
    target = test["p99_target_ms"]
    # The rate each model plans at the target, given the same no-queue latency
    md1_rate = mu * max((rho for rho in (i / 1000 for i in range(1, 1000))
                         if base + capacity.p99_ms(mu, rho) <= target), default=0.0)
    mm1_rate = max(0.0, mu - math.log(100) / ((target - base) / 1000)) if target > base else 0.0
    print(f"at p99 <= {target} ms: the test sustained {test['sustainable_rps']:.1f} req/s "
          f"(p99 {test['sustainable_p99_ms']:.0f} ms); M/D/1 plans {md1_rate:.1f}, M/M/1 {mm1_rate:.1f}")


if __name__ == "__main__":
    main()
