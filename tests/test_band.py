"""The band in which a model's backend is the one to run: hand-checked edges, margin and advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossover.config import load
from crossover.cost import catalog as catalog_module
from crossover.cost.band import band
from tests.conftest import write_config

CATALOG = catalog_module.load()
SECONDS = 730 * 3600
# The load balancer, the whole NAT gateway and its address, the stack's dashboard, alarms and metrics: $59.525
FIXED = 0.0225 * 730 + (0.045 + 0.005) * 730 + 3 + 12 * 0.10 + 8 * 0.30
ACCESS_LOGS = 0.5e-6 * 3 * 0.023  # per request: 0.5 KB kept 3 months in S3
# 1 s at 1 GiB, a request, LCUs, 5% of requests traced, 1.5 KB of logs ingested and kept a month, access logs
LAMBDA_PER_IMAGE = 1.0 * 1 * 0.0000166667 + 0.2e-6 + 150e-6 / 0.4 * 0.008 + 0.05 * 5e-6 + 1.5e-6 * 0.53 + ACCESS_LOGS
TRACED_SECONDS = 0.95 * SECONDS * 5e-6  # the first request each second traced, past the 5%: $12.483 a month
# c7i.large, its 30 GiB, its metric calls, its detailed monitoring (7 metrics)
CPU_INSTANCE = 0.08925 * 730 + 30 * 0.08 + 60 * 730 * 0.01 / 1000 + 7 * 0.30
CPU_PER_IMAGE = 150e-6 / 1.0 * 0.008 + ACCESS_LOGS


def config(tmp_path: Path, backend: str):  # type: ignore[no-untyped-def]
    # Only lambda and cpu have figures (no gmacs): 1 s on Lambda (within a 2 s p99), 1000 img/s on a c7i.large
    return load(write_config(tmp_path, "m", f"name: m\nbackend: {backend}\nmodel: {{artifact: s3://bkt/m.onnx}}\n"
                                            "traffic: {p99_ms: 2000}\nlambda: {memory_mib: 1024, latency_ms: 1000}\n"
                                            "cpu: {images_per_second: 1000}\n")).config


def test_lambdas_band_ends_where_it_costs_10_percent_more_than_one_cpu_instance(tmp_path: Path) -> None:
    # Past 2,628,000 images (one a second) Lambda is FIXED + T + l V, T the traces of each second's first request:
    # FIXED + T + l V <= 1.1 (FIXED + CPU_INSTANCE + c V)  =>  V <= (0.1 FIXED + 1.1 CPU_INSTANCE - T) / (l - 1.1 c)
    edges = band(config(tmp_path, "lambda"), CATALOG)
    assert edges is not None and edges.low is None and edges.below is None
    high = (0.1 * FIXED + 1.1 * CPU_INSTANCE - TRACED_SECONDS) / (LAMBDA_PER_IMAGE - 1.1 * CPU_PER_IMAGE)
    assert edges.high == pytest.approx(high, rel=1e-5)
    assert edges.above == "cpu is cheaper there: crossover switch m cpu"


def test_a_fleets_band_starts_where_lambda_stops_being_10_percent_cheaper_and_ends_at_scaling_max(
        tmp_path: Path) -> None:
    edges = band(config(tmp_path, "cpu"), CATALOG)
    assert edges is not None
    # Below one image a second every request is traced: Lambda is FIXED + (l + 0.95 x $5/M) V there, so
    # FIXED + CPU_INSTANCE + c V <= 1.1 (FIXED + l' V)  =>  V >= (CPU_INSTANCE - 0.1 FIXED) / (1.1 l' - c)
    all_traced = LAMBDA_PER_IMAGE + 0.95 * 5e-6
    low = (CPU_INSTANCE - 0.1 * FIXED) / (1.1 * all_traced - CPU_PER_IMAGE)  # 2,295,0xx, under 2,628,000
    assert edges.low == pytest.approx(low, rel=1e-5)
    assert edges.below == "lambda is cheaper there: crossover switch m lambda"
    # 80% of 1000 img/s carries 800 x 2,628,000 / 3 a month each; 4 (scaling.max) carry 2.8e9, and Lambda's
    # 100 reserved executions stop at 100 x 2,628,000 / 3 = 8.76e7: past the edge nothing fits
    assert edges.high == pytest.approx(4 * 800 * SECONDS / 3, rel=1e-5)
    assert edges.above == ("no backend carries it within the config's limits (needs 5 instances; scaling.max is 4: "
                           "raise scaling.max to 5)")


def test_a_backend_that_is_never_the_one_to_run_has_no_band(tmp_path: Path) -> None:
    assert band(config(tmp_path, "eia"), CATALOG) is None  # retired: never recommended
