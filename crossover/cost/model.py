"""Monthly cost per backend at a volume, the crossovers between them, and the recommendation.

Each backend's monthly cost is a function of the volume V (images/month) of one shape:

    cost(V) = fixed + per_image * V + per_instance_month * sum over the day's hours h of N_h(V) / 24

    N_h(V) = max(minimum, ceil(V * w_h / capacity))

Lambda has no instances (per-image compute and requests). An instance backend's fleet follows the day: in hour
h of an average day, traffic runs at w_h times the month's average rate (``day``: 24 weights, mean 1, the
busiest ``traffic.peak_to_average``), and the scaling policy runs as many instances as that hour needs at the
rate it plans each for (``capacity``: images a month one instance carries at that rate), never fewer than
``scaling.min``. A pipeline's queue absorbs the day: its fleet works through the average. A spot fleet
(``Mix``) prices its on-demand base on demand and the rest at the spot price, and a realtime one runs a spare
instance once it runs two and some are spot (crossover.capacity.spare_from), so that losing one to an
interruption keeps p99.
The bill is itemised (``Part``): the front door, the model's share of the shared network, interface endpoints,
Lambda's provisioned concurrency, instances and their volumes, and the rest (``rest_of_the_bill``: S3 requests,
NAT bytes, WAF, public addresses, tracing, logs, monitoring); ``cost(0)`` is the floor a stack costs with no
traffic. Because every cost is linear between the volumes where some hour's instance count steps, crossovers
are solved exactly: between steps, as the root of two linear functions; at a step, where the cheaper one
changes.

A backend carries only so much within the config's limits (``Limit``: scaling.max at the busiest hour,
Lambda's concurrency, a batch that must finish within the timeout). Past its ``max_volume`` it is infeasible:
priced, but never recommended, and absent from the crossovers.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from crossover import capacity
from crossover.backends import KINDS, SPOT_BACKENDS
from crossover.config import BACKENDS, RETIRED, ModelConfig, SpotSpec, vcpus
from crossover.cost import coldstart, profile
from crossover.cost.catalog import Catalog, MissingPrice, hourly
from crossover.cost.profile import BenchProfile, Figure, LoadFigure
from crossover.shape import AZS, PRIVATE_ENDPOINTS

LAMBDA_GB_PER_LCU_HOUR = 0.4  # ALB capacity units: 0.4 GB/h of Lambda-target traffic, 1 GB/h otherwise
INSTANCE_GB_PER_LCU_HOUR = 1.0
NEW_CONNECTIONS_PER_LCU_SECOND = 25
RANGE = (1e3, 1e10)  # images per month searched for crossovers and plotted
# What the rest of the bill is made of, per model stack (assumptions, stated in docs/cost.md):
LAMBDA_LOG_KB = 1.5  # per invocation: Lambda's START/END/REPORT lines in JSON, the handler's EMF metrics and log
WAF_LOG_KB = 1.5  # per request a public endpoint's web ACL logs (WAF logs every request)
ALB_LOG_KB = 0.5  # per request in the load balancer's access logs (S3, kept 90 days: 3 months stored)
ALB_LOG_MONTHS = 3
WAF_RULES = 2  # AWS's common and known-bad-inputs rule groups (crossover.constructs.front_door)
ALARM_METRICS = 12  # metrics the stack's alarms evaluate (a metric-math alarm counts each of its metrics)
CUSTOM_METRICS = 8  # the serving code's metrics of one model (latency, faults, pipeline results, ...)
METRIC_CALLS_PER_HOUR = 60  # an instance publishes its metrics once a minute (crossover_serving.metrics)
DETAILED_METRICS = 7  # EC2 detailed monitoring (the launch template turns it on): 7 metrics an instance, as custom
TRACES_PER_SECOND, TRACED_SHARE = 1.0, 0.05  # X-Ray's default sampling: the first request each second, 5% after
# Lambda's default concurrency quota per region: assumed, since an account's own quota may differ.
ACCOUNT_LAMBDA_CONCURRENCY = 1000
# Lambda Managed Instances (docs/backends.md): a capacity provider runs three instances at least ("It launches
# three by default for AZ resiliency"), and scales on CPU ahead of the load: it absorbs a 50% jump at once and a
# doubling within five minutes, so what runs is planned at most 2/3 busy. A request that finds every process
# busy is throttled, not queued: a pool of few processes must run less busy still (Erlang's loss formula) to
# throttle at most MANAGED_THROTTLED of the busiest hour's requests.
MANAGED_MIN_INSTANCES = 3
MANAGED_UTILISATION = 2 / 3
MANAGED_THROTTLED = 0.01


Count = Literal["all", "on_demand", "spot"]  # which of a fleet's instances a per-instance price applies to
HOURS_PER_DAY = 24


@functools.cache
def day(peak_to_average: float) -> tuple[float, ...]:
    """An average day's traffic, hour by hour, as multiples of the month's average rate: 24 weights whose mean is
    1 and whose largest (hour 0) is ``peak_to_average``.

    The shape is a cosine over the day, the first harmonic of a diurnal cycle and the usual first-order model of
    user-facing traffic: 1 + (p - 1) cos(2 pi h / 24), a trough of 2 - p at night. A peak more than twice the
    average cannot be a cosine around its mean, so there the cosine is cut at zero: c * max(0, cos - d), with c
    and d such that the mean stays 1 and the peak p (a night with no traffic, a busier, narrower day). A busiest
    hour above 24 times the average cannot fit one day; it is taken as 24 (all of the day's traffic in one hour).
    """
    p = min(float(peak_to_average), float(HOURS_PER_DAY))
    angles = [math.cos(2 * math.pi * h / HOURS_PER_DAY) for h in range(HOURS_PER_DAY)]
    if p <= 2:
        return tuple(1 + (p - 1) * a for a in angles)

    def mean(d: float) -> float:  # of the cut cosine scaled to peak p: falls from p / 2 (d = -1) to p / 24
        return sum(max(0.0, a - d) for a in angles) / HOURS_PER_DAY * p / (1 - d)

    low, high = -1.0, 1.0
    for _ in range(100):  # bisection to float precision: mean(d) = 1
        middle = (low + high) / 2
        low, high = (middle, high) if mean(middle) > 1 else (low, middle)
    d = (low + high) / 2
    return tuple(p * max(0.0, a - d) / (1 - d) for a in angles)


def day_of(config: ModelConfig) -> tuple[float, ...]:
    """The day a realtime fleet follows: ``traffic.hourly`` (at mean 1) where the config gives it, else ``day``."""
    hourly = config.traffic.hourly
    if hourly is None:
        return day(config.traffic.peak_to_average)
    mean = sum(hourly) / len(hourly)
    return tuple(x / mean for x in hourly)


@dataclass(frozen=True)
class Mix:
    """A spot fleet: the group's instance distribution (on_demand_base, then on_demand_percent of the rest on
    demand, rounded up) and, for a realtime fleet, the spare instance its scaling policy holds once it needs two
    and some of them are spot (crossover.capacity.spare_from; the policy tracks requests per instance as if one
    were already lost)."""

    on_demand_base: int
    on_demand_percent: int
    spare: bool

    def on_demand(self, instances: int) -> int:
        above = max(0, instances - self.on_demand_base)
        return min(instances, self.on_demand_base) + math.ceil(above * self.on_demand_percent / 100 - 1e-9)

    @property
    def spare_from(self) -> int | None:
        """The fewest instances at which it holds a spare; None if it never does."""
        return capacity.spare_from(self.on_demand_base, self.on_demand_percent) if self.spare else None

    def with_spare(self, needed: int) -> int:
        start = self.spare_from
        return needed + 1 if start is not None and needed >= start else needed


@dataclass(frozen=True)
class Line:
    fixed: float
    per_image: float
    per_instance: float = 0.0  # every instance-month (its volume; its hourly price too unless the fleet is a Mix)
    minimum: int = 0
    capacity: float = math.inf  # images a month one instance carries at its planned rate
    day: tuple[float, ...] = (1.0,)  # the hourly weights the fleet follows (``day``); one flat hour: the average
    max_volume: float = math.inf  # images a month it carries within the config's limits
    mix: Mix | None = None
    per_on_demand: float = 0.0  # a Mix's on-demand instance-months
    per_spot: float = 0.0  # a Mix's spot instance-months
    caps: tuple[tuple[float, float], ...] = ()  # (rate, first): added per image for the first ``first`` images only
    # Where one more instance does not carry ``capacity`` more (a Lambda Managed Instances pool): the images a
    # month n + 1 instances carry, by n, before it does.
    carry: tuple[float, ...] = ()

    @property
    def fleet(self) -> bool:
        return bool(self.per_instance or self.per_on_demand or self.per_spot)

    def hourly(self, volume: float) -> tuple[int, ...]:
        """Instances in each hour of the day at ``volume``: what that hour needs, a spot fleet's spare, the
        minimum."""
        if not self.fleet:
            return (0,) * len(self.day)
        return _hourly(volume, self.capacity, self.day, self.minimum, self.mix, self.carry)

    def instances(self, volume: float) -> int:
        """Instances at the busiest hour: what scaling.max must allow."""
        return max(self.hourly(volume))

    def on_demand(self, instances: int) -> int:
        return instances if self.mix is None else self.mix.on_demand(instances)

    def months(self, which: Count, volume: float) -> float:
        """Instance-months of ``which`` instances at ``volume``: the day's instance-hours over its hours."""
        every, on_demand = self._hours(volume)
        return {"all": every, "on_demand": on_demand, "spot": every - on_demand}[which] / len(self.day)

    def _hours(self, volume: float) -> tuple[int, int]:
        """(instance-hours, of which on demand) in the day at ``volume``."""
        hours = self.hourly(volume)
        return sum(hours), sum(hours) if self.mix is None else sum(self.mix.on_demand(n) for n in hours)

    def instance_cost(self, volume: float) -> float:
        """What the fleet's instances cost a month at ``volume``."""
        every, on_demand = self._hours(volume)
        return (self.per_instance * every + self.per_on_demand * on_demand
                + self.per_spot * (every - on_demand)) / len(self.day)

    def steps(self, low: float, high: float) -> set[float]:
        """The volumes in (low, high) at which some hour's instance count changes."""
        found: set[float] = set()
        start = self.carry[-1] if self.carry else 0.0  # past the table, one more instance every ``capacity``
        for w in set(self.day) if self.fleet else ():
            if w <= 0:
                continue
            found |= {c / w for c in self.carry if low < c / w < high}
            every = self.capacity / w  # one more instance in this hour every ``every`` images a month
            n = max(1, math.floor((low - start / w) / every) + 1)
            while start / w + n * every < high:
                found.add(start / w + n * every)
                n += 1
        return found

    def capped(self, volume: float) -> float:
        return sum(rate * min(volume, first) for rate, first in self.caps)

    def cost(self, volume: float) -> float:
        return self.fixed + self.per_image * volume + self.capped(volume) + self.instance_cost(volume)


