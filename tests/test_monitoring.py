"""Every backend x service gets its alarms, wired to the model's topic, and a dashboard."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crossover.backends import KINDS
from crossover.config import BACKEND_IDS
from tests.conftest import BACKENDS, Synth, stack_of

EXPECTED = {
    ("function", "realtime"): {"LatencyP99", "ErrorRate", "{Id}Errors", "{Id}Throttles"},
    ("fleet", "realtime"): {"LatencyP99", "ErrorRate", "{Id}UnhealthyHosts", "ModelLoadFailures"},
    ("function", "pipeline"): {"QueueAge", "DeadLetters", "FailedMessages", "{Id}Errors", "{Id}Throttles"},
    ("fleet", "pipeline"): {"QueueAge", "DeadLetters", "FailedMessages", "ModelLoadFailures"},
}


def expected(table: dict[tuple[str, str], set[str]], backend: str, service: str) -> set[str]:
    """The alarm ids ``table`` names for ``backend``, a backend's own ones under its id (Lambda, Gpu, ...)."""
    kind = "fleet" if KINDS[backend].fleet else "function"
    return {name.replace("{Id}", BACKEND_IDS[backend]) for name in table[(kind, service)]}


# What says the release is bad (and so rolls it back); backlog and dead letters only notify.
ROLLBACK = {
    ("function", "realtime"): {"LatencyP99", "ErrorRate", "{Id}Errors"},
    ("fleet", "realtime"): {"LatencyP99", "ErrorRate", "{Id}UnhealthyHosts", "ModelLoadFailures"},
    ("function", "pipeline"): {"FailedMessages", "{Id}Errors"},
    ("fleet", "pipeline"): {"FailedMessages", "ModelLoadFailures"},
}


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k.removeprefix("ModelMonitoring")[: -8]: v["Properties"] for k, v in template["Resources"].items()
            if v["Type"] == "AWS::CloudWatch::Alarm" and k.startswith("ModelMonitoring")}


