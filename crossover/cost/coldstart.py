"""Lambda cold starts in the p99 judgement: the share of requests that wait for a new execution environment at
a volume, the p99 they then see, and the fewest provisioned environments that keep p99 warm.

A request starts an environment when no initialised one is idle. Provisioned environments are initialised ahead
and never reclaimed: a request finds one free unless all are busy, which with concurrency C ~ Poisson(rate x
duration) (many independent callers; an arrival sees the time average) happens with probability P(C >= P).
Those requests overflow to on-demand environments, where, at the overflow's rate λ, the last environment sits
idle past ``IDLE_S`` (and is reclaimed) before the next request with probability exp(-λ·IDLE_S); at any rate,
busy environments are replaced about every ``LIFETIME_S``, one cold start per LIFETIME_S / duration requests.
AWS publishes neither figure: both are assumptions, stated here and in docs/cost.md. Each hour of the day
(crossover.cost.model.day) is judged at its own rate; the month's share is the requests-weighted mean. When
more than 1% of requests start an environment, the 99th percentile is one of them: the warm latency plus the
init. So the environments p99 needs are the fewest that leave at most 1% cold, not every request warm at peak.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from crossover.capacity import P99_SHARE
from crossover.cost.profile import Figure

IDLE_S = 300.0  # assumed: an idle environment is reclaimed after ~5 minutes (observed 5-15)
LIFETIME_S = 2 * 3600.0  # assumed: a busy environment is replaced every couple of hours
EXACT_UP_TO = 50.0  # mean concurrency up to which the Poisson tail is summed exactly


def busy_at_least(provisioned: int, mean: float) -> float:
    """P(C >= provisioned) for C ~ Poisson(mean): the share of arrivals that find every provisioned one busy.
    Summed term by term up to a mean of ``EXACT_UP_TO``; past it, the normal approximation with continuity
    correction (within a part in 10^3 there, and a search over hundreds of environments stays quick)."""
    if provisioned <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if mean > EXACT_UP_TO:
        return 0.5 * math.erfc((provisioned - 0.5 - mean) / math.sqrt(2 * mean))
    below = sum(math.exp(k * math.log(mean) - mean - math.lgamma(k + 1)) for k in range(provisioned))
    return max(0.0, 1.0 - below)


def cold_share(provisioned: int, *, rate: float, duration_s: float, day: Sequence[float]) -> float:
    """The month's share of requests that start an environment, at ``rate`` a second on average, following
    ``day`` (hourly weights, mean 1), with ``provisioned`` environments kept warm."""
    total = 0.0
    for weight in day:
        hour_rate = rate * weight
        if hour_rate <= 0:
            continue
        overflow = busy_at_least(provisioned, hour_rate * duration_s)
        churn = math.exp(-hour_rate * overflow * IDLE_S) + duration_s / LIFETIME_S
        total += weight * overflow * min(1.0, churn)
    return total / len(day)


@dataclass
class ColdStart:
    share: float  # of requests that start an environment
    init: Figure  # what a cold request waits before its inference
    p99_ms: float  # what p99 is with them: warm, or warm + init when more than 1% are cold
    meets: bool  # p99_ms within the target
    _needs: functools.partial[float] | None = field(repr=False, default=None)  # cold_share of a count
    _usd_each: float = field(repr=False, default=0.0)

    @functools.cached_property
    def provisioned(self) -> int:
        """The fewest provisioned environments that leave at most 1% of requests cold (p99 warm)."""
        if self._needs is None or self._needs(0) <= P99_SHARE:
            return 0
        low, high = 0, 1  # cold_share falls as environments are added: double, then bisect
        while self._needs(high) > P99_SHARE:
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if self._needs(middle) <= P99_SHARE else (middle, high)
        return high

    @property
    def provisioned_usd(self) -> float:
        """What ``provisioned`` environments cost a month."""
        return self.provisioned * self._usd_each


def judge(volume: float, *, warm_ms: float, init: Figure, target_ms: float, day: Sequence[float],
          provisioned: int, seconds: float, gib: float, usd_per_gb_second: float) -> ColdStart:
    """Cold starts at ``volume`` images a month for a function with ``provisioned`` environments kept warm."""
    needs = functools.partial(cold_share, rate=volume / seconds, duration_s=warm_ms / 1000, day=tuple(day))
    share = needs(provisioned)
    p99 = warm_ms + init.value if share > P99_SHARE else warm_ms
    return ColdStart(share, init, p99, p99 <= target_ms, needs, gib * seconds * usd_per_gb_second)
