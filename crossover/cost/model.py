"""Monthly cost per backend at a volume, the crossovers between them, and the recommendation.

Each backend's monthly cost is a function of the volume V (images/month) of one shape:

    cost(V) = fixed + per_image * V + per_instance * N(V),   N(V) = max(minimum, ceil(V / capacity))

Lambda has no instances (per-image compute and requests); instance backends run N(V) instances, each
carrying ``capacity`` images a month at the utilisation that keeps p99 on target at the peak hour.
Because every cost is linear between the instance-count steps, crossovers are solved exactly:
between steps, as the root of two linear functions; at a step, where the cheaper one changes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from crossover import capacity
from crossover.config import ModelConfig
from crossover.cost import profile
from crossover.cost.catalog import Catalog, MissingPrice, hourly
from crossover.cost.profile import BenchProfile, Figure, LoadFigure

AZS = 2  # the network spans two availability zones: interface endpoints are billed per AZ
LAMBDA_GB_PER_LCU_HOUR = 0.4  # ALB capacity units: 0.4 GB/h of Lambda-target traffic, 1 GB/h otherwise
INSTANCE_GB_PER_LCU_HOUR = 1.0
NEW_CONNECTIONS_PER_LCU_SECOND = 25
RANGE = (1e3, 1e10)  # images per month searched for crossovers and plotted
RETIRED = frozenset({"eia"})  # priced and shown, never recommended: AWS no longer sells it


@dataclass(frozen=True)
class Line:
    fixed: float
    per_image: float
    per_instance: float = 0.0
    minimum: int = 0
    capacity: float = math.inf  # images a month per instance

    def instances(self, volume: float) -> int:
        if not self.per_instance:
            return 0
        return max(self.minimum, math.ceil(volume / self.capacity - 1e-9))

    def cost(self, volume: float) -> float:
        return self.fixed + self.per_image * volume + self.per_instance * self.instances(volume)


@dataclass
class Estimate:
    backend: str
    line: Line | None = None
    parts: dict[str, float] = field(default_factory=dict)
    meets_slo: bool | None = None
    performance: Figure | None = None
    planned: Figure | None = None  # requests/s per instance from a load test, when one applies
    problem: str | None = None  # why there is no cost: a missing price or profile

    def monthly_usd(self, volume: float) -> float | None:
        return None if self.line is None else self.line.cost(volume)


@dataclass(frozen=True)
class Crossover:
    below: str
    above: str
    images_per_month: float
    kind: str  # "equal": both cost the same there; "step": an instance is added there


def front_door(catalog: Catalog, config: ModelConfig, backend: str) -> tuple[str, float, float]:
    """The front door's (name, fixed, per-image) monthly cost.

    realtime: the load balancer's hours plus capacity units, by bytes or new connections (Lambda
    targets get 0.4 GB per LCU-hour, instances 1 GB). pipeline: queue requests — one send per image,
    plus one receive and one delete per batch of up to ten.
    """
    if config.service == "pipeline":
        batch = min(10, config.pipeline.batch_size) if backend == "lambda" else 10
        return "queue", 0.0, (1 + 2 / batch) * catalog.sqs.per_million_requests_usd.usd / 1e6
    gb_per_lcu_hour = LAMBDA_GB_PER_LCU_HOUR if backend == "lambda" else INSTANCE_GB_PER_LCU_HOUR
    by_bytes = config.traffic.image_kb / 1e6 / gb_per_lcu_hour
    lcu_hours_per_image = max(by_bytes, 1 / (NEW_CONNECTIONS_PER_LCU_SECOND * 3600))
    return ("load balancer", catalog.alb.hourly_usd.usd * catalog.hours_per_month,
            lcu_hours_per_image * catalog.alb.lcu_hourly_usd.usd)


def estimate(config: ModelConfig, backend: str, catalog: Catalog, bench: BenchProfile | None,
             volume: float, prices_name: str = "prices", load: LoadFigure | None = None) -> Estimate:
    result = Estimate(backend)
    try:
        if backend == "lambda":
            _lambda(result, config, catalog, bench)
        else:
            _fleet(result, config, backend, catalog, bench, prices_name, load)
    except MissingPrice as e:
        result.line, result.problem = None, str(e)
    if result.line is not None:
        line = result.line
        result.parts = {k: v(volume) for k, v in _parts(result, line, catalog, config).items()}
    return result


def _lambda(result: Estimate, config: ModelConfig, catalog: Catalog, bench: BenchProfile | None) -> None:
    figure = profile.lambda_latency_ms(config, bench)
    result.performance = figure
    if figure is None:
        result.problem = "no Lambda latency: set lambda.latency_ms or model.gmacs, or run crossover bench"
        return
    spec = config.lambda_
    gb_second = (catalog.lambda_.arm_gb_second_usd if spec.architecture == "arm64" else catalog.lambda_.gb_second_usd)
    compute = figure.value / 1000 * spec.memory_mib / 1024 * gb_second.usd
    # An SQS event source invokes once per batch; a load balancer once per image.
    invocations = 1 / config.pipeline.batch_size if config.service == "pipeline" else 1
    requests = catalog.lambda_.per_million_requests_usd.usd / 1e6 * invocations
    _, door_fixed, door_per_image = front_door(catalog, config, "lambda")
    result.line = Line(fixed=door_fixed, per_image=compute + requests + door_per_image)
    # A pipeline has no latency target: only realtime services are held to p99.
    result.meets_slo = config.service == "pipeline" or figure.value <= config.traffic.p99_ms


def _fleet(result: Estimate, config: ModelConfig, backend: str, catalog: Catalog, bench: BenchProfile | None,
           prices_name: str, load: LoadFigure | None) -> None:
    fleet = getattr(config, backend)
    figure = profile.images_per_second(config, backend, bench)
    result.performance = figure
    instance_hourly = hourly(catalog, "ec2", fleet.instance_type, prices_name)
    if backend == "eia":
        instance_hourly += hourly(catalog, "eia", config.eia.accelerator, prices_name)
    if figure is None:
        result.problem = (f"no throughput for {fleet.instance_type}: set {backend}.images_per_second or "
                          "model.gmacs, or run crossover bench")
        return
    hours, p99 = catalog.hours_per_month, config.traffic.p99_ms
    if config.service == "pipeline":
        # The queue absorbs peaks and nobody waits on an answer: size for the average at full planned load.
        per_instance_rate, peak = figure.value * capacity.MAX_UTILISATION, 1.0
    else:
        # Sized for the busiest hour: a month's volume V peaks at V / seconds * peak_to_average, at what a
        # load test held within the target, else what the queueing model plans for.
        result.planned = profile.measured_rate(config, backend, load)
        per_instance_rate = (result.planned.value if result.planned
                             else figure.value * capacity.utilisation(figure.value, p99))
        peak = config.traffic.peak_to_average
    monthly_capacity = per_instance_rate * hours * 3600 / peak
    _, door_fixed, door_per_image = front_door(catalog, config, backend)
    endpoints = catalog.vpc_endpoint.hourly_usd_per_az.usd * AZS * hours if backend == "eia" else 0.0
    result.line = Line(fixed=door_fixed + endpoints, per_image=door_per_image, per_instance=instance_hourly * hours,
                       minimum=config.scaling.min, capacity=monthly_capacity)
    result.meets_slo = config.service == "pipeline" or capacity.meets_p99(figure.value, p99)


def _parts(result: Estimate, line: Line, catalog: Catalog, config: ModelConfig) -> dict[str, Callable[[float], float]]:
    """The itemised monthly cost as functions of volume (they sum to line.cost)."""
    door, door_fixed, door_per_image = front_door(catalog, config, result.backend)
    parts: dict[str, Callable[[float], float]] = {door: lambda v: door_fixed + door_per_image * v}
    if result.backend == "lambda":
        parts["lambda"] = lambda v: (line.per_image - door_per_image) * v
    else:
        parts["instances"] = lambda v: line.per_instance * line.instances(v)
        if line.fixed > door_fixed:
            parts["endpoints"] = lambda v: line.fixed - door_fixed
    return parts


def split_usd(estimates: dict[str, Estimate], shares: dict[str, float], volume: float, config: ModelConfig,
              catalog: Catalog) -> float | None:
    """The month of a state in which ``shares`` of ``volume`` go to each backend (a canary): each backend's
    cost at its share, with the one front door counted once. None if a backend has no price."""
    costs = [estimates[backend].monthly_usd(volume * share) for backend, share in shares.items()]
    if any(cost is None for cost in costs):
        return None
    doubled = sum(front_door(catalog, config, backend)[1] for backend in list(shares)[1:])
    return sum(c for c in costs if c is not None) - doubled


def cheapest(estimates: list[Estimate], volume: float) -> Estimate | None:
    """The cheapest backend that is priced, meets the latency target and is still sold."""
    viable = [e for e in estimates if e.line is not None and e.meets_slo and e.backend not in RETIRED]
    return min(viable, key=lambda e: (e.line.cost(volume), e.backend), default=None)  # type: ignore[union-attr]


def crossovers(lines: dict[str, Line], low: float = RANGE[0], high: float = RANGE[1]) -> list[Crossover]:
    """Where the cheapest of ``lines`` changes between ``low`` and ``high`` images a month, exactly."""
    if len(lines) < 2:
        return []
    bounds = {low, high}
    for line in lines.values():
        if line.per_instance:
            n = max(line.minimum, math.floor(low / line.capacity))
            while n * line.capacity < high:
                if n * line.capacity > low:
                    bounds.add(n * line.capacity)
                n += 1
    edges = sorted(bounds)
    found: list[Crossover] = []
    current: str | None = None
    for a, b in itertools.pairwise(edges):
        # On (a, b] every cost is linear: intercept + slope * v, with instance counts fixed at N(b).
        forms = {name: (line.fixed + line.per_instance * line.instances(b), line.per_image)
                 for name, line in lines.items()}
        at_a = min(forms, key=lambda n: (forms[n][0] + forms[n][1] * a, n))
        if current is not None and at_a != current:
            found.append(Crossover(current, at_a, a, "step"))
        current, v = at_a, a
        while True:
            c0, c1 = forms[current]
            roots = [((o0 - c0) / (c1 - o1), name) for name, (o0, o1) in forms.items()
                     if name != current and c1 > o1 and v < (o0 - c0) / (c1 - o1) < b]
            if not roots:
                break
            v, nxt = min(roots)
            found.append(Crossover(current, nxt, v, "equal"))
            current = nxt
    return found
