"""The cost model: hand-checked arithmetic, exact crossovers, recommendations, bad price files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from crossover.cli import main
from crossover.config import load
from crossover.cost import catalog as catalog_module
from crossover.cost import model, report
from crossover.cost.catalog import BUNDLED
from tests.conftest import ROOT, write_config

CATALOG = catalog_module.load()
HOURS = 730
ALB_FIXED = 0.0225 * HOURS  # $16.425


def config(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    return load(write_config(tmp_path, "m", "name: m\nmodel: {artifact: s3://bkt/m.onnx}\n" + text)).config


def test_lambda_arithmetic(tmp_path: Path) -> None:
    # 1M images x 0.2 s x 2 GB x $0.0000166667 = $6.67 compute; $0.20 requests; the load balancer
    # $16.425 a month plus 150 KB/image / 0.4 GB per LCU-hour x $0.008 = $3.00 of capacity units.
    c = config(tmp_path, "backend: lambda\nlambda: {memory_mib: 2048, latency_ms: 200}\n")
    e = model.estimate(c, "lambda", CATALOG, None, 1_000_000)
    assert e.parts["lambda"] == pytest.approx(1e6 * 0.2 * 2 * 0.0000166667 + 0.20)
    assert e.parts["load balancer"] == pytest.approx(ALB_FIXED + 1e6 * 150e-6 / 0.4 * 0.008)
    assert e.monthly_usd(1_000_000) == pytest.approx(6.66668 + 0.20 + 16.425 + 3.0, abs=0.01)
    assert e.performance is not None and e.performance.source.startswith("config (lambda.latency_ms")


def test_eia_arithmetic_matches_the_2019_production_figure(tmp_path: Path) -> None:
    # c5.xlarge ($0.17/h) + eia1.medium ($0.13/h) for a month: the write-up paid $220.82.
    c = config(tmp_path, "backend: eia\nscaling: {min: 1, max: 2}\n"
                         "eia: {instance_type: c5.xlarge, images_per_second: 50}\n")
    e = model.estimate(c, "eia", CATALOG, None, 100_000)
    assert e.parts["instances"] == pytest.approx((0.17 + 0.13) * HOURS)  # $219.00
    assert abs(e.parts["instances"] - 220.82) < 2
    assert e.parts["endpoints"] == pytest.approx(0.01 * 2 * HOURS)  # the EI runtime endpoint in two AZs


def test_gpu_instances_are_sized_for_the_peak_at_planned_utilisation(tmp_path: Path) -> None:
    # 100 img/s, p99 1 s: utilisation capped at 80% -> 80 img/s per instance. 1e8 images/month average
    # 38.05/s, x3 peak-to-average = 114.2/s -> ceil(114.2 / 80) = 2 instances of $0.526/h.
    c = config(tmp_path, "backend: gpu\ntraffic: {p99_ms: 1000}\nscaling: {min: 1, max: 9}\n"
                         "gpu: {images_per_second: 100}\n")
    e = model.estimate(c, "gpu", CATALOG, None, 1e8)
    assert e.line is not None and e.line.instances(1e8) == 2
    assert e.parts["instances"] == pytest.approx(2 * 0.526 * HOURS)
    assert e.line.instances(1e3) == 1  # never below scaling.min


def test_cpu_and_inferentia_arithmetic(tmp_path: Path) -> None:
    # 10 img/s at p99 500 ms: 1 - ln(100)/5 < 10%, so 10% -> 1 img/s per instance; 2.6e6 images/month
    # is 1/s on average, 3/s at peak -> 3 instances of c7i.large at $0.08925/h.
    c = config(tmp_path, "backend: cpu\ntraffic: {p99_ms: 500}\nscaling: {min: 1, max: 9}\n"
                         "cpu: {images_per_second: 10}\ninferentia: {images_per_second: 1000}\n")
    volume = HOURS * 3600
    cpu = model.estimate(c, "cpu", CATALOG, None, volume)
    assert cpu.line is not None and cpu.line.instances(volume) == 3
    assert cpu.parts["instances"] == pytest.approx(3 * 0.08925 * HOURS)
    inf = model.estimate(c, "inferentia", CATALOG, None, volume)
    assert inf.parts["instances"] == pytest.approx(0.7582 * HOURS)


def test_a_load_tests_capacity_plans_the_cpu_fleet(tmp_path: Path) -> None:
    from crossover.cost.profile import LoadFigure
    from crossover.stacks.model import requests_per_minute

    # GIVEN bench/load.py held 30 req/s on 2 CPUs at p99 <= 300 ms
    figure = LoadFigure(requests_per_second=30.0, p99_ms=300, cpus=2, machine="the test box")
    figure.write("m", tmp_path)
    assert LoadFigure.read("m", tmp_path) == figure
    c = config(tmp_path, "backend: cpu\ntraffic: {p99_ms: 300}\nscaling: {min: 1, max: 9}\n"
                         "cpu: {instance_type: c7i.xlarge, images_per_second: 10}\ngpu: {images_per_second: 100}\n")
    # THEN a 4-vCPU instance is planned for 60 req/s: 3,600 requests a minute, and 2 at the cost's peak
    assert requests_per_minute(c, "cpu", 10, figure) == 3600
    volume = HOURS * 3600 * 40  # 40/s on average, 120/s at the peak hour
    cpu = model.estimate(c, "cpu", CATALOG, None, volume, load=figure)
    assert cpu.planned is not None and cpu.planned.value == 60 and "the test box" in cpu.planned.source
    assert cpu.line is not None and cpu.line.instances(volume) == 2
    # BUT measured at a looser target than the config's, or on another backend, it does not apply
    loose = LoadFigure(requests_per_second=30.0, p99_ms=500, cpus=2, machine="the test box")
    assert requests_per_minute(c, "cpu", 10, loose) == requests_per_minute(c, "cpu", 10, None) < 3600
    gpu = model.estimate(c, "gpu", CATALOG, None, volume, load=figure)
    assert gpu.line is not None and gpu.planned is None


def test_crossovers_are_exact_and_agree_with_the_costs() -> None:
    c = load(ROOT / "models" / "resnet152.yaml")
    result = report.build(c, CATALOG, volume=1e6)
    lines = {e.backend: e.line for e in result.estimates if e.line is not None}
    assert result.crossovers
    for x in result.crossovers:
        below, above, v = lines[x.below], lines[x.above], x.images_per_month
        assert below.cost(v * 0.999) < above.cost(v * 0.999)
        assert above.cost(v * 1.001) < below.cost(v * 1.001)
        if x.kind == "equal":
            assert below.cost(v) == pytest.approx(above.cost(v), abs=0.01)


def test_crossover_of_two_simple_lines_is_solved_not_sampled() -> None:
    # lambda: $1 per 1000 images; one instance: $100 flat carrying 1e9 images -> equal at exactly 100,000.
    lines = {"lambda": model.Line(fixed=0, per_image=0.001),
             "cpu": model.Line(fixed=0, per_image=0, per_instance=100, minimum=1, capacity=1e9)}
    (x,) = model.crossovers(lines)
    assert (x.below, x.above, x.kind) == ("lambda", "cpu", "equal")
    assert x.images_per_month == pytest.approx(100_000, rel=1e-12)


def test_slow_lambda_is_never_recommended(tmp_path: Path) -> None:
    # GIVEN Lambda at 400 ms (the cheapest at low volume) and a 100 ms target THEN gpu is recommended
    c = config(tmp_path, "backend: lambda\ntraffic: {p99_ms: 100}\nlambda: {latency_ms: 400}\n"
                         "gpu: {images_per_second: 500}\n")
    estimates = [model.estimate(c, b, CATALOG, None, 1e3) for b in ("lambda", "gpu")]
    assert estimates[0].meets_slo is False and estimates[0].monthly_usd(1e3) < estimates[1].monthly_usd(1e3)
    for volume in (1e3, 1e5, 1e7):
        best = model.cheapest(estimates, volume)
        assert best is not None and best.backend == "gpu"


def test_backends_without_price_or_profile_are_reported_not_dropped(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "m", "name: m\nbackend: lambda\nmodel: {artifact: s3://bkt/m.onnx}\n"
                                       "eia: {accelerator: eia1.large}\ngpu: {instance_type: g5.2xlarge}\n")
    assert main(["cost", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["backends"]) == {"lambda", "gpu", "eia", "inferentia", "cpu"}
    assert data["backends"]["gpu"]["problem"].endswith("no price for ec2.g5.2xlarge; add it (with its source and "
                                                       "date) or pick a priced type")
    assert "no price for eia.eia1.large" in data["backends"]["eia"]["problem"]
    assert "set lambda.latency_ms or model.gmacs" in data["backends"]["lambda"]["problem"]
    assert data["backends"]["cpu"]["monthly_usd"] is None and data["recommended"] is None


def test_cost_json_document_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "cost.png"
    assert main(["cost", str(ROOT / "models" / "resnet152.yaml"), "--json", "--volume", "2e7", "--plot",
                 str(plot)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "resnet152" and data["volume"] == 2e7
    assert set(data["backends"]["gpu"]) >= {"monthly_usd", "usd_per_million", "instances", "meets_slo"}
    assert data["recommended"] in data["backends"]
    best = data["backends"][data["recommended"]]["monthly_usd"]
    viable = [b for b, v in data["backends"].items() if v["meets_slo"] and not v["retired"] and v["monthly_usd"]]
    assert best == min(data["backends"][b]["monthly_usd"] for b in viable)
    assert all({"below", "above", "images_per_month"} <= set(x) for x in data["crossovers"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000


def _write_catalog(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    yaml = YAML(typ="rt")
    data = yaml.load(BUNDLED.read_text())
    change(data)
    path = tmp_path / "prices.yaml"
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.pop("alb"), "prices.yaml: alb: expected this key; it is missing"),
    (lambda d: d["ec2"]["c5.large"].__setitem__("usd", -1), "prices.yaml: ec2.c5.large.usd: expected a number >= 0"),
    (lambda d: d["ec2"]["c5.large"].__setitem__("usd", "cheap"), "prices.yaml: ec2.c5.large.usd: expected a number"),
    (lambda d: d["ec2"].__setitem__("c5.enormous", d["ec2"]["c5.large"]), "prices.yaml: ec2.c5.enormous.[key]:"),
    (lambda d: d["ec2"]["c5.large"].__setitem__("source", "rumour"), "sources: expected every price's source"),
])
def test_fails_when_the_price_file_is_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], change,  # type: ignore[no-untyped-def]
                                          expected: str) -> None:
    prices = _write_catalog(tmp_path, change)
    assert main(["cost", str(ROOT / "models" / "resnet152.yaml"), "--prices", str(prices)]) == 1
    err = capsys.readouterr().err
    assert expected in err.replace(str(tmp_path) + "/", ""), err
    assert len([line for line in err.splitlines() if line.strip()]) == 1 and "Traceback" not in err


def test_bundled_catalog_names_a_source_and_date_for_every_price() -> None:
    c = catalog_module.load()
    prices = [*c.ec2.values(), *c.eia.values(), c.lambda_.gb_second_usd, c.alb.hourly_usd, c.nat.hourly_usd]
    assert all(p.source in c.sources and str(p.date) for p in prices)


def test_pipeline_costs_have_a_queue_not_a_load_balancer_and_no_latency_target(tmp_path: Path) -> None:
    # 1M images through SQS: 1 send + (1 receive + 1 delete) per batch of 10 = 1.2M requests x $0.40/M;
    # Lambda is invoked once per batch of 10: 100k requests x $0.20/M.
    c = config(tmp_path, "backend: lambda\nservice: pipeline\ninputs: {s3: [my-images]}\ntraffic: {p99_ms: 10}\n"
                         "lambda: {memory_mib: 1024, latency_ms: 500}\npipeline: {batch_size: 10}\n")
    e = model.estimate(c, "lambda", CATALOG, None, 1e6)
    assert e.parts["queue"] == pytest.approx(1.2 * 0.40)
    assert e.parts["lambda"] == pytest.approx(1e6 * 0.5 * 1 * 0.0000166667 + 0.1 * 0.20)
    assert "load balancer" not in e.parts and e.meets_slo is True  # 500 ms would miss a 10 ms p99
