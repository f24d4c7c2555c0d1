"""ModelStack-<name>: the model's stable front door plus the backend that ``backend:`` selects."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_cdk import Annotations, CfnOutput, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from crossover.capacity import per_minute
from crossover.config import FleetSpec, LoadedConfig, ModelConfig
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.fleet import InstanceFleet
from crossover.constructs.front_door import RealtimeFrontDoor
from crossover.constructs.instance_backends import CpuFleet, EiaFleet, GpuFleet, InferentiaFleet
from crossover.constructs.lambda_backend import LambdaBackend
from crossover.constructs.monitoring import ModelMonitoring
from crossover.constructs.pipeline_front_door import PipelineFrontDoor
from crossover.cost import catalog, model, profile
from crossover.cost.band import band
from crossover.stacks.network import NetworkStack

ROLLBACK_ALARMS_OUTPUT = "RollbackAlarms"
FUNCTION_ALARMS = {"LatencyP99", "ErrorRate", "FailedMessages", "LambdaErrors"}

# Every backend serves either front door: serve_realtime(front_door) or serve_pipeline(front_door, ...).
Backend = LambdaBackend | InstanceFleet


@dataclass(frozen=True)
class BackendContext:
    """What every backend needs from the stack besides its own config section."""

    vpc: ec2.IVpc
    artifact: ModelArtifact
    spec: dict[str, Any]  # what serving/ reads on this backend, with the artifact's S3 location


# Construct ids by backend: stable whatever else is deployed, so a canary adds the new backend beside the
# old one without touching it, and promoting or aborting deletes one without touching the other.
BACKEND_IDS = {"lambda": "Lambda", "gpu": "Gpu", "eia": "Eia", "inferentia": "Inferentia", "cpu": "Cpu"}
# Context key `make deploy` sets for the first of a canary's two updates: the new backend is created and
# becomes ready while it takes no requests; the second update gives it its share (crossover.rollout).
CANARY_WEIGHT_CONTEXT = "crossover:canary-weight"


def _lambda(scope: Construct, config: ModelConfig, ctx: BackendContext) -> Backend:
    spec = config.lambda_
    return LambdaBackend(scope, BACKEND_IDS["lambda"], vpc=ctx.vpc, artifact=ctx.artifact,
                         spec_json=json.dumps(ctx.spec, separators=(",", ":")),
                         memory_mib=spec.memory_mib, timeout_s=spec.timeout_s,
                         reserved_concurrency=spec.reserved_concurrency, architecture=spec.architecture,
                         provisioned_concurrency=spec.provisioned_concurrency, input_prefixes=config.inputs.s3)


def throughput(scope: Construct, config: ModelConfig, backend: str) -> float:
    """One instance's images/s, from the same source the cost model uses (crossover.cost.profile); with no
    figure at all, a placeholder, and a synth warning that says so."""
    figure = profile.images_per_second(config, backend, profile.BenchProfile.read(config.name))
    if figure is None:
        Annotations.of(scope).add_warning_v2("crossover:placeholder-throughput",
                                             profile.placeholder_warning(config, backend))
        return profile.PLACEHOLDER_IMAGES_PER_SECOND[backend]
    return figure.value


def requests_per_minute(config: ModelConfig, backend: str, images_per_second: float,
                        load: profile.LoadFigure | None) -> int:
    """The target-tracking target per instance: the rate `crossover cost` plans each instance for."""
    return per_minute(profile.planned_rate(config, backend, images_per_second, load).value)


def _fleet_kwargs(scope: Construct, config: ModelConfig, backend: str, ctx: BackendContext) -> dict[str, Any]:
    fleet: FleetSpec = getattr(config, backend)
    images_per_second = throughput(scope, config, backend)  # reads the bench profile once
    return {"vpc": ctx.vpc, "artifact": ctx.artifact, "spec": ctx.spec, "instance_type": fleet.instance_type,
            "ami_id": fleet.ami_id, "min_capacity": config.scaling.min, "max_capacity": config.scaling.max,
            "root_volume_gib": fleet.root_volume_gib, "health_grace_s": fleet.health_grace_s,
            "images_per_second": images_per_second, "load_balanced": config.service == "realtime",
            "input_prefixes": config.inputs.s3,
            "requests_per_minute": requests_per_minute(config, backend, images_per_second,
                                                       profile.LoadFigure.read(config.name))}


def _pipeline_options(config: ModelConfig) -> dict[str, Any]:
    """What each kind of backend needs to consume the queue: batching for Lambda, a backlog for fleets."""
    pipe = config.pipeline
    if config.backend == "lambda":
        return {"batch_size": pipe.batch_size, "max_batching_window_s": pipe.max_batching_window_s,
                "max_concurrency": pipe.max_concurrency}
    return {"backlog_s": pipe.backlog_s}


@functools.cache
def _bundled_prices() -> catalog.Catalog:
    """The bundled price catalog, read once per synth however many model stacks there are."""
    return catalog.load()


# backend name -> factory translating the config into that construct's keyword arguments.
BACKENDS: dict[str, Callable[[Construct, ModelConfig, BackendContext], Backend]] = {
    "lambda": _lambda,
    "gpu": lambda scope, config, ctx: GpuFleet(scope, BACKEND_IDS["gpu"], **_fleet_kwargs(scope, config, "gpu", ctx)),
    "eia": lambda scope, config, ctx: EiaFleet(scope, BACKEND_IDS["eia"], accelerator=config.eia.accelerator,
                                               **_fleet_kwargs(scope, config, "eia", ctx)),
    "inferentia": lambda scope, config, ctx: InferentiaFleet(
        scope, BACKEND_IDS["inferentia"], neuron=config.inferentia.neuron_artifact is not None,
        **_fleet_kwargs(scope, config, "inferentia", ctx)),
    "cpu": lambda scope, config, ctx: CpuFleet(scope, BACKEND_IDS["cpu"],
                                               **_fleet_kwargs(scope, config, "cpu", ctx)),
}


class ModelStack(Stack):
    """One model: ``FrontDoor`` (same ids whatever the backend), its artifact and its backend, under the
    backend's own id (``Lambda``, ``Gpu``, ``Eia``, ``Inferentia``, ``Cpu``). During a canary the backend it
    moves from stays, untouched, and the listener splits requests between the two by weight.

    realtime: a load balancer with the ``Endpoint`` output; the listener forwards to a backend only once
    it is ready (a fleet: its minimum instances signalled, each after the load balancer found it healthy;
    Lambda: the live alias on a published version, with any provisioned concurrency allocated).
    pipeline: a queue, a dead-letter queue and a results bucket, with the ``QueueUrl``,
    ``DeadLetterQueueUrl`` and ``ResultsBucket`` outputs.
    """

    def __init__(self, scope: Construct, id: str, *, loaded: LoadedConfig, network: NetworkStack,
                 **kwargs: Any) -> None:
        super().__init__(scope, id, description=f"crossover model {loaded.config.name} "
                         f"({loaded.config.backend}, {loaded.config.service})", **kwargs)
        config = loaded.config
        self.backend_name = config.backend
        self.input_prefixes = config.inputs.s3  # compliance acknowledges the wildcard under each
        vpc = network.vpc
        self.backends: dict[str, Backend] = {}
        artifacts: dict[str, ModelArtifact] = {}
        for name in config.backends:
            # Only the file a backend runs is published and granted: the Neuron build on inferentia.
            neuron = config.inferentia.neuron_artifact if name == "inferentia" else None
            location = neuron or config.model.artifact
            if location not in artifacts:
                artifacts[location] = self._artifact("NeuronArtifact" if neuron else "Artifact", loaded, location)
            artifact = artifacts[location]
            context = BackendContext(vpc, artifact, config.serving_spec(artifact.s3_uri, name))
            self.backends[name] = BACKENDS[name](self, config, context)
        self.backend = self.backends[config.backend]
        if config.service == "pipeline":
            self.front_door: RealtimeFrontDoor | PipelineFrontDoor = PipelineFrontDoor(
                self, "FrontDoor", visibility_timeout_s=config.pipeline.visibility_s(config.lambda_.timeout_s),
                max_receive_count=config.pipeline.max_receive_count, results_days=config.pipeline.results_days)
            self.backend.serve_pipeline(self.front_door, **_pipeline_options(config))
            CfnOutput(self, "QueueUrl", value=self.front_door.queue.queue_url,
                      description='Send {"id": ..., "image": "s3://..."} messages here')
            CfnOutput(self, "DeadLetterQueueUrl", value=self.front_door.dead_letters.queue_url)
            CfnOutput(self, "ResultsBucket", value=self.front_door.results.bucket_name,
                      description="results/<id>.json; errors/<id>.json for what reached the dead-letter queue")
            monitoring = self._monitor(config)
            monitoring.watch_pipeline(self.front_door, backlog_s=config.pipeline.backlog_s)
            self._watch_volume(config, monitoring, self.front_door.queue.metric_number_of_messages_sent(
                period=Duration.days(1), statistic="Sum"))
            self._guard_rollouts(config, monitoring)
            return
        self.front_door = RealtimeFrontDoor(self, "FrontDoor", vpc=vpc,
                                            certificate_arn=config.endpoint.certificate_arn,
                                            allowed_cidr=config.endpoint.allowed_cidr or network.cidr,
                                            deletion_protection=config.endpoint.deletion_protection)
        routes = {kind: backend.serve_realtime(self.front_door, name=BACKEND_IDS[kind])
                  for kind, backend in self.backends.items()}
        self.front_door.forward([(routes[kind], weight) for kind, weight in self.weights(config).items()],
                                after=[backend.ready for backend in self.backends.values()])
        CfnOutput(self, "Endpoint", value=self.front_door.url, description="POST images to <Endpoint>/predict")
        monitoring = self._monitor(config)
        monitoring.watch_realtime(self.front_door, p99_ms=config.traffic.p99_ms, rollback=config.canary is None)
        self._watch_volume(config, monitoring, self.front_door.load_balancer.metrics.request_count(
            period=Duration.days(1)))
        for fleet, route in routes.items():
            if fleet != "lambda":
                monitoring.watch_targets(route, BACKEND_IDS[fleet], rollback=fleet == config.backend)
        if config.canary is not None:
            monitoring.watch_canary(routes[config.backend], self.front_door, p99_ms=config.traffic.p99_ms)
        self._guard_rollouts(config, monitoring)

    def weights(self, config: ModelConfig) -> dict[str, int]:
        """Each backend's share of the listener's requests: all to the backend, or the canary's split (the
        new backend's share is 0 in the first update of a canary deploy, while it becomes ready)."""
        if config.canary is None:
            return {config.backend: 100}
        staged = self.node.try_get_context(CANARY_WEIGHT_CONTEXT)
        percent = config.canary.percent if staged is None else int(staged)
        return {config.backend: percent, config.canary.from_: 100 - percent}

    def _monitor(self, config: ModelConfig) -> ModelMonitoring:
        """Alarms and dashboard. What a backend adds (Lambda errors, model loads) rolls a deploy back only
        for the backend being deployed: during a canary, the backend it moves from is not on trial."""
        monitoring = ModelMonitoring(self, "Monitoring", model=config.name, topic_arn=config.alarms.topic_arn)
        fleets = [name for name in self.backends if name != "lambda"]
        if "lambda" in self.backends:
            backend = self.backends["lambda"]
            assert isinstance(backend, LambdaBackend)
            monitoring.watch_function(backend.alias, rollback=config.backend == "lambda")
        if fleets:
            monitoring.watch_model_loads(rollback=config.backend != "lambda")
        if "gpu" in self.backends:
            monitoring.watch_gpus()
        return monitoring

    def _watch_volume(self, config: ModelConfig, monitoring: ModelMonitoring, count: cloudwatch.Metric) -> None:
        """Alarms for when the volume leaves the band in which this backend is the one to run, priced with the
        bundled catalog and the same figures `crossover cost` uses."""
        prices = _bundled_prices()
        edges = band(config, prices, profile.BenchProfile.read(config.name), profile.LoadFigure.read(config.name))
        if edges is None:
            Annotations.of(self).add_warning_v2("crossover:no-volume-band", (
                f"{config.backend} is not the backend to run at any volume from {model.RANGE[0]:g} to "
                f"{model.RANGE[1]:g} images a month (see crossover cost): no volume alarm"))
            return
        monitoring.watch_volume(count, edges, prices.hours_per_month)

    def _guard_rollouts(self, config: ModelConfig, monitoring: ModelMonitoring) -> None:
        """The rollback alarms stop a bad release: CodeDeploy's traffic shift on Lambda and, for every
        backend, CloudFormation's rollback triggers, which ``make deploy`` sets from this output (an
        instance fleet's rolling update is rolled back with the rest of the stack)."""
        # The Lambda's own traffic shifts are judged by what judges it when it serves alone, whether it is
        # the backend being deployed or the one a canary moves from (then its deployment group is unchanged).
        function = self.backends.get("lambda")
        if isinstance(function, LambdaBackend):
            function.shift_traffic([a for a in monitoring.alarms if a.node.id in FUNCTION_ALARMS],
                                   config.rollout.lambda_traffic)
        CfnOutput(self, ROLLBACK_ALARMS_OUTPUT,
                  value=",".join(monitoring.alarm_name(a.node.id) for a in monitoring.rollback_alarms),
                  description="Alarms that roll a deployment back (CloudFormation rollback triggers)")

    def _artifact(self, id: str, loaded: LoadedConfig, location: str) -> ModelArtifact:
        local = loaded.local(location)
        return ModelArtifact(self, id, local_path=local) if local else ModelArtifact(self, id, s3_uri=location)
