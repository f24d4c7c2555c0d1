"""ModelStack-<name>: one ModelService in the shared NetworkStack's VPC, with the outputs the tools read."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from crossover.config import ModelConfig
from crossover.cost.profile import Measured
from crossover.service import ModelService
from crossover.shape import ROLLBACK_ALARMS_OUTPUT
from crossover.sizing import size
from crossover.stacks.network import NetworkStack

SERVICE_ID = "Model"  # the service's construct id: the prefix of every logical id in the stack


class ModelStack(Stack):
    """The model's service (construct id ``Model``) and its outputs.

    realtime: the ``Endpoint`` output; pipeline: ``QueueUrl``, ``DeadLetterQueueUrl`` and ``ResultsBucket``.
    Both: ``RollbackAlarms``, which ``make deploy`` passes CloudFormation as rollback triggers. The stack holds
    one model, so its alarms and dashboard are named after the stack (``ModelStack-<name>-<signal>``).
    ``measured``: what `crossover bench` and bench/load.py measured (the app reads profiles/).
    """

    def __init__(self, scope: Construct, id: str, *, config: ModelConfig, network: NetworkStack,
                 measured: Measured | None = None, **kwargs: Any) -> None:
        super().__init__(scope, id, description=f"crossover model {config.name} ({config.backend}, {config.service})",
                         **kwargs)
        # The network's CIDR as a literal: cdk-nag checks the ingress rule (a cross-stack token it could not).
        peer = None if config.endpoint.allowed_cidr else ec2.Peer.ipv4(network.cidr)
        self.service = ModelService(self, SERVICE_ID, config=config, vpc=network.vpc,
                                    vpc_subnets=network.private_subnets, allowed_peer=peer,
                                    sizing=size(config, measured=measured), name=self.stack_name,
                                    private_egress=network.private_egress)
        if (front_door := self.service.messages) is not None:
            CfnOutput(self, "QueueUrl", value=front_door.queue.queue_url,
                      description='Send {"id": ..., "image": "s3://..."} messages here')
            CfnOutput(self, "DeadLetterQueueUrl", value=front_door.dead_letters.queue_url)
            CfnOutput(self, "ResultsBucket", value=front_door.results.bucket_name,
                      description="results/<id>.json; errors/<id>.json for what reached the dead-letter queue")
        else:
            CfnOutput(self, "Endpoint", value=str(self.service.endpoint),
                      description="POST images to <Endpoint>/predict")
        CfnOutput(self, ROLLBACK_ALARMS_OUTPUT, value=",".join(self.service.rollback_alarm_names),
                  description="Alarms that roll a deployment back (CloudFormation rollback triggers)")
