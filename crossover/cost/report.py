"""`crossover cost`: the table, the JSON document and the plot for one model at one volume."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from crossover.backends import FUNCTIONS
from crossover.config import RETIRED, LoadedConfig
from crossover.cost import coldstart, model, profile
from crossover.cost.catalog import Catalog
from crossover.cost.profile import PROFILES, BenchProfile, LoadFigure
from crossover.errors import extra
from crossover.shape import AZS, PRIVATE_ENDPOINTS


@dataclass
class Report:
    name: str
    backend: str  # the one the config selects
    volume: float
    p99_ms: int
    service: str
    estimates: list[model.Estimate]
    crossovers: list[model.Crossover]
    recommended: model.Estimate | None
    catalog: Catalog
    catalog_name: str
    shared_by: int
    nat_gateways: int  # the network's (0: NAT-free, interface endpoints instead)
    loaded: LoadedConfig  # the config and its file, for the commands the report names

    @property
    def prices(self) -> str:
        c = self.catalog
        return f"{c.region} prices in {c.currency}, catalog of {c.date} ({self.catalog_name})"

    @property
    def selected(self) -> model.Estimate:
        return next(e for e in self.estimates if e.backend == self.backend and e.configured)

    def limits(self) -> list[tuple[str, float, model.Limit]]:
        """(backend, the most it carries, the limit that stops it) for every backend that stops within
        the searched range."""
        found = []
        for e in self.estimates:
            binding = min(e.limits, key=lambda limit: limit.max_volume, default=None)
            if e.line is not None and binding is not None and binding.max_volume < model.RANGE[1]:
                found.append((e.name, binding.max_volume, binding))
        return found


def build(loaded: LoadedConfig, catalog: Catalog, *, volume: float | None = None, prices_name: str = "prices",
          profiles: Path = PROFILES, shared_by: int = 1) -> Report:
    config = loaded.config
    bench, load = BenchProfile.read(config.name, profiles), LoadFigure.read(config.name, profiles)
    v = float(volume or config.traffic.images_per_month)
    estimates = model.estimates(config, catalog, bench, prices_name=prices_name, load=load, shared_by=shared_by,
                                volume=v)
    # Crossovers among the backends that could serve this model: priced, on target, still sold; each only
    # up to the volume its limits allow.
    lines = {e.name: e.line for e in estimates if e.line is not None and e.meets_slo and e.backend not in RETIRED}
    return Report(config.name, config.backend, v, config.traffic.p99_ms, config.service, estimates,
                  model.crossovers(lines), model.cheapest(estimates, v), catalog, prices_name, shared_by,
                  config.network.nat_gateways, loaded)


RUNS = {"instances": "inst.", "execution environments": "env."}  # the runs column's units (else concurrency)


def _scale(e: model.Estimate, volume: float) -> tuple[int, str] | None:
    """What the backend runs at ``volume``: instances, Lambda's concurrent executions or a capacity provider's
    execution environments."""
    if e.line is None or e.size is None:
        return None
    return math.ceil(e.size.needs(volume) - 1e-9), e.size.unit


def verdict(e: model.Estimate, volume: float) -> str:
    """What the row's cost is worth at ``volume``; ", est." where its performance is an estimate, not a measure."""
    if e.problem is not None:
        return "no figure" if e.performance is None else "no price"
    if e.backend in RETIRED:
        said = "retired"
    elif not e.meets_slo or (e.cold is not None and not e.cold(volume).meets):
        said = "misses p99"
    else:
        said = "ok" if e.over(volume) is None else "over limit"
    return said + (", est." if estimated(e) else "")


def estimated(e: model.Estimate) -> bool:
    return e.performance is not None and e.performance.source.startswith("estimate")


def measure(report: Report, e: model.Estimate) -> str:
    """The command that replaces ``e``'s estimated performance with a measurement."""
    path = report.loaded.path.resolve()
    path = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    if e.backend in FUNCTIONS or profile.on_host_cpus(report.loaded.config, e.backend):
        return f"crossover bench {path}"
    return (f"deploy it and run crossover advise {path} (the images/s one instance served), or set "
            f"{e.backend}.images_per_second from a measurement on its instance type")


