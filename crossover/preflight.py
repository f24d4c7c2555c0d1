"""Before a real deploy: what would fail half-way through, found first and said with its fix.

A CloudFormation deploy that fails on a missing bootstrap, a permission, an artifact nobody uploaded or
a vCPU quota rolls back after minutes (a GPU fleet's after its first instances booted); each is one
cheap read beforehand.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from crossover.config import LoadedConfig, ModelConfig, is_s3_uri, vcpus
from crossover.errors import UserError

BOOTSTRAP_VERSION = "/cdk-bootstrap/hnb659fds/version"  # the CDK's default qualifier
# EC2 on-demand vCPU quotas by instance family prefix (Service Quotas codes); others are Standard.
QUOTAS = (("g", "L-DB2E81BA", "G and VT"), ("vt", "L-DB2E81BA", "G and VT"), ("p", "L-417A185B", "P"),
          ("inf", "L-1945791B", "Inf"))
STANDARD = ("", "L-1216C47A", "Standard (A, C, D, H, I, M, R, T, Z)")


class PreflightError(UserError):
    pass


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def preflight(item: LoadedConfig, session: Any, console: Console, *, deploying: bool = True) -> tuple[str, str]:
    """The account and region the credentials point at; PreflightError naming the fix for the first thing
    that would make the deploy fail. ``deploying`` False: only who and where (a teardown)."""
    from botocore.exceptions import ClientError

    region = session.region_name
    if not region:
        raise PreflightError("no AWS region: set AWS_DEFAULT_REGION, or a profile's region with `aws configure`")
    try:
        account = str(session.client("sts").get_caller_identity()["Account"])
    except ClientError as e:
        raise PreflightError(f"AWS refused these credentials ({_code(e)}): refresh them (e.g. aws sso login)") from None
    if not deploying:
        return account, region
    config = item.config
    try:
        session.client("ssm").get_parameter(Name=BOOTSTRAP_VERSION)
    except ClientError as e:
        if _code(e) == "ParameterNotFound":
            raise PreflightError(f"account {account} is not bootstrapped for the CDK in {region}: run once "
                                 f"`npx cdk bootstrap aws://{account}/{region}`") from None
        raise PreflightError(f"these credentials may not read the CDK bootstrap version ({_code(e)} on "
                             f"ssm:GetParameter {BOOTSTRAP_VERSION}): deploy with a role that may use the CDK's "
                             "bootstrap roles (an administrator, or one allowed sts:AssumeRole on cdk-*)") from None
    try:
        session.client("cloudformation").describe_stacks(StackName=config.stack_name)
    except ClientError as e:
        if _code(e) != "ValidationError":  # ValidationError: the stack does not exist yet, a first deploy
            raise PreflightError(f"these credentials may not read CloudFormation stacks ({_code(e)}): deploying "
                                 "needs cloudformation:* on the stack and sts:AssumeRole on the CDK's roles") from None
    if is_s3_uri(config.model.artifact):
        bucket, _, key = config.model.artifact.removeprefix("s3://").partition("/")
        try:
            session.client("s3").head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            raise PreflightError(f"{item.path}: model.artifact {config.model.artifact} cannot be read with these "
                                 f"credentials ({_code(e) or 'not found'}): upload your model there, or point "
                                 "model.artifact at it") from None
    try:
        problem = quota_problem(session.client("service-quotas"), config, region)
    except ClientError as e:
        console.print(f"[yellow]warning[/yellow]: could not read the EC2 vCPU quota ({_code(e)}); check it in the "
                      "Service Quotas console before a fleet scales out")
    else:
        if problem:
            raise PreflightError(problem)
    return account, region


def quota_problem(client: Any, config: ModelConfig, region: str) -> str | None:
    """Why the account's on-demand vCPU quota cannot hold the fleet at ``scaling.max`` plus the one
    instance a rolling update adds, or Lambda Managed Instances' capacity provider at its ``max_vcpus`` (its
    instances are the account's); None if it can, or if the backend is Lambda."""
    fleet = config.fleet
    if fleet is not None:
        instance_type, count = fleet.instance_type, config.scaling.max + 1
        whose = f"the {config.backend} fleet"
        what = f"{config.scaling.max} x {instance_type} at {{each}} vCPUs, plus one more during a rolling update"
        fix = "lower scaling.max"
    elif config.backend == "lambda-managed":
        managed = config.lambda_managed
        instance_type, count = managed.instance_type, managed.max_vcpus // vcpus(managed.instance_type)
        whose = "the lambda-managed capacity provider"
        what, fix = "lambda-managed.max_vcpus, as many {instance_type} as it holds", "lower lambda-managed.max_vcpus"
    else:
        return None
    family = instance_type.split(".")[0]
    _, code, kind = next((q for q in QUOTAS if family.startswith(q[0])), STANDARD)
    each = vcpus(instance_type)
    needed = count * each
    value = float(client.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
    if value >= needed:
        return None
    return (f"{whose} needs up to {needed} vCPUs of {kind} instances "
            f"({what.format(each=each, instance_type=instance_type)}), but the account's on-demand quota in {region} "
            f"is {value:g} ({code}): request an increase in the Service Quotas console, or {fix}")