@functools.lru_cache(maxsize=4096)
def _hourly(volume: float, capacity: float, day: tuple[float, ...], minimum: int, mix: Mix | None,
            carry: tuple[float, ...] = ()) -> tuple[int, ...]:
    """Line.hourly's arithmetic, cached: the band and the crossover search ask for the same volumes of the same
    fleet many times."""
    needed = (fewest(volume * w, capacity, carry) for w in day)
    return tuple(max(minimum, n if mix is None else mix.with_spare(n)) for n in needed)


def fewest(images: float, capacity: float, carry: tuple[float, ...] = ()) -> int:
    """The fewest instances that carry ``images`` a month: by the ``carry`` table, then ``capacity`` each."""
    if carry and images <= carry[-1] * (1 + 1e-12):
        return bisect.bisect_left(carry, images * (1 - 1e-12)) + 1
    start = carry[-1] if carry else 0.0
    return len(carry) + math.ceil((images - start) / capacity - 1e-9)


@functools.cache
def erlang_load(servers: int, blocked: float = MANAGED_THROTTLED) -> float:
    """The most traffic (in Erlangs: arrivals x service time) ``servers`` servers with no queue carry while at most
    ``blocked`` of it finds them all busy (Erlang's loss formula, by bisection)."""
    def loss(load: float) -> float:
        b = 1.0
        for k in range(1, servers + 1):
            b = load * b / (k + load * b)
        return b

    low, high = 0.0, float(servers)
    while high - low > 1e-6 * servers:
        middle = (low + high) / 2
        low, high = (middle, high) if loss(middle) <= blocked else (low, middle)
    return low


