"""The contract between a front door and a backend, on the model of CDK's ``IApplicationLoadBalancerTarget`` and
``IEventSource.bind``: a backend is built with its front door and the door binds it (``front_door.attach(backend)``),
calling the one method that fits the door: :meth:`Backend.serve_requests` with a :class:`Requests` door (a load
balancer: the backend registers its target group) or :meth:`Backend.consume` with a :class:`Messages` door (a
queue). Neither side asks what kind the other is. Every backend takes its door as ``front_door=`` and is bound at
the end of its constructor, so none synthesizes half-built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

from aws_cdk import Annotations, CfnResource
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from crossover.config import ModelConfig, is_s3_uri
from crossover.constructs.artifact import ModelArtifact
from crossover.errors import UserError

if TYPE_CHECKING:
    from crossover.constructs.monitoring import ModelMonitoring


class Requests(Protocol):
    """A front door that takes requests: each backend gets a target group of its own on it."""

    def route_to(self, kind: str, targets: Sequence[elbv2.IApplicationLoadBalancerTarget], *,
                 port: int | None = None, health_check: elbv2.HealthCheck | None = None,
                 vpc: ec2.IVpc | None = None) -> elbv2.ApplicationTargetGroup:
        """A target group ``<id>Targets`` for backend ``kind``, health-checked from the start, sent no request
        until forwarded to."""
        ...


class Messages(Protocol):
    """A front door that takes messages: a queue, its dead-letter queue and the results bucket."""

    @property
    def queue(self) -> sqs.Queue: ...

    @property
    def results(self) -> s3.Bucket: ...

    @property
    def max_receive_count(self) -> int: ...

    def grant_write_results(self, grantee: iam.IGrantable) -> iam.Grant: ...


class Backend(Protocol):
    """What every backend is to the rest of a model service (``ec2.IConnectable`` and ``iam.IGrantable`` as jsii
    sees them, so ``bucket.grant_read(backend)`` and ``db.connections.allow_default_port_from(backend)`` work)."""

    KIND: ClassVar[str]  # the config's name for it (crossover.backends)

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
        """Complete once it can answer: the front door's routing waits for it before sending it requests."""
        ...

    def serve_requests(self, door: Requests) -> None:
        """Bound to a load balancer: register its targets (``route``)."""
        ...

    def consume(self, door: Messages) -> None:
        """Bound to a queue: consume it, writing results to the door's bucket."""
        ...

    def watch(self, monitoring: ModelMonitoring, *, rollback: bool) -> list[cloudwatch.Alarm]:
        """Add the alarms only this kind of backend has; ``rollback``: they judge the release being deployed."""
        ...


class FrontDoor(Protocol):
    def attach(self, backend: Backend) -> None:
        """Bind ``backend``: call the one of its ``serve_requests`` / ``consume`` that fits this door."""
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


def private_subnets(scope: Construct, vpc: ec2.IVpc, given: ec2.SubnetSelection | None) -> ec2.SubnetSelection:
    """Where backends and an internal load balancer run, the one default for every construct: ``given``, else
    the VPC's private subnets with egress, else its isolated ones (with a synth warning on ``scope``); a VPC with
    neither is refused, as crossover never places a model in public subnets."""
    if given is not None:
        return given
    if vpc.private_subnets:
        return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
    if vpc.isolated_subnets:
        Annotations.of(scope).add_warning_v2("crossover:isolated-subnets", (
            "the VPC's private subnets are isolated: backends need a gateway endpoint for S3 and interface "
            "endpoints for CloudWatch, Elastic Load Balancing, CloudFormation and (pipelines) SQS "
            "(crossover.shape.PRIVATE_ENDPOINTS); pass private_egress to keep their security groups to those, "
            "or vpc_subnets"))
        return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
    raise UserError(f"{scope.node.path}: the VPC has no private subnets, and crossover never places a model in "
                    "public ones; add private subnets or pass vpc_subnets")


L1 = TypeVar("L1", bound=CfnResource)


def l1(construct: IConstruct, kind: type[L1]) -> L1:
    """``construct``'s CloudFormation resource (its ``default_child``), of the type the L2 documents."""
    child = construct.node.default_child
    if not isinstance(child, kind):
        raise TypeError(f"{construct.node.path}: expected its default child to be a {kind.__name__}, got {child!r}")
    return child


def artifact_location(config: ModelConfig, kind: str) -> str:
    """The file ``kind`` runs: the Neuron build on inferentia when there is one, else the model's artifact."""
    neuron = config.inferentia.neuron_artifact if kind == "inferentia" else None
    return neuron or config.model.artifact


def model_artifact(scope: Construct, id: str, location: str) -> ModelArtifact:
    """An ``s3://`` artifact as is; a local file (absolute, or relative to the working directory) as an asset."""
    if is_s3_uri(location):
        return ModelArtifact(scope, id, s3_uri=location)
    return ModelArtifact(scope, id, local_path=Path(location).resolve())
