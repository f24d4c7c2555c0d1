"""Lambda's cold starts in the cost model's p99 judgement: the share of requests that start an environment, the
init they wait for, and the provisioned concurrency (priced) that keeps p99 warm."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from crossover.config import load
from crossover.cost import catalog as catalog_module
from crossover.cost import coldstart, model, report
from tests.conftest import write_config

CATALOG = catalog_module.load()
SECONDS = 730 * 3600


def config(tmp_path: Path, text: str, peak: float = 3):  # type: ignore[no-untyped-def]
    return load(write_config(tmp_path, "m", "name: m\nmodel: {artifact: s3://bkt/m.onnx, size_mb: 240}\n"
                             f"backend: lambda\ntraffic: {{p99_ms: 300, peak_to_average: {peak}}}\n" + text)).config


def test_a_quiet_function_waits_for_its_init_at_p99(tmp_path: Path) -> None:
    # GIVEN 3008 MiB at 200 ms warm, a 240 MB model: init 0.4 s imports + 240 MB loaded at 240 MB/s (1 s) +
    # 240 MB downloaded at 85 MB/s (2.824 s) = 4,223.5 ms
    c = config(tmp_path, "lambda: {memory_mib: 3008, latency_ms: 200}\n", peak=1)
    e = model.estimate(c, "lambda", CATALOG)
    assert e.cold is not None
    # WHEN 20,000 images a month arrive, as many each hour of the day: 0.00761 a second, so the last environment
    # sits idle past 300 s before the next request with probability exp(-0.00761 x 300) = 10.2%, plus one request
    # in 7,200 s / 0.2 s
    quiet = e.cold(20_000)
    rate = 20_000 / SECONDS
    assert quiet.share == pytest.approx(math.exp(-rate * 300) + 0.2 / 7200)
    assert quiet.share == pytest.approx(0.1020, abs=1e-4)
    assert quiet.init.value == pytest.approx(400 + 1000 + 240 / 85 * 1000)
    # THEN p99 is a cold request's: 200 + 4,223.5 ms, over the 300 ms target
    assert quiet.p99_ms == pytest.approx(4423.5, abs=0.1) and not quiet.meets
    # AND one environment kept warm costs 2.9375 GiB x 2,628,000 s x $0.0000041667 = $32.17 a month
    assert quiet.provisioned == 1 and quiet.provisioned_usd == pytest.approx(2.9375 * SECONDS * 0.0000041667)
    assert not e.viable(20_000)
    # AND at 7.5M a month (2.85 a second) next to none start an environment: p99 is the warm latency
    busy = e.cold(7_500_000)
    assert busy.share < 1e-4 and busy.p99_ms == 200 and busy.meets and e.viable(7_500_000)


def test_provisioned_environments_are_the_fewest_that_keep_p99_warm(tmp_path: Path) -> None:
    # GIVEN the quiet function above (flat day, 20,000 images a month, 0.2 s warm)
    c = config(tmp_path, "lambda: {memory_mib: 3008, latency_ms: 200}\n", peak=1)
    e = model.estimate(c, "lambda", CATALOG)
    assert e.cold is not None
    rate = 20_000 / SECONDS
    # WHEN one environment is provisioned THEN a request overflows to an on-demand one only when it is busy:
    # concurrency Poisson(rate x 0.2 s), P(C >= 1) = 1 - exp(-0.001522) = 0.152%; those start cold as before,
    # at the overflow's rate: 0.152% x (exp(-rate x 0.152% x 300) + 0.2 / 7200) = 0.1516% of requests, under 1%
    overflow = 1 - math.exp(-rate * 0.2)
    one = overflow * (math.exp(-rate * overflow * 300) + 0.2 / 7200)
    assert coldstart.cold_share(1, rate=rate, duration_s=0.2, day=[1.0] * 24) == pytest.approx(one)
    assert one == pytest.approx(0.001516, abs=1e-6)
    assert e.cold(20_000).provisioned == 1
    # AND the Poisson tail by hand: 3 environments at a mean of 2 busy are all busy 1 - 5 e^-2 = 32.3% of the time
    assert coldstart.busy_at_least(3, 2.0) == pytest.approx(1 - 5 * math.exp(-2))
    # AND at 100M a month (38 a second, 3x at the busiest hour) almost no request starts an environment
    # (one in 7,200 s / 0.2 s, as environments are replaced): p99 is warm with none provisioned, where
    # sizing for every request warm at the peak would buy 34 ($1,229 a month)
    busy = model.estimate(config(tmp_path, "lambda: {memory_mib: 3008, latency_ms: 200}\n"), "lambda", CATALOG)
    assert busy.cold is not None and busy.cold(100e6).provisioned == 0
    assert busy.cold(100e6).share == pytest.approx(0.2 / 7200, rel=1e-3)


def test_provisioned_environments_pay_the_provisioned_duration_price(tmp_path: Path) -> None:
    # GIVEN 34 environments provisioned at 3008 MiB, 0.2 s per image
    c = config(tmp_path, "lambda: {memory_mib: 3008, latency_ms: 200, provisioned_concurrency: 34}\n")
    e = model.estimate(c, "lambda", CATALOG)
    # THEN invocations on them pay the provisioned duration price, $0.0000097222 instead of $0.0000166667 per
    # GB-second, for as many images as 34 environments run back to back: 34 x 2,628,000 s / 0.2 s = 446.76M
    saving = 0.2 * 2.9375 * (0.0000097222 - 0.0000166667)
    for volume, on_provisioned in ((1e6, 1e6), (1e9, 34 * SECONDS / 0.2)):
        parts = e.parts(volume)
        assert parts["lambda"] == pytest.approx(volume * (0.2 * 2.9375 * 0.0000166667 + 0.2e-6))
        assert parts["provisioned execution rate"] == pytest.approx(on_provisioned * saving)
        assert parts["provisioned concurrency"] == pytest.approx(34 * 2.9375 * SECONDS * 0.0000041667)
        assert e.monthly_usd(volume) == pytest.approx(sum(parts.values()))


def test_cost_offers_lambda_kept_warm_where_cold_starts_break_p99(tmp_path: Path) -> None:
    # GIVEN a quiet model (20,000 images a month) on Lambda without provisioned concurrency
    path = write_config(tmp_path, "quiet", "name: quiet\nmodel: {artifact: s3://bkt/m.onnx, size_mb: 240}\n"
                        "backend: lambda\ntraffic: {images_per_month: 20000, p99_ms: 300}\n"
                        "lambda: {memory_mib: 3008, latency_ms: 200}\ngpu: {images_per_second: 400}\n")
    data = report.as_json(report.build(load(path), CATALOG))
    # THEN Lambda as configured misses p99 from its cold starts, and "lambda (warm)" keeps it with one
    # environment, priced, recommended over a gpu fleet, with what to set
    assert data["backends"]["lambda"]["cold_start"]["meets_slo"] is False
    warm = data["backends"]["lambda (warm)"]
    assert warm["configured"] is False and warm["provisioned_concurrency"] == 1
    # (a few requests still find it busy and start one, under the 1% that would reach p99)
    assert 0 < warm["cold_start"]["share"] <= 0.01 and warm["cold_start"]["p99_ms"] == 200
    assert warm["parts"]["provisioned concurrency"] == pytest.approx(32.17, abs=0.01)
    assert data["recommended"] == "lambda (warm)" and data["action"] == "set lambda.provisioned_concurrency: 1"
    # AND at the volume of a busy month it is not offered: cold starts are under 1% of requests
    busy = report.as_json(report.build(load(path), CATALOG, volume=7.5e6))
    assert "lambda (warm)" not in busy["backends"] and busy["recommended"] == "lambda"


def test_no_cold_start_judgement_without_a_size_for_pipelines_or_with_snapstart(tmp_path: Path) -> None:
    unknown = load(write_config(tmp_path, "u", "name: u\nmodel: {artifact: s3://bkt/m.onnx}\nbackend: lambda\n"
                                "lambda: {latency_ms: 200}\n")).config
    assert model.estimate(unknown, "lambda", CATALOG).cold is None
    snap = config(tmp_path, "lambda: {latency_ms: 200, snapstart: true}\n")
    assert model.estimate(snap, "lambda", CATALOG).cold is None
    pipe = config(tmp_path, "service: pipeline\ninputs: {s3: [my-images]}\nscaling: {min: 0, max: 2}\n"
                            "lambda: {latency_ms: 200}\n")
    assert model.estimate(pipe, "lambda", CATALOG).cold is None
    # AND a measured Init Duration replaces the estimate
    measured = config(tmp_path, "lambda: {latency_ms: 200, init_ms: 1500}\n")
    cold = model.estimate(measured, "lambda", CATALOG).cold
    assert cold is not None and cold(1).init.value == 1500 and cold(1).init.source == "config (lambda.init_ms)"


def test_a_busy_functions_tail_is_the_normal_approximation() -> None:
    # Past a mean of 50 the Poisson tail is the normal one with continuity correction: at the mean, about a half
    assert coldstart.busy_at_least(200, 200.0) == pytest.approx(0.5 * math.erfc(-0.5 / math.sqrt(400)))
    assert coldstart.busy_at_least(250, 200.0) < 1e-3 < coldstart.busy_at_least(230, 200.0)