@dataclass(frozen=True)
class Part:
    """One item of the bill. ``shared``: the stack has one whatever serves behind it (front door, network).
    ``count``: which instances ``per_instance`` is paid for; ``caps``: (rate, first) pairs, each ``rate`` paid per
    image on the first ``first`` images a month only."""

    name: str
    fixed: float = 0.0
    per_image: float = 0.0
    per_instance: float = 0.0
    shared: bool = False
    count: Count = "all"
    caps: tuple[tuple[float, float], ...] = ()

    def cost(self, line: Line, volume: float) -> float:
        return (self.fixed + self.per_image * volume + sum(rate * min(volume, first) for rate, first in self.caps)
                + self.per_instance * line.months(self.count, volume))


@dataclass(frozen=True)
class Limit:
    """A setting that caps what a backend carries: at a volume it ``needs`` some amount of ``unit``,
    which must stay within ``value``; ``max_volume`` is the most it carries within it."""

    setting: str
    value: float
    unit: str
    needs: Callable[[float], float]
    max_volume: float
    fix: str  # how to lift it; {n} is what the volume needs

    def breach(self, volume: float) -> str | None:
        needed = self.needs(volume)
        if needed <= self.value * (1 + 1e-9):
            return None
        # What to set it to: whole instances and executions, seconds to the tenth.
        shown = f"{math.ceil(needed - 1e-9):,}" if needed >= 10 else f"{math.ceil(needed * 10 - 1e-9) / 10:g}"
        return f"needs {shown} {self.unit}; {self.setting} is {self.value:,g}: " + self.fix.format(n=shown)


