"""ModelService: one model, from the one shared config, behind a front door that never moves, in any stack.

    from crossover import ModelService, load_config

    service = ModelService(stack, "Classifier", config=load_config("models/resnet152.yaml"), vpc=vpc)
    service.connections.allow_default_port_from(clients)   # realtime: who may call the endpoint

The backend that ``config.backend`` names serves behind the front door (realtime: an internal load balancer,
or a public HTTPS one with a certificate; pipeline: a queue and a results bucket), with its alarms, its
dashboard and its rollout guards; each construct acknowledges its own compliance findings, so a team applies
the cdk-nag packs to its app (``crossover.compliance.apply``) and nothing else.
"""

from __future__ import annotations

import functools

from aws_cdk import Annotations, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from crossover.config import BACKEND_IDS, ModelConfig
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.backend import Backend, PrivateEgress, artifact_location, model_artifact
from crossover.constructs.fleet import InstanceFleet
from crossover.constructs.front_door import RealtimeFrontDoor
from crossover.constructs.instance_backends import CpuFleet, EiaFleet, GpuFleet, InferentiaFleet
from crossover.constructs.lambda_backend import LambdaBackend
from crossover.constructs.monitoring import ModelMonitoring
from crossover.constructs.pipeline_front_door import PipelineFrontDoor
from crossover.cost import catalog, model, profile
from crossover.cost.band import band
from crossover.shape import CANARY_WEIGHT_CONTEXT

FLEETS: dict[str, type[InstanceFleet]] = {"gpu": GpuFleet, "eia": EiaFleet, "inferentia": InferentiaFleet,
                                          "cpu": CpuFleet}
# Context key `make deploy` sets for the first of a canary's two updates: the new backend is created and
# becomes ready while it takes no requests; the second update gives it its share (crossover.rollout).
# The Lambda function's own alarms, which judge its CodeDeploy traffic shifts.
FUNCTION_ALARMS = {"LatencyP99", "ErrorRate", "FailedMessages", "LambdaErrors"}


