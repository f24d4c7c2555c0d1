"""ModelStack-<name>: the model's stable front door plus the backend that ``backend:`` selects."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from crossover.config import LoadedConfig, ModelConfig
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.front_door import RealtimeFrontDoor
from crossover.constructs.lambda_backend import LambdaBackend
from crossover.stacks.network import NetworkStack


class Backend(Protocol):
    def serve_realtime(self, front_door: RealtimeFrontDoor) -> Any: ...


@dataclass(frozen=True)
class BackendContext:
    """What every backend needs from the stack besides its own config section."""

    vpc: ec2.IVpc
    artifact: ModelArtifact
    spec_json: str


def _lambda(scope: Construct, config: ModelConfig, ctx: BackendContext) -> Backend:
    spec = config.lambda_
    return LambdaBackend(scope, "Backend", vpc=ctx.vpc, artifact=ctx.artifact, spec_json=ctx.spec_json,
                         memory_mib=spec.memory_mib, timeout_s=spec.timeout_s,
                         reserved_concurrency=spec.reserved_concurrency, architecture=spec.architecture)


# backend name -> factory translating the config into that construct's keyword arguments.
BACKENDS: dict[str, Callable[[Construct, ModelConfig, BackendContext], Backend]] = {
    "lambda": _lambda,
}


class ModelStack(Stack):
    """One model: ``FrontDoor`` (same ids whatever the backend), ``Artifact`` and ``Backend``."""

    def __init__(self, scope: Construct, id: str, *, loaded: LoadedConfig, network: NetworkStack,
                 **kwargs: Any) -> None:
        super().__init__(scope, id, description=f"crossover model {loaded.config.name} "
                         f"({loaded.config.backend}, {loaded.config.service})", **kwargs)
        config = loaded.config
        vpc = network.vpc
        local = loaded.artifact_path
        artifact = (ModelArtifact(self, "Artifact", local_path=local) if local
                    else ModelArtifact(self, "Artifact", s3_uri=config.model.artifact))
        spec_json = json.dumps(config.serving_spec(artifact.s3_uri), separators=(",", ":"))
        self.front_door = RealtimeFrontDoor(self, "FrontDoor", vpc=vpc,
                                            certificate_arn=config.endpoint.certificate_arn,
                                            allowed_cidr=config.endpoint.allowed_cidr or network.cidr)
        self.backend = BACKENDS[config.backend](self, config, BackendContext(vpc, artifact, spec_json))
        self.backend.serve_realtime(self.front_door)
        CfnOutput(self, "Endpoint", value=self.front_door.url, description="POST images to <Endpoint>/predict")
