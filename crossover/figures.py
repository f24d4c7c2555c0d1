"""The figures a model service's constructs take as values: how much one instance serves, what the scaling policy
tracks, and the band of volumes its backend is the one to run in.

No CDK and no cost model here: the app layer computes them (``crossover.size``, from the config and what was
measured, with the cost model) and the constructs only read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from crossover import capacity
from crossover.backends import KINDS
from crossover.config import ModelConfig


@dataclass(frozen=True)
class Band:
    """Volumes (images a month) from ``low`` to ``high``; None: no edge on that side. ``below`` and ``above`` say
    what to do past each edge (crossover.cost.band computes it)."""

    low: float | None
    high: float | None
    below: str | None
    above: str | None


@dataclass(frozen=True)
class FleetFigures:
    """One instance of a fleet: ``images_per_second`` (a pipeline's backlog target), ``requests_per_minute`` (the
    realtime target-tracking target per instance); ``source``: where the throughput came from."""

    images_per_second: float
    requests_per_minute: int
    source: str


@dataclass(frozen=True)
class Sizing:
    """Figures by fleet kind (those in the config's ``backends``), and the volume band (None: no volume alarm).
    ``warnings``: what the figures rest on that the synth should say (a placeholder throughput, no band), as
    (id, text): the id a team acknowledges a synth warning by."""

    fleets: Mapping[str, FleetFigures] = field(default_factory=dict)
    band: Band | None = None
    hours_per_month: float = 730.0
    warnings: tuple[tuple[str, str], ...] = ()

    def fleet(self, config: ModelConfig, kind: str) -> FleetFigures:
        """``kind``'s figures; a service built without ``crossover.size`` falls back to the config's own
        ``images_per_second`` (else the kind's placeholder) and the queueing model's target."""
        if kind in self.fleets:
            return self.fleets[kind]
        spec = getattr(config, kind)
        throughput = spec.images_per_second or KINDS[kind].placeholder_images_per_second
        per_minute = spec.requests_per_minute_per_instance or capacity.scaling_target(throughput,
                                                                                       config.traffic.p99_ms)
        return FleetFigures(throughput, per_minute, "config" if spec.images_per_second else "placeholder")