@dataclass
class Estimate:
    backend: str
    spot: SpotSpec | None = None  # priced as this spot fleet
    configured: bool = True  # as the config deploys it (False: the spot, on-demand or warm alternative)
    cold: Callable[[float], coldstart.ColdStart] | None = None  # a realtime Lambda's cold starts at a volume
    provisioned: int = 0  # Lambda's provisioned concurrency
    minimum: int = 0  # instances it runs with no traffic
    line: Line | None = None
    items: list[Part] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    size: Limit | None = None  # the limit whose needs are the backend's size: instances, or concurrent executions
    meets_slo: bool | None = None
    performance: Figure | None = None
    planned: Figure | None = None  # requests/s per realtime instance: the scaling policy's target / 60
    problem: str | None = None  # why there is no cost: a missing price or performance figure

    @property
    def name(self) -> str:
        """The row's name: the backend, "(spot)" for a spot fleet, "(warm)" for Lambda with the provisioned
        concurrency the config does not have."""
        if self.spot is not None:
            return f"{self.backend} (spot)"
        return f"{self.backend} (warm)" if self.backend == "lambda" and not self.configured else self.backend

    def monthly_usd(self, volume: float) -> float | None:
        return None if self.line is None else self.line.cost(volume)

    def parts(self, volume: float) -> dict[str, float]:
        """The itemised monthly cost at ``volume`` (the items sum to ``monthly_usd``)."""
        line = self.line
        return {} if line is None else {p.name: p.cost(line, volume) for p in self.items}

    def over(self, volume: float) -> str | None:
        """Which limit ``volume`` breaks, with the setting that would lift it; None if within every one."""
        breaches = [b for limit in self.limits if (b := limit.breach(volume))]
        return "; ".join(breaches) or None

    def viable(self, volume: float) -> bool:
        """Priced, on the latency target (with its cold starts), still sold, and within its limits at ``volume``."""
        return (self.line is not None and bool(self.meets_slo) and self.backend not in RETIRED
                and self.over(volume) is None and (self.cold is None or self.cold(volume).meets))


@dataclass(frozen=True)
class Crossover:
    below: str
    above: str
    images_per_month: float
    kind: str  # "equal": both cost the same there; "step": an instance is added there; "limit": below's limit


def front_door(catalog: Catalog, config: ModelConfig, backend: str) -> Part:
    """The front door's monthly cost.

    realtime: the load balancer's hours (its share of them, on a shared one) plus capacity units, by bytes or
    new connections (Lambda targets get 0.4 GB per LCU-hour, instances 1 GB). pipeline: queue requests — one
    send per image, plus one receive and one delete per batch of up to ten.
    """
    if config.service == "pipeline":
        batch = 10 if KINDS[backend].fleet else min(10, config.pipeline.batch_size)
        return Part("queue", per_image=(1 + 2 / batch) * catalog.sqs.per_million_requests_usd.usd / 1e6, shared=True)
    gb_per_lcu_hour = INSTANCE_GB_PER_LCU_HOUR if KINDS[backend].fleet else LAMBDA_GB_PER_LCU_HOUR
    by_bytes = config.traffic.image_kb / 1e6 / gb_per_lcu_hour
    lcu_hours_per_image = max(by_bytes, 1 / (NEW_CONNECTIONS_PER_LCU_SECOND * 3600))
    # A load balancer shared by several services (a team's own): each pays its share of the hours, and its own
    # capacity units (they follow its traffic).
    sharing = config.endpoint.services_per_load_balancer
    return Part("load balancer" if sharing == 1 else f"load balancer (1/{sharing} shared)",
                fixed=catalog.alb.hourly_usd.usd * catalog.hours_per_month / sharing,
                per_image=lcu_hours_per_image * catalog.alb.lcu_hourly_usd.usd, shared=True)


def network(catalog: Catalog, nat_gateways: int, shared_by: int) -> Part:
    """This model's share of the shared network's way out: its NAT gateways' hours and public IPv4 addresses or,
    in a NAT-free network, an interface endpoint per service instances call in every AZ (split evenly by
    ``shared_by`` models)."""
    hourly = ((catalog.nat.hourly_usd.usd + catalog.ipv4.hourly_usd.usd) * nat_gateways if nat_gateways
              else catalog.vpc_endpoint.hourly_usd_per_az.usd * AZS * len(PRIVATE_ENDPOINTS))
    return Part("network", fixed=hourly * catalog.hours_per_month / shared_by, shared=True)


def arrivals(config: ModelConfig) -> tuple[float, float]:
    """(share by URL, share from S3) of the images: the config's, where a realtime request may also carry its image
    in the body. A pipeline's messages name every image: what the config leaves unsaid comes from S3 where
    inputs.s3 declares locations, else by URL."""
    traffic, inputs = config.traffic, config.inputs
    if config.service == "realtime":
        return traffic.from_url, traffic.from_s3 or 0.0
    if traffic.from_s3 is not None:
        return (traffic.from_url if inputs.s3 else 1 - traffic.from_s3), traffic.from_s3
    return (traffic.from_url, 1 - traffic.from_url) if inputs.s3 else (1.0, 0.0)


