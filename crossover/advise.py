"""`crossover advise`: the cost model recalibrated with what the deployed model's own metrics observed.

`crossover cost` prices the config's guesses. advise reads the last ``days`` of CloudWatch for the deployed
stack and replaces them with what happened:

- ``traffic.images_per_month``: the images served in the window, projected to a month;
- ``traffic.hourly``: the window's average day, hour by hour (UTC), which a realtime fleet's cost follows; its
  peak over its mean is the ``traffic.peak_to_average`` priced (the busiest single hour over the window's
  average hour is reported beside it);
- on lambda, ``lambda.latency_ms``: the function's mean billed Duration per invocation;
- on lambda-managed, ``lambda-managed.images_per_second``: one execution environment's capacity, its processes
  (``per_environment_concurrency``) each answering one invocation per mean Duration;
- on a fleet, ``<backend>.images_per_second``: images per instance-second in service, divided by the
  instances' mean utilisation (GPU utilisation on gpu, CPU elsewhere): one instance's capacity. Below
  ``MIN_UTILISATION`` percent that extrapolation says nothing, and the config's figure stays.

Images are the model's own metrics (namespace ``crossover``, dimension ``Model``), the same on every backend:
``LatencyMs`` samples (one per answered request) on a realtime service, ``PipelineResults`` and
``PipelineFailures`` on a pipeline. Lambda's init duration is not a CloudWatch metric (it is in the REPORT log
lines), so it is not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crossover.backends import KINDS
from crossover.config import BACKEND_IDS, ModelConfig
from crossover.config.schema import field_of
from crossover.errors import UserError
from crossover_serving.names import NAMESPACE

HOUR = 3600
MIN_UTILISATION = 5.0  # percent: below it, capacity extrapolated from utilisation is noise
NOTABLE = 1.25  # an observation this many times off the config's assumption (either way) is called out


@dataclass(frozen=True)
class Observed:
    days: float
    backend: str  # the deployed backend the figures are of
    images: float
    images_per_month: float
    busiest_hour: float
    peak_to_average: float
    hourly: tuple[float, ...]  # the average day: images in each hour of the day (UTC), over the window's days
    p99_ms: float | None = None  # realtime: the model's p99 over the window
    lambda_ms: float | None = None  # lambda: mean billed duration per invocation
    instance_hours: float | None = None  # a fleet: hours in service, summed over instances
    images_per_second: float | None = None  # a fleet: per instance in service, as served
    utilisation: float | None = None  # a fleet: mean percent (GPU on gpu, CPU elsewhere)
    capacity: float | None = None  # images/s of one instance (a fleet) or environment (lambda-managed), fully used


def deployed(cloudformation: Any, config: ModelConfig) -> tuple[str, str]:
    """(backend, physical id of what serves it: the function name or the Auto Scaling group name) of the
    deployed stack: the config's backend if the stack runs it, else the one it runs."""
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=config.stack_name)
        resources = [r for page in pages for r in page["StackResourceSummaries"]]
    except cloudformation.exceptions.ClientError as e:
        if "does not exist" in str(e):
            raise UserError(f"{config.stack_name} is not deployed here (this account and region): nothing to "
                            "observe (deploy it, or price the config's guesses with crossover cost)") from None
        raise
    found = {}
    for kind, id in BACKEND_IDS.items():
        wanted = ("AWS::AutoScaling::AutoScalingGroup", f"Model{id}Group") if KINDS[kind].fleet else (
            "AWS::Lambda::Function", f"Model{id}Function")
        for r in resources:
            if r["ResourceType"] == wanted[0] and r["LogicalResourceId"].startswith(wanted[1]):
                found[kind] = r["PhysicalResourceId"]
    if not found:
        raise UserError(f"{config.stack_name} runs no crossover backend")
    backend = config.backend if config.backend in found else next(iter(found))
    return backend, found[backend]


def _query(id: str, namespace: str, name: str, dimensions: dict[str, str], stat: str, period: int) -> dict[str, Any]:
    return {"Id": id, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": name,
                   "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]},
        "Period": period, "Stat": stat}}


def _series(cloudwatch: Any, queries: list[dict[str, Any]], start: datetime, end: datetime
            ) -> dict[str, dict[datetime, float]]:
    """Each query's values by period (a period with no datapoint is absent: nothing happened then)."""
    values: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries}
    for page in cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries, StartTime=start, EndTime=end):
        for result in page["MetricDataResults"]:
            values[result["Id"]] |= {at: v for at, v in zip(result["Timestamps"], result["Values"], strict=True)
                                     if v is not None}
    return values


