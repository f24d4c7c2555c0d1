"""ModelStack-<name>: the model's stable front door plus the backend that ``backend:`` selects."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from crossover.capacity import scaling_target
from crossover.config import LoadedConfig, ModelConfig
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.fleet import InstanceFleet
from crossover.constructs.front_door import RealtimeFrontDoor
from crossover.constructs.instance_backends import CpuFleet, EiaFleet, GpuFleet, InferentiaFleet
from crossover.constructs.lambda_backend import LambdaBackend
from crossover.constructs.monitoring import ModelMonitoring
from crossover.constructs.pipeline_front_door import PipelineFrontDoor
from crossover.cost import profile
from crossover.stacks.network import NetworkStack

ROLLBACK_ALARMS_OUTPUT = "RollbackAlarms"

# Every backend serves either front door: serve_realtime(front_door) or serve_pipeline(front_door, ...).
Backend = LambdaBackend | InstanceFleet


@dataclass(frozen=True)
class BackendContext:
    """What every backend needs from the stack besides its own config section."""

    vpc: ec2.IVpc
    artifact: ModelArtifact
    spec: dict[str, Any]  # what serving/ reads, with the artifact's S3 location


def _lambda(scope: Construct, config: ModelConfig, ctx: BackendContext) -> Backend:
    spec = config.lambda_
    return LambdaBackend(scope, "Backend", vpc=ctx.vpc, artifact=ctx.artifact,
                         spec_json=json.dumps(ctx.spec, separators=(",", ":")),
                         memory_mib=spec.memory_mib, timeout_s=spec.timeout_s,
                         reserved_concurrency=spec.reserved_concurrency, architecture=spec.architecture,
                         input_prefixes=config.inputs.s3)


# Throughput of one instance when the config, a bench profile and model.gmacs all say nothing
# (images/s, a ResNet-50-class model at batch 1-8): a placeholder until the model is measured.
DEFAULT_IMAGES_PER_SECOND = {"gpu": 200.0, "eia": 60.0, "inferentia": 400.0, "cpu": 12.0}


def throughput(config: ModelConfig) -> float:
    """One instance's images/s, from the same source the cost model uses (crossover.cost.profile)."""
    figure = profile.images_per_second(config, config.backend, profile.BenchProfile.read(config.name))
    return figure.value if figure else DEFAULT_IMAGES_PER_SECOND[config.backend]


def requests_per_minute(config: ModelConfig, images_per_second: float, load: profile.LoadFigure | None) -> int:
    """The target-tracking target per instance: the config's, else a load test's measured capacity,
    else the queueing model on the instance's throughput (crossover.capacity)."""
    fleet = config.fleet
    assert fleet is not None
    if fleet.requests_per_minute_per_instance:
        return fleet.requests_per_minute_per_instance
    measured = profile.measured_rate(config, config.backend, load)
    if measured:
        return max(1, math.floor(measured.value * 60))
    return scaling_target(images_per_second, config.traffic.p99_ms)


def _fleet_kwargs(config: ModelConfig, ctx: BackendContext) -> dict[str, Any]:
    fleet = config.fleet
    assert fleet is not None
    images_per_second = throughput(config)  # reads the bench profile once
    return {"vpc": ctx.vpc, "artifact": ctx.artifact, "spec": ctx.spec, "instance_type": fleet.instance_type,
            "ami_id": fleet.ami_id, "min_capacity": config.scaling.min, "max_capacity": config.scaling.max,
            "root_volume_gib": fleet.root_volume_gib, "health_grace_s": fleet.health_grace_s,
            "images_per_second": images_per_second, "load_balanced": config.service == "realtime",
            "input_prefixes": config.inputs.s3,
            "requests_per_minute": requests_per_minute(config, images_per_second,
                                                       profile.LoadFigure.read(config.name))}


def _pipeline_options(config: ModelConfig) -> dict[str, Any]:
    """What each kind of backend needs to consume the queue: batching for Lambda, a backlog for fleets."""
    pipe = config.pipeline
    if config.backend == "lambda":
        return {"batch_size": pipe.batch_size, "max_batching_window_s": pipe.max_batching_window_s,
                "max_concurrency": pipe.max_concurrency}
    return {"backlog_s": pipe.backlog_s}


# backend name -> factory translating the config into that construct's keyword arguments.
BACKENDS: dict[str, Callable[[Construct, ModelConfig, BackendContext], Backend]] = {
    "lambda": _lambda,
    "gpu": lambda scope, config, ctx: GpuFleet(scope, "Backend", **_fleet_kwargs(config, ctx)),
    "eia": lambda scope, config, ctx: EiaFleet(scope, "Backend", accelerator=config.eia.accelerator,
                                               **_fleet_kwargs(config, ctx)),
    "inferentia": lambda scope, config, ctx: InferentiaFleet(scope, "Backend", neuron=config.runs_neuron,
                                                             **_fleet_kwargs(config, ctx)),
    "cpu": lambda scope, config, ctx: CpuFleet(scope, "Backend", **_fleet_kwargs(config, ctx)),
}


