"""What every backend is to the rest of a model service: one interface over the five of them.

A backend is built with its front door (``front_door=``) and attaches to it on construction: behind a realtime
front door it gets a target group of its own (``route``), on a pipeline front door it consumes the queue. So
no backend object can synthesize half-built. Each is also constructible from the shared config alone
(``GpuFleet.from_config(scope, id, config=..., vpc=..., front_door=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import jsii
from aws_cdk import BundlingOptions, CfnResource, DockerImage, ILocalBundling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from constructs import Construct

from crossover.config import ModelConfig, is_s3_uri
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.front_door import RealtimeFrontDoor
from crossover.constructs.pipeline_front_door import PipelineFrontDoor

if TYPE_CHECKING:
    from crossover.constructs.monitoring import ModelMonitoring

FrontDoor = RealtimeFrontDoor | PipelineFrontDoor



class Backend(Protocol):
    KIND: ClassVar[str]  # the config's name for it: lambda, gpu, eia, inferentia, cpu

    @property
    def connections(self) -> ec2.Connections:
        """Its network side: what it may reach (S3 through the VPC, HTTPS origins) and what may reach it."""
        ...

    @property
    def grant_principal(self) -> iam.IPrincipal:
        """Who it runs as: grant it what the model reads beyond the declared inputs."""
        ...

    @property
    def route(self) -> elbv2.ApplicationTargetGroup | None:
        """Its target group behind a realtime front door; None on a pipeline."""
        ...

    @property
    def ready(self) -> CfnResource:
        """Complete once it can answer: the front door's listener waits for it before sending it requests."""
        ...

    def watch(self, monitoring: ModelMonitoring, *, rollback: bool) -> None:
        """Add the alarms only this kind of backend has; ``rollback``: they judge the release being deployed."""
        ...


@dataclass(frozen=True)
class PrivateEgress:
    """A NAT-free network's only ways out, to which a backend's security group then allows HTTPS and nothing
    else: the interface endpoints inside ``cidr`` (CloudWatch, SQS, ...), and S3 through the gateway endpoint,
    whose addresses are the managed prefix list ``s3_prefix_list_id`` (NetworkStack looks it up at deploy)."""

    cidr: str
    s3_prefix_list_id: str

    def allow_from(self, security_group: ec2.SecurityGroup) -> None:
        """``security_group`` must have been created with ``allow_all_outbound=False``."""
        security_group.add_egress_rule(ec2.Peer.ipv4(self.cidr), ec2.Port.tcp(443),
                                       "HTTPS to the VPC's interface endpoints")
        security_group.add_egress_rule(ec2.Peer.prefix_list(self.s3_prefix_list_id), ec2.Port.tcp(443),
                                       "HTTPS to S3 through the gateway endpoint")


def subnets(vpc_subnets: ec2.SubnetSelection | None) -> ec2.SubnetSelection:
    """Where backends run: the given subnets, else the VPC's private subnets with egress."""
    return vpc_subnets or ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)


def artifact_location(config: ModelConfig, kind: str) -> str:
    """The file ``kind`` runs: the Neuron build on inferentia when there is one, else the model's artifact."""
    neuron = config.inferentia.neuron_artifact if kind == "inferentia" else None
    return neuron or config.model.artifact


def model_artifact(scope: Construct, id: str, location: str) -> ModelArtifact:
    """An ``s3://`` artifact as is; a local file (absolute, or relative to the working directory) as an asset."""
    if is_s3_uri(location):
        return ModelArtifact(scope, id, s3_uri=location)
    return ModelArtifact(scope, id, local_path=Path(location).resolve())


@jsii.implements(ILocalBundling)
class _OnThisMachine:
    def __init__(self, build: Callable[[Path], None]) -> None:
        self.build = build

    def try_bundle(self, output_dir: str, _options: Any = None) -> bool:
        self.build(Path(output_dir))
        return True


def built_here(build: Callable[[Path], None]) -> BundlingOptions:
    """Bundling that ``build(output_dir)`` does on this machine (crossover.bundle: pip's cross-platform wheel
    downloads) instead of in a Docker image, which CDK asks for but never starts."""
    return BundlingOptions(image=DockerImage.from_registry("unused-local-bundling"),
                           local=_OnThisMachine(build))  # type: ignore[arg-type]
