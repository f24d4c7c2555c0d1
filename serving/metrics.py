"""CloudWatch embedded-metric-format lines (powertools Metrics) for the instance processes.

Lambda flushes per invocation; a long-running server adds values as they happen and flushes on a
timer, so one line covers many requests. The CloudWatch agent (or the Lambda runtime) ships stdout.
"""

from __future__ import annotations

import threading

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

__all__ = ["MetricUnit", "Recorder"]


class Recorder:
    """Thread-safe add + periodic flush around powertools Metrics (which is not thread-safe)."""

    def __init__(self, model: str, *, interval_s: float = 10.0) -> None:
        self._metrics = Metrics(namespace="crossover", service="crossover-server")
        self._metrics.set_default_dimensions(Model=model)
        self._lock = threading.Lock()
        self._pending = False
        self._stop = threading.Event()
        self._interval_s = interval_s
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self._thread.start()

    def add(self, name: str, unit: MetricUnit, value: float) -> None:
        with self._lock:
            self._metrics.add_metric(name=name, unit=unit, value=value)
            self._pending = True

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._metrics.flush_metrics()
                self._pending = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()
