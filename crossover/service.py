"""ModelService: one model, from the one shared config, behind a front door that never moves, in any stack.

    from crossover import ModelService, load_config, size

    config = load_config("models/resnet152.yaml")
    service = ModelService(stack, "Classifier", config=config, vpc=vpc, sizing=size(config))
    service.connections.allow_default_port_from(clients)   # realtime: who may call the endpoint
    bucket.grant_read(service)                              # every backend's role may read it

The backend that ``config.backend`` names serves behind the front door (realtime: an internal load balancer of
its own, a public HTTPS one with a certificate, or a path prefix on the team's load balancer; pipeline: a queue
and a results bucket), with its alarms, its dashboard and its rollout guards; each construct acknowledges its own
compliance findings, so a team applies the cdk-nag packs to its app (``crossover.compliance.apply``) and nothing
else. It is an ``ec2.IConnectable`` and an ``iam.IGrantable`` as CDK expects, with ``metric_*`` helpers.
"""

from __future__ import annotations

import re
from typing import Unpack

import jsii
from aws_cdk import Annotations, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct, DependencyGroup, IValidation

from crossover.backends import BACKEND_IDS, KINDS
from crossover.config import ModelConfig
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.backend import Backend, PrivateEgress, artifact_location, model_artifact, private_subnets
from crossover.constructs.front_door import PathFrontDoor, RealtimeFrontDoor, RequestFrontDoor
from crossover.constructs.lambda_backend import LambdaBackend
from crossover.constructs.metrics import MetricOptions, defaults, serving_metric
from crossover.constructs.monitoring import ModelMonitoring
from crossover.constructs.pipeline_front_door import PipelineFrontDoor
from crossover.constructs.registry import construct
from crossover.errors import UserError
from crossover.figures import Sizing
from crossover.shape import CANARY_WEIGHT_CONTEXT

PATH_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")  # /cats, /team/cats: no wildcard, no trailing slash


