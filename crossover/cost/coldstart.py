"""Lambda cold starts in the p99 judgement: the share of requests that wait for a new execution environment at
a volume, the p99 they then see, and the provisioned concurrency that keeps every request warm.

A request starts an environment when no initialised one is idle. With arrivals at the month's average rate λ,
the last environment sits idle past ``IDLE_S`` (and is reclaimed) before the next request with probability
exp(-λ·IDLE_S); at any rate, busy environments are replaced about every ``LIFETIME_S``, one cold start per
LIFETIME_S / duration requests. AWS publishes neither figure: both are assumptions, stated here and in
docs/cost.md. (The daily climb to the peak adds about (peak-to-average - 1) x duration / 86,400 of the
requests: under 0.01% for a sub-second model, left out.) When more than 1% of requests start an environment,
the 99th percentile is one of them: the warm latency plus the init. Provisioned environments are initialised
ahead and never reclaimed: enough of them to carry the 99th percentile of the peak's concurrency leaves no
request to a cold start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from crossover.cost.profile import Figure

IDLE_S = 300.0  # assumed: an idle environment is reclaimed after ~5 minutes (observed 5-15)
LIFETIME_S = 2 * 3600.0  # assumed: a busy environment is replaced every couple of hours
P99_SHARE = 0.01
Z99 = 2.326  # the normal 99th percentile: Poisson concurrency C stays within C + Z99 x sqrt(C) 99% of the time


@dataclass(frozen=True)
class ColdStart:
    share: float  # of requests that start an environment
    init: Figure  # what a cold request waits before its inference
    p99_ms: float  # what p99 is with them: warm, or warm + init when more than 1% are cold
    meets: bool  # p99_ms within the target
    provisioned: int  # environments that keep every request warm at this volume
    provisioned_usd: float  # their monthly cost


def judge(volume: float, *, warm_ms: float, init: Figure, target_ms: float, peak_to_average: float,
          provisioned: int, seconds: float, gib: float, usd_per_gb_second: float) -> ColdStart:
    """Cold starts at ``volume`` images a month for a function with ``provisioned`` environments kept warm."""
    rate, duration = volume / seconds, warm_ms / 1000
    peak = rate * peak_to_average * duration  # Little's law at the busiest hour
    needed = max(1, math.ceil(peak + Z99 * math.sqrt(peak) - 1e-9))
    share = 0.0 if provisioned >= needed else min(1.0, math.exp(-rate * IDLE_S) + duration / LIFETIME_S)
    p99 = warm_ms + init.value if share > P99_SHARE else warm_ms
    return ColdStart(share, init, p99, p99 <= target_ms, needed, needed * gib * seconds * usd_per_gb_second)