def rest_of_the_bill(catalog: Catalog, config: ModelConfig, backend: str) -> list[Part]:
    """What serving costs beside compute and the front door: S3 requests for images and results, NAT bytes of
    images fetched by URL, a public endpoint's WAF and addresses, Lambda's tracing and logs, the load balancer's
    access logs, and the stack's alarms, dashboard and metrics. Parts that cost nothing here are left out."""
    c, hours, pipeline = catalog, catalog.hours_per_month, config.service == "pipeline"
    traffic = config.traffic
    parts = []
    from_url, from_s3 = arrivals(config)
    s3 = from_s3 * c.s3.get_per_thousand_usd.usd / 1000
    if pipeline:  # each result is one object, under SSE-KMS without a bucket key: one KMS request each
        s3 += c.s3.put_per_thousand_usd.usd / 1000 + c.kms.per_10k_requests_usd.usd / 10_000
    if s3:
        parts.append(Part("S3 requests", per_image=s3))
    if from_url:
        parts.append(Part("NAT data", per_image=from_url * traffic.image_kb / 1e6 * c.nat.per_gb_usd.usd))
    logs_gb = c.cloudwatch.logs_ingested_gb_usd.usd + c.cloudwatch.logs_stored_gb_month_usd.usd  # kept a month
    if config.endpoint.certificate_arn is not None and config.endpoint.services_per_load_balancer == 1:
        # A public endpoint of its own: a web ACL of two rule groups, which logs every request; the load balancer's
        # public address in each AZ.
        parts.append(Part("WAF", fixed=c.waf.web_acl_month_usd.usd + WAF_RULES * c.waf.rule_month_usd.usd,
                          per_image=c.waf.per_million_requests_usd.usd / 1e6 + WAF_LOG_KB / 1e6 * logs_gb,
                          shared=True))
        parts.append(Part("public IPv4", fixed=AZS * c.ipv4.hourly_usd.usd * hours, shared=True))
    invocations = 1 / config.pipeline.batch_size if pipeline else 1.0  # per image
    logs = 0.0
    if not KINDS[backend].fleet:  # a function (its instances, if any, are Lambda's)
        # Active tracing records the first invocation each second and 5% of the rest: linear in the volume past
        # a second's worth, all of it below (a cap of that many images).
        trace = c.xray.per_million_traces_usd.usd / 1e6 * invocations
        parts.append(Part("tracing", per_image=TRACED_SHARE * trace, caps=(
            ((1 - TRACED_SHARE) * trace, TRACES_PER_SECOND * hours * 3600 / invocations),)))
        logs += invocations * LAMBDA_LOG_KB / 1e6 * logs_gb
    if not pipeline and config.endpoint.services_per_load_balancer == 1:  # its own load balancer's access logs
        logs += ALB_LOG_KB / 1e6 * ALB_LOG_MONTHS * c.s3.gb_month_usd.usd
    if logs:
        parts.append(Part("logs", per_image=logs))
    cw = c.cloudwatch
    parts.append(Part("monitoring", fixed=cw.dashboard_month_usd.usd + ALARM_METRICS * cw.alarm_metric_month_usd.usd
                      + CUSTOM_METRICS * cw.metric_month_usd.usd, shared=True,
                      per_instance=0.0 if not KINDS[backend].fleet
                      else METRIC_CALLS_PER_HOUR * hours * cw.per_thousand_api_requests_usd.usd / 1000
                      + DETAILED_METRICS * cw.metric_month_usd.usd))
    return parts


def estimate(config: ModelConfig, backend: str, catalog: Catalog, bench: BenchProfile | None = None, *,
             prices_name: str = "prices", load: LoadFigure | None = None, shared_by: int = 1,
             spot: SpotSpec | None = None) -> Estimate:
    """``backend``'s bill and limits for ``config``, as functions of the monthly volume. ``shared_by``: how
    many model stacks share the network's NAT gateway. ``spot``: price the fleet as this spot fleet."""
    result = Estimate(backend, spot)
    carry: tuple[float, ...] = ()
    try:
        if backend == "lambda-managed":
            per_instance_capacity, carry = _managed(result, config, catalog, bench, prices_name)
        else:
            per_instance_capacity = (_lambda(result, config, catalog, bench) if backend == "lambda"
                                     else _fleet(result, config, backend, catalog, bench, prices_name, load))
    except MissingPrice as e:
        result.problem = str(e)
    if result.problem is not None:
        return result
    items = result.items = [front_door(catalog, config, backend),
                            network(catalog, config.network.nat_gateways, shared_by), *result.items,
                            *rest_of_the_bill(catalog, config, backend)]
    def per(count: Count) -> float:
        return sum(p.per_instance for p in items if p.count == count)

    mix = None if spot is None else Mix(spot.on_demand_base, spot.on_demand_percent_above_base,
                                        spare=config.service == "realtime")
    line = Line(fixed=sum(p.fixed for p in items), per_image=sum(p.per_image for p in items),
                caps=tuple(cap for p in items for cap in p.caps),
                per_instance=per("all"), per_on_demand=per("on_demand"), per_spot=per("spot"), mix=mix,
                capacity=per_instance_capacity, minimum=result.minimum, carry=carry,
                # A realtime fleet follows the day; a pipeline's queue absorbs it (the fleet works through the average).
                day=day_of(config) if config.service == "realtime" else (1.0,))
    if KINDS[backend].fleet:
        most = config.scaling.max
        carrying = most if mix is None or mix.with_spare(most) == most else most - 1  # its spare counts too
        result.size = Limit("scaling.max", most, "instances", line.instances,
                            carrying * per_instance_capacity / max(line.day), "raise scaling.max to {n}")
        result.limits.append(result.size)
    result.line = replace(line, max_volume=min((limit.max_volume for limit in result.limits), default=math.inf))
    return result


