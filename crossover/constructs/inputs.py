"""The S3 inputs a model's requests and messages may name (the config's ``inputs.s3``)."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws
from aws_cdk import aws_iam as iam

from crossover.compliance import INPUTS, acknowledge, policy_of


def input_arns(prefixes: Sequence[str]) -> list[str]:
    """The object ARNs under each ``bucket/`` or ``bucket/prefix/``."""
    return [f"arn:{Aws.PARTITION}:s3:::{prefix}*" for prefix in prefixes]


def grant_read_inputs(role: iam.IRole, prefixes: Sequence[str]) -> None:
    """s3:GetObject on exactly the declared locations: the serving code refuses every other object before
    calling S3, and the role could not read it anyway."""
    if not prefixes:
        return
    role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=input_arns(prefixes)))
    for prefix in prefixes:  # the wildcard under each declared location is the grant's purpose
        acknowledge(policy_of(role), f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{prefix}*]", INPUTS)
