"""Exactly which alarms roll a release back, on every backend and service and during every canary, and what a
canary's own alarms measure.

Rollback alarms appear in two places: the stack's ``RollbackAlarms`` output (what ``make deploy`` passes
CloudFormation as rollback triggers) and the Lambda CodeDeploy deployment group's alarm configuration (what
rolls the function's own traffic shift back). Both are pinned here by equality: an alarm dropped or added
fails. The tables are literal on purpose, independent of the code that builds them.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from crossover.backends import KINDS
from crossover.config import BACKEND_IDS
from tests.conftest import BACKENDS, CANARY_PERCENT, Synth, canary_of, resources_of, stack_of

PAIRS = list(itertools.permutations(BACKENDS, 2))  # (source, target): every canary, old -> new

ROLLBACK = {
    ("lambda", "realtime"): {"LatencyP99", "ErrorRate", "LambdaErrors"},
    ("gpu", "realtime"): {"LatencyP99", "ErrorRate", "GpuUnhealthyHosts", "ModelLoadFailures"},
    ("eia", "realtime"): {"LatencyP99", "ErrorRate", "EiaUnhealthyHosts", "ModelLoadFailures"},
    ("inferentia", "realtime"): {"LatencyP99", "ErrorRate", "InferentiaUnhealthyHosts", "ModelLoadFailures"},
    ("cpu", "realtime"): {"LatencyP99", "ErrorRate", "CpuUnhealthyHosts", "ModelLoadFailures"},
    ("lambda-managed", "realtime"): {"LatencyP99", "ErrorRate", "LambdaManagedErrors"},
    ("lambda", "pipeline"): {"FailedMessages", "LambdaErrors"},
    ("gpu", "pipeline"): {"FailedMessages", "ModelLoadFailures"},
    ("eia", "pipeline"): {"FailedMessages", "ModelLoadFailures"},
    ("inferentia", "pipeline"): {"FailedMessages", "ModelLoadFailures"},
    ("cpu", "pipeline"): {"FailedMessages", "ModelLoadFailures"},
    ("lambda-managed", "pipeline"): {"FailedMessages", "LambdaManagedErrors"},
}

# During a canary the new backend's own alarms, the canary's and the stack's server faults judge the deploy;
# the load balancer's p99 (mostly the old backend's) and the old backend's alarms only notify.
CANARY_OWN = {"lambda": {"LambdaErrors"}, "gpu": {"GpuUnhealthyHosts", "ModelLoadFailures"},
              "eia": {"EiaUnhealthyHosts", "ModelLoadFailures"},
              "inferentia": {"InferentiaUnhealthyHosts", "ModelLoadFailures"},
              "cpu": {"CpuUnhealthyHosts", "ModelLoadFailures"}, "lambda-managed": {"LambdaManagedErrors"}}
CANARY_ROLLBACK = {"ErrorRate", "CanaryLatencyP99", "CanaryErrorRate"}

# A function's traffic shift is judged by what judges it when it serves alone (the alarms ModelService._monitor
# collects from watch_realtime or watch_pipeline and the function's own), also while it is the backend a canary
# moves from or to.
FUNCTIONS = [b for b in BACKENDS if not KINDS[b].fleet]


def function_alarms(service: str, *backends: str) -> dict[str, set[str]]:
    """The alarms each function's deployment group rolls back on, by the group's backend id."""
    judges = {"realtime": {"LatencyP99", "ErrorRate"}, "pipeline": {"FailedMessages"}}[service]
    return {BACKEND_IDS[b]: judges | {f"{BACKEND_IDS[b]}Errors"} for b in backends if b in FUNCTIONS}

CANARY_ERROR_RATE = "100 * (FILL(faults, 0) + FILL(connectionErrors, 0)) / MAX([requests, 1])"
ELB = "AWS/ApplicationELB"


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def alarm_names(template: dict[str, Any]) -> dict[str, str]:
    """Alarm logical id -> AlarmName, for the named ones (a scaling policy's own alarms have none)."""
    return {k: v["Properties"]["AlarmName"] for k, v in of_type(template, "AWS::CloudWatch::Alarm").items()
            if "AlarmName" in v["Properties"]}


def rollback_output(template: dict[str, Any]) -> list[str]:
    value = template["Outputs"]["RollbackAlarms"]["Value"]
    assert isinstance(value, str)  # names, known at synth: make deploy reads them from the template
    names = value.split(",")
    assert len(names) == len(set(names)) and len(names) <= 5, names  # CloudFormation allows 5 triggers
    return names


def deployment_group_alarms(template: dict[str, Any]) -> dict[str, set[str]]:
    """The alarm names each function's deployment group rolls back on, by its backend's id (Lambda, ...)."""
    found = {}
    names = alarm_names(template)
    for logical_id, group in of_type(template, "AWS::CodeDeploy::DeploymentGroup").items():
        config = group["Properties"]["AlarmConfiguration"]
        assert config["Enabled"] is True
        refs = [a["Name"]["Ref"] for a in config["Alarms"]]
        assert len(refs) == len(set(refs))
        found[logical_id.removeprefix("Model").split("Rollout")[0]] = {names[ref] for ref in refs}
    return found


def assert_rollback_alarms(template: dict[str, Any], stack: str, output: set[str],
                           functions: dict[str, set[str]]) -> None:
    named = set(alarm_names(template).values())
    found = rollback_output(template)
    assert set(found) == {f"{stack}-{id}" for id in output}
    assert set(found) <= named  # each one is an alarm of the stack
    assert deployment_group_alarms(template) == {
        backend: {f"{stack}-{id}" for id in ids} for backend, ids in functions.items()}


@pytest.mark.parametrize("service", ["realtime", "pipeline"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_rollback_alarms_are_exactly_the_release_alarms(synth: Synth, backend: str, service: str) -> None:
    stack = stack_of("resnet152", backend, service)
    assert_rollback_alarms(synth.raw[stack], stack, ROLLBACK[(backend, service)],
                           function_alarms(service, backend))


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_a_canary_rolls_back_on_its_own_alarms_exactly(synth: Synth, source: str, target: str) -> None:
    stack = canary_of(source, target)
    assert_rollback_alarms(synth.raw[stack], stack, CANARY_ROLLBACK | CANARY_OWN[target],
                           function_alarms("realtime", source, target))


def target_group_of(template: dict[str, Any], backend: str) -> str:
    """The target group ``backend`` registers into: the function's alias, or the fleet's group's."""
    groups = of_type(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    if backend in FUNCTIONS:
        aliases = [k for k in of_type(template, "AWS::Lambda::Alias")
                   if k.startswith(f"Model{BACKEND_IDS[backend]}Live")]
        (found,) = [k for k, v in groups.items()
                    if any(t["Id"].get("Ref") in aliases for t in v["Properties"].get("Targets", []))]
        return found
    (fleet,) = [v for k, v in of_type(template, "AWS::AutoScaling::AutoScalingGroup").items()
                if k.startswith(f"Model{BACKEND_IDS[backend]}")]
    (ref,) = fleet["Properties"]["TargetGroupARNs"]
    assert ref["Ref"] in groups
    return str(ref["Ref"])


def resolve(template: dict[str, Any], value: Any) -> Any:
    """A dimension value: ``(logical id, attribute)`` for a resource's name; a load balancer's full name CDK
    derives from a listener's ARN (``app/<name>/<id>``) as that load balancer's."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return tuple(value["Fn::GetAtt"])
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        selects = [p["Fn::Select"] for p in parts[::2]]
        assert separator == "" and parts[1::2] == ["/", "/"] and [i for i, _ in selects] == [1, 2, 3], value
        (listener,) = {split["Fn::Split"][1]["Ref"] for _, split in selects}
        resource = template["Resources"][listener]
        assert resource["Type"] == "AWS::ElasticLoadBalancingV2::Listener"
        return resource["Properties"]["LoadBalancerArn"]["Ref"], "LoadBalancerFullName"
    return value


def dimensions(template: dict[str, Any], metric: dict[str, Any]) -> dict[str, Any]:
    listed = metric["Dimensions"]
    found = {d["Name"]: resolve(template, d["Value"]) for d in listed}
    assert len(found) == len(listed)
    return found


def serving_spec_of(template: dict[str, Any], backend: str) -> tuple[str, str]:
    """(name, backend) in the serving spec that ``backend``'s resources carry (Lambda environment, user data):
    what crossover_serving/ publishes its metrics under."""
    leaves: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            leaves.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(resources_of(template, backend))
    specs = {(named.group(1), served.group(1)) for leaf in leaves
             if (served := re.search(r'"backend":\s*"([a-z-]+)"', leaf))
             and (named := re.search(r'"name":\s*"([^"]+)"', leaf))}
    (spec,) = specs
    return spec


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_a_canary_is_judged_by_its_own_target_group_and_its_own_faults(synth: Synth, variants_dir: Path,
                                                                        source: str, target: str) -> None:
    from crossover.config import load

    stack = canary_of(source, target)
    template = synth.raw[stack]
    model = stack.removeprefix("ModelStack-")
    p99_ms = load(variants_dir / f"{model}.yaml").config.traffic.p99_ms
    # GIVEN the canary's target group (the new backend's, given its share) and the old one's
    canary, old = target_group_of(template, target), target_group_of(template, source)
    (listener,) = [v for v in of_type(template, "AWS::ElasticLoadBalancingV2::Listener").values()
                   if v["Properties"]["DefaultActions"][0]["Type"] == "forward"]
    weights = {g["TargetGroupArn"]["Ref"]: g["Weight"]
               for g in listener["Properties"]["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]}
    assert weights == {canary: CANARY_PERCENT, old: 100 - CANARY_PERCENT}
    (load_balancer,) = of_type(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    its_own = {"LoadBalancer": (load_balancer, "LoadBalancerFullName"), "TargetGroup": (canary, "TargetGroupFullName")}
    alarms = {name.removeprefix(f"{stack}-"): template["Resources"][id]["Properties"]
              for id, name in alarm_names(template).items()}

    # THEN its p99 is its own target group's
    latency = alarms["CanaryLatencyP99"]
    assert (latency["Namespace"], latency["MetricName"], latency["ExtendedStatistic"], latency["Period"]) == (
        ELB, "TargetResponseTime", "p99", 60)
    assert dimensions(template, latency) == its_own
    assert (latency["Threshold"], latency["ComparisonOperator"]) == (p99_ms / 1000, "GreaterThanThreshold")

    # AND its error rate counts its own faults over its own requests: the serving code's 500s under its
    # Backend dimension and its targets' connection errors; never target 5xx, nor LambdaUserError (a body over
    # Lambda's 1 MB, throttling)
    errors = alarms["CanaryErrorRate"]
    (expression,) = [m for m in errors["Metrics"] if "Expression" in m]
    assert expression["Expression"] == CANARY_ERROR_RATE and expression["ReturnData"] is True
    counted = {m["Id"]: (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"],
                         dimensions(template, m["MetricStat"]["Metric"]), m["MetricStat"]["Stat"],
                         m["MetricStat"]["Period"], m["ReturnData"])
               for m in errors["Metrics"] if "MetricStat" in m}
    assert counted == {
        "faults": ("crossover", "ServerFaults", {"Model": model, "service": "crossover", "Backend": target},
                   "Sum", 60, False),
        "connectionErrors": (ELB, "TargetConnectionErrorCount", its_own, "Sum", 60, False),
        "requests": (ELB, "RequestCount", its_own, "Sum", 60, False),
    }
    assert (errors["Threshold"], errors["ComparisonOperator"]) == (1, "GreaterThanThreshold")
    # AND those are the very dimensions the new backend's serving code publishes under (its serving spec)
    assert serving_spec_of(template, target) == (model, target)
    assert serving_spec_of(template, source) == (model, source)


def test_serving_publishes_server_faults_under_the_dimensions_both_error_rates_read(synth: Synth) -> None:
    """The canary's error rate reads ServerFaults under {Model, service, Backend}, the stack's under {Model,
    service}: crossover_serving/ publishes both copies (the alarms' Sum would miss one otherwise)."""
    from crossover_serving.metrics import MetricUnit, Recorder

    stack = canary_of("lambda", "gpu")
    template = synth.raw[stack]
    model = stack.removeprefix("ModelStack-")
    published: list[dict[str, Any]] = []
    recorder = Recorder(model, backend="gpu", publish=published.extend, interval_s=3600)
    recorder.add("ServerFaults", MetricUnit.Count, 1)
    recorder.close()
    seen = [{d["Name"]: d["Value"] for d in datum["Dimensions"]} for datum in published
            if datum["MetricName"] == "ServerFaults"]
    read = []
    for id, name in alarm_names(template).items():
        if name.endswith(("-ErrorRate", "-CanaryErrorRate")):
            (faults,) = [m["MetricStat"]["Metric"] for m in template["Resources"][id]["Properties"]["Metrics"]
                         if m.get("MetricStat", {}).get("Metric", {}).get("MetricName") == "ServerFaults"]
            read.append(dimensions(template, faults))
    assert sorted(seen, key=len) == sorted(read, key=len) == [
        {"Model": model, "service": "crossover"}, {"Model": model, "service": "crossover", "Backend": "gpu"}]
