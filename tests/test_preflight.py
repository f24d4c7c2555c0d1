"""Around a real deploy: the checks before it (quotas from recorded API answers, bootstrap on the emulator)
and what runs after it."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from crossover.config import load
from crossover.preflight import quota_problem
from tests.conftest import write_config


def _quotas(code: str, value: float) -> tuple[object, Stubber]:
    client = boto3.client("service-quotas", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response("get_service_quota", {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": value}},
                         {"ServiceCode": "ec2", "QuotaCode": code})
    return client, stubber


@pytest.mark.parametrize(("backend", "section", "code", "needed"), [
    ("gpu", "gpu: {instance_type: g4dn.xlarge}", "L-DB2E81BA", 28),  # (6 + 1) x 4 vCPUs
    ("gpu", "gpu: {instance_type: p3.2xlarge}", "L-417A185B", 56),
    ("inferentia", "inferentia: {instance_type: inf2.xlarge}", "L-1945791B", 28),
    ("cpu", "cpu: {instance_type: c7i.large}", "L-1216C47A", 14),
])
def test_a_fleet_needs_its_maximum_plus_one_within_the_vcpu_quota_of_its_family(
        tmp_path: Path, backend: str, section: str, code: str, needed: int) -> None:
    config = load(write_config(tmp_path, "m", f"name: m\nbackend: {backend}\nmodel: {{artifact: s3://bkt/m.onnx}}\n"
                                             f"scaling: {{min: 2, max: 6}}\n{section}\n")).config
    client, stubber = _quotas(code, needed)
    with stubber:
        assert quota_problem(client, config, "us-east-1") is None
    client, stubber = _quotas(code, needed - 1)
    with stubber:
        problem = quota_problem(client, config, "us-east-1")
    assert problem is not None and f"needs up to {needed} vCPUs" in problem
    assert f"quota in us-east-1 is {needed - 1} ({code}): request an increase" in problem


def test_lambda_managed_instances_need_the_providers_vcpus_within_the_standard_quota(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, "m", "name: m\nbackend: lambda-managed\nmodel: {artifact: s3://bkt/m.onnx}"
                                             "\nlambda-managed: {instance_type: c7i.2xlarge, max_vcpus: 100}\n")).config
    client, stubber = _quotas("L-1216C47A", 96)  # 100 vCPUs hold 12 c7i.2xlarge: 96
    with stubber:
        assert quota_problem(client, config, "us-east-1") is None
    client, stubber = _quotas("L-1216C47A", 95)
    with stubber:
        problem = quota_problem(client, config, "us-east-1")
    assert problem is not None and "lower lambda-managed.max_vcpus" in problem
    assert problem.startswith("the lambda-managed capacity provider needs up to 96 vCPUs of Standard (A, C, D, H, I, "
                              "M, R, T, Z) instances (lambda-managed.max_vcpus, as many c7i.2xlarge as it holds)")


def test_lambda_needs_no_ec2_quota(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, "m", "name: m\nbackend: lambda\nmodel: {artifact: s3://bkt/m.onnx}\n")).config
    assert quota_problem(object(), config, "us-east-1") is None


def test_an_account_not_bootstrapped_for_the_cdk_is_refused_with_the_command_that_fixes_it(
        aws: str, tmp_path: Path) -> None:
    from rich.console import Console

    from crossover.preflight import PreflightError, preflight

    # GIVEN credentials for an account (the emulator) where `cdk bootstrap` never ran
    item = load(write_config(tmp_path, "m", "name: m\nbackend: lambda\nmodel: {artifact: s3://bkt/m.onnx}\n"))
    with pytest.raises(PreflightError, match=r"account 123456789012 is not bootstrapped for the CDK in us-east-1: "
                                             r"run once `npx cdk bootstrap aws://123456789012/us-east-1`"):
        preflight(item, boto3.Session(), Console())
    # AND a teardown needs only who and where
    assert preflight(item, boto3.Session(), Console(), deploying=False) == ("123456789012", "us-east-1")


@pytest.mark.parametrize(("extra", "said"), [
    ("", "its endpoint is internal: run `crossover smoke m` from inside the VPC"),
    ("service: pipeline\ninputs: {s3: [my-images]}\n", "send images with `crossover enqueue m s3://…`")])
def test_a_deploy_is_not_failed_by_a_smoke_test_this_machine_cannot_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, said: str) -> None:
    from crossover.deploy import after_deploy

    item = load(write_config(tmp_path, "m", "name: m\nbackend: lambda\nmodel: {artifact: s3://bkt/m.onnx}\n" + extra))
    assert after_deploy(item) == 0
    assert said in capsys.readouterr().out
