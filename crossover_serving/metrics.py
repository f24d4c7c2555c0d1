"""Metrics of the instance processes (server and worker), published with CloudWatch PutMetricData.

Lambda writes its metrics as embedded-metric-format lines (powertools Metrics), which CloudWatch
extracts from the function's logs. An instance has no such path without an agent, so the server and
the worker publish directly: values are collected as they happen and sent every ``interval_s`` as
value/count lists, which keep percentiles (the p99 a dashboard shows is the p99 of the requests).
Both paths use the same namespace and dimensions, so a model's metrics and alarms do not change when
its backend does. A failed publish is reported on stderr and that interval is dropped: metrics never
block or grow the serving process without bound.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from crossover_serving.names import NAMESPACE, SERVICE

__all__ = ["NAMESPACE", "SERVICE", "MetricUnit", "Recorder"]
_VALUES_PER_DATUM = 150  # PutMetricData's limit on distinct values in one datum
_DATA_PER_CALL = 20  # datums per PutMetricData call, well inside the request size limit
# Also published with a Backend dimension: during a canary two backends serve one model, and the canary's
# rollback alarm must count its own faults alone (crossover.constructs.monitoring.watch_canary).
PER_BACKEND = ("ServerFaults",)

Publish = Callable[[list[dict[str, Any]]], None]


def cloudwatch_publisher(client: Any = None) -> Publish:
    """A publisher that sends to CloudWatch (a boto3 client, created on first use when not given)."""
    state: dict[str, Any] = {"client": client}

    def publish(data: list[dict[str, Any]]) -> None:
        if state["client"] is None:
            import boto3

            state["client"] = boto3.client("cloudwatch")
        for start in range(0, len(data), _DATA_PER_CALL):
            state["client"].put_metric_data(Namespace=NAMESPACE, MetricData=data[start:start + _DATA_PER_CALL])

    return publish


class Recorder:
    """Thread-safe collection of metric values, published every ``interval_s`` and on :meth:`close`.

    ``publish`` None reads CROSSOVER_METRICS: ``cloudwatch`` (what crossover/ami/bootstrap.sh sets on instances)
    publishes to CloudWatch; anything else (a laptop, a test) records nothing.
    """

    def __init__(self, model: str, *, backend: str | None = None, publish: Publish | None = None,
                 interval_s: float = 60.0) -> None:
        if publish is None and os.environ.get("CROSSOVER_METRICS") == "cloudwatch":
            publish = cloudwatch_publisher()
        self._publish = publish
        self._dimensions = [{"Name": "Model", "Value": model}, {"Name": "service", "Value": SERVICE}]
        self._backend = backend
        self._values: dict[tuple[str, str], Counter[float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval_s = interval_s
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self._sampler: threading.Thread | None = None
        if publish is not None:
            self._thread.start()

    def add(self, name: str, unit: MetricUnit, value: float) -> None:
        if self._publish is None:
            return
        with self._lock:
            # Three significant digits bound the distinct values per interval (and the request size).
            self._values.setdefault((name, unit.value), Counter())[float(f"{value:.3g}")] += 1

    def flush(self) -> None:
        if self._publish is None:
            return
        with self._lock:
            values, self._values = self._values, {}
        data = []
        for (name, unit), counts in values.items():
            items = sorted(counts.items())
            for start in range(0, len(items), _VALUES_PER_DATUM):
                chunk = items[start:start + _VALUES_PER_DATUM]
                datum = {"MetricName": name, "Dimensions": self._dimensions, "Unit": unit,
                         "Values": [v for v, _ in chunk], "Counts": [float(n) for _, n in chunk]}
                data.append(datum)
                if name in PER_BACKEND and self._backend is not None:
                    data.append({**datum, "Dimensions": [*self._dimensions,
                                                         {"Name": "Backend", "Value": self._backend}]})
        if not data:
            return
        try:
            self._publish(data)
        except Exception as e:  # a metrics outage must not take serving down with it
            print(f"metrics: could not publish {len(data)} metric(s), dropped: {e}", file=sys.stderr, flush=True)

    def watch_gpus(self, every_s: float = 5.0) -> bool:
        """Sample each GPU's utilisation and memory with nvidia-smi (which the GPU images ship; there
        is no CloudWatch agent) every ``every_s`` until :meth:`close`. False where there is no GPU."""
        command = shutil.which("nvidia-smi")
        if self._publish is None or command is None:
            return False

        def sample() -> None:
            while not self._stop.wait(every_s):
                try:
                    output = subprocess.run([command, "--query-gpu=utilization.gpu,memory.used",
                                             "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                            timeout=10, check=True).stdout
                    for line in output.splitlines():
                        utilisation, memory = (float(field) for field in line.split(","))
                        self.add("GpuUtilization", MetricUnit.Percent, utilisation)
                        self.add("GpuMemoryUsed", MetricUnit.Megabytes, memory)
                except (OSError, subprocess.SubprocessError, ValueError) as e:
                    print(f"metrics: nvidia-smi failed, GPU not sampled: {e}", file=sys.stderr, flush=True)

        self._sampler = threading.Thread(target=sample, name="gpu-metrics", daemon=True)
        self._sampler.start()
        return True

    def close(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._sampler):
            if thread is not None and thread.is_alive():
                thread.join()
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()
