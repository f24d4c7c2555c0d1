"""The cost model: hand-checked arithmetic, exact crossovers, recommendations, bad price files."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from crossover.capacity import per_minute
from crossover.cli import main
from crossover.config import load
from crossover.cost import catalog as catalog_module
from crossover.cost import model, profile, report
from crossover.cost.catalog import BUNDLED
from tests.conftest import ROOT, write_config

CATALOG = catalog_module.load()


def requests_per_minute(config, backend: str, images_per_second: float, load) -> int:  # type: ignore[no-untyped-def]
    """The scaling target a fleet gets (InstanceFleet.from_config): the rate the cost plans each instance for."""
    return per_minute(profile.planned_rate(config, backend, images_per_second, load).value)
HOURS = 730
SECONDS = HOURS * 3600  # 2,628,000 in the catalog's month
ALB_FIXED = 0.0225 * HOURS  # $16.425
NAT = (0.045 + 0.005) * HOURS  # $36.50: the shared network's one NAT gateway and its public IPv4 address
MONITORING = 3 + 12 * 0.10 + 8 * 0.30  # $6.60: a dashboard, 12 alarm metrics, 8 custom metrics
# per instance-month: its metrics published once a minute ($0.438), EC2's detailed monitoring (7 metrics, $2.10)
METRIC_CALLS = 60 * HOURS * 0.01 / 1000 + 7 * 0.30
GP3 = 0.08  # per GiB-month


def md1(images_per_second: float, p99_ms: float) -> float:
    """The utilisation at which s (1 + ln(100 rho) / (2 (1 - rho))) reaches the target (M/D/1 with Kingman's
    tail), solved here by bisection, apart from crossover.capacity."""
    s, low, high = 1000 / images_per_second, 0.01, 0.8
    for _ in range(60):
        rho = (low + high) / 2
        low, high = (rho, high) if s * (1 + math.log(100 * rho) / (2 * (1 - rho))) <= p99_ms else (low, rho)
    return low


def config(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    return load(write_config(tmp_path, "m", "name: m\nmodel: {artifact: s3://bkt/m.onnx}\n" + text)).config


def test_lambda_arithmetic(tmp_path: Path) -> None:
    # 1M images x 0.2 s x 2 GB x $0.0000166667 = $6.67 compute; $0.20 requests; the load balancer
    # $16.425 a month plus 150 KB/image / 0.4 GB per LCU-hour x $0.008 = $3.00 of capacity units.
    # The NAT gateway and its address ($36.50) are shared by the two model stacks sharing the network: $18.25 each.
    # The rest of the bill: X-Ray records the first request each second (2,628,000 a month, more than 1M) and 5%
    # after: 1M traces at $5/M; 1.5 KB of logs a request (1.5 GB at $0.50 ingested + $0.03 stored); 0.5 KB of
    # access logs a request kept 3 months at $0.023/GB-month; the stack's dashboard, alarms and metrics.
    c = config(tmp_path, "backend: lambda\nlambda: {memory_mib: 2048, latency_ms: 200}\n")
    e = model.estimate(c, "lambda", CATALOG, shared_by=2)
    parts = e.parts(1_000_000)
    assert parts["lambda"] == pytest.approx(1e6 * 0.2 * 2 * 0.0000166667 + 0.20)
    assert parts["load balancer"] == pytest.approx(ALB_FIXED + 1e6 * 150e-6 / 0.4 * 0.008)
    assert parts["network"] == pytest.approx(NAT / 2)
    assert parts["tracing"] == pytest.approx(5.0)
    assert parts["logs"] == pytest.approx(1.5 * 0.53 + 0.5 * 3 * 0.023)
    assert parts["monitoring"] == pytest.approx(MONITORING)
    assert e.monthly_usd(1_000_000) == pytest.approx(6.66668 + 0.20 + 16.425 + 3.0 + 18.25 + 5.0 + 0.8295 + 6.6,
                                                     abs=0.01)
    assert e.performance is not None and e.performance.source.startswith("config (lambda.latency_ms")


def test_eia_arithmetic_matches_the_2019_production_figure(tmp_path: Path) -> None:
    # c5.xlarge ($0.17/h) + eia1.medium ($0.13/h) for a month: the write-up paid $220.82.
    c = config(tmp_path, "backend: eia\nscaling: {min: 1, max: 2}\n"
                         "eia: {instance_type: c5.xlarge, images_per_second: 50}\n")
    parts = model.estimate(c, "eia", CATALOG).parts(100_000)
    assert parts["instances"] == pytest.approx((0.17 + 0.13) * HOURS)  # $219.00
    assert abs(parts["instances"] - 220.82) < 2
    assert parts["endpoints"] == pytest.approx(0.01 * 2 * HOURS)  # the EI runtime endpoint in two AZs
    assert parts["volumes"] == pytest.approx(30 * GP3)  # its 30 GiB gp3 root volume


def test_a_realtime_fleet_follows_the_day(tmp_path: Path) -> None:
    # 100 img/s, p99 1 s: utilisation capped at 80% -> 80 img/s per instance. At 210,240,000 images a month
    # the average is 80/s: one instance's worth. With peak_to_average 2 the day is 1 + cos(15 deg x h), so
    # hour h needs ceil(1 + cos(15 h)) instances (at least scaling.min, 1):
    #   h  0-5: 2, 1.97, 1.87, 1.71, 1.5, 1.26 -> 2 each      h 6 and 18: exactly 1 -> 1
    #   h 7-17: 0.74 down to 0 and back        -> 1 each      h 19-23: 1.26 up to 1.97 -> 2 each
    # 11 hours of 2 and 13 of 1: 35 instance-hours a day, 35/24 instance-months at $0.526/h.
    c = config(tmp_path, "backend: gpu\ntraffic: {p99_ms: 1000, peak_to_average: 2}\nscaling: {min: 1, max: 9}\n"
                         "gpu: {images_per_second: 100}\n")
    e = model.estimate(c, "gpu", CATALOG)
    volume = 80 * SECONDS
    assert e.line is not None and e.line.instances(volume) == 2  # the busiest hour: what scaling.max must allow
    assert e.line.hourly(volume) == (2,) * 6 + (1,) * 13 + (2,) * 5
    assert e.parts(volume)["instances"] == pytest.approx(35 / 24 * 0.526 * HOURS)  # $559.99, not 2 x $383.98
    assert e.parts(volume)["volumes"] == pytest.approx(35 / 24 * 100 * GP3)
    row = report.as_json(report.build(load(tmp_path / "m.yaml"), CATALOG, volume=volume))["backends"]["gpu"]
    assert (row["instances"], row["instance_hours"]) == (2, pytest.approx(35 / 24 * HOURS, abs=0.1))
    assert e.line.instances(1e3) == 1  # never below scaling.min


def test_the_day_has_its_mean_at_1_and_its_peak_at_peak_to_average() -> None:
    # A cosine up to twice the average: 1 + 0.5 cos at 1.5 (1.5 at midnight, 1 at 06:00, 0.5 at noon)
    assert model.day(1.5)[0] == 1.5 and model.day(1.5)[6] == pytest.approx(1) and model.day(1.5)[12] == 0.5
    for peak in (1.0, 1.5, 2.0, 3.0, 10.0, 24.0):
        hours = model.day(peak)
        assert len(hours) == 24 and sum(hours) / 24 == pytest.approx(1) and max(hours) == pytest.approx(peak)
        assert min(hours) >= 0 and hours[1:] == pytest.approx(hours[:0:-1])  # symmetric about the peak hour
    # Beyond twice the average, nights are empty: at 3 the day is cut to a busier, narrower shape
    assert model.day(3.0)[12] == 0 and sum(1 for w in model.day(3.0) if w > 0) < 24
    assert model.day(100.0) == model.day(24.0)  # a whole day in its busiest hour: the most one day holds


def test_cpu_and_inferentia_arithmetic(tmp_path: Path) -> None:
    # 10 img/s (100 ms each) at p99 500 ms: 100 x (1 + ln(100 rho) / (2 (1 - rho))) = 500 at rho = 50.9%, so
    # 5.09 req/s per instance; 12/s every hour of a flat day needs ceil(2.36) = 3 instances of c7i.large.
    c = config(tmp_path, "backend: cpu\ntraffic: {p99_ms: 500, peak_to_average: 1}\nscaling: {min: 1, max: 9}\n"
                         "cpu: {images_per_second: 10}\ninferentia: {images_per_second: 1000}\n")
    assert md1(10, 500) == pytest.approx(0.509, abs=1e-3)
    volume = 12 * HOURS * 3600
    cpu = model.estimate(c, "cpu", CATALOG)
    assert cpu.planned is not None and cpu.planned.value == pytest.approx(10 * md1(10, 500), rel=1e-4)
    assert cpu.line is not None and cpu.line.instances(volume) == 3
    assert cpu.parts(volume)["instances"] == pytest.approx(3 * 0.08925 * HOURS)
    inf = model.estimate(c, "inferentia", CATALOG)
    assert inf.parts(volume)["instances"] == pytest.approx(0.7582 * HOURS)  # 1,000 img/s: one inf2.xlarge


def test_a_load_tests_capacity_plans_the_cpu_fleet(tmp_path: Path) -> None:
    from crossover.cost.profile import LoadFigure

    # GIVEN bench/load.py held 30 req/s on 2 CPUs at p99 <= 300 ms
    figure = LoadFigure(requests_per_second=30.0, p99_ms=300, cpus=2, machine="the test box")
    figure.write("m", tmp_path)
    assert LoadFigure.read("m", tmp_path) == figure
    c = config(tmp_path, "backend: cpu\ntraffic: {p99_ms: 300}\nscaling: {min: 1, max: 9}\n"
                         "cpu: {instance_type: c7i.xlarge, images_per_second: 10}\ngpu: {images_per_second: 100}\n")
    # THEN a 4-vCPU instance is planned for 60 req/s: 3,600 requests a minute, and 2 at the cost's peak
    assert requests_per_minute(c, "cpu", 10, figure) == 3600
    volume = HOURS * 3600 * 40  # 40/s on average, 120/s at the peak hour
    cpu = model.estimate(c, "cpu", CATALOG, load=figure)
    assert cpu.planned is not None and cpu.planned.value == 60 and "the test box" in cpu.planned.source
    assert cpu.line is not None and cpu.line.instances(volume) == 2
    # BUT measured at a looser target than the config's, or on another backend, it does not apply
    loose = LoadFigure(requests_per_second=30.0, p99_ms=500, cpus=2, machine="the test box")
    assert requests_per_minute(c, "cpu", 10, loose) == requests_per_minute(c, "cpu", 10, None) < 3600
    gpu = model.estimate(c, "gpu", CATALOG, load=figure)
    assert gpu.planned is not None and gpu.planned.source.endswith("(queueing model)")


def test_crossovers_are_exact_and_agree_with_the_costs() -> None:
    c = load(ROOT / "models" / "resnet152.yaml")
    result = report.build(c, CATALOG, volume=1e6)
    lines = {e.name: e.line for e in result.estimates if e.line is not None}
    assert result.crossovers
    for x in result.crossovers:
        below, above, v = lines[x.below], lines[x.above], x.images_per_month
        if x.kind == "limit":  # below carries no more: above takes over whatever it costs
            assert below.max_volume == pytest.approx(v)
            continue
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
    estimates = [model.estimate(c, b, CATALOG) for b in ("lambda", "gpu")]
    assert estimates[0].meets_slo is False and estimates[0].monthly_usd(1e3) < estimates[1].monthly_usd(1e3)
    for volume in (1e3, 1e5, 1e7):
        best = model.cheapest(estimates, volume)
        assert best is not None and best.backend == "gpu"


def test_backends_without_price_or_profile_are_reported_not_dropped(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN no model.gmacs and no measured figure, on a gpu type the catalog does not price
    path = write_config(tmp_path, "m", "name: m\nbackend: cpu\nmodel: {artifact: s3://bkt/m.onnx}\n"
                                       "eia: {accelerator: eia1.large}\ngpu: {instance_type: p5e.48xlarge}\n"
                                       "cpu: {images_per_second: 10}\n")
    # THEN every backend is listed with its reason, and only the selected one decides the exit status
    assert main(["cost", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # (and the spot fleets of the types with a spot price: not p5e.48xlarge, sold as capacity blocks only)
    assert set(data["backends"]) == {"lambda", "gpu", "eia", "inferentia", "cpu", "inferentia (spot)", "cpu (spot)",
                                     "lambda-managed"}
    assert "set lambda-managed.images_per_second to a measured figure" in data["backends"]["lambda-managed"]["problem"]
    assert data["backends"]["gpu"]["problem"].endswith("no price for ec2.p5e.48xlarge; add it (with its source and "
                                                       "date) or pick a priced type")
    assert "no price for eia.eia1.large" in data["backends"]["eia"]["problem"]
    assert "set lambda.latency_ms to a measured figure, or model.gmacs" in data["backends"]["lambda"]["problem"]
    # (one cpu instance carries the default 1M images a month: its spot alternative buys nothing on spot)
    assert data["backends"]["inferentia"]["monthly_usd"] is None and data["recommended"] == "cpu"
    assert data["action"] == "stay on cpu"


def test_cost_json_document_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "cost.png"
    assert main(["cost", str(ROOT / "models" / "resnet152.yaml"), "--json", "--volume", "2e7", "--plot",
                 str(plot)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "resnet152" and data["volume"] == 2e7
    assert set(data["backends"]["gpu"]) >= {"monthly_usd", "usd_per_million", "instances", "meets_slo", "feasible",
                                            "floor_usd", "limit", "max_images_per_month"}
    assert data["recommended"] in data["backends"]
    best = data["backends"][data["recommended"]]["monthly_usd"]
    viable = [b for b, v in data["backends"].items()
              if v["meets_slo"] and not v["retired"] and v["monthly_usd"] and v["feasible"]]
    assert best == min(data["backends"][b]["monthly_usd"] for b in viable)
    assert all({"below", "above", "images_per_month"} <= set(x) for x in data["crossovers"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000


def test_a_missing_extra_is_named_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the kit installed without its plot extra (matplotlib cannot be imported)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    # WHEN a plot is asked for THEN one line says which extra to install, and nothing is drawn
    assert main(["cost", str(ROOT / "models" / "resnet152.yaml"), "--plot", str(tmp_path / "p.png")]) == 1
    assert "--plot needs matplotlib, which comes with the 'plot' extra: pip install 'crossover-cdk[plot]'" in (
        capsys.readouterr().err)
    assert not (tmp_path / "p.png").exists()


def _write_catalog(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    yaml = YAML(typ="rt")
    data = yaml.load(BUNDLED.read_text())
    data.update(catalog_module.ec2_tables("us-east-1"))  # a whole catalog in one file, as prices refresh writes
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
    assert len(c.prices()) == len(c.ec2) + len(c.spot) + len(c.eia) + 28
    assert all(p.source in c.sources and str(p.date) for p in c.prices())


def test_pipeline_costs_have_a_queue_not_a_load_balancer_and_no_latency_target(tmp_path: Path) -> None:
    # 1M images through SQS: 1 send + (1 receive + 1 delete) per batch of 10 = 1.2M requests x $0.40/M;
    # Lambda is invoked once per batch of 10: 100k requests x $0.20/M.
    c = config(tmp_path, "backend: lambda\nservice: pipeline\ninputs: {s3: [my-images]}\ntraffic: {p99_ms: 10}\n"
                         "lambda: {memory_mib: 1024, latency_ms: 500}\npipeline: {batch_size: 10}\n")
    e = model.estimate(c, "lambda", CATALOG)
    parts = e.parts(1e6)
    assert parts["queue"] == pytest.approx(1.2 * 0.40)
    assert parts["lambda"] == pytest.approx(1e6 * 0.5 * 1 * 0.0000166667 + 0.1 * 0.20)
    assert "load balancer" not in parts and e.meets_slo is True  # 500 ms would miss a 10 ms p99


def test_inferentia_without_a_neuron_artifact_is_priced_and_scaled_on_its_host_cpus(tmp_path: Path) -> None:

    # GIVEN ResNet-152 (11.51 GMACs = 23.02 GFLOP) on inf2.xlarge: an AMD EPYC host (AVX2, 100 GFLOP/s a core),
    # 4 vCPUs = 2 cores, on two threads at 85% each: 170 GFLOP/s
    def config(text: str):  # type: ignore[no-untyped-def]
        return load(write_config(tmp_path, "m", "name: m\nmodel: {artifact: s3://bkt/m.onnx, gmacs: 11.51}\n"
                                 + text)).config

    text = "backend: inferentia\ntraffic: {p99_ms: 300}\n"
    host = model.estimate(config(text), "inferentia", CATALOG)
    # THEN without a Neuron artifact it runs 170 / 23.02 = 7.385 img/s on the CPUs (135 ms each): within a 300
    # ms p99 only while few requests wait: planned at 9.1%, 0.673 req/s, 40 requests a minute
    rate = 100 * 2 * 0.85 / 23.02
    assert host.performance is not None and host.performance.value == pytest.approx(rate)
    assert "runs on the host CPUs" in host.performance.source and host.meets_slo is True
    assert host.planned is not None and host.planned.value == pytest.approx(md1(rate, 300) * rate, rel=1e-4)
    assert md1(rate, 300) == pytest.approx(0.091, abs=1e-3)
    assert requests_per_minute(config(text), "inferentia", host.performance.value, None) == 40
    # AND with one it is the NeuronCores' 838 img/s, planned at 80%: 670.4 req/s, 40,224 a minute
    neuron = config(text + "inferentia: {neuron_artifact: s3://bkt/m.neuron.pt}\n")
    chip = model.estimate(neuron, "inferentia", CATALOG)
    assert chip.performance is not None and chip.performance.value == pytest.approx(838)
    assert chip.planned is not None and chip.planned.value == pytest.approx(670.4)
    assert requests_per_minute(neuron, "inferentia", 838, None) == 40_224


@pytest.mark.parametrize("backend", ["gpu", "eia", "inferentia", "cpu"])
def test_the_rate_cost_plans_each_instance_for_is_the_scaling_policys_target(synth, variants_dir: Path,  # type: ignore[no-untyped-def]
                                                                            backend: str) -> None:
    from tests.conftest import EXAMPLES, stack_of

    names = [next(line.split()[1] for line in e.read_text().splitlines() if line.startswith("name:"))
             for e in EXAMPLES]
    for name in names:  # realtime: requests per target a minute
        data = report.as_json(report.build(load(variants_dir / f"{name}-{backend}.yaml"), CATALOG))
        planned = data["backends"][backend]["planned_requests_per_minute"]
        (policy,) = [r["Properties"] for r in synth.raw[stack_of(name, backend)]["Resources"].values()
                     if r["Type"] == "AWS::AutoScaling::ScalingPolicy"]
        assert policy["TargetTrackingConfiguration"]["TargetValue"] == planned, (name, backend)
    # pipeline: backlog per instance = pipeline.backlog_s (300) x the images/s cost sizes the fleet with
    piped = report.build(load(variants_dir / f"resnet152-pipe-{backend}.yaml"), CATALOG)
    figure = next(e.performance for e in piped.estimates if e.backend == backend)
    tracking = [r["Properties"] for r in synth.raw[stack_of("resnet152", backend, "pipeline")]["Resources"].values()
                if r["Type"] == "AWS::AutoScaling::ScalingPolicy"
                and r["Properties"]["PolicyType"] == "TargetTrackingScaling"]
    assert figure is not None and tracking[0]["TargetTrackingConfiguration"]["TargetValue"] == pytest.approx(
        300 * figure.value)


def test_a_fleet_past_scaling_max_is_infeasible_never_recommended_and_leaves_the_crossovers() -> None:
    # resnet152 on c7i.large: 1 core at 190 GFLOP/s = 8.254 img/s (121 ms each), planned at 13.0% for a 300 ms
    # p99 (1.076 req/s), which the scaling policy targets as 64 requests a minute: at the 3x peak hour one
    # instance carries the traffic of a month of 64 / 60 x 2,628,000 / 3 = 934,400 images
    result = report.build(load(ROOT / "models" / "resnet152.yaml"), CATALOG, volume=7.5e6)
    cpu = next(e for e in result.estimates if e.backend == "cpu")
    rate = 190 / 23.02
    per_minute = math.floor(md1(rate, 300) * rate * 60)
    per_instance = per_minute / 60 * SECONDS / 3
    assert per_minute == 64 and cpu.line is not None and cpu.line.capacity == pytest.approx(3 * per_instance)
    # THEN 7.5M needs ceil(8.03) = 9 instances against scaling.max 6, with the fix named
    assert math.ceil(7.5e6 / per_instance) == 9
    assert cpu.over(7.5e6) == "needs 9 instances; scaling.max is 6: raise scaling.max to 9"
    assert cpu.line.max_volume == pytest.approx(6 * per_instance)
    assert ("cpu", pytest.approx(6 * per_instance), "scaling.max") in [
        (b, most, limit.setting) for b, most, limit in result.limits()]
    # AND gpu at 1e9 (12 instances) is over its limit too: nothing is recommended there
    at_a_billion = report.build(load(ROOT / "models" / "resnet152.yaml"), CATALOG, volume=1e9)
    gpu = next(e for e in at_a_billion.estimates if e.backend == "gpu")
    assert gpu.over(1e9) == "needs 12 instances; scaling.max is 6: raise scaling.max to 12"
    assert at_a_billion.recommended is None
    assert report.as_json(at_a_billion)["backends"]["gpu"]["feasible"] is False


def test_lambda_concurrency_is_a_limit_by_littles_law(tmp_path: Path) -> None:
    # 1 s per image, no peak: 2,628,000 images a month is one image a second, one execution at a time
    text = "backend: lambda\ntraffic: {peak_to_average: 1}\nlambda: {latency_ms: 1000, reserved_concurrency: 10}\n"
    e = model.estimate(config(tmp_path, text), "lambda", CATALOG)
    assert e.over(10 * SECONDS) is None and e.line is not None and e.line.max_volume == pytest.approx(10 * SECONDS)
    assert e.over(10.2 * SECONDS) == ("needs 11 concurrent executions; lambda.reserved_concurrency is 10: "
                                      "raise lambda.reserved_concurrency to 11")
    # AND without a reservation the account's default quota (1,000, an assumption) is the limit
    free = model.estimate(config(tmp_path, text.replace(", reserved_concurrency: 10", ", reserved_concurrency: null")),
                          "lambda", CATALOG)
    assert free.line is not None and free.line.max_volume == pytest.approx(1000 * SECONDS)
    assert "ask AWS to raise the region's Lambda concurrency quota to 1,001" in str(free.over(1000.5 * SECONDS))
    # AND resnet152 at 1e9: 380.5 images/s x 3 at the peak x 0.2808 s (23.02 GFLOP on 1.70 vCPU = 0.85 of an AVX2
    # core at 100 GFLOP/s, + 10 ms) = 320.6 -> 321 executions
    big = report.build(load(ROOT / "models" / "resnet152.yaml"), CATALOG, volume=1e9)
    lam = next(x for x in big.estimates if x.backend == "lambda")
    assert lam.over(1e9) == ("needs 321 concurrent executions; lambda.reserved_concurrency is 100: "
                             "raise lambda.reserved_concurrency to 321")


def test_a_pipeline_batch_must_finish_within_the_timeout_and_the_mapping_concurrency(tmp_path: Path) -> None:
    # 10 images x 0.5 s = 5 s a batch against a 4 s timeout: infeasible at any volume
    text = ("backend: lambda\nservice: pipeline\ninputs: {s3: [my-images]}\n"
            "lambda: {latency_ms: 500, timeout_s: 4}\npipeline: {batch_size: 10, max_concurrency: 20}\n")
    e = model.estimate(config(tmp_path, text), "lambda", CATALOG)
    assert e.line is not None and e.line.max_volume == 0
    assert e.over(1) == "needs 5 s per batch; lambda.timeout_s is 4: raise lambda.timeout_s to 5 or lower " \
                        "pipeline.batch_size"
    # AND with time for the batch, 20 executions at 2 images/s each carry 40 images/s on average
    ok = model.estimate(config(tmp_path, text.replace("timeout_s: 4", "timeout_s: 30")), "lambda", CATALOG)
    assert ok.line is not None and ok.line.max_volume == pytest.approx(40 * SECONDS)
    assert "pipeline.max_concurrency is 20: raise pipeline.max_concurrency to 21" in str(ok.over(41 * SECONDS))


def test_crossovers_skip_a_backend_past_its_limit() -> None:
    # lambda ($1 per 1000 images) would be cheaper until 100,000 but carries only 50,000
    lines = {"lambda": model.Line(fixed=0, per_image=0.001, max_volume=5e4),
             "cpu": model.Line(fixed=0, per_image=0, per_instance=100, minimum=1, capacity=1e9)}
    assert model.crossovers(lines) == [model.Crossover("lambda", "cpu", 5e4, "limit")]


def test_the_whole_bill_is_itemised_with_its_floor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN two model stacks in one folder (one network), a gpu fleet of at least 2 and a warm Lambda
    write_config(tmp_path, "other", "name: other\nbackend: lambda\nmodel: {artifact: s3://bkt/o.onnx, gmacs: 1}\n")
    path = write_config(tmp_path, "m", "name: m\nbackend: gpu\nmodel: {artifact: s3://bkt/m.onnx, gmacs: 4.09}\n"
                                       "scaling: {min: 2, max: 4}\nlambda: {memory_mib: 2048, "
                                       "reserved_concurrency: 10, provisioned_concurrency: 5}\n")
    assert main(["cost", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # THEN with no traffic the gpu stack costs its load balancer, half the NAT gateway and 2 instances with volumes
    assert data["network"] == {"nat_gateways": 1, "interface_endpoints": 0, "monthly_usd": round(NAT, 2),
                               "shared_by": 2}
    assert data["backends"]["gpu"]["floor_usd"] == pytest.approx(
        ALB_FIXED + NAT / 2 + 2 * (0.526 * HOURS + 100 * GP3 + METRIC_CALLS) + MONITORING, abs=0.01)
    # AND Lambda's floor holds 5 provisioned environments of 2 GiB for the month
    provisioned = 5 * 2 * SECONDS * 0.0000041667  # $109.50
    assert data["backends"]["lambda"]["parts"]["provisioned concurrency"] == pytest.approx(provisioned, abs=0.01)
    assert data["backends"]["lambda"]["floor_usd"] == pytest.approx(ALB_FIXED + NAT / 2 + provisioned + MONITORING,
                                                                    abs=0.01)
    # AND --shared-by says how many stacks share the network instead
    assert main(["cost", str(path), "--json", "--shared-by", "4"]) == 0
    shared = json.loads(capsys.readouterr().out)["backends"]["gpu"]["parts"]["network"]
    assert shared == pytest.approx(NAT / 4, abs=0.01)


def test_every_output_names_its_region_currency_and_catalog_date(capsys: pytest.CaptureFixture[str]) -> None:
    config_path = str(ROOT / "models" / "resnet152.yaml")
    assert main(["cost", config_path]) == 0
    out = capsys.readouterr().out
    assert "us-east-1 prices in USD, catalog of 2026-07-15 (the bundled catalog)" in out
    assert max(len(line) for line in out.splitlines() if "│" in line or "─" in line or "USD/month" in line) <= 80
    assert main(["cost", config_path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prices"] == {
        "region": "us-east-1", "currency": "USD", "catalog_date": "2026-07-15", "catalog": "the bundled catalog"}


def test_fails_when_nothing_can_be_priced_and_says_how_to_get_figures(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "m", "name: m\nbackend: lambda\nmodel: {artifact: s3://bkt/m.onnx}\n")
    assert main(["cost", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert f"{path}: no backend can be priced:" in captured.err
    assert "model.gmacs (billions of multiply-adds per image; ResNet-50 4.09" in captured.err
    assert "`crossover bench <config>`" in captured.err and "set gpu.images_per_second" in captured.err


def test_fails_when_the_selected_backend_has_no_price(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "m", "name: m\nbackend: gpu\nmodel: {artifact: s3://bkt/m.onnx, gmacs: 4.09}\n"
                                       "gpu: {instance_type: p5e.48xlarge}\n")
    assert main(["cost", str(path)]) == 1
    assert (f"{path}: backend gpu cannot be priced: the bundled catalog: no price for ec2.p5e.48xlarge; add it (with "
            "its source and date) or pick a priced type") in capsys.readouterr().err


def test_a_shared_load_balancer_is_split_between_its_services(tmp_path: Path) -> None:
    # GIVEN one model alone on its load balancer, and the same model as one of three services on a team's own
    alone = config(tmp_path, "backend: lambda\n")
    shared = config(tmp_path, "backend: lambda\nendpoint: {services_per_load_balancer: 3}\n")
    # WHEN the front door is priced THEN the shared one pays a third of the hours ($16.425 / 3 = $5.475) and the
    # same capacity units: they follow its own traffic (150 KB/image / 0.4 GB per LCU-hour x $0.008 = $3.00 / 1M)
    own, third = model.front_door(CATALOG, alone, "lambda"), model.front_door(CATALOG, shared, "lambda")
    assert own.fixed == pytest.approx(ALB_FIXED) and third.fixed == pytest.approx(5.475)
    assert third.per_image == own.per_image == pytest.approx(3.00 / 1e6)
    assert third.name == "load balancer (1/3 shared)"


def test_a_row_whose_performance_is_a_guess_says_so_and_how_to_measure_it(tmp_path: Path) -> None:
    # GIVEN Lambda measured (the config's latency), gpu and cpu estimated from the model's multiply-adds
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nmodel: {artifact: s3://bkt/m.onnx, gmacs: 4.09}\nbackend: lambda\n"
                    "lambda: {latency_ms: 90}\n")
    result = report.build(load(path), CATALOG, volume=1e6)
    rows = report.as_json(result)["backends"]
    # THEN the measured row is plain; each estimated one says so in its verdict, with the command that measures it
    lam, gpu, cpu = (next(e for e in result.estimates if e.name == n) for n in ("lambda", "gpu", "cpu"))
    assert report.verdict(lam, 1e6) == "ok" and rows["lambda"]["performance"]["estimated"] is False
    assert report.verdict(gpu, 1e6).endswith(", est.") and report.verdict(cpu, 1e6).endswith(", est.")
    assert rows["cpu"]["performance"]["measure"] == f"crossover bench {path}"
    assert rows["gpu"]["performance"]["measure"].startswith(f"deploy it and run crossover advise {path}")
    assert any(line.startswith("cpu:") and f"(measure it: crossover bench {path})" in line
               for line in report.notes(result))


def test_the_rest_of_the_bill_by_hand(tmp_path: Path) -> None:
    # GIVEN a Lambda pipeline (batches of 10) whose messages name S3 objects
    pipe = config(tmp_path, "backend: lambda\nservice: pipeline\ninputs: {s3: [my-images]}\n"
                            "lambda: {latency_ms: 200}\n")
    parts = model.estimate(pipe, "lambda", CATALOG).parts(2e6)
    # THEN each image is one GET ($0.0004/1,000) and its result one PUT ($0.005/1,000) under SSE-KMS without a
    # bucket key: one KMS request ($0.03/10,000): $8.40 per million images
    assert parts["S3 requests"] == pytest.approx(2e6 * (0.0004 + 0.005) / 1000 + 2e6 * 0.03 / 10_000)  # $16.80
    # AND X-Ray traces each second's first invocation and 5% of the rest: 200,000 invocations (2M / 10) are fewer
    # than one a second, all traced at $5/M; logs are 1.5 KB an invocation; no load balancer, no access logs
    assert parts["tracing"] == pytest.approx(200_000 * 5e-6)
    assert parts["logs"] == pytest.approx(200_000 * 1.5e-6 * (0.50 + 0.03))
    # GIVEN a public realtime endpoint whose images come half by URL, a quarter from S3
    public = config(tmp_path, "backend: lambda\nlambda: {latency_ms: 200}\ninputs: {s3: [my-images], https: true}\n"
                              "traffic: {from_url: 0.5, from_s3: 0.25, image_kb: 200}\nendpoint: {certificate_arn: "
                              "'arn:aws:acm:us-east-1:123456789012:certificate/abc'}\n")
    parts = model.estimate(public, "lambda", CATALOG).parts(1e8)
    # THEN the web ACL ($5) and its two rule groups ($1 each), $0.60 per million requests, and its logs (1.5 KB a
    # request at $0.53/GB); the load balancer's two public addresses ($0.005/h each)
    assert parts["WAF"] == pytest.approx(5 + 2 + 100 * 0.60 + 1e8 * 1.5e-6 * 0.53)  # $146.50
    assert parts["public IPv4"] == pytest.approx(2 * 0.005 * HOURS)  # $7.30
    # AND the NAT gateway processes the URL half: 5e7 x 200 KB = 10,000 GB at $0.045; S3 GETs for a quarter
    assert parts["NAT data"] == pytest.approx(5e7 * 200e-6 * 0.045)  # $450
    assert parts["S3 requests"] == pytest.approx(2.5e7 * 0.0004 / 1000)
    # AND past one request a second, tracing is each second's first (2,628,000) and 5% of the rest
    assert parts["tracing"] == pytest.approx((SECONDS + 0.05 * (1e8 - SECONDS)) * 5e-6)  # $37.02


@pytest.mark.parametrize(("instance_type", "cores", "gflops"), [
    ("c7i.large", 1, 190),  # Intel, SMT: 2 vCPUs are one core's two threads
    ("c7a.large", 2, 105),  # AMD 4th gen runs without SMT: a vCPU is a core
    ("c6a.xlarge", 2, 100),  # AMD 3rd gen, AVX2, SMT
    ("c7g.large", 2, 62),  # Graviton3: a vCPU is a core
    ("c8g.xlarge", 4, 67),  # Graviton4
])
def test_each_family_is_priced_at_its_cores_rate(tmp_path: Path, instance_type: str, cores: int,
                                                 gflops: float) -> None:
    # ResNet-50 (8.18 GFLOP) on one thread per core, 85% each beyond the first
    c = load(write_config(tmp_path, "m", f"name: m\nbackend: cpu\nmodel: {{artifact: s3://bkt/m.onnx, gmacs: 4.09}}\n"
                                         f"cpu: {{instance_type: {instance_type}}}\n")).config
    figure = profile.images_per_second(c, "cpu", None)
    effective = cores if cores == 1 else cores * 0.85
    assert figure is not None and figure.value == pytest.approx(gflops * effective / 8.18)


def test_lambda_vcpus_count_as_ec2_s(tmp_path: Path) -> None:
    # 3538 MiB = 2 vCPUs: on x86, two hardware threads = one AVX2 core (100 GFLOP/s); on arm64, two Graviton2
    # cores (30 GFLOP/s each, 85% for the second): ResNet-50 (8.18 GFLOP) + 10 ms of decoding
    for arch, seconds in (("x86_64", 8.18 / 100), ("arm64", 8.18 / (30 * 2 * 0.85))):
        text = (f"name: m\nbackend: lambda\nmodel: {{artifact: s3://bkt/m.onnx, gmacs: 4.09}}\n"
                f"lambda: {{memory_mib: 3538, architecture: {arch}}}\n")
        c = load(write_config(tmp_path, "m", text)).config
        figure = profile.lambda_latency_ms(c, None)
        assert figure is not None and figure.value == pytest.approx(seconds * 1000 + 10)


def test_the_bundled_tables_price_every_size_of_every_family_validate_accepts() -> None:
    from crossover.config.schema import _FLEET_KINDS

    c = catalog_module.load()
    tables = json.loads(catalog_module.EC2_TABLES.read_text())
    # every table names a declared source and a date, so every price does
    assert all(t["source"] in c.sources and t["date"] for region in tables.values() for t in region.values())
    # the types an audit found unpriced, on demand and spot
    for instance_type in ("g5.2xlarge", "g6e.xlarge", "inf2.8xlarge", "m7i.large", "c7a.large", "c7i.2xlarge",
                          "c8g.large", "m8g.xlarge"):
        assert instance_type in c.ec2 and instance_type in c.spot, instance_type
    # every family a backend accepts has its sizes: at least large/xlarge ones wherever AWS sells them
    families = {f for _, accepted in _FLEET_KINDS.values() for f in accepted}
    priced = {t.split(".")[0] for t in c.ec2}
    assert families - priced <= {"p5e"}  # sold only as capacity blocks: no on-demand price
    # AND a spot price is the advisor's savings over that on-demand price (59% off $0.357 for c7i.2xlarge), or
    # the price feed's where one was taken
    assert c.spot["c7i.large"].source == "spot-feed" and c.spot["c7i.large"].usd == 0.0303
    assert c.spot["c7i.2xlarge"].source == "spot-advisor"
    assert c.spot["c7i.2xlarge"].usd == pytest.approx(0.357 * (1 - 0.59), abs=1e-6)  # the advisor: 59% off


def test_review_round_edges_of_the_bill(tmp_path: Path) -> None:
    # A pipeline that may only fetch by URL gets every image through the NAT gateway, none from S3
    url_only = config(tmp_path, "backend: lambda\nservice: pipeline\ninputs: {https: true}\n"
                                "lambda: {latency_ms: 200}\n")
    assert model.arrivals(url_only) == (1.0, 0.0)
    parts = model.estimate(url_only, "lambda", CATALOG).parts(1e6)
    assert parts["NAT data"] == pytest.approx(1e6 * 150e-6 * 0.045)  # 150 GB at $0.045
    assert parts["S3 requests"] == pytest.approx(1e6 * 0.005 / 1000 + 1e6 * 0.03 / 10_000)  # results only
    # A spot row with no spot instance costs what the on-demand row does: the config's row wins the tie
    c = config(tmp_path, "backend: cpu\ncpu: {images_per_second: 100}\nscaling: {min: 1, max: 4}\n"
                         "lambda: {latency_ms: 5000}\n")
    rows = model.estimates(c, CATALOG)
    best = model.cheapest(rows, 1e5)
    assert best is not None and best.backend == "cpu" and best.configured
    # A bench profile from another ISA is scaled by the cores' rates: a zen4 measurement on a c7i (avx512) core
    bench = profile.BenchProfile(path=tmp_path / "p.json", machine="here", latency_ms=100.0, images_per_second=10.0,
                                 isa="zen4")
    on_c7i = profile.images_per_second(config(tmp_path, "backend: cpu\n"), "cpu", bench)
    assert on_c7i is not None and on_c7i.value == pytest.approx(10.0 * 190 / 105)


def test_a_load_figure_that_held_nothing_is_not_a_plan(tmp_path: Path) -> None:
    (tmp_path / "m.load.json").write_text('{"requests_per_second": 0, "p99_ms": 300, "cpus": 2, "machine": "x"}')
    assert profile.LoadFigure.read("m", tmp_path) is None
