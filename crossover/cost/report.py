"""`crossover cost`: the table, the JSON document and the plot for one model at one volume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from crossover.config import BACKENDS, LoadedConfig
from crossover.cost import model
from crossover.cost.catalog import Catalog
from crossover.cost.profile import PROFILES, BenchProfile, LoadFigure


@dataclass
class Report:
    name: str
    volume: float
    p99_ms: int
    service: str
    estimates: list[model.Estimate]
    crossovers: list[model.Crossover]
    recommended: model.Estimate | None


def build(loaded: LoadedConfig, catalog: Catalog, *, volume: float | None = None, prices_name: str = "prices",
          profiles: Path = PROFILES) -> Report:
    config = loaded.config
    bench, load = BenchProfile.read(config.name, profiles), LoadFigure.read(config.name, profiles)
    v = float(volume or config.traffic.images_per_month)
    estimates = [model.estimate(config, b, catalog, bench, v, prices_name, load) for b in BACKENDS]
    # Crossovers among the backends that could serve this model: priced, on target, still sold.
    lines = {e.backend: e.line for e in estimates
             if e.line is not None and e.meets_slo and e.backend not in model.RETIRED}
    return Report(config.name, v, config.traffic.p99_ms, config.service, estimates, model.crossovers(lines),
                  model.cheapest(estimates, v))


def as_json(report: Report) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    for e in report.estimates:
        monthly = e.monthly_usd(report.volume)
        backends[e.backend] = {
            "monthly_usd": None if monthly is None else round(monthly, 2),
            "usd_per_million": None if monthly is None else round(monthly / report.volume * 1e6, 2),
            "instances": None if e.line is None or e.backend == "lambda" else e.line.instances(report.volume),
            "meets_slo": e.meets_slo,
            "parts": {k: round(v, 2) for k, v in e.parts.items()},
            "performance": None if e.performance is None else {
                "value": round(e.performance.value, 3),
                "unit": "ms" if e.backend == "lambda" else "images/s per instance",
                "source": e.performance.source},
            "problem": e.problem,
            "retired": e.backend in model.RETIRED,
        }
    return {"model": report.name, "volume": report.volume, "backends": backends,
            "crossovers": [{"below": c.below, "above": c.above, "images_per_month": round(c.images_per_month),
                            "kind": c.kind} for c in report.crossovers],
            "recommended": None if report.recommended is None else report.recommended.backend}


def table(report: Report) -> Table:
    target = "pipeline: no latency target" if report.service == "pipeline" else f"p99 target {report.p99_ms} ms"
    t = Table(title=f"{report.name} at {report.volume:,.0f} images/month ({target})")
    for column, justify in (("backend", "left"), ("monthly USD", "right"), ("USD / 1M images", "right"),
                            ("instances", "right"), ("meets p99", "center"), ("performance", "right")):
        t.add_column(column, justify=justify)  # type: ignore[arg-type]
    for e in report.estimates:
        name = e.backend + (" (retired)" if e.backend in model.RETIRED else "") + (
            " *" if report.recommended is e else "")
        perf = "—" if e.performance is None else (
            f"{e.performance.value:,.1f} {'ms' if e.backend == 'lambda' else 'img/s'}")
        monthly = e.monthly_usd(report.volume)
        if monthly is None or e.line is None:
            t.add_row(name, "—", "—", "—", "—", perf)
            continue
        t.add_row(name, f"{monthly:,.2f}", f"{monthly / report.volume * 1e6:,.2f}",
                  "—" if e.backend == "lambda" else str(e.line.instances(report.volume)),
                  "yes" if e.meets_slo else "no", perf)
    return t


def notes(report: Report) -> list[str]:
    """Under the table: each backend's itemised cost (or why it has none) and where its figure came from."""
    lines = []
    for e in report.estimates:
        cost = e.problem or " + ".join(f"{k} {v:,.2f}" for k, v in e.parts.items())
        source = "" if e.performance is None else f"; performance from {e.performance.source}"
        if e.planned is not None:
            source += f"; planned {e.planned.value:,.1f} req/s per instance from {e.planned.source}"
        lines.append(f"{e.backend}: {cost}{source}")
    return lines


def plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    volumes = np.logspace(np.log10(model.RANGE[0]), np.log10(model.RANGE[1]), 600)
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for e in report.estimates:
        if e.line is None:
            continue
        style = "-" if e.meets_slo and e.backend not in model.RETIRED else ":"
        axes.plot(volumes, [e.line.cost(v) for v in volumes], style, label=e.backend
                  + ("" if e.meets_slo else " (misses p99)") + (" (retired)" if e.backend in model.RETIRED else ""))
    for c in report.crossovers:
        axes.axvline(c.images_per_month, color="grey", linewidth=0.8, linestyle="--")
        axes.annotate(f"{c.below}→{c.above}\n{c.images_per_month:,.3g}", (c.images_per_month, 1), fontsize=7,
                      xycoords=("data", "axes fraction"), va="top", ha="right", rotation=90)
    axes.axvline(report.volume, color="black", linewidth=1.2)
    axes.annotate("current volume", (report.volume, 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    axes.set(xscale="log", yscale="log", xlabel="images per month", ylabel="monthly cost (USD)",
             title=f"{report.name}: monthly cost by backend")
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