@jsii.implements(ec2.IConnectable, iam.IGrantable)
class ModelService(Construct):
    """The model in ``config`` served on ``config.backend`` in ``vpc``, behind a front door whose ids never
    depend on the backend: changing ``backend`` and deploying again moves the model, and its endpoint or queue
    stays.

    ``sizing``: the figures its scaling and volume alarms use, ``crossover.size(config)`` (the cost model, the
    config and what was measured; without it, the config's ``images_per_second`` or a placeholder, with a synth
    warning, and no volume alarm). ``vpc_subnets``: where the backends and an internal load balancer run
    (default: the VPC's private subnets with egress; isolated ones if it has none). ``allowed_peer``: who may
    reach an internal endpoint (default: ``endpoint.allowed_cidr``, else the VPC's CIDR). ``alarm_topic``: where
    alarms go (default: ``alarms.topic_arn``, else a topic of the model's own). ``name``: what the alarms and the
    dashboard are named after (default: ``<stack>-<model>``), unique in the account and region.
    ``private_egress``: in a NAT-free network, its endpoints and S3 prefix list, to which every backend's
    security group limits its way out (NetworkStack.private_egress; default: any outbound).

    ``load_balancer`` and ``path_prefix`` (with ``listener`` when the load balancer has more than one, or is
    imported; ``priority``: its block of listener rules, when two prefixes' default blocks collide): the service
    under that prefix on the team's own load balancer instead of one of its own (``PathFrontDoor``).

    During a canary (``config.canary``) the backend it moves from stays, untouched, and the front door splits
    requests between the two by weight.
    """

    def __init__(self, scope: Construct, id: str, *, config: ModelConfig, vpc: ec2.IVpc,
                 vpc_subnets: ec2.SubnetSelection | None = None, alarm_topic: sns.ITopic | None = None,
                 allowed_peer: ec2.IPeer | None = None, sizing: Sizing | None = None, name: str | None = None,
                 private_egress: PrivateEgress | None = None,
                 load_balancer: elbv2.IApplicationLoadBalancer | None = None,
                 listener: elbv2.IApplicationListener | None = None, path_prefix: str | None = None,
                 priority: int | None = None) -> None:
        super().__init__(scope, id)
        _refuse_contradictions(self.node.path, config, load_balancer, listener, path_prefix, allowed_peer)
        self.config, self.sizing = config, sizing or Sizing()
        self.name = name or f"{Stack.of(self).stack_name}-{config.name}"
        for code, warning in (*(("crossover:config", w) for w in config.warnings()), *self.sizing.warnings):
            Annotations.of(self).add_warning_v2(code, warning)
        if sizing is None:
            Annotations.of(self).add_warning_v2("crossover:unsized", (
                "no sizing given: no volume alarm, and fleets scale on the config's images_per_second or a "
                "placeholder; pass sizing=crossover.size(config)"))
        vpc_subnets = private_subnets(self, vpc, vpc_subnets)
        self.requests: RequestFrontDoor | None = None
        self.messages: PipelineFrontDoor | None = None
        self.front_door: RequestFrontDoor | PipelineFrontDoor
        if config.service == "pipeline":
            self.front_door = self.messages = PipelineFrontDoor(
                self, "FrontDoor", visibility_timeout=Duration.seconds(config.pipeline.visibility_s(
                    config.lambda_.timeout_s)), max_receive_count=config.pipeline.max_receive_count,
                results_retention=Duration.days(config.pipeline.results_days))
        elif load_balancer is not None and path_prefix is not None:
            self.front_door = self.requests = PathFrontDoor(
                self, "FrontDoor", load_balancer=load_balancer, path_prefix=path_prefix, priority=priority,
                listener=listener or _only_listener(self.node.path, load_balancer))
            self.node.add_validation(_SharedCost(self, self.requests, config.endpoint.services_per_load_balancer))
        else:
            cidr = config.endpoint.allowed_cidr
            self.front_door = self.requests = RealtimeFrontDoor(
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
            self.backends[kind] = construct(kind).from_config(
                self, BACKEND_IDS[kind], config=config, vpc=vpc, front_door=self.front_door,
                artifact=artifacts[location], vpc_subnets=vpc_subnets, private_egress=private_egress,
                sizing=self.sizing, path_prefix=path_prefix or "")
        self.backend = self.backends[config.backend]
        if self.requests is not None:
            self.requests.forward([(self._route(kind), weight) for kind, weight in self.weights().items()],
                                  after=[backend.ready for backend in self.backends.values()])
        self.monitoring = self._monitor(alarm_topic)

    @property
    def endpoint(self) -> str | None:
        """The realtime endpoint's URL (POST images to <endpoint>/predict); None for a pipeline."""
        return self.requests.url if self.requests is not None else None

    @property
    def queue(self) -> sqs.IQueue | None:
        """The pipeline's input queue (send ``{"id": ..., "image": "s3://..."}``); None for realtime."""
        return self.messages.queue if self.messages is not None else None

    @property
    def connections(self) -> ec2.Connections:
        """Realtime: who may call the endpoint (``allow_default_port_from(clients)``, or
        ``clients.connections.allow_to_default_port(service)``): the listener of its own load balancer, the
        team's load balancer's security group. Pipeline: every backend's way out (e.g. to a database)."""
        if self.requests is not None:
            return self.requests.connections
        return self.backend_connections

    @property
    def backend_connections(self) -> ec2.Connections:
        """Every backend's security groups (both during a canary): their way out
        (``db.connections.allow_default_port_from(service.backend_connections)``)."""
        return ec2.Connections(security_groups=[group for backend in self.backends.values()
                                                for group in backend.connections.security_groups])

    @property
    def grant_principal(self) -> iam.IPrincipal:
        """Every backend's role (both during a canary): ``bucket.grant_read(service)`` reaches each."""
        return _EveryRole([backend.grant_principal for backend in self.backends.values()], Stack.of(self).account)

    def grant_submit(self, grantee: iam.IGrantable) -> iam.Grant:
        """Send messages to the pipeline's queue."""
        return self._pipeline("grant_submit").queue.grant_send_messages(grantee)

    def grant_read_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """Read the pipeline's results and errors (results/<id>.json, errors/<id>.json)."""
        return self._pipeline("grant_read_results").grant_read_results(grantee)

    def metric_latency(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """Milliseconds the serving code took to answer a request or a message (default p99), whichever backend
        answered: the same metric before and after a switch, both backends' during a canary."""
        return serving_metric(self.config.name, "LatencyMs", **defaults(options, statistic="p99"))

    def metric_errors(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """Realtime: the server's own faults (its 500s, which roll a deploy back; never a client's 4xx). Pipeline:
        messages that failed (Sum)."""
        name = "ServerFaults" if self.requests is not None else "PipelineFailures"
        return serving_metric(self.config.name, name, **options)

    def metric_requests(self, **options: Unpack[MetricOptions]) -> cloudwatch.IMetric:
        """Realtime: requests the load balancer sent the service; pipeline: messages sent to its queue (Sum)."""
        if self.requests is not None:
            return self.requests.metric_request_count(**options)
        return self._pipeline("metric_requests").queue.metric_number_of_messages_sent(
            **defaults(options, statistic="Sum"))

    @property
    def alarms(self) -> list[cloudwatch.Alarm]:
        return self.monitoring.alarms

    @property
    def rollback_alarm_names(self) -> list[str]:
        """The alarms that say a release is bad: pass them to CloudFormation as rollback triggers."""
        return list(self.monitoring.rollback_alarm_names)

    def weights(self) -> dict[str, int]:
        """Each backend's share of the front door's requests: all to the backend, or the canary's split (the
        new backend's share is 0 in the first update of a canary deploy, while it becomes ready)."""
        config = self.config
        if config.canary is None:
            return {config.backend: 100}
        staged = self.node.try_get_context(CANARY_WEIGHT_CONTEXT)
        percent = config.canary.percent if staged is None else int(staged)
        return {config.backend: percent, config.canary.from_: 100 - percent}

    def _route(self, kind: str) -> elbv2.ApplicationTargetGroup:
        route = self.backends[kind].route
        if route is None:
            raise TypeError(f"{self.node.path}: the {kind} backend registered no target group with its front door")
        return route

    def _pipeline(self, what: str) -> PipelineFrontDoor:
        if self.messages is None:
            raise UserError(f"{self.node.path}: {what} is for a pipeline; this service is realtime (clients call "
                            "its endpoint: allow them with service.connections)")
        return self.messages

    def _monitor(self, topic: sns.ITopic | None) -> ModelMonitoring:
        """Alarms and dashboard. What a backend adds (Lambda errors, unhealthy hosts) rolls a deploy back only
        for the backend being deployed: during a canary, the backend it moves from is not on trial."""
        config = self.config
        if topic is None and config.alarms.topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", config.alarms.topic_arn)
        monitoring = ModelMonitoring(self, "Monitoring", model=config.name, name=self.name, topic=topic)
        # The Lambda's own traffic shifts are judged by what judges it when it serves alone, whether it is the
        # backend being deployed or the one a canary moves from (then its deployment group is unchanged).
        if self.requests is not None:
            judges = monitoring.watch_realtime(self.requests, p99_ms=config.traffic.p99_ms,
                                               rollback=config.canary is None)
        elif self.messages is not None:
            judges = monitoring.watch_pipeline(self.messages, backlog_s=config.pipeline.backlog_s)
        own = {kind: backend.watch(monitoring, rollback=kind == config.backend)
               for kind, backend in self.backends.items()}
        if any(KINDS[kind].fleet for kind in self.backends):
            monitoring.watch_model_loads(rollback=KINDS[config.backend].fleet)
        if "gpu" in self.backends:
            monitoring.watch_gpus()
        if config.canary is not None and self.requests is not None:
            monitoring.watch_canary(self._route(config.backend), backend=config.backend,
                                    p99_ms=config.traffic.p99_ms)
        if self.sizing.band is not None:
            monitoring.watch_volume(self.metric_requests(period=Duration.days(1)), self.sizing.band,
                                    self.sizing.hours_per_month)
        for kind, backend in self.backends.items():
            if isinstance(backend, LambdaBackend):
                backend.shift_traffic([*judges, *own[kind]], config.rollout.lambda_traffic)
        return monitoring


def _refuse_contradictions(path: str, config: ModelConfig, load_balancer: elbv2.IApplicationLoadBalancer | None,
                           listener: elbv2.IApplicationListener | None, path_prefix: str | None,
                           allowed_peer: ec2.IPeer | None) -> None:
    """Props that cannot hold together, refused with one line that says which and what to do."""
    shared = load_balancer is not None or listener is not None or path_prefix is not None
    problem = None
    if shared and config.service == "pipeline":
        problem = "load_balancer, listener and path_prefix are for realtime services; this one is a pipeline"
    elif shared and (load_balancer is None or path_prefix is None):
        problem = "a team's own load balancer takes both load_balancer= and path_prefix= (e.g. '/cats')"
    elif path_prefix is not None and not PATH_PREFIX.match(path_prefix):
        problem = f"path_prefix {path_prefix!r} must start with '/', not end with one, and hold no wildcard"
    elif shared and (config.endpoint.certificate_arn or config.endpoint.allowed_cidr or allowed_peer):
        problem = ("on a team's own load balancer, TLS and who may reach it are the team's: drop "
                   "endpoint.certificate_arn / endpoint.allowed_cidr from the config and allowed_peer=")
    elif not shared and config.endpoint.services_per_load_balancer > 1:
        problem = ("endpoint.services_per_load_balancer says the load balancer is shared, but no load_balancer= "
                   "was given")
    if problem:
        raise UserError(f"{path} ({config.name}): {problem}")


def _only_listener(path: str, load_balancer: elbv2.IApplicationLoadBalancer) -> elbv2.IApplicationListener:
    listeners = load_balancer.listeners
    if len(listeners) != 1:
        raise UserError(f"{path}: the load balancer has {len(listeners)} listeners crossover can see (an imported "
                        "one has none): pass listener= to say which serves the model")
    return listeners[0]


class _EveryRole(iam.CompositePrincipal):
    """Several roles as one grantee: a statement granted to it is added to each role's policy. It is in the
    service's account, so a grant on a resource of that account stays in the roles' policies (a composite
    principal has no account of its own, and CDK would also write the roles into the resource's policy)."""

    def __init__(self, principals: list[iam.IPrincipal], account: str) -> None:
        super().__init__(*principals)
        self.members, self.account = principals, account

    @property
    def principal_account(self) -> str:
        return self.account

    def add_to_principal_policy(self, statement: iam.PolicyStatement) -> iam.AddToPrincipalPolicyResult:
        results = [role.add_to_principal_policy(statement) for role in self.members]
        dependables = [result.policy_dependable for result in results if result.policy_dependable is not None]
        return iam.AddToPrincipalPolicyResult(statement_added=all(r.statement_added for r in results),
                                              policy_dependable=DependencyGroup(*dependables))


@jsii.implements(IValidation)
class _SharedCost:
    """The cost model splits a shared load balancer's hourly fee by ``endpoint.services_per_load_balancer``:
    a synth warning when the app puts a different number of services on it."""

    def __init__(self, service: ModelService, door: PathFrontDoor, declared: int) -> None:
        self.service, self.door, self.declared = service, door, declared

    def validate(self) -> list[str]:
        path, declared = self.door.load_balancer.node.path, self.declared
        sharing = sum(1 for c in self.service.node.root.node.find_all()
                      if isinstance(c, PathFrontDoor) and c.load_balancer.node.path == path)
        if sharing != declared:
            Annotations.of(self.service).add_warning_v2("crossover:shared-load-balancer", (
                f"{sharing} services share this load balancer, and the config's endpoint.services_per_load_balancer "
                f"says {declared}: crossover cost charges the model 1/{declared} of its hourly fee"))
        return []
