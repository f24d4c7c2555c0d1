"""``crossover.size``: the figures a ModelService scales and alarms by, from the config, what was measured and the
cost model. The app layer runs it (ModelStack does; a team's app calls it beside its ModelService), so the
constructs take values and never load the cost model."""

from __future__ import annotations

import functools

from crossover import capacity
from crossover.backends import KINDS
from crossover.config import ModelConfig
from crossover.cost import catalog, model, profile
from crossover.cost.band import band
from crossover.errors import UserError
from crossover.figures import FleetFigures, Sizing


def size(config: ModelConfig, *, throughput: float | None = None,
         measured: profile.Measured | None = None) -> Sizing:
    """``throughput``: one instance of ``config.backend`` serves this many images/s, measured (else the config's
    figure, ``measured``'s `crossover bench` profile, an estimate from ``model.gmacs``, or a placeholder with a
    synth warning); ``measured`` also holds the load test that sets the realtime scaling target."""
    if throughput is not None and not KINDS[config.backend].fleet:
        give = "lambda.latency_ms" if config.backend == "lambda" else "lambda-managed.images_per_second"
        raise UserError(f"throughput is one instance's images/s, and {config.backend} runs no Auto Scaling group of "
                        f"its own; give {give} in the config instead")
    measured = measured or profile.Measured()
    fleets: dict[str, FleetFigures] = {}
    warnings: list[tuple[str, str]] = []
    for kind in config.backends:
        if not KINDS[kind].fleet:
            continue
        figure = profile.Figure(throughput, "given") if throughput is not None and kind == config.backend \
            else profile.images_per_second(config, kind, measured.bench)
        if figure is None:
            warnings.append(("crossover:placeholder-throughput", profile.placeholder_warning(config, kind)))
        fleet = figure or profile.Figure(KINDS[kind].placeholder_images_per_second, "placeholder")
        rate = profile.planned_rate(config, kind, fleet.value, measured.load)
        fleets[kind] = FleetFigures(fleet.value, capacity.per_minute(rate.value), fleet.source)
    prices = _bundled_prices()
    edges = band(config, prices, measured.bench, measured.load)
    if edges is None:
        warnings.append(("crossover:no-volume-band", f"{config.backend} is not the backend to run at any volume "
                         f"from {model.RANGE[0]:g} to {model.RANGE[1]:g} images a month (see crossover cost): no "
                         "volume alarm"))
    return Sizing(fleets, edges, prices.hours_per_month, tuple(warnings))


@functools.cache
def _bundled_prices() -> catalog.Catalog:
    """The bundled price catalog, read once per synth however many models there are."""
    return catalog.load()
