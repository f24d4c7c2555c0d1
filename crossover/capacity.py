"""Capacity arithmetic shared by the scaling policy and the cost model (no CDK imports).

An instance serving images at ``mu`` per second, with requests arriving at random, is treated as an
M/M/1 queue: the 99th-percentile time in system is ln(100) / (mu - lambda). Keeping it under the
latency target gives the highest arrival rate, hence utilisation, an instance may be planned for.
"""

from __future__ import annotations

import math

P99 = math.log(100)
MIN_UTILISATION, MAX_UTILISATION = 0.1, 0.8


def meets_p99(images_per_second: float, p99_ms: float) -> bool:
    """Whether even an idle instance answers within the target (service time alone, at p99)."""
    return P99 / images_per_second * 1000 < p99_ms


def utilisation(images_per_second: float, p99_ms: float) -> float:
    """Planned utilisation: 1 - ln(100) / (mu * p99), kept within 10-80%."""
    planned = 1 - P99 / (images_per_second * p99_ms / 1000)
    return min(MAX_UTILISATION, max(MIN_UTILISATION, planned))


def scaling_target(images_per_second: float, p99_ms: float) -> int:
    """Requests per minute per instance for target tracking on ALBRequestCountPerTarget."""
    return per_minute(images_per_second * utilisation(images_per_second, p99_ms))


def per_minute(requests_per_second: float) -> int:
    """The target-tracking target on ALBRequestCountPerTarget for a planned per-instance rate."""
    return max(1, math.floor(requests_per_second * 60 + 1e-9))