def estimates(config: ModelConfig, catalog: Catalog, bench: BenchProfile | None = None, *,
              prices_name: str = "prices", load: LoadFigure | None = None, shared_by: int = 1,
              volume: float | None = None) -> list[Estimate]:
    """Every backend as the config deploys it and, for each instance backend whose type has a spot price, the
    other way to buy it: on demand if the config asks for spot, else spot above an on-demand floor of
    scaling.min (the floor the validator asks for). And Lambda kept warm where its cold starts break p99 at
    ``volume`` (default: the config's): with the provisioned concurrency that keeps it."""
    def priced(backend: str, *, spot: SpotSpec | None = None, configured: bool = True,
               config: ModelConfig = config) -> Estimate:
        e = estimate(config, backend, catalog, bench, prices_name=prices_name, load=load, shared_by=shared_by,
                     spot=spot)
        e.configured = configured
        return e

    found = []
    for backend in BACKENDS:
        found.append(priced(backend, spot=None if backend not in SPOT_BACKENDS else getattr(config, backend).spot))
        e = found[-1]
        if e.cold is not None and e.meets_slo and not (cold := e.cold(volume or config.traffic.images_per_month)).meets:
            warm = config.model_copy(update={"lambda_": config.lambda_.model_copy(
                update={"provisioned_concurrency": cold.provisioned})})
            found.append(priced(backend, configured=False, config=warm))
        elif e.spot is not None:
            found.append(priced(backend, configured=False))
        elif backend in SPOT_BACKENDS and getattr(config, backend).instance_type in catalog.spot:
            found.append(priced(backend, spot=SpotSpec(on_demand_base=config.scaling.min), configured=False))
    return found


def _lambda(result: Estimate, config: ModelConfig, catalog: Catalog, bench: BenchProfile | None) -> float:
    """Fills in Lambda's items and limits; returns inf, the capacity of the instances it does not have."""
    figure = profile.lambda_latency_ms(config, bench)
    result.performance = figure
    if figure is None:
        result.problem = "no Lambda latency: " + profile.HOW_TO_MEASURE.format(section="lambda.latency_ms")
        return math.inf
    spec, seconds = config.lambda_, catalog.hours_per_month * 3600
    gib = spec.memory_mib / 1024
    gb_second = (catalog.lambda_.arm_gb_second_usd if spec.architecture == "arm64" else catalog.lambda_.gb_second_usd)
    compute = figure.value / 1000 * gib * gb_second.usd
    # An SQS event source invokes once per batch; a load balancer once per image.
    pipeline = config.service == "pipeline"
    invocations = 1 / config.pipeline.batch_size if pipeline else 1
    requests = catalog.lambda_.per_million_requests_usd.usd / 1e6 * invocations
    result.items = [Part("lambda", per_image=compute + requests)]
    result.provisioned = spec.provisioned_concurrency or 0
    if spec.provisioned_concurrency:
        # Billed per GB-second configured, whether used or not: the floor (environments that scaling adds above
        # it are billed while they are provisioned, and not priced here: docs/limits.md).
        result.items.append(Part("provisioned concurrency", fixed=spec.provisioned_concurrency * gib * seconds
                                 * catalog.lambda_.provisioned_gb_second_usd.usd))
        if spec.architecture == "x86_64":  # arm64's provisioned rate is not in the catalog: it pays the full one
            # Invocations on provisioned environments pay a lower duration price. Requests go to them first:
            # by Little's law they carry, a month, at most as many images as they can run back to back.
            saved = figure.value / 1000 * gib * (catalog.lambda_.provisioned_execution_gb_second_usd.usd
                                                 - gb_second.usd)
            result.items.append(Part("provisioned execution rate", caps=(
                (saved, spec.provisioned_concurrency * seconds / (figure.value / 1000)),)))
    # Little's law: concurrent executions = arrival rate x duration. A load balancer's arrivals peak at the day's
    # busiest hour; a queue absorbs peaks, and each execution works through its batch in turn.
    peak = 1.0 if pipeline else max(day_of(config))  # the busiest hour of the day the fleets follow too
    per_image = peak * figure.value / 1000 / seconds

    def concurrency(setting: str, value: float, fix: str) -> Limit:
        return Limit(setting, value, "concurrent executions", lambda v: v * per_image, value / per_image, fix)

    if pipeline:
        result.limits.append(concurrency("pipeline.max_concurrency", config.pipeline.max_concurrency,
                                         "raise pipeline.max_concurrency to {n} (at most 1,000)"))
        batch_s = config.pipeline.batch_size * figure.value / 1000
        fits = batch_s <= spec.timeout_s
        result.limits.append(Limit("lambda.timeout_s", spec.timeout_s, "s per batch", lambda v: batch_s,
                                   math.inf if fits else 0.0, "raise lambda.timeout_s to {n} or lower "
                                   "pipeline.batch_size"))
    if spec.reserved_concurrency:
        result.limits.append(concurrency("lambda.reserved_concurrency", spec.reserved_concurrency,
                                         "raise lambda.reserved_concurrency to {n}"))
    result.size = concurrency("the account's Lambda concurrency", ACCOUNT_LAMBDA_CONCURRENCY,
                              "ask AWS to raise the region's Lambda concurrency quota to {n} (crossover assumes "
                              f"the default, {ACCOUNT_LAMBDA_CONCURRENCY:,})")
    result.limits.append(result.size)
    # A pipeline has no latency target: only realtime services are held to p99, cold starts included where the
    # init is known. With SnapStart a cold start is a restore, whose time is not measured here.
    result.meets_slo = pipeline or figure.value <= config.traffic.p99_ms
    init = profile.lambda_init_ms(config, bench)
    if not pipeline and init is not None and not spec.snapstart:
        result.cold = functools.partial(
            coldstart.judge, warm_ms=figure.value, init=init, target_ms=config.traffic.p99_ms, day=day_of(config),
            # scaled provisioned concurrency follows the load up to its maximum (a minute or two behind it)
            provisioned=spec.provisioned_concurrency_max or spec.provisioned_concurrency or 0,
            seconds=seconds, gib=gib, usd_per_gb_second=catalog.lambda_.provisioned_gb_second_usd.usd)
    return math.inf