@pytest.mark.parametrize("service", ["realtime", "pipeline"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_and_service_gets_its_alarms(synth: Synth, backend: str, service: str) -> None:
    template = synth.raw[stack_of("resnet152", backend, service)]
    found = alarms(template)
    volume = {"VolumeBelowBand", "VolumeAboveBand"} & set(found)  # which edges exist: test_volume_alarms_...
    assert set(found) - volume == expected(EXPECTED, backend, service) | (
        {"GpuUtilization"} if backend == "gpu" else set())
    (topic,) = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::SNS::Topic"
                and k.startswith("ModelMonitoring")]
    for props in found.values():
        assert props["AlarmActions"] == [{"Ref": topic}] and props["OKActions"] == [{"Ref": topic}]
    assert any(v["Type"] == "AWS::CloudWatch::Dashboard" for v in template["Resources"].values())


def test_latency_alarm_follows_the_p99_target(synth: Synth) -> None:
    latency = alarms(synth.raw[stack_of("resnet152", "gpu")])["LatencyP99"]
    assert latency["Threshold"] == 0.3 and latency["ExtendedStatistic"] == "p99"
    assert latency["MetricName"] == "TargetResponseTime"


def test_model_load_alarm_watches_the_serving_metric(synth: Synth) -> None:
    loads = alarms(synth.raw[stack_of("resnet152", "cpu", "pipeline")])["ModelLoadFailures"]
    assert (loads["Namespace"], loads["MetricName"]) == ("crossover", "ModelLoadFailures")
    assert {d["Name"]: d["Value"] for d in loads["Dimensions"]} == {"Model": "resnet152-pipe-cpu",
                                                                    "service": "crossover"}


@pytest.mark.parametrize("service", ["realtime", "pipeline"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_deployments_roll_back_on_the_release_alarms(synth: Synth, backend: str, service: str) -> None:
    stack = stack_of("resnet152", backend, service)
    template = synth.raw[stack]
    kind = "fleet" if KINDS[backend].fleet else "function"
    names = {k.removeprefix("ModelMonitoring")[: -8]: v["Properties"]["AlarmName"] for k, v in
             template["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm" and k.startswith("ModelMonitoring")}
    assert set(names) >= expected(EXPECTED, backend, service)
    assert all(name == f"{stack}-{id}" for id, name in names.items())  # fixed: found by name at deploy
    # CloudFormation's rollback triggers (every backend) come from this output; at most 5 are allowed.
    output = template["Outputs"]["RollbackAlarms"]["Value"].split(",")
    assert sorted(output) == sorted(names[id] for id in expected(ROLLBACK, backend, service)) and len(output) <= 5
    groups = [v["Properties"] for v in template["Resources"].values()
              if v["Type"] == "AWS::CodeDeploy::DeploymentGroup"]
    if kind == "fleet":
        assert groups == []  # the stack's rolling update, rolled back by the triggers
        (group,) = [v for v in template["Resources"].values() if v["Type"] == "AWS::AutoScaling::AutoScalingGroup"]
        assert group["UpdatePolicy"]["AutoScalingRollingUpdate"]["WaitOnResourceSignals"] is True
        return
    (group,) = groups
    alarm_ids = {k for k, v in template["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"
                 and v["Properties"]["AlarmName"] in output}
    assert {a["Name"]["Ref"] for a in group["AlarmConfiguration"]["Alarms"]} == alarm_ids
    assert group["AlarmConfiguration"]["Enabled"] is True
    assert set(group["AutoRollbackConfiguration"]["Events"]) == {
        "DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_REQUEST", "DEPLOYMENT_STOP_ON_ALARM"}
    # From rollout.lambda_traffic: the default canary; the pipeline variants choose a linear shift.
    assert group["DeploymentConfigName"] == {"realtime": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
                                             "pipeline": "CodeDeployDefault.LambdaLinear10PercentEvery1Minute"}[service]
    # The alias is what the deployment moves, what serves, and what the Lambda alarms watch.
    (alias_id,) = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::Lambda::Alias"]
    alias = template["Resources"][alias_id]
    assert alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"] in template["Resources"]
    if service == "realtime":
        (targets,) = [v["Properties"] for v in template["Resources"].values()
                      if v["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup"]
        assert targets["Targets"] == [{"Id": {"Ref": alias_id}}]
    else:
        (mapping,) = [v["Properties"] for v in template["Resources"].values()
                      if v["Type"] == "AWS::Lambda::EventSourceMapping"]
        function, qualifier = mapping["FunctionName"]["Fn::Join"][1]  # <name, from the alias ARN>:live
        assert alias_id in json.dumps(function) and qualifier == ":live"
    errors = next(v["Properties"] for v in template["Resources"].values()
                  if v["Type"] == "AWS::CloudWatch::Alarm"
                  and v["Properties"]["AlarmName"].endswith(f"{BACKEND_IDS[backend]}Errors"))
    assert {d["Name"] for d in errors["Dimensions"]} == {"FunctionName", "Resource"}


def test_serving_publishes_the_metrics_the_alarms_watch(synth: Synth, aws: str) -> None:
    """The server and worker publish to CloudWatch (here: the emulator on loopback) under the very
    namespace and dimensions the alarms read, whatever the backend."""
    import boto3

    from crossover_serving.metrics import MetricUnit, Recorder, cloudwatch_publisher

    client = boto3.client("cloudwatch", endpoint_url=aws, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    recorder = Recorder("m1", publish=cloudwatch_publisher(client), interval_s=3600)
    recorder.add("ModelLoadFailures", MetricUnit.Count, 1)
    for ms in range(1, 400):  # more distinct values than one datum holds
        recorder.add("LatencyMs", MetricUnit.Milliseconds, ms)
    recorder.close()
    alarm = alarms(synth.raw[stack_of("resnet152", "cpu", "pipeline")])["ModelLoadFailures"]
    dimensions = [{**d, "Value": "m1"} if d["Name"] == "Model" else d for d in alarm["Dimensions"]]

    def total(name: str) -> tuple[float, float]:
        (point,) = client.get_metric_statistics(
            Namespace=alarm["Namespace"], MetricName=name, Dimensions=dimensions, Period=60,
            StartTime=datetime.now(UTC) - timedelta(minutes=5), EndTime=datetime.now(UTC) + timedelta(minutes=1),
            Statistics=["Sum", "SampleCount"])["Datapoints"]
        return point["Sum"], point["SampleCount"]

    assert total("ModelLoadFailures") == (1, 1)
    assert total("LatencyMs") == (sum(range(1, 400)), 399)


def test_gpus_are_sampled_where_nvidia_smi_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   synth: Synth) -> None:
    """The gpu images have nvidia-smi and no CloudWatch agent: crossover_serving/ samples it, under the metric the
    gpu stacks' GpuUtilization alarm reads. (A stand-in nvidia-smi here: there is no GPU.)"""
    from crossover_serving.metrics import MetricUnit, Recorder

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '87, 1234'\necho '91, 2048'\n")  # two GPUs, as the real query prints
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    published: list[dict[str, Any]] = []
    recorder = Recorder("m1", publish=published.extend, interval_s=3600)
    assert recorder.watch_gpus(every_s=0.05)
    time.sleep(0.3)
    recorder.add("LatencyMs", MetricUnit.Milliseconds, 1)
    recorder.close()
    datum = next(d for d in published if d["MetricName"] == "GpuUtilization")
    assert set(datum["Values"]) == {87.0, 91.0} and datum["Unit"] == "Percent"
    alarm = alarms(synth.raw[stack_of("resnet152", "gpu")])["GpuUtilization"]
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Threshold"]) == ("GpuUtilization", "Average", 90)
    assert {d["Name"] for d in alarm["Dimensions"]} == {d["Name"] for d in datum["Dimensions"]}
    assert not Recorder("m2").watch_gpus()  # nothing to publish to (no CROSSOVER_METRICS): no sampling


def test_a_metrics_outage_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    from crossover_serving.metrics import MetricUnit, Recorder

    def down(_data: list[dict[str, Any]]) -> None:
        raise ConnectionError("endpoint unreachable")

    recorder = Recorder("m1", publish=down, interval_s=3600)
    recorder.add("LatencyMs", MetricUnit.Milliseconds, 12.5)
    recorder.close()
    assert "could not publish 1 metric(s), dropped: endpoint unreachable" in capsys.readouterr().err


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_rollback_error_rate_counts_server_faults_not_the_5xx_a_client_can_cause(synth: Synth,
                                                                                     backend: str) -> None:
    # The 502/503/504 crossover_serving/ sends on purpose (an origin the request named failed, overload, a missed
    # deadline) are target 5xx: counting them would let any client roll a deployment back.
    error_rate = alarms(synth.raw[stack_of("resnet152", backend)])["ErrorRate"]
    counted = {m["MetricStat"]["Metric"]["MetricName"] for m in error_rate["Metrics"] if "MetricStat" in m}
    assert counted == {"ServerFaults", "HTTPCode_ELB_5XX_Count", "RequestCount"}
    (expression,) = [m["Expression"] for m in error_rate["Metrics"] if "Expression" in m]
    assert "FILL(faults, 0)" in expression and "FILL(elb5xx, 0)" in expression  # a missing series is zero


@pytest.mark.parametrize("service", ["realtime", "pipeline"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_volume_alarms_sit_at_the_band_edges_the_cost_model_computes(synth: Synth, variants_dir: Path,
                                                                     backend: str, service: str) -> None:
    from crossover.config import load
    from crossover.cost import catalog
    from crossover.cost.band import band

    stack = stack_of("resnet152", backend, service)
    template = synth.raw[stack]
    edges = band(load(variants_dir / f"{stack.removeprefix('ModelStack-')}.yaml").config, catalog.load())
    found = alarms(template)
    if edges is None:  # never the one to run: eia is retired; resnet152 on host CPUs misses its p99 (realtime)
        # or costs far more than the cheapest (inferentia's CPUs, pipeline; Lambda Managed Instances' CPUs, whose
        # three instances cost more than Lambda at low volumes and a GPU at high ones)
        assert (backend, service) in {("eia", "realtime"), ("eia", "pipeline"), ("cpu", "realtime"),
                                      ("inferentia", "realtime"), ("inferentia", "pipeline"),
                                      ("lambda-managed", "realtime"), ("lambda-managed", "pipeline")}
        assert not {"VolumeBelowBand", "VolumeAboveBand"} & set(found)
        return
    rollback = template["Outputs"]["RollbackAlarms"]["Value"]
    for id, edge, advice, operator, missing in (
            ("VolumeBelowBand", edges.low, edges.below, "LessThanThreshold", "breaching"),  # no datapoint: no traffic
            ("VolumeAboveBand", edges.high, edges.above, "GreaterThanThreshold", "notBreaching")):
        if edge is None:
            assert id not in found
            continue
        alarm = found[id]
        assert alarm["Threshold"] == round(edge) and alarm["ComparisonOperator"] == operator
        assert alarm["TreatMissingData"] == missing
        assert advice is not None and alarm["AlarmDescription"].endswith(advice) and id not in rollback
        assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (5, 3)
        (expression,) = [m for m in alarm["Metrics"] if "Expression" in m]
        assert expression["Expression"] == "FILL(count, 0) * 30.4167"  # 730 hours / 24: a day to a month
        (count,) = [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]
        assert count["Period"] == 86400 and count["Stat"] == "Sum" and count["Metric"]["MetricName"] == (
            "RequestCount" if service == "realtime" else "NumberOfMessagesSent")
    # resnet152 on lambda: the band ends past the crossovers out of lambda (within 10% of the cheapest: lambda-managed's
    # sliver of cheaper volumes below the gpu one stays in it), and says how to move; it starts where over 1% of
    # requests would start an environment (each hour h of the day at w_h times the average rate:
    # the mean of w_h x (exp(-rate x w_h x 300 s) + 0.281 s / 7,200 s) is 1%), below which cold starts are p99
    if (backend, service) == ("lambda", "realtime"):
        import math

        from crossover.cost import model, report

        above = found["VolumeAboveBand"]
        (crossing, *_) = report.build(load(variants_dir / f"{stack.removeprefix('ModelStack-')}.yaml"),
                                      catalog.load()).crossovers
        assert crossing.below == "lambda" and above["Threshold"] > crossing.images_per_month  # past the crossover
        below = found["VolumeBelowBand"]
        warm_s = 2 * 11.51 / (100 * 3008 / 1769 * 0.5) + 0.010  # 23.02 GFLOP on 0.85 of an AVX2 core, + 10 ms
        rate = below["Threshold"] / (730 * 3600)
        share = sum(w * (math.exp(-rate * w * 300) + warm_s / 7200) for w in model.day(3)) / 24
        assert share == pytest.approx(0.01, rel=1e-4)
        assert below["AlarmDescription"].endswith("set lambda.provisioned_concurrency: 1 (+32.17 USD a month)")
        assert above["AlarmDescription"].endswith("gpu is cheaper there: crossover switch resnet152 gpu")
