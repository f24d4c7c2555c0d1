"""Every backend x service gets its alarms, wired to the model's topic, and a dashboard."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import BACKENDS, Synth, stack_of

EXPECTED = {
    ("lambda", "realtime"): {"LatencyP99", "ErrorRate", "LambdaErrors", "LambdaThrottles"},
    ("fleet", "realtime"): {"LatencyP99", "ErrorRate", "UnhealthyHosts", "ModelLoadFailures"},
    ("lambda", "pipeline"): {"QueueAge", "DeadLetters", "LambdaErrors", "LambdaThrottles"},
    ("fleet", "pipeline"): {"QueueAge", "DeadLetters", "ModelLoadFailures"},
}


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k.removeprefix("Monitoring")[: -8]: v["Properties"] for k, v in template["Resources"].items()
            if v["Type"] == "AWS::CloudWatch::Alarm" and k.startswith("Monitoring")}


@pytest.mark.parametrize("service", ["realtime", "pipeline"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_and_service_gets_its_alarms(synth: Synth, backend: str, service: str) -> None:
    template = synth.raw[stack_of("resnet152", backend, service)]
    found = alarms(template)
    kind = "lambda" if backend == "lambda" else "fleet"
    assert set(found) == EXPECTED[(kind, service)]
    (topic,) = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::SNS::Topic"
                and k.startswith("Monitoring")]
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
                                                                    "service": "crossover-server"}


def test_serving_emits_the_metric_the_alarm_watches(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from crossover.constructs.monitoring import SERVICE
    from serving.metrics import MetricUnit, Recorder

    recorder = Recorder("m1", interval_s=3600)
    recorder.add("ModelLoadFailures", MetricUnit.Count, 1)
    recorder.close()
    line = json.loads([x for x in capsys.readouterr().out.splitlines() if "ModelLoadFailures" in x][-1])
    (spec,) = line["_aws"]["CloudWatchMetrics"]
    assert spec["Namespace"] == "crossover" and sorted(spec["Dimensions"][0]) == ["Model", "service"]
    assert (line["Model"], line["service"]) == ("m1", SERVICE)