def _fleet(result: Estimate, config: ModelConfig, backend: str, catalog: Catalog, bench: BenchProfile | None,
           prices_name: str, load: LoadFigure | None) -> float:
    """Fills in a fleet's items; returns the images a month one instance carries."""
    fleet = getattr(config, backend)
    figure = profile.images_per_second(config, backend, bench)
    result.performance = figure
    instance_hourly = hourly(catalog, "ec2", fleet.instance_type, prices_name)
    if backend == "eia":
        instance_hourly += hourly(catalog, "eia", config.eia.accelerator, prices_name)
    if figure is None:
        result.problem = (f"no throughput for {fleet.instance_type}: "
                          + profile.HOW_TO_MEASURE.format(section=f"{backend}.images_per_second"))
        return math.inf
    hours, p99 = catalog.hours_per_month, config.traffic.p99_ms
    if config.service == "pipeline":
        # The queue absorbs peaks and nobody waits on an answer: full planned load.
        per_instance_rate = figure.value * capacity.MAX_UTILISATION
    else:  # each hour's instances at the rate the scaling policy targets: the plan, to the request a minute
        result.planned = profile.planned_rate(config, backend, figure.value, load)
        per_instance_rate = capacity.per_minute(result.planned.value) / 60
    result.minimum = config.scaling.min
    if result.spot is None:
        result.items = [Part("instances", per_instance=instance_hourly * hours)]
    else:  # the on-demand floor at the on-demand price, the rest at the spot price of the config's type
        spot_hourly = hourly(catalog, "spot", fleet.instance_type, prices_name)
        result.items = [Part("on-demand instances", per_instance=instance_hourly * hours, count="on_demand"),
                        Part("spot instances", per_instance=spot_hourly * hours, count="spot")]
    result.items.append(Part("volumes", per_instance=fleet.root_volume_gib * catalog.ebs.gp3_gb_month_usd.usd))
    if backend == "eia":  # the Elastic Inference runtime's interface endpoint, in each AZ
        result.items.append(Part("endpoints", fixed=catalog.vpc_endpoint.hourly_usd_per_az.usd * AZS * hours))
    result.meets_slo = config.service == "pipeline" or capacity.meets_p99(figure.value, p99)
    return per_instance_rate * hours * 3600


