"""The band of monthly volumes in which a model's backend is the one to run: what the stack's volume alarms
watch (crossover.constructs.monitoring.watch_volume).

Inside the band the config's backend is priced, meets p99, is still sold, carries the volume within its
limits, and costs at most ``MARGIN`` more than the cheapest backend that does. The margin keeps a sawtooth
of near-equal costs (a pipeline's Lambda against one more instance, every few million images) from
telling anyone to switch back and forth for a few dollars. Past each edge the band names the backend to
move to: the cheapest there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from crossover.config import ModelConfig
from crossover.cost import model
from crossover.cost.catalog import Catalog
from crossover.cost.profile import BenchProfile, LoadFigure
from crossover.figures import Band

MARGIN = 0.10
SAMPLES_PER_DECADE = 50  # where the band may change; each edge is then bisected to a part in a million


def band(config: ModelConfig, catalog: Catalog, bench: BenchProfile | None = None,
         load: LoadFigure | None = None) -> Band | None:
    """The band around ``traffic.images_per_month`` (or, if the backend is out of its band there, the nearest
    one); None if the backend is in band at no volume between RANGE's ends (retired, too slow, unpriced)."""
    # Each backend as the config deploys it: the band is about volume, and whether to buy a fleet on demand
    # or as spot does not move with it (crossover cost compares both).
    estimates = [e for e in model.estimates(config, catalog, bench, load=load) if e.configured]
    current = next(e for e in estimates if e.backend == config.backend)

    def inside(volume: float) -> bool:
        best = model.cheapest(estimates, volume)
        return (best is not None and current.viable(volume)
                and current.monthly_usd(volume) <= (1 + MARGIN) * best.monthly_usd(volume))  # type: ignore[operator]

    def advice(volume: float) -> str:
        cold = None if current.cold is None or not current.meets_slo else current.cold(volume)
        if cold is not None and not cold.meets:  # Lambda, too quiet to stay warm
            return (f"cold starts break p99 there ({cold.share:.0%} of requests start an environment): set "
                    f"lambda.provisioned_concurrency: {cold.provisioned} (+{cold.provisioned_usd:,.2f} USD a month)")
        best = model.cheapest(estimates, volume)
        if best is None:
            return f"no backend carries it within the config's limits ({current.over(volume)})"
        return f"{best.backend} is cheaper there: crossover switch {config.name} {best.backend}"

    low, high = model.RANGE
    count = int(math.log10(high / low) * SAMPLES_PER_DECADE) + 1
    volumes = [low * (high / low) ** (i / (count - 1)) for i in range(count)]
    # The samples nearest the configured volume first: the band is the run of samples inside around the nearest
    # one inside, so none past the first outside at each end is priced (a synth prices each model's band).
    wanted = math.log(config.traffic.images_per_month)
    start = next((i for i in sorted(range(count), key=lambda i: abs(math.log(volumes[i]) - wanted))
                  if inside(volumes[i])), None)
    if start is None:
        return None
    first, last = start, start
    while first > 0 and inside(volumes[first - 1]):
        first -= 1
    while last < count - 1 and inside(volumes[last + 1]):
        last += 1
    edge_low = None if first == 0 else _edge(inside, volumes[first - 1], volumes[first])
    edge_high = None if last == count - 1 else _edge(inside, volumes[last + 1], volumes[last])
    return Band(edge_low, edge_high, None if edge_low is None else advice(edge_low * (1 - 1e-5)),
                None if edge_high is None else advice(edge_high * (1 + 1e-5)))


def _edge(inside: Callable[[float], bool], outside_v: float, inside_v: float) -> float:
    """Where ``inside`` turns false between a volume inside the band and one outside, to a part in 10^6."""
    while abs(math.log(outside_v / inside_v)) > 1e-6:
        middle = math.sqrt(outside_v * inside_v)
        if inside(middle):
            inside_v = middle
        else:
            outside_v = middle
    return inside_v
