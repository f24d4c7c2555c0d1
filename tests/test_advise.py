"""`crossover advise` on the local emulator: a deployed stack's metrics, seeded into its CloudWatch, recalibrate
the cost model (volume, peak-to-average, Lambda's duration, an instance's capacity) and give the advice."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crossover import advise
from crossover.backends import KINDS
from crossover.cli import main
from crossover.config import load
from crossover.cost import catalog as prices
from crossover.cost import report
from tests import ROOT
from tests.conftest import variant

HOURS_PER_MONTH = prices.load().hours_per_month
MODEL = {"Model": "", "service": "crossover"}


def deploy(name: str, backend: str) -> str:
    """A stack in the emulator named as crossover names it, holding what advise looks up: the model's function
    or its Auto Scaling group, under the logical ids crossover gives them. Returns the physical name."""
    import boto3

    if not KINDS[backend].fleet:
        logical_id = "ModelLambdaFunction5A2C1F9B" if backend == "lambda" else "ModelLambdaManagedFunctionBB470428"
        resources: dict[str, Any] = {
            "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                        "Principal": {"Service": "lambda.amazonaws.com"}}]}}},
            logical_id: {"Type": "AWS::Lambda::Function", "Properties": {
                "FunctionName": f"{name}-fn", "Runtime": "python3.13", "Handler": "index.handler",
                "Role": {"Fn::GetAtt": ["Role", "Arn"]}, "Code": {"ZipFile": "def handler(event, context): pass"}}}}
    else:
        resources = {
            "Template": {"Type": "AWS::EC2::LaunchTemplate", "Properties": {"LaunchTemplateData": {
                "ImageId": "ami-12c6146b", "InstanceType": "g4dn.xlarge"}}},
            "ModelGpuGroupASG7B86813B": {"Type": "AWS::AutoScaling::AutoScalingGroup", "Properties": {
                "AutoScalingGroupName": f"{name}-group", "MinSize": "0", "MaxSize": "2",
                "AvailabilityZones": ["us-east-1a"], "LaunchTemplate": {
                    "LaunchTemplateId": {"Ref": "Template"},
                    "Version": {"Fn::GetAtt": ["Template", "LatestVersionNumber"]}}}}}
    boto3.client("cloudformation").create_stack(StackName=f"ModelStack-{name}",
                                                TemplateBody=json.dumps({"Resources": resources}))
    return f"{name}-group" if KINDS[backend].fleet else f"{name}-fn"


def seed(namespace: str, name: str, dimensions: dict[str, str], hourly: Sequence[float],
         datum: Callable[[float], dict[str, Any]]) -> None:
    """One datum per hour, the last ``len(hourly)`` hours up to now, each 10 minutes into its hour as advise
    counts hours back from when it runs (moments later)."""
    import boto3

    now = datetime.now(UTC)
    data = [{"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
             "Timestamp": now - timedelta(hours=len(hourly) - i) + timedelta(minutes=10), **datum(value)}
            for i, value in enumerate(hourly)]
    client = boto3.client("cloudwatch")
    for start in range(0, len(data), 500):
        client.put_metric_data(Namespace=namespace, MetricData=data[start:start + 500])


def requests(model: str, hourly: Sequence[float]) -> None:
    """``hourly`` requests answered, as the serving code records them (LatencyMs, one sample each)."""
    seed("crossover", "LatencyMs", {**MODEL, "Model": model}, hourly, lambda n: {"StatisticValues": {
        "SampleCount": n, "Sum": 80.0 * n, "Minimum": 40.0, "Maximum": 200.0}, "Unit": "Milliseconds"})


def lambda_duration(function: str, hourly: Sequence[float], ms: float) -> None:
    seed("AWS/Lambda", "Duration", {"FunctionName": function}, hourly, lambda n: {"StatisticValues": {
        "SampleCount": n, "Sum": ms * n, "Minimum": ms, "Maximum": ms}, "Unit": "Milliseconds"})


def fleet(group: str, model: str, hours: int, instances: float, utilisation: float) -> None:
    seed("AWS/AutoScaling", "GroupInServiceInstances", {"AutoScalingGroupName": group}, [instances] * hours,
         lambda n: {"Value": n})
    seed("crossover", "GpuUtilization", {**MODEL, "Model": model}, [utilisation] * hours,
         lambda n: {"Value": n, "Unit": "Percent"})


def config(folder: Path, name: str, **replace: str) -> Path:
    return variant(ROOT / "models" / "resnet152.yaml", folder, name, **replace)


def observe(path: Path, days: float) -> advise.Observed:
    import boto3

    return advise.observe(boto3.client("cloudwatch"), boto3.client("cloudformation"), load(path).config,
                          days=days, now=datetime.now(UTC))


def test_the_recalibration_by_hand_on_lambda(aws: str, tmp_path: Path) -> None:
    # GIVEN two days on Lambda: 47 hours of 1,000 images and one of 5,000, each invocation billed 120 ms
    path = config(tmp_path, "advise-by-hand")
    function = deploy("advise-by-hand", "lambda")
    hourly = [1000.0] * 23 + [5000.0] + [1000.0] * 24
    requests("advise-by-hand", hourly)
    lambda_duration(function, hourly, ms=120.0)
    observed = observe(path, days=2)
    # THEN 52,000 images; 26,000 a day is 790,833 a month (730 h); the busiest hour is 5,000 against an
    # average hour of 52,000 / 48 = 1,083.3: peak-to-average 4.615; Lambda 120 ms per image
    assert observed.images == 52_000
    assert observed.images_per_month == pytest.approx(26_000 * 730 / 24)
    assert observed.peak_to_average == pytest.approx(5000 / (52_000 / 48))
    assert observed.lambda_ms == pytest.approx(120.0)
    # AND the average day: 1,000 images in 23 of its hours and (5,000 + 1,000) / 2 = 3,000 in one, a peak of
    # 3,000 / (26,000 / 24) = 2.769 times its mean: what the cost model prices
    calibrated = advise.recalibrate(load(path).config, observed)
    assert (calibrated.traffic.images_per_month, calibrated.lambda_.latency_ms) == (790_833, 120.0)
    assert calibrated.traffic.hourly is not None and sorted(calibrated.traffic.hourly) == [1000.0] * 23 + [3000.0]
    assert calibrated.traffic.peak_to_average == pytest.approx(3000 / (26_000 / 24))


def test_the_recalibration_by_hand_on_lambda_managed_instances(aws: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN two days on Lambda Managed Instances, two processes an environment, each invocation 250 ms
    path = config(tmp_path, "advise-managed", backend="lambda-managed",
                  **{"lambda-managed": "{memory_mib: 4096, per_environment_concurrency: 2}"})
    function = deploy("advise-managed", "lambda-managed")
    requests("advise-managed", [1000.0] * 48)
    lambda_duration(function, [1000.0] * 48, ms=250.0)
    observed = observe(path, days=2)
    # THEN an environment answers 2 requests at a time, each in 250 ms: 8 images/s, the figure the cost model uses
    assert (observed.backend, observed.lambda_ms, observed.capacity) == ("lambda-managed", None, pytest.approx(8.0))
    calibrated = advise.recalibrate(load(path).config, observed)
    assert calibrated.lambda_managed.images_per_second == pytest.approx(8.0)
    # AND advise prices the row with it
    code, text = run(capsys, str(path), "--days", "2", "--json")
    row = json.loads(text)["backends"]["lambda-managed"]
    assert code == 0 and row["performance"]["value"] == pytest.approx(8.0)
    assert row["performance"]["unit"] == "images/s per environment"


def test_the_recalibration_by_hand_on_a_gpu_fleet(aws: str, tmp_path: Path) -> None:
    # GIVEN two days on GPU instances: 2 in service every hour at 25% GPU utilisation, 1,000 images an hour
    path = config(tmp_path, "advise-fleet", backend="gpu")
    group = deploy("advise-fleet", "gpu")
    requests("advise-fleet", [1000.0] * 48)
    fleet(group, "advise-fleet", 48, instances=2, utilisation=25.0)
    observed = observe(path, days=2)
    # THEN 96 instance-hours served 48,000 images: 48,000 / (96 x 3,600) = 0.1389 images/s per instance,
    # which at 25% utilisation is 0.5556 images/s at full utilisation: the figure the cost model now uses
    assert observed.instance_hours == 96
    assert observed.images_per_second == pytest.approx(48_000 / (96 * 3600))
    assert observed.capacity == pytest.approx(48_000 / (96 * 3600) / 0.25)
    calibrated = advise.recalibrate(load(path).config, observed)
    assert calibrated.gpu.images_per_second == pytest.approx(0.5556, abs=1e-4)
    assert calibrated.traffic.peak_to_average == pytest.approx(1.0)


def crossover_of(path: Path) -> float:
    """Where the config's GPU fleet bought on demand becomes the cheapest (from Lambda Managed Instances, which
    take over from Lambda below it)."""
    (first,) = [x for x in report.build(load(path), prices.load()).crossovers if x.above == "gpu"][:1]
    return first.images_per_month


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["advise", *args])
    return code, capsys.readouterr().out


def test_volume_growing_through_the_crossover_says_switch(aws: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN resnet152 on Lambda whose traffic grew over a week from nothing to three times the crossover's rate
    path = config(tmp_path, "advise-growing")
    function = deploy("advise-growing", "lambda")
    per_hour_at_crossover = crossover_of(path) / HOURS_PER_MONTH
    hourly = [3 * per_hour_at_crossover * (i + 1) / 168 for i in range(168)]
    requests("advise-growing", hourly)
    assumed = report.build(load(path), prices.load()).estimates[0].performance
    assert assumed is not None
    lambda_duration(function, hourly, ms=assumed.value)  # Lambda as fast as the cost model assumed
    # WHEN advise reads the week
    code, text = run(capsys, str(path), "--days", "7", "--json")
    data = json.loads(text)
    # THEN the month projected from the week is past the crossover, and the advice is the command to move
    assert code == 0 and data["observed"]["images_per_month"] > crossover_of(path)
    assert data["recommended"] == "gpu" and data["action"] == "crossover switch advise-growing gpu"
    assert any(d.startswith("traffic.images_per_month: observed") for d in data["differences"])
    assert set(data) >= set(json.loads(_cost_json(capsys, path)))  # crossover cost --json's keys, and more


def _cost_json(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    assert main(["cost", str(path), "--json"]) == 0
    return capsys.readouterr().out


def test_flat_low_volume_says_stay_and_names_what_the_config_got_wrong(aws: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a week of a flat 1,000 images an hour on Lambda (730,000 a month; the config guessed 7.5M, peak 3)
    path = config(tmp_path, "advise-flat")
    function = deploy("advise-flat", "lambda")
    requests("advise-flat", [1000.0] * 168)
    lambda_duration(function, [1000.0] * 168, ms=150.0)
    code, text = run(capsys, str(path), "--days", "7")
    # THEN stay, with what differed from the config and the table at the observed volume
    assert code == 0
    assert "observed on lambda over 7 days: 168,000 images (730,000 a month)" in text
    assert "differs: traffic.images_per_month: observed 730,000, config says 7,500,000" in text
    assert "differs: traffic.peak_to_average: observed 1, config says 3" in text
    assert "Lambda duration per image: 150.0 ms" in text
    assert text.rstrip().endswith("advice: stay on lambda")


def test_a_gpu_fleet_is_priced_on_the_day_it_observed(aws: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN resnet152 on GPU instances at 1.5 times the crossover's volume, where GPUs are cheapest...
    volume = 1.5 * crossover_of(config(tmp_path, "reference"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "spiky").mkdir()
    flat_path = config(tmp_path / "flat", "advise-gpu-flat", backend="gpu")
    spiky_path = config(tmp_path / "spiky", "advise-gpu-spiky", backend="gpu")
    per_hour = volume / HOURS_PER_MONTH
    for name, hourly in (("advise-gpu-flat", [per_hour] * 168),
                         # ...and the same week's images with a burst of 10 average hours at the same hour every day
                         ("advise-gpu-spiky", [per_hour * 10 if i % 24 == 12 else per_hour * (168 - 70) / 161
                                               for i in range(168)])):
        group = deploy(name, "gpu")
        requests(name, hourly)
        fleet(group, name, 168, instances=2, utilisation=0.0)  # utilisation unknown: capacity stays estimated
    _, flat = run(capsys, str(flat_path), "--days", "7", "--json")
    _, spiky = run(capsys, str(spiky_path), "--days", "7", "--json")
    flat_data, spiky_data = json.loads(flat), json.loads(spiky)
    assert flat_data["observed"]["images"] == pytest.approx(spiky_data["observed"]["images"])
    assert spiky_data["observed"]["peak_to_average"] == pytest.approx(10)
    assert "traffic.peak_to_average: observed 10, config says 3" in spiky_data["differences"]
    # THEN the average day it observed is the one priced: the burst hour at 10 times the mean...
    day = spiky_data["observed"]["hourly"]
    assert sorted(day) == pytest.approx([per_hour * 98 / 161] * 23 + [per_hour * 10])
    # ...so the fleet runs the burst's instances for that hour of each day only, scaling.min (2) the rest of it
    rate = spiky_data["backends"]["gpu"]["planned_requests_per_minute"] / 60
    burst, rest = (math.ceil(per_hour * x / 3600 / rate) for x in (10, 98 / 161))
    assert burst > 2 > rest and flat_data["backends"]["gpu"]["instance_hours"] == pytest.approx(2 * 730)
    assert spiky_data["backends"]["gpu"]["instance_hours"] == pytest.approx((23 * 2 + burst) / 24 * 730, abs=0.1)
    # AND a burst of an hour a day does not make GPUs dearer than Lambda: both stay on them
    assert flat_data["action"] == "stay on gpu" and spiky_data["recommended"].startswith("gpu")


def test_a_stack_that_is_not_deployed_gets_a_clear_error(aws: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["advise", str(config(tmp_path, "advise-nowhere"))])
    assert code == 1
    assert "ModelStack-advise-nowhere is not deployed here (this account and region)" in capsys.readouterr().err