def as_json(report: Report) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    v = report.volume
    for e in report.estimates:
        monthly, scale = e.monthly_usd(v), _scale(e, v)
        line = e.line
        backends[e.name] = {
            "monthly_usd": None if monthly is None else round(monthly, 2),
            "usd_per_million": None if monthly is None else round(monthly / v * 1e6, 2),
            "floor_usd": None if line is None else round(line.cost(0), 2),
            "instances": None if line is None or e.backend == "lambda" else line.instances(v),  # the busiest hour's
            "instance_hours": None if line is None or e.backend == "lambda"
            else round(line.months("all", v) * report.catalog.hours_per_month, 1),
            "concurrent_executions": scale[0] if scale and e.backend == "lambda" else None,
            "execution_environments": scale[0] if scale and e.backend == "lambda-managed" else None,
            "meets_slo": e.meets_slo,
            "feasible": None if line is None else e.over(v) is None,
            "limit": e.over(v),
            "max_images_per_month": None if line is None or math.isinf(line.max_volume) else round(line.max_volume),
            "parts": {k: round(x, 2) for k, x in e.parts(v).items()},
            "performance": None if e.performance is None else {
                "value": round(e.performance.value, 3),
                "unit": {"lambda": "ms", "lambda-managed": "images/s per environment"}.get(
                    e.backend, "images/s per instance"),
                "source": e.performance.source, "estimated": estimated(e),
                "measure": measure(report, e) if estimated(e) else None},
            "planned_requests_per_minute": None if e.planned is None else math.floor(e.planned.value * 60 + 1e-9),
            "problem": e.problem,
            "retired": e.backend in RETIRED,
            "configured": e.configured,
            "provisioned_concurrency": e.provisioned if e.backend == "lambda" else None,
            "cold_start": None if e.cold is None else _cold_json(e.cold(v)),
            "spot": None if e.spot is None else {"on_demand_base": e.spot.on_demand_base,
                                                 "on_demand_percent_above_base": e.spot.on_demand_percent_above_base,
                                                 "spare": bool(line and line.mix and line.mix.spare_from is not None),
                                                 "on_demand_instances": None if line is None
                                                 else line.on_demand(line.instances(v)),
                                                 "spot_instances": None if line is None
                                                 else line.instances(v) - line.on_demand(line.instances(v)),
                                                 "spot_instance_hours": None if line is None
                                                 else round(line.months("spot", v) * report.catalog.hours_per_month,
                                                            1)},
        }
    c = report.catalog
    whole = model.network(c, report.nat_gateways, shared_by=1).fixed  # before it is shared
    return {"model": report.name, "backend": report.backend, "volume": v,
            "prices": {"region": c.region, "currency": c.currency, "catalog_date": str(c.date),
                       "catalog": report.catalog_name},
            "network": {"nat_gateways": report.nat_gateways,
                        "interface_endpoints": 0 if report.nat_gateways else len(PRIVATE_ENDPOINTS),
                        "monthly_usd": round(whole, 2), "shared_by": report.shared_by},
            "backends": backends,
            "crossovers": [{"below": x.below, "above": x.above, "images_per_month": round(x.images_per_month),
                            "kind": x.kind} for x in report.crossovers],
            "limits": [{"backend": b, "max_images_per_month": round(most), "setting": limit.setting}
                       for b, most, limit in report.limits()],
            "recommended": None if report.recommended is None else report.recommended.name,
            "action": action(report)}


def _cold_json(cold: coldstart.ColdStart) -> dict[str, Any]:
    return {"share": round(cold.share, 6), "init_ms": round(cold.init.value), "init_source": cold.init.source,
            "p99_ms": round(cold.p99_ms, 1), "meets_slo": cold.meets, "provisioned_to_stay_warm": cold.provisioned,
            "provisioned_usd": round(cold.provisioned_usd, 2)}


def _cold_note(cold: coldstart.ColdStart) -> str:
    seen = (f"cold starts: {cold.share * 100:.2g}% of requests start an environment (init {cold.init.value:,.0f} ms: "
            f"{cold.init.source}), p99 {cold.p99_ms:,.0f} ms")
    if cold.meets:
        return seen
    return (seen + f"; provisioned_concurrency {cold.provisioned} keeps p99 warm (at most 1% cold) "
            f"(+{cold.provisioned_usd:,.2f} a month for the environments)")


def action(report: Report) -> str:
    """What to do about the recommendation: nothing if it is the config as it stands, else the command (and
    the spot section to add or remove)."""
    best = report.recommended
    if best is None:
        return "none: no backend carries this volume within the config's limits"
    if best.backend == report.backend and best.configured:
        return f"stay on {report.selected.name}"
    steps = [] if best.backend == report.backend else [f"crossover switch {report.name} {best.backend}"]
    if best.backend == "lambda" and not best.configured:
        steps.append(f"set lambda.provisioned_concurrency: {best.provisioned}")
    elif best.spot is not None and not best.configured:
        steps.append(f"set {best.backend}.spot: {{on_demand_base: {best.spot.on_demand_base}}}")
    elif best.spot is None and not best.configured:
        steps.append(f"remove {best.backend}.spot")
    return ", then ".join(steps)


def _usd(amount: float) -> str:
    """Cents where they matter: whole dollars from 1,000 (the notes itemise to the cent), so the table keeps to
    80 columns."""
    return f"{amount:,.0f}" if amount >= 1_000 else f"{amount:,.2f}"


