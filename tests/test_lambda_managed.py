"""The sixth backend, Lambda Managed Instances: its template, its config's rules, its price, and its serving code's
share of an execution environment."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from crossover.config import LoadedConfig, ModelConfig, load
from crossover.cost import catalog, model, report
from crossover.cost.model import MANAGED_MIN_INSTANCES, MANAGED_UTILISATION
from tests import ROOT
from tests.conftest import Synth, stack_of
from tests.test_backends import one, resources

STACK = stack_of("resnet152", "lambda-managed")


def _only(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    (found,) = resources(template, kind).items()
    return found


def test_the_function_runs_on_a_capacity_provider_of_its_own_in_the_models_subnets(synth: Synth) -> None:
    template = synth.raw[STACK]
    provider_id, provider = _only(template, "AWS::Lambda::CapacityProvider")
    props = provider["Properties"]
    assert props["InstanceRequirements"] == {"AllowedInstanceTypes": ["c7i.xlarge"], "Architectures": ["x86_64"]}
    assert props["CapacityProviderScalingConfig"] == {"MaxVCpuCount": 400}
    # the model's private subnets, the backend's own security group, an operator role only Lambda assumes
    assert all("PrivateSubnet" in json.dumps(s) for s in props["VpcConfig"]["SubnetIds"])
    (group,) = props["VpcConfig"]["SecurityGroupIds"]
    assert group["Fn::GetAtt"][0].startswith("ModelLambdaManagedSecurityGroup")
    role_id = props["PermissionsConfig"]["CapacityProviderOperatorRoleArn"]["Fn::GetAtt"][0]
    role = template["Resources"][role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}]
    assert json.dumps(role["ManagedPolicyArns"]).endswith(':iam::aws:policy/AWSLambdaManagedEC2ResourceOperator"]]}]')

    function = one(template, "AWS::Lambda::Function")
    attached = function["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
    assert attached == {"CapacityProviderArn": {"Fn::GetAtt": [provider_id, "Arn"]},
                        "ExecutionEnvironmentMemoryGiBPerVCpu": 2, "PerExecutionEnvironmentMaxConcurrency": 1}
    # the same bundle and handler as lambda; no VPC of its own, no reserved concurrency, $LATEST.PUBLISHED not run
    assert function["Handler"] == "crossover_serving.lambda_handler.handler" and function["MemorySize"] == 4096
    assert "VpcConfig" not in function and "ReservedConcurrentExecutions" not in function
    assert function["PublishToLatestPublished"] is False
    assert function["Environment"]["Variables"]["CROSSOVER_ENVIRONMENT_VCPUS"] == "2"
    # Lambda's instances are the provider's: the function's role has no network-interface actions
    policies = json.dumps(resources(template, "AWS::IAM::Policy"))
    assert "xray:PutTraceSegments" in policies and "ec2:CreateNetworkInterface" not in policies


def test_each_version_starts_its_environments_before_the_alias_names_it_and_is_deleted_after(synth: Synth) -> None:
    template = synth.raw[STACK]
    version_id, version = _only(template, "AWS::Lambda::Version")
    assert version["Properties"]["FunctionScalingConfig"] == {"MinExecutionEnvironments": 3,
                                                              "MaxExecutionEnvironments": 30}
    # a version left behind would keep its environments (and instances) running
    assert version["DeletionPolicy"] == version["UpdateReplacePolicy"] == "Delete"
    _, alias = _only(template, "AWS::Lambda::Alias")
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}


def test_a_canary_between_the_two_functions_gives_each_its_alarms_and_its_traffic_shift(synth: Synth) -> None:
    template = synth.raw["ModelStack-resnet152-lambda-managed-from-lambda"]
    alarms = {r["Properties"]["AlarmName"].rsplit("-", 1)[-1] for r in resources(template,
                                                                                  "AWS::CloudWatch::Alarm").values()}
    assert {"LambdaErrors", "LambdaThrottles", "LambdaManagedErrors", "LambdaManagedThrottles"} <= alarms
    groups = resources(template, "AWS::CodeDeploy::DeploymentGroup")
    assert {k.split("Rollout")[0] for k in groups} == {"ModelLambda", "ModelLambdaManaged"}


def _config(**section: Any) -> dict[str, Any]:
    data = load(ROOT / "models" / "resnet152.yaml").config.model_dump(by_alias=True)
    return {**data, "backend": "lambda-managed", "lambda-managed": section}


@pytest.mark.parametrize(("section", "said"), [
    ({"memory_mib": 3072}, "memory_mib: expected a multiple of memory_gib_per_vcpu x 1024 = 2048"),
    ({"memory_mib": 4096, "per_environment_concurrency": 8}, "each of the 8 processes would have 512 MiB"),
    ({"instance_type": "c7g.xlarge", "instance_types": ["c7i.xlarge"]}, "c7i.xlarge is not the architecture"),
    ({"instance_type": "c7i.large", "memory_mib": 8192}, "c7i.large cannot hold one execution environment"),
    ({"instance_type": "g5.xlarge"}, "g5.xlarge is a GPU type: use backend: gpu"),
    ({"min_environments": 5, "max_environments": 4}, "min_environments (5) must be <= max_environments (4)"),
    ({"min_environments": 10, "max_vcpus": 12}, "max_vcpus: two versions' min_environments (10 each"),
    ({"memory_gib_per_vcpu": 3}, "memory_gib_per_vcpu"),
])
def test_a_section_lambda_does_not_allow_is_refused_saying_why(section: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ModelConfig.model_validate(_config(**section))
    assert said in str(refused.value)


def _loaded(config: ModelConfig) -> LoadedConfig:
    return LoadedConfig(path=ROOT / "models" / "resnet152.yaml", config=config)


def test_an_environment_is_packed_onto_instances_by_vcpus_and_by_memory() -> None:
    spec = ModelConfig.model_validate(_config(memory_mib=8192, memory_gib_per_vcpu=4)).lambda_managed
    assert spec.vcpus == 2 and spec.architecture == "x86_64"
    assert spec.environments_per_instance("m7i.xlarge") == 2  # 4 vCPUs, 16 GiB: two of 2 vCPUs and 8 GiB
    assert spec.environments_per_instance("c7i.2xlarge") == 2  # 8 vCPUs but 16 GiB: memory holds two
    assert spec.environments_per_instance("c7i.4xlarge") == 4


def test_the_cost_row_is_instances_plus_the_management_fee_plus_requests_by_hand() -> None:
    prices = catalog.load()
    volume = 200_000_000
    # A pipeline (its throttled batches wait in the queue: no loss formula), at 10 images/s an environment
    config = ModelConfig.model_validate({**_config(images_per_second=10.0), "service": "pipeline",
                                         "inputs": {"s3": ["my-images"]}, "traffic": {"images_per_month": volume}})
    e = model.estimate(config, "lambda-managed", prices)
    hours, hourly = prices.hours_per_month, prices.ec2["c7i.xlarge"].usd
    # One environment: 10 img/s planned 2/3 busy; two on a c7i.xlarge; the queue flattens the day
    per_instance_month = 10.0 * MANAGED_UTILISATION * 2 * hours * 3600
    instances = max(MANAGED_MIN_INSTANCES, math.ceil(volume / per_instance_month))
    assert instances == 6
    by_hand = {"instances": instances * hourly * hours, "management fee": instances * hourly * 0.15 * hours,
               "requests": volume / 10 * 0.20 / 1e6}  # an invocation a batch of pipeline.batch_size (10)
    parts = e.parts(volume)
    assert {k: round(parts[k], 6) for k in by_hand} == {k: round(v, 6) for k, v in by_hand.items()}
    assert e.line is not None and e.line.instances(volume) == instances
    # with no traffic it still runs three instances
    assert e.parts(0)["instances"] == pytest.approx(MANAGED_MIN_INSTANCES * hourly * hours)
    # and its size is execution environments, capped by max_environments (30: 15 instances, 525.6M images a month)
    assert e.over(volume) is None and "needs 36 execution environments" in (e.over(6e8) or "")


def test_a_realtime_pool_runs_as_busy_as_erlangs_loss_formula_allows() -> None:
    # Erlang B at 1% blocking, as the standard tables give it: 6 servers 1.909 Erlangs, 10 4.461, 20 12.03
    assert [round(model.erlang_load(n), 2) for n in (6, 10, 20)] == [1.91, 4.46, 12.03]
    prices = catalog.load()
    config = ModelConfig.model_validate({**_config(images_per_second=10.0), "traffic": {
        "images_per_month": 1_000_000, "peak_to_average": 1.0, "p99_ms": 300}})
    line = model.estimate(config, "lambda-managed", prices).line
    assert line is not None
    process_month = 10.0 * prices.hours_per_month * 3600  # a process (one an environment) always busy
    # three instances hold six processes: they carry 1.909 Erlangs at 1% throttled, 32% busy, not 2/3
    assert line.instances(1.909 * process_month * 0.999) == 3 and line.instances(1.91 * process_month * 1.001) == 4
    # a large pool runs 2/3 busy: 30 instances carry 60 processes x 2/3
    assert line.instances(40 * process_month) == 30
    # and crossover cost --json counts its environments at the busiest hour, the minimum's included
    assert report.as_json(report.build(_loaded(config), prices))["backends"]["lambda-managed"][
        "execution_environments"] == 6


def test_each_process_takes_its_share_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossover_serving import budget
    from crossover_serving.model import available_cpus

    # Lambda Managed Instances: 4 GiB and 2 vCPUs an environment, two processes (one request each)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
    monkeypatch.setenv("CROSSOVER_ENVIRONMENT_VCPUS", "2")
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "2")
    assert (budget.processes(), available_cpus(), budget._limit()) == (2, 1, 2048 * budget.MIB)
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "1")
    assert (available_cpus(), budget._limit()) == (2, 4096 * budget.MIB)
    # Lambda: no concurrency variable, one process with the memory-derived vCPUs
    monkeypatch.delenv("AWS_LAMBDA_MAX_CONCURRENCY")
    monkeypatch.delenv("CROSSOVER_ENVIRONMENT_VCPUS")
    assert (budget.processes(), available_cpus(), budget._limit()) == (1, 2, 4096 * budget.MIB)


def test_the_section_round_trips_through_yaml(tmp_path: Path) -> None:
    text = (ROOT / "models" / "resnet152.yaml").read_text().replace("backend: lambda", "backend: lambda-managed")
    path = tmp_path / "resnet152.yaml"
    path.write_text(text + "lambda-managed: {instance_type: m7g.xlarge, memory_mib: 8192, memory_gib_per_vcpu: 4}\n")
    spec = load(path).config.lambda_managed
    assert (spec.instance_type, spec.architecture, spec.vcpus) == ("m7g.xlarge", "arm64", 2)
