"""Compliance: cdk-nag packs on every stack, and every acknowledgement, each with its reason.

An acknowledgement names one L1 resource (its construct path inside a stack) and one granular
finding. Nothing is acknowledged stack-wide; tests enforce both and a reason of substance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aws_cdk import Acknowledgment, App, CfnResource, Stack, Validations
from cdk_nag import AwsSolutionsChecks, ServerlessChecks
from constructs import IConstruct

PACKS = (AwsSolutionsChecks, ServerlessChecks)
METADATA_KEY = "crossover:acknowledged"


@dataclass(frozen=True)
class Ack:
    path: str  # construct path inside the stack, down to the L1 resource
    finding: str  # granular cdk-nag id, e.g. "AwsSolutions-IAM5[Resource::*]"
    reason: str
    when: Callable[[Stack], bool] = lambda _stack: True  # only where the finding can arise


def _public_front_door(stack: Stack) -> bool:
    return bool(getattr(getattr(stack, "front_door", None), "public", False))


ACKNOWLEDGEMENTS: tuple[Ack, ...] = (
    Ack("FrontDoor/AccessLogs/Resource", "AwsSolutions-S1",
        "This bucket is the destination of the load balancer's access logs; logging its own access "
        "would need yet another bucket and adds nothing an auditor uses."),
    Ack("FrontDoor/SecurityGroup/Resource", "AwsSolutions-EC23",
        "A public endpoint exists only when the config gives a certificate: the world may reach 443 "
        "(HTTPS) and 80, which only redirects to HTTPS.", when=_public_front_door),
    Ack("Backend/Role/DefaultPolicy/Resource", "AwsSolutions-IAM5[Resource::*]",
        "Only the EC2 network-interface actions a VPC function needs and X-Ray's PutTraceSegments/"
        "PutTelemetryRecords, none of which support resource-level permissions."),
    Ack("Backend/Function/Resource", "Serverless-LambdaDLQ",
        "The load balancer invokes the function synchronously and returns its errors to the caller; "
        "a dead-letter queue only ever receives asynchronous invocations."),
)


def _find(stack: Stack, path: str) -> IConstruct | None:
    node: IConstruct | None = stack
    for part in path.split("/"):
        node = node.node.try_find_child(part) if node is not None else None
    return node


def apply(app: App) -> None:
    Validations.of(app).add_plugins(*(pack() for pack in PACKS))
    for stack in (c for c in app.node.children if isinstance(c, Stack)):
        for ack in ACKNOWLEDGEMENTS:
            target = _find(stack, ack.path)
            if target is None or not ack.when(stack):
                continue
            if not isinstance(target, CfnResource):
                raise ValueError(f"acknowledgement {ack.finding} must name one L1 resource; {ack.path} is not")
            Validations.of(target).acknowledge(Acknowledgment(id=ack.finding, reason=ack.reason))
            # Also in the template's resource Metadata: an auditor sees what was accepted, and why.
            accepted = target.get_metadata(METADATA_KEY) or []
            target.add_metadata(METADATA_KEY, [*accepted, {"finding": ack.finding, "reason": ack.reason}])