class ModelStack(Stack):
    """One model: ``FrontDoor`` (same ids whatever the backend), ``Artifact`` and ``Backend``.

    realtime: a load balancer with the ``Endpoint`` output. pipeline: a queue, a dead-letter queue and
    a results bucket, with the ``QueueUrl``, ``DeadLetterQueueUrl`` and ``ResultsBucket`` outputs.
    """

    def __init__(self, scope: Construct, id: str, *, loaded: LoadedConfig, network: NetworkStack,
                 **kwargs: Any) -> None:
        super().__init__(scope, id, description=f"crossover model {loaded.config.name} "
                         f"({loaded.config.backend}, {loaded.config.service})", **kwargs)
        config = loaded.config
        self.backend_name = config.backend
        self.input_prefixes = config.inputs.s3  # compliance acknowledges the wildcard under each
        vpc = network.vpc
        # Only the file the backend runs is published and granted: the Neuron build on inferentia.
        neuron = config.inferentia.neuron_artifact if config.runs_neuron else None
        artifact = (self._artifact("NeuronArtifact", loaded, neuron) if neuron
                    else self._artifact("Artifact", loaded, config.model.artifact))
        context = BackendContext(vpc, artifact, config.serving_spec(artifact.s3_uri))
        if config.service == "pipeline":
            self.front_door: RealtimeFrontDoor | PipelineFrontDoor = PipelineFrontDoor(
                self, "FrontDoor", visibility_timeout_s=config.pipeline.visibility_s(config.lambda_.timeout_s),
                max_receive_count=config.pipeline.max_receive_count, results_days=config.pipeline.results_days)
            self.backend = BACKENDS[config.backend](self, config, context)
            self.backend.serve_pipeline(self.front_door, **_pipeline_options(config))
            CfnOutput(self, "QueueUrl", value=self.front_door.queue.queue_url,
                      description='Send {"id": ..., "image": "s3://..."} messages here')
            CfnOutput(self, "DeadLetterQueueUrl", value=self.front_door.dead_letters.queue_url)
            CfnOutput(self, "ResultsBucket", value=self.front_door.results.bucket_name,
                      description="results/<id>.json; errors/<id>.json for what reached the dead-letter queue")
            monitoring = self._monitor(config)
            monitoring.watch_pipeline(self.front_door, backlog_s=config.pipeline.backlog_s)
            self._guard_rollouts(config, monitoring)
            return
        self.front_door = RealtimeFrontDoor(self, "FrontDoor", vpc=vpc,
                                            certificate_arn=config.endpoint.certificate_arn,
                                            allowed_cidr=config.endpoint.allowed_cidr or network.cidr,
                                            deletion_protection=config.endpoint.deletion_protection)
        self.backend = BACKENDS[config.backend](self, config, context)
        self.backend.serve_realtime(self.front_door)
        CfnOutput(self, "Endpoint", value=self.front_door.url, description="POST images to <Endpoint>/predict")
        monitoring = self._monitor(config)
        monitoring.watch_realtime(self.front_door, p99_ms=config.traffic.p99_ms)
        if isinstance(self.backend, InstanceFleet):
            monitoring.watch_targets(self.front_door.target_group)
        self._guard_rollouts(config, monitoring)

    def _monitor(self, config: ModelConfig) -> ModelMonitoring:
        """Alarms and dashboard; what the backend adds (Lambda errors, model loads) is common to both services."""
        monitoring = ModelMonitoring(self, "Monitoring", model=config.name, topic_arn=config.alarms.topic_arn)
        if isinstance(self.backend, LambdaBackend):
            monitoring.watch_function(self.backend.alias)
        else:
            monitoring.watch_model_loads()
        if config.backend == "gpu":
            monitoring.watch_gpus()
        return monitoring

    def _guard_rollouts(self, config: ModelConfig, monitoring: ModelMonitoring) -> None:
        """The rollback alarms stop a bad release: CodeDeploy's traffic shift on Lambda and, for every
        backend, CloudFormation's rollback triggers, which ``make deploy`` sets from this output (an
        instance fleet's rolling update is rolled back with the rest of the stack)."""
        if isinstance(self.backend, LambdaBackend):
            self.backend.shift_traffic(monitoring.rollback_alarms, config.rollout.lambda_traffic)
        CfnOutput(self, ROLLBACK_ALARMS_OUTPUT,
                  value=",".join(monitoring.alarm_name(a.node.id) for a in monitoring.rollback_alarms),
                  description="Alarms that roll a deployment back (CloudFormation rollback triggers)")

    def _artifact(self, id: str, loaded: LoadedConfig, location: str) -> ModelArtifact:
        local = loaded.local(location)
        return ModelArtifact(self, id, local_path=local) if local else ModelArtifact(self, id, s3_uri=location)