def _managed(result: Estimate, config: ModelConfig, catalog: Catalog, bench: BenchProfile | None,
             prices_name: str) -> tuple[float, tuple[float, ...]]:
    """Fills in Lambda Managed Instances' items and limits; returns the images a month one more instance carries
    past the ``carry`` table, and the table (Line.carry).

    Its instances are priced as ``instance_type`` (the provider may launch the other allowed types too), each
    holding as many execution environments as its vCPUs and memory allow, each environment
    ``per_environment_concurrency`` processes of one request at a time. A request that finds every process busy
    is throttled: n instances carry the most traffic at which their processes throttle at most
    MANAGED_THROTTLED of it (a realtime service's) and run at most MANAGED_UTILISATION busy, at least
    MANAGED_MIN_INSTANCES of them and enough for min_environments."""
    spec, prices = config.lambda_managed, catalog.lambda_managed
    figure = profile.environment_images_per_second(config, bench)
    result.performance = figure
    instance_hourly = hourly(catalog, "ec2", spec.instance_type, prices_name)
    if figure is None:
        result.problem = ("no throughput for an execution environment: "
                          + profile.HOW_TO_MEASURE.format(section="lambda-managed.images_per_second"))
        return math.inf, ()
    hours, pipeline = catalog.hours_per_month, config.service == "pipeline"
    per_request = figure.value / spec.per_environment_concurrency  # a process's rate, on its share of the vCPUs
    per_instance = spec.environments_per_instance(spec.instance_type)
    slots = per_instance * spec.per_environment_concurrency
    process_month = per_request * hours * 3600  # images a month one process answers, always busy
    # By instances, until the loss formula allows MANAGED_UTILISATION. A pipeline's throttled batches wait in the
    # queue and come back: it loses nothing, and runs at MANAGED_UTILISATION from the first instance.
    carry: list[float] = []
    while not pipeline and (not carry or erlang_load(slots * len(carry)) < MANAGED_UTILISATION * slots * len(carry)):
        carry.append(min(erlang_load(slots * (len(carry) + 1)), MANAGED_UTILISATION * slots * (len(carry) + 1))
                     * process_month)
    invocations = 1 / config.pipeline.batch_size if pipeline else 1.0
    result.items = [Part("instances", per_instance=instance_hourly * hours),
                    Part("management fee", per_instance=instance_hourly * prices.management_fee.share * hours),
                    Part("requests", per_image=prices.per_million_requests_usd.usd / 1e6 * invocations)]
    result.minimum = max(MANAGED_MIN_INSTANCES, math.ceil(spec.min_environments / per_instance))
    added = MANAGED_UTILISATION * slots * process_month  # what one more instance carries past the table
    table, size = tuple(carry), vcpus(spec.instance_type)
    peak = 1.0 if pipeline else max(day_of(config))

    def instances(volume: float) -> int:
        """At the busiest hour."""
        return max(result.minimum, fewest(volume * peak, added, table))

    def carried(n: int) -> float:
        """The most images a month ``n`` instances carry at the busiest hour."""
        if n <= len(table):
            return table[n - 1] / peak if n > 0 else 0.0
        return ((table[-1] if table else 0.0) + (n - len(table)) * added) / peak

    result.size = Limit("lambda-managed.max_environments", spec.max_environments, "execution environments",
                        lambda v: instances(v) * per_instance, carried(spec.max_environments // per_instance),
                        "raise lambda-managed.max_environments to {n}")
    result.limits += [result.size, Limit("lambda-managed.max_vcpus", spec.max_vcpus, "vCPUs",
                                         lambda v: instances(v) * size, carried(spec.max_vcpus // size),
                                         "raise lambda-managed.max_vcpus to {n}")]
    result.meets_slo = pipeline or capacity.meets_p99(per_request, config.traffic.p99_ms)
    return added, table


def split_usd(estimates: dict[str, Estimate], shares: dict[str, float], volume: float) -> float | None:
    """The month of a state in which ``shares`` of ``volume`` go to each backend (a canary): each backend's
    cost at its share, with what the stack has once (front door, network) counted once. None if a backend
    has no price."""
    chosen = [estimates[backend] for backend in shares]
    costs = [e.monthly_usd(volume * share) for e, share in zip(chosen, shares.values(), strict=True)]
    if any(cost is None for cost in costs):
        return None
    doubled = sum(p.fixed for e in chosen[1:] for p in e.items if p.shared)
    return sum(c for c in costs if c is not None) - doubled


def cheapest(estimates: list[Estimate], volume: float) -> Estimate | None:
    """The cheapest backend that is priced, meets the latency target, is still sold and within its limits."""
    viable = [e for e in estimates if e.viable(volume)]
    # Costs equal to the cent are a tie (a spot row with no spot instance is the on-demand row): the row as the
    # config deploys it wins, so the advice never asks for a change that saves nothing.
    return min(viable, key=lambda e: (round(e.line.cost(volume), 2), not e.configured, e.backend),  # type: ignore[union-attr]
               default=None)


def crossovers(lines: dict[str, Line], low: float = RANGE[0], high: float = RANGE[1]) -> list[Crossover]:
    """Where the cheapest of ``lines`` that can carry the volume changes between ``low`` and ``high``
    images a month, exactly. A line is absent past its ``max_volume``."""
    if len(lines) < 2:
        return []
    bounds = {low, high} | {v for line in lines.values() for v in (line.max_volume, *(f for _, f in line.caps))
                            if low < v < high}
    for line in lines.values():  # instance counts change where some hour needs one more instance
        bounds |= line.steps(low, min(high, line.max_volume))
    edges = sorted(bounds)
    found: list[Crossover] = []
    current: str | None = None
    for a, b in itertools.pairwise(edges):
        # On (a, b] every cost is linear: intercept + slope * v, with every hour's instance count fixed at b's
        # and each cap's rate in force all through or not at all (each ``first`` is a bound).
        forms = {name: (line.fixed + line.instance_cost(b)
                        + sum(rate * first for rate, first in line.caps if first < b),
                        line.per_image + sum(rate for rate, first in line.caps if b <= first))
                 for name, line in lines.items() if line.max_volume >= b}
        if not forms:
            current = None
            continue
        at_a = min(forms, key=lambda n: (round(forms[n][0] + forms[n][1] * a, 6), n))
        if current is not None and at_a != current:
            found.append(Crossover(current, at_a, a, "step" if current in forms else "limit"))
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