def table(report: Report) -> Table:
    target = "pipeline: no latency target" if report.service == "pipeline" else f"p99 target {report.p99_ms} ms"
    t = Table(title=f"{report.name} at {report.volume:,.0f} images/month ({target})", box=box.SIMPLE_HEAD,
              pad_edge=False, show_edge=False, caption_justify="left", collapse_padding=True,
              caption=f"{report.prices}; floor: the month with no traffic (whole dollars); runs: instances at the "
              "busiest hour (how many of them spot), Lambda's concurrent executions (conc.) or execution environments "
              "(env.); est.: performance estimated, not measured (below: the command that measures it)")
    for column, justify in (("backend", "left"), ("USD/month", "right"), ("per 1M", "right"),
                            ("floor", "right"), ("runs", "right"), ("verdict", "left")):
        t.add_column(column, justify=justify, no_wrap=column in ("backend", "runs", "verdict"))  # type: ignore[arg-type]
    v = report.volume
    for e in report.estimates:
        name = e.name + (" *" if report.recommended is e else "")
        monthly, scale = e.monthly_usd(v), _scale(e, v)
        if monthly is None or e.line is None:
            t.add_row(name, "—", "—", "—", "—", verdict(e, v))
            continue
        runs = "—" if scale is None else f"{scale[0]:,} {RUNS.get(scale[1], 'conc.')}"
        if e.line.mix is not None and scale is not None:
            runs = f"{scale[0]:,} ({scale[0] - e.line.on_demand(scale[0]):,} spot)"
        t.add_row(name, _usd(monthly), _usd(monthly / v * 1e6), f"{e.line.cost(0):,.0f}", runs,
                  verdict(e, v))
    return t


def notes(report: Report) -> list[str]:
    """Under the table: each backend's itemised cost (or why it has none), its limit, and its figures' sources."""
    lines = []
    for e in report.estimates:
        cost = e.problem or " + ".join(f"{k} {x:,.2f}" for k, x in e.parts(report.volume).items())
        over = e.over(report.volume)
        limit = f"; {over}" if over and e.problem is None else ""
        source = "" if e.performance is None else f"; performance from {e.performance.source}"
        if estimated(e):
            source += f" (measure it: {measure(report, e)})"
        if e.planned is not None:
            source += f"; planned {e.planned.value:,.1f} req/s per instance: {e.planned.source}"
        if e.spot is not None:
            floor = (f"on-demand base {e.spot.on_demand_base}, {e.spot.on_demand_percent_above_base}% on demand "
                     "above it" + (", one spare once two run and one is spot" if e.line and e.line.mix and
                                   e.line.mix.spare_from is not None else "") + (" (the config's)" if e.configured else
                                                                 " (add it as " + e.backend + ".spot)"))
            cost += f" [{floor}]"
        if e.cold is not None:
            source += "; " + _cold_note(e.cold(report.volume))
        lines.append(f"{e.name}: {cost}{limit}{source}")
    c = report.catalog
    whole = model.network(c, report.nat_gateways, shared_by=1).fixed  # before it is shared
    way_out = (f"{report.nat_gateways} NAT gateway(s)" if report.nat_gateways else
               f"NAT-free, {len(PRIVATE_ENDPOINTS)} interface endpoints in {AZS} AZs "
               f"(one NAT gateway: {model.network(c, 1, shared_by=1).fixed:,.2f})")
    lines.append(f"network: {way_out}, {whole:,.2f} a month, split by {report.shared_by} model stack(s) "
                 "(--shared-by); not included: answers sent to the internet, interface endpoint GB, KMS requests on "
                 "your input objects, the VPC's flow logs (rejected traffic only), free tiers and Savings Plans")
    return lines


def plot(report: Report, path: Path) -> None:
    with extra("plot", "--plot"):
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
        import numpy as np

    volumes = np.logspace(np.log10(model.RANGE[0]), np.log10(model.RANGE[1]), 600)
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for e in report.estimates:
        line = e.line
        if line is None:
            continue
        style = "-" if e.meets_slo and e.backend not in RETIRED else ":"
        within = [x for x in volumes if x <= line.max_volume]
        label = (e.name + ("" if e.meets_slo else " (misses p99)") + (" (retired)" if e.backend in RETIRED else "")
                 + ("" if len(within) == len(volumes) else " (until its limit)"))
        axes.plot(within, [line.cost(x) for x in within], style, label=label)
    for c in report.crossovers:
        axes.axvline(c.images_per_month, color="grey", linewidth=0.8, linestyle="--")
        axes.annotate(f"{c.below}→{c.above}\n{c.images_per_month:,.3g}", (c.images_per_month, 1), fontsize=7,
                      xycoords=("data", "axes fraction"), va="top", ha="right", rotation=90)
    axes.axvline(report.volume, color="black", linewidth=1.2)
    axes.annotate("current volume", (report.volume, 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    axes.set(xscale="log", yscale="log", xlabel="images per month", ylabel=f"monthly cost ({report.catalog.currency})",
             title=f"{report.name}: monthly cost by backend ({report.catalog.region}, {report.catalog.date})")
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