class ModelService(Construct):
    """The model in ``config`` served on ``config.backend`` in ``vpc``, behind a front door whose ids never
    depend on the backend: changing ``backend`` and deploying again moves the model, and its endpoint or queue
    stays.

    ``vpc_subnets``: where the backends and an internal load balancer run (default: the VPC's private subnets
    with egress; isolated ones if it has none). ``allowed_peer``: who may reach an internal endpoint (default:
    ``endpoint.allowed_cidr``, else the VPC's CIDR). ``alarm_topic``: where alarms go (default:
    ``alarms.topic_arn``, else a topic of the model's own). ``throughput``: one instance of the backend's
    images/s, measured; ``measured``: the `crossover bench` profile and load test (synth reads no files but the
    config's artifact: without a figure the scaling target rests on a placeholder, with a synth warning).
    ``name``: what the alarms and the dashboard are named after (default: ``<stack>-<model>``), unique in the
    account and region. ``private_egress``: in a NAT-free network, its endpoints and S3 prefix list, to which
    every backend's security group limits its way out (NetworkStack.private_egress; default: any outbound).

    During a canary (``config.canary``) the backend it moves from stays, untouched, and the listener splits
    requests between the two by weight.
    """

    def __init__(self, scope: Construct, id: str, *, config: ModelConfig, vpc: ec2.IVpc,
                 vpc_subnets: ec2.SubnetSelection | None = None, alarm_topic: sns.ITopic | None = None,
                 allowed_peer: ec2.IPeer | None = None, throughput: float | None = None,
                 measured: profile.Measured | None = None, name: str | None = None,
                 private_egress: PrivateEgress | None = None) -> None:
        super().__init__(scope, id)
        if throughput is not None and config.backend == "lambda":
            raise ValueError(f"{self.node.path}: throughput is one instance's images/s, and lambda has no instances; "
                             "give lambda.latency_ms in the config instead")
        self.config = config
        self.name = name or f"{Stack.of(self).stack_name}-{config.name}"
        for warning in config.warnings():
            Annotations.of(self).add_warning_v2("crossover:config", warning)
        vpc_subnets = vpc_subnets or self._private(vpc)
        measured = measured or profile.Measured()
        if config.service == "pipeline":
            self.front_door: RealtimeFrontDoor | PipelineFrontDoor = PipelineFrontDoor(
                self, "FrontDoor", visibility_timeout=Duration.seconds(config.pipeline.visibility_s(
                    config.lambda_.timeout_s)), max_receive_count=config.pipeline.max_receive_count,
                results_retention=Duration.days(config.pipeline.results_days))
        else:
            cidr = config.endpoint.allowed_cidr
            self.front_door = RealtimeFrontDoor(
                self, "FrontDoor", vpc=vpc, vpc_subnets=vpc_subnets,
                allowed_peer=allowed_peer or ec2.Peer.ipv4(cidr or vpc.vpc_cidr_block),
                certificate_arn=config.endpoint.certificate_arn,
                deletion_protection=config.endpoint.deletion_protection)
        # Only the file a backend runs is published and granted: the Neuron build on inferentia.
        artifacts: dict[str, ModelArtifact] = {}
        self.backends: dict[str, Backend] = {}
        for kind in config.backends:
            location = artifact_location(config, kind)
            if location not in artifacts:
                artifacts[location] = model_artifact(
                    self, "Artifact" if location == config.model.artifact else "NeuronArtifact", location)
            if kind == "lambda":
                self.backends[kind] = LambdaBackend.from_config(
                    self, BACKEND_IDS[kind], config=config, vpc=vpc, front_door=self.front_door,
                    artifact=artifacts[location], vpc_subnets=vpc_subnets, private_egress=private_egress)
            else:
                self.backends[kind] = FLEETS[kind].from_config(
                    self, BACKEND_IDS[kind], config=config, vpc=vpc, front_door=self.front_door,
                    artifact=artifacts[location], vpc_subnets=vpc_subnets,
                    throughput=throughput if kind == config.backend else None, measured=measured,
                    private_egress=private_egress)
        self.backend = self.backends[config.backend]
        if isinstance(self.front_door, RealtimeFrontDoor):
            self.front_door.forward([(self._route(kind), weight) for kind, weight in self.weights().items()],
                                    after=[backend.ready for backend in self.backends.values()])
        self.monitoring = self._monitor(alarm_topic, measured)

    @property
    def endpoint(self) -> str | None:
        """The realtime endpoint's URL (POST images to <endpoint>/predict); None for a pipeline."""
        return self.front_door.url if isinstance(self.front_door, RealtimeFrontDoor) else None

    @property
    def queue(self) -> sqs.IQueue | None:
        """The pipeline's input queue (send ``{"id": ..., "image": "s3://..."}``); None for realtime."""
        return self.front_door.queue if isinstance(self.front_door, PipelineFrontDoor) else None

    @property
    def connections(self) -> ec2.Connections:
        """Realtime: the endpoint's listener (``allow_default_port_from(clients)``); pipeline: the serving
        backend's (its way out, e.g. to a database)."""
        if isinstance(self.front_door, RealtimeFrontDoor):
            return self.front_door.listener.connections
        return self.backend.connections

    @property
    def alarms(self) -> list[cloudwatch.Alarm]:
        return self.monitoring.alarms

    @property
    def rollback_alarm_names(self) -> list[str]:
        """The alarms that say a release is bad: pass them to CloudFormation as rollback triggers."""
        return [self.monitoring.alarm_name(alarm.node.id) for alarm in self.monitoring.rollback_alarms]

    def weights(self) -> dict[str, int]:
        """Each backend's share of the listener's requests: all to the backend, or the canary's split (the
        new backend's share is 0 in the first update of a canary deploy, while it becomes ready)."""
        config = self.config
        if config.canary is None:
            return {config.backend: 100}
        staged = self.node.try_get_context(CANARY_WEIGHT_CONTEXT)
        percent = config.canary.percent if staged is None else int(staged)
        return {config.backend: percent, config.canary.from_: 100 - percent}

    def _route(self, kind: str) -> elbv2.ApplicationTargetGroup:
        route = self.backends[kind].route
        assert route is not None, "a realtime backend always has a target group"
        return route

    def _private(self, vpc: ec2.IVpc) -> ec2.SubnetSelection:
        if vpc.private_subnets:
            return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        if vpc.isolated_subnets:
            Annotations.of(self).add_warning_v2("crossover:isolated-subnets", (
                "the VPC's private subnets are isolated: backends need a gateway endpoint for S3 and interface "
                "endpoints for CloudWatch, Elastic Load Balancing, CloudFormation and (pipelines) SQS "
                "(crossover.shape.PRIVATE_ENDPOINTS); pass private_egress to keep their security groups to those, "
                "or vpc_subnets"))
            return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        raise ValueError(f"{self.node.path}: the VPC has no private subnets, and crossover never places a model in "
                         "public ones; add private subnets or pass vpc_subnets")

    def _monitor(self, topic: sns.ITopic | None, measured: profile.Measured) -> ModelMonitoring:
        """Alarms and dashboard. What a backend adds (Lambda errors, unhealthy hosts) rolls a deploy back only
        for the backend being deployed: during a canary, the backend it moves from is not on trial."""
        config = self.config
        if topic is None and config.alarms.topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", config.alarms.topic_arn)
        monitoring = ModelMonitoring(self, "Monitoring", model=config.name, name=self.name, topic=topic)
        if isinstance(self.front_door, PipelineFrontDoor):
            monitoring.watch_pipeline(self.front_door, backlog_s=config.pipeline.backlog_s)
            count = self.front_door.queue.metric_number_of_messages_sent(period=Duration.days(1), statistic="Sum")
        else:
            monitoring.watch_realtime(self.front_door, p99_ms=config.traffic.p99_ms, rollback=config.canary is None)
            count = self.front_door.load_balancer.metrics.request_count(period=Duration.days(1))
        for kind, backend in self.backends.items():
            backend.watch(monitoring, rollback=kind == config.backend)
        if set(self.backends) - {"lambda"}:
            monitoring.watch_model_loads(rollback=config.backend != "lambda")
        if "gpu" in self.backends:
            monitoring.watch_gpus()
        if config.canary is not None and isinstance(self.front_door, RealtimeFrontDoor):
            monitoring.watch_canary(self._route(config.backend), self.front_door, backend=config.backend,
                                    p99_ms=config.traffic.p99_ms)
        self._watch_volume(monitoring, count, measured)
        # The Lambda's own traffic shifts are judged by what judges it when it serves alone, whether it is the
        # backend being deployed or the one a canary moves from (then its deployment group is unchanged).
        function = self.backends.get("lambda")
        if isinstance(function, LambdaBackend):
            function.shift_traffic([a for a in monitoring.alarms if a.node.id in FUNCTION_ALARMS],
                                   config.rollout.lambda_traffic)
        return monitoring

    def _watch_volume(self, monitoring: ModelMonitoring, count: cloudwatch.Metric, measured: profile.Measured) -> None:
        """Alarms for when the volume leaves the band in which this backend is the one to run, priced with the
        bundled catalog and the same figures `crossover cost` uses."""
        prices = _bundled_prices()
        edges = band(self.config, prices, measured.bench, measured.load)
        if edges is None:
            Annotations.of(self).add_warning_v2("crossover:no-volume-band", (
                f"{self.config.backend} is not the backend to run at any volume from {model.RANGE[0]:g} to "
                f"{model.RANGE[1]:g} images a month (see crossover cost): no volume alarm"))
            return
        monitoring.watch_volume(count, edges, prices.hours_per_month)


@functools.cache
def _bundled_prices() -> catalog.Catalog:
    """The bundled price catalog, read once per synth however many models there are."""
    return catalog.load()