def observe(cloudwatch: Any, cloudformation: Any, config: ModelConfig, *, days: float, now: datetime) -> Observed:
    backend, physical = deployed(cloudformation, config)
    start, end = now - timedelta(days=days), now
    model = {"Model": config.name, "service": NAMESPACE}
    queries = [_query("latency", NAMESPACE, "LatencyMs", model, "SampleCount", HOUR)]
    if config.service == "pipeline":
        queries = [_query("results", NAMESPACE, "PipelineResults", model, "Sum", HOUR),
                   _query("failures", NAMESPACE, "PipelineFailures", model, "Sum", HOUR)]
    if not KINDS[backend].fleet:
        function = {"FunctionName": physical}
        queries += [_query("duration", "AWS/Lambda", "Duration", function, "Sum", HOUR),
                    _query("invocations", "AWS/Lambda", "Duration", function, "SampleCount", HOUR)]
    else:
        group = {"AutoScalingGroupName": physical}
        queries.append(_query("instances", "AWS/AutoScaling", "GroupInServiceInstances", group, "Average", HOUR))
        queries.append(_query("utilisation", NAMESPACE, "GpuUtilization", model, "Average", HOUR) if backend == "gpu"
                       else _query("utilisation", "AWS/EC2", "CPUUtilization", group, "Average", HOUR))
    got = _series(cloudwatch, queries, start, end)
    if config.service == "realtime":
        by_hour = got["latency"]
    else:
        by_hour = {at: got["results"].get(at, 0.0) + got["failures"].get(at, 0.0)
                   for at in got["results"].keys() | got["failures"].keys()}
    hourly = list(by_hour.values())
    images = sum(hourly)
    if images == 0:
        raise UserError(f"{config.stack_name} served no images in the last {days:g} days: nothing observed to "
                        "advise on (crossover cost prices the config's guesses)")
    hours = days * 24
    busiest = max(hourly)
    observed: dict[str, Any] = {
        "days": days, "backend": backend, "images": images, "images_per_month": images / days * _days_per_month(),
        "busiest_hour": busiest, "peak_to_average": busiest / (images / hours),
        "hourly": tuple(sum(v for at, v in by_hour.items() if at.hour == h) / days for h in range(24)),
        "p99_ms": _p99(cloudwatch, model, start, end) if config.service == "realtime" else None}
    if backend == "lambda":
        calls = sum(got["invocations"].values())
        observed["lambda_ms"] = sum(got["duration"].values()) / calls if calls else None
    elif backend == "lambda-managed":  # images over the seconds its processes were busy, each one at a time
        busy_s = sum(got["duration"].values()) / 1000
        observed["capacity"] = config.lambda_managed.per_environment_concurrency * images / busy_s if busy_s else None
    else:
        instance_hours = sum(got["instances"].values())
        busy = list(got["utilisation"].values())
        utilisation = sum(busy) / len(busy) if busy else None
        per_instance = images / (instance_hours * HOUR) if instance_hours else None
        observed |= {"instance_hours": instance_hours, "images_per_second": per_instance,
                     "utilisation": utilisation,
                     "capacity": per_instance / (utilisation / 100) if per_instance and utilisation
                     and utilisation >= MIN_UTILISATION else None}
    return Observed(**observed)


def _days_per_month() -> float:
    from crossover.cost import catalog

    return catalog.load().hours_per_month / 24


def _p99(cloudwatch: Any, model: dict[str, str], start: datetime, end: datetime) -> float | None:
    """The model's p99 over the whole window (one period); None where CloudWatch (or an emulator) has none."""
    period = max(60, math.ceil((end - start).total_seconds() / 60) * 60)
    try:
        values = _series(cloudwatch, [_query("p99", NAMESPACE, "LatencyMs", model, "p99", period)], start, end)
    except cloudwatch.exceptions.ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] < 500:
            raise
        return None  # the local emulator computes no percentiles: it fails the query
    return max(values["p99"].values()) if values["p99"] else None


def recalibrate(config: ModelConfig, observed: Observed) -> ModelConfig:
    """``config`` with its guesses replaced by what was observed (see the module's docstring)."""
    day = list(observed.hourly)
    update: dict[str, Any] = {"traffic": config.traffic.model_copy(update={
        "images_per_month": max(1, round(observed.images_per_month)), "hourly": day,
        "peak_to_average": max(day) / (sum(day) / len(day))})}
    if observed.lambda_ms is not None:
        update["lambda_"] = config.lambda_.model_copy(update={"latency_ms": observed.lambda_ms})
    if observed.capacity is not None:
        section = config.section(observed.backend)
        update[field_of(observed.backend)] = section.model_copy(update={"images_per_second": observed.capacity})
    return config.model_copy(update=update)


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def differences(config: ModelConfig, observed: Observed, assumed_performance: float | None) -> list[str]:
    """What the observation says that the config (or the cost model's figure for the backend) did not, where
    the two differ by more than ``NOTABLE`` times either way."""
    found = []

    def compare(what: str, seen: float | None, assumed: float | None, unit: str = "") -> None:
        if seen is not None and assumed and not 1 / NOTABLE <= seen / assumed <= NOTABLE:
            source = "config says" if what.startswith("traffic") else "the cost model assumed"
            found.append(f"{what}: observed {_figure(seen)}{unit}, {source} {_figure(assumed)}{unit}")

    compare("traffic.images_per_month", observed.images_per_month, config.traffic.images_per_month)
    compare("traffic.peak_to_average", observed.peak_to_average, config.traffic.peak_to_average)
    if observed.lambda_ms is not None:
        compare("lambda milliseconds per image", observed.lambda_ms, assumed_performance, " ms")
    if observed.capacity is not None:
        per = "instance" if KINDS[observed.backend].fleet else "environment"
        compare(f"{observed.backend} images/s per {per}", observed.capacity, assumed_performance)
    if observed.p99_ms is not None and observed.p99_ms > config.traffic.p99_ms:
        found.append(f"traffic.p99_ms: observed p99 {observed.p99_ms:,.0f} ms, above the {config.traffic.p99_ms} ms "
                     "target")
    return found
