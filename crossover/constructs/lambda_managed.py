"""The ``lambda-managed`` backend: the ``lambda`` backend's function on a Lambda Managed Instances capacity provider.

Lambda launches EC2 instances in the model's subnets (the capacity provider's security group, an operator role
it assumes to do so) and runs the function's execution environments on them, several requests each, with no
cold start once capacity is up. Everything in front of it is the ``lambda`` backend's: the ``live`` alias as the
load balancer's target or the queue's event source, CodeDeploy's traffic shifts, the same alarms under their
own names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from crossover.compliance import CHECKOV, NIST, acknowledge
from crossover.config import ModelConfig
from crossover.config.schema import LambdaManagedSpec
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.backend import (
    FrontDoor,
    PrivateEgress,
    artifact_location,
    l1,
    model_artifact,
    private_subnets,
)
from crossover.constructs.lambda_backend import ARCHITECTURES, LambdaBackend
from crossover.figures import Sizing
from crossover_serving.names import ENVIRONMENT_VCPUS

OPERATOR_POLICY = "AWSLambdaManagedEC2ResourceOperator"
IN_ITS_VPC = ("The function runs on the capacity provider's instances, in the model's private subnets behind the "
              "provider's security group: a function on Lambda Managed Instances takes no VPC configuration of "
              "its own.")


class LambdaManagedBackend(LambdaBackend):
    """The model's function on a capacity provider of its own (one per model: execution environments on an
    instance are not a security boundary between functions, so functions of different trust never share one).

    ``managed``: the instances (types, architecture), the environments (memory, vCPUs, processes each) and how
    many every published version keeps (``min_environments`` to ``max_environments``) from the config's
    ``lambda-managed`` section. Every other argument is :class:`LambdaBackend`'s; reserved and provisioned
    concurrency and SnapStart do not apply (the version's environments are its capacity, started before it is
    live)."""

    KIND: ClassVar[str] = "lambda-managed"
    ALARMS: ClassVar[str] = "LambdaManaged"
    WILDCARDS: ClassVar[str] = ("Only X-Ray's PutTraceSegments/PutTelemetryRecords, which support no "
                                "resource-level permissions (the instances are the capacity provider's: the function "
                                "needs no network-interface actions).")

    def __init__(self, scope: Construct, id: str, *, vpc: ec2.IVpc, artifact: ModelArtifact, spec: Mapping[str, Any],
                 front_door: FrontDoor, managed: LambdaManagedSpec, vpc_subnets: ec2.SubnetSelection | None = None,
                 timeout: Duration = Duration.seconds(30), input_prefixes: Sequence[str] = (),
                 batch_size: int = 10, max_batching_window: Duration = Duration.seconds(0), max_concurrency: int = 10,
                 private_egress: PrivateEgress | None = None) -> None:
        self.managed = managed
        super().__init__(scope, id, vpc=vpc, artifact=artifact, spec=spec, front_door=front_door,
                         vpc_subnets=vpc_subnets, memory_size=Size.mebibytes(managed.memory_mib), timeout=timeout,
                         reserved_concurrency=None, architecture=ARCHITECTURES[managed.architecture],
                         input_prefixes=input_prefixes, batch_size=batch_size, max_batching_window=max_batching_window,
                         max_concurrency=max_concurrency, private_egress=private_egress)
        self._attach(managed)

    def _placement(self, vpc: ec2.IVpc, vpc_subnets: ec2.SubnetSelection | None) -> dict[str, Any]:
        """The capacity provider in the model's subnets, behind the security group. Each deploy's version is
        deleted once the alias has moved off it (a version kept would keep its environments, and instances)."""
        managed = self.managed
        # AWS's policy for this role: EC2 launches conditioned on ec2:ManagedResourceOperator (only on Lambda's
        # behalf), kept current by AWS as the service changes (it did twice in 2026).
        self.operator_role = iam.Role(
            self, "OperatorRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(OPERATOR_POLICY)])
        acknowledge(self.operator_role, f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    f"{OPERATOR_POLICY}]", "AWS's own policy for a capacity provider's operator role: it may launch "
                    "and tag instances only with the ec2:ManagedResourceOperator condition that marks them as "
                    "Lambda's, and AWS keeps it current as the service changes.")
        types = list(dict.fromkeys([managed.instance_type, *managed.instance_types]))
        where = private_subnets(self, vpc, vpc_subnets)  # the provider takes subnets, not a selection
        subnets = vpc.select_subnets(subnet_type=where.subnet_type, subnet_group_name=where.subnet_group_name,
                                     subnets=where.subnets, availability_zones=where.availability_zones,
                                     one_per_az=where.one_per_az, subnet_filters=where.subnet_filters).subnets
        self.capacity_provider = lambda_.CapacityProvider(
            self, "Capacity", subnets=subnets,
            security_groups=[self.security_group], architectures=[ARCHITECTURES[managed.architecture]],
            instance_type_filter=lambda_.InstanceTypeFilter.allow([ec2.InstanceType(t) for t in types]),
            max_v_cpu_count=managed.max_vcpus, operator_role=self.operator_role)
        return {"current_version_options": lambda_.VersionOptions(removal_policy=RemovalPolicy.DESTROY)}

    def _attach(self, managed: LambdaManagedSpec) -> None:
        # Only the live alias's versions run: $LATEST.PUBLISHED would start min_environments of its own.
        self.capacity_provider.add_function(
            self.function, execution_environment_memory_gib_per_v_cpu=managed.memory_gib_per_vcpu,
            per_execution_environment_max_concurrency=managed.per_environment_concurrency,
            publish_to_latest_published=False)
        self.function.add_environment(ENVIRONMENT_VCPUS, str(managed.vcpus))
        # Each version starts min_environments before it is active, so the alias (the backend's readiness) moves
        # to it only once they run.
        l1(self.function.current_version, lambda_.CfnVersion).function_scaling_config = \
            lambda_.CfnVersion.FunctionScalingConfigProperty(min_execution_environments=managed.min_environments,
                                                             max_execution_environments=managed.max_environments)
        acknowledge(self.function, {
            **dict.fromkeys((NIST + "LambdaInsideVPC", CHECKOV + "CKV_AWS_117"), IN_ITS_VPC),
            **dict.fromkeys((NIST + "LambdaConcurrency", CHECKOV + "CKV_AWS_115"), "Its concurrency is capped by its "
                            "capacity: at most max_environments execution environments of per_environment_concurrency "
                            "requests each, within the provider's max_vcpus; it draws nothing from the region's "
                            "on-demand Lambda concurrency that a reservation would fence.")})

    @classmethod
    def from_config(cls, scope: Construct, id: str, *, config: ModelConfig, vpc: ec2.IVpc, front_door: FrontDoor,
                    artifact: ModelArtifact | None = None, vpc_subnets: ec2.SubnetSelection | None = None,
                    private_egress: PrivateEgress | None = None, sizing: Sizing | None = None,
                    path_prefix: str = "") -> LambdaManagedBackend:
        """The ``lambda-managed`` section of the shared config (and ``lambda.timeout_s``, the handler's), behind
        ``front_door``; the arguments are :meth:`LambdaBackend.from_config`'s."""
        pipe = config.pipeline
        artifact = artifact or model_artifact(scope, f"{id}Artifact", artifact_location(config, cls.KIND))
        return cls(scope, id, vpc=vpc, artifact=artifact, managed=config.lambda_managed,
                   spec=config.serving_spec(artifact.s3_uri, cls.KIND, path_prefix), front_door=front_door,
                   vpc_subnets=vpc_subnets, private_egress=private_egress,
                   timeout=Duration.seconds(config.lambda_.timeout_s), input_prefixes=config.inputs.s3,
                   batch_size=pipe.batch_size, max_batching_window=Duration.seconds(pipe.max_batching_window_s),
                   max_concurrency=pipe.max_concurrency)
