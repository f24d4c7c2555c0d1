"""The options every ``metric_*`` helper takes, as CDK's own ``metric*`` methods do (``period``, ``statistic``,
``label``, ...), and what crossover_serving/ publishes under the same dimensions in Lambda and on instances."""

from __future__ import annotations

from typing import TypedDict, Unpack

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from crossover_serving.names import NAMESPACE, SERVICE

MINUTE = Duration.minutes(1)


class MetricOptions(TypedDict, total=False):
    period: Duration
    statistic: str
    label: str
    color: str
    unit: cloudwatch.Unit
    account: str
    region: str


def defaults(options: MetricOptions, **given: Unpack[MetricOptions]) -> MetricOptions:
    """``options`` over a helper's defaults (one minute, unless the helper says more)."""
    merged: MetricOptions = {"period": MINUTE, **given, **options}
    return merged


def serving_metric(model: str, name: str, *, backend: str | None = None,
                   **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
    """``name`` as crossover_serving/ publishes it for ``model`` (``backend``: the copy published per backend);
    Sum unless ``statistic`` says otherwise."""
    dimensions = {"Model": model, "service": SERVICE, **({"Backend": backend} if backend else {})}
    return cloudwatch.Metric(namespace=NAMESPACE, metric_name=name, dimensions_map=dimensions,
                             **defaults(options, statistic="Sum"))
