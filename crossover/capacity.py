"""Capacity arithmetic shared by the scaling policy and the cost model (no CDK imports).

An instance serves one image (or batch) at a time, all its cores on it, at ``mu`` images a second; requests
arrive at random. The same model does the same work for every image, so the service time s = 1 / mu hardly
varies: an M/D/1 queue. Kingman's approximation makes the wait's tail exponential: a request waits with
probability rho (the utilisation), and then for a time of mean s / (2 (1 - rho)). Its 99th-percentile time in
system is therefore s alone while at most 1% of requests wait, else

    p99 = s (1 + ln(100 rho) / (2 (1 - rho)))

Keeping it under the latency target gives the highest utilisation an instance may be planned for (at most
``MAX_UTILISATION``: headroom for the minutes a scale-out takes). bench/queueing.py holds this model (and
M/M/1, which assumes exponential service times and so puts p99 at 4.6 service times even when idle) against the
latency that bench/load.py measured at each offered rate.
"""

from __future__ import annotations

import math

P99_SHARE = 0.01
MAX_UTILISATION = 0.8


def p99_ms(images_per_second: float, utilisation: float) -> float:
    """The 99th-percentile time in system at ``utilisation`` (M/D/1, Kingman's exponential tail)."""
    service_ms = 1000 / images_per_second
    if utilisation <= P99_SHARE:
        return service_ms
    return service_ms * (1 + math.log(utilisation / P99_SHARE) / (2 * (1 - utilisation)))


def meets_p99(images_per_second: float, p99_target_ms: float) -> bool:
    """Whether an idle instance answers within the target: its service time alone."""
    return 1000 / images_per_second < p99_target_ms


def utilisation(images_per_second: float, p99_target_ms: float) -> float:
    """Planned utilisation: the highest (up to MAX_UTILISATION) at which p99 stays within the target. An instance
    that misses it even idle is planned for throughput alone (its backend is reported as missing p99)."""
    if not meets_p99(images_per_second, p99_target_ms) or p99_ms(images_per_second,
                                                                 MAX_UTILISATION) <= p99_target_ms:
        return MAX_UTILISATION
    low, high = P99_SHARE, MAX_UTILISATION  # p99 rises with utilisation: bisect to a part in 10^6
    while high - low > 1e-6:
        middle = (low + high) / 2
        low, high = (middle, high) if p99_ms(images_per_second, middle) <= p99_target_ms else (low, middle)
    return low


def spare_from(on_demand_base: int, on_demand_percent: int) -> int | None:
    """The fewest instances at which a realtime spot fleet holds a spare: two at least, one of them spot (the group
    buys ``on_demand_base`` on demand, then ``on_demand_percent`` of the rest, rounded up: the k-th instance
    above the base makes one spot once k (1 - percent / 100) >= 1). None when none is ever spot: an on-demand
    instance is not reclaimed, so it needs no spare. The scaling policy and the cost model both read it."""
    if on_demand_percent >= 100:
        return None
    return max(2, on_demand_base + math.ceil(100 / (100 - on_demand_percent)))


def scaling_target(images_per_second: float, p99_ms: float) -> int:
    """Requests per minute per instance for target tracking on ALBRequestCountPerTarget."""
    return per_minute(images_per_second * utilisation(images_per_second, p99_ms))


def per_minute(requests_per_second: float) -> int:
    """The target-tracking target on ALBRequestCountPerTarget for a planned per-instance rate."""
    return max(1, math.floor(requests_per_second * 60 + 1e-9))
