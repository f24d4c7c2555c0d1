"""InstanceFleet: the Auto Scaling group that every instance backend configures.

One launch template (IMDSv2 required with hop limit 1, encrypted gp3 root volume, no public address,
a least-privilege instance profile), an Auto Scaling group over the private subnets of two AZs that
boots the crossover_serving/ HTTP server from crossover/ami/bootstrap.sh, signals CloudFormation only once /ready
answers, rolls updates one instance at a time without going below the minimum, and is health-checked
by the load balancer after a grace period that covers model load.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, ClassVar, Self, Unpack

import jsii
from aws_cdk import Aws, CfnResource, Duration, Size
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

import crossover.bundle
from crossover import capacity
from crossover.backends import BACKEND_IDS
from crossover.compliance import INLINE, NIST, acknowledge, acknowledge_logs, policy_of
from crossover.config import FleetSpec, ModelConfig, SpotSpec
from crossover.constructs.artifact import FileAsset, ModelArtifact, file_asset, runtime_bundle
from crossover.constructs.backend import (
    FrontDoor,
    Messages,
    PrivateEgress,
    Requests,
    artifact_location,
    l1,
    model_artifact,
    private_subnets,
)
from crossover.constructs.inputs import grant_read_inputs
from crossover.constructs.metrics import MetricOptions, defaults
from crossover.constructs.monitoring import ModelMonitoring
from crossover.errors import UserError
from crossover.figures import Sizing
from crossover_serving.names import NAMESPACE

BOOTSTRAP = files("crossover") / "ami" / "bootstrap.sh"  # package data, installed beside the code
PORT = 8080
LEAVE_S = 90  # after a notice: the load balancer's 2 failed checks 15 s apart, then what is in flight
SPOT_ALLOCATION = {"price-capacity-optimized": autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
                   "capacity-optimized": autoscaling.SpotAllocationStrategy.CAPACITY_OPTIMIZED,
                   "lowest-price": autoscaling.SpotAllocationStrategy.LOWEST_PRICE}
MACHINES = {ec2.InstanceArchitecture.X86_64: "x86_64", ec2.InstanceArchitecture.ARM_64: "aarch64"}  # `uname -m`


@jsii.implements(ec2.IMachineImage)
class PinnedImage:
    """A fixed AMI id (``<backend>.ami_id``): no lookup, no region map; the id must exist where deployed."""

    def __init__(self, ami_id: str) -> None:
        self.ami_id = ami_id

    def get_image(self, _scope: Construct) -> ec2.MachineImageConfig:
        return ec2.MachineImageConfig(image_id=self.ami_id, os_type=ec2.OperatingSystemType.LINUX,
                                      user_data=ec2.UserData.for_linux())


@dataclass(frozen=True)
class FleetImage:
    """What a backend decides about its instances."""

    machine_image: ec2.IMachineImage
    runtime: str = "onnxruntime"  # the pip package crossover_serving/ runs on: onnxruntime | onnxruntime-gpu
    extra_policies: list[iam.PolicyStatement] = field(default_factory=list)


@jsii.implements(ec2.IConnectable, iam.IGrantable)
class InstanceFleet(Construct):
    """Instances of ``instance_type`` serving the model on port 8080, ``min_capacity``..``max_capacity``, in
    ``vpc_subnets`` (crossover's one default: the VPC's private subnets), bound to ``front_door`` on construction.

    Behind a realtime front door ``requests_per_minute`` is the target-tracking target per instance
    (crossover.capacity); on a pipeline the fleet tracks ``backlog`` worth of messages per instance at
    ``images_per_second`` each. ``input_prefixes`` (``bucket/`` or ``bucket/prefix/``) are the S3 inputs
    requests may name; ``health_grace`` bounds both the load balancer's grace and how long a new instance may
    take to signal ready. ``private_egress``: the only ways out of a NAT-free network, to which the instances'
    security group then limits them (default: any outbound, through the NAT). ``spot``: spot instances above an
    on-demand base, from several types, with capacity rebalancing, and instances that leave cleanly on a notice.
    There is deliberately no desired capacity: a deploy never resets the fleet's size.
    """

    KIND: ClassVar[str]

    def __init__(self, scope: Construct, id: str, *, vpc: ec2.IVpc, artifact: ModelArtifact, spec: Mapping[str, Any],
                 front_door: FrontDoor, instance_type: ec2.InstanceType, image: FleetImage, min_capacity: int,
                 max_capacity: int, images_per_second: float, requests_per_minute: int,
                 vpc_subnets: ec2.SubnetSelection | None = None, root_volume: Size = Size.gibibytes(30),
                 health_grace: Duration = Duration.minutes(15), backlog: Duration = Duration.minutes(5),
                 input_prefixes: Sequence[str] = (), private_egress: PrivateEgress | None = None,
                 spot: SpotSpec | None = None) -> None:
        super().__init__(scope, id)
        self.vpc, self.requests_per_minute, self.images_per_second = vpc, requests_per_minute, images_per_second
        self.spot, self.backlog, self.health_grace = spot, backlog, health_grace
        self.subnets = private_subnets(self, vpc, vpc_subnets)
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=private_egress is None,
            description="Model instances: inference port from the front door")
        if private_egress is not None:
            private_egress.allow_from(self.security_group)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
                             description="Model instances: read the model and the serving bundle, write logs")
        bundle = file_asset(self, "Bundle", path=crossover.bundle.SERVING, exclude=crossover.bundle.SERVING_EXCLUDE)
        lock = crossover.bundle.instance_lock(image.runtime, MACHINES[instance_type.architecture])
        runtime = runtime_bundle(self, lock)
        self._grant(artifact, (bundle, runtime), input_prefixes, image.extra_policies)
        self.user_data = ec2.UserData.for_linux()
        self.launch_template = self._launch_template(instance_type, image.machine_image, root_volume)
        self.group = self._group(instance_type, min_capacity, max_capacity)
        self._write_user_data(bundle, runtime, lock, artifact, spec, image.runtime, int(health_grace.to_seconds()))
        self.route: elbv2.ApplicationTargetGroup | None = None
        acknowledge(policy_of(self.role), {
            "AwsSolutions-IAM5[Resource::*]": "cloudwatch:PutMetricData takes no resource ARN (a condition limits it "
                                              "to the crossover metric namespace), nor does elasticloadbalancing:"
                                              "DescribeTargetHealth, with which an instance waits to be found "
                                              "healthy before it signals ready.",
            NIST + "IAMNoInlinePolicy": INLINE})
        front_door.attach(self)

    def _grant(self, artifact: ModelArtifact, bundles: Sequence[FileAsset], input_prefixes: Sequence[str],
               extra: Sequence[iam.PolicyStatement]) -> None:
        """The instances' role: read the model, the bundles and the declared inputs; write logs and metrics."""
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH)
        acknowledge_logs(log_group)
        self.role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                    resources=[asset.object_arn for asset in bundles]))
        artifact.grant_read(self.role)
        grant_read_inputs(self.role, input_prefixes)
        log_group.grant_write(self.role)
        # PutMetricData takes no resource; the condition keeps it to crossover's own namespace.
        self.role.add_to_policy(iam.PolicyStatement(actions=["cloudwatch:PutMetricData"], resources=["*"],
                                                    conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}}))
        for statement in extra:
            self.role.add_to_policy(statement)

    def _launch_template(self, instance_type: ec2.InstanceType, machine_image: ec2.IMachineImage,
                         root_volume: Size) -> ec2.LaunchTemplate:
        """IMDSv2 only, hop limit 1; an encrypted gp3 root volume; no public address (private subnets)."""
        return ec2.LaunchTemplate(
            self, "LaunchTemplate",
            instance_type=instance_type, machine_image=machine_image,
            user_data=self.user_data, role=self.role, security_group=self.security_group,
            require_imdsv2=True, http_put_response_hop_limit=1, http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
            block_devices=[ec2.BlockDevice(device_name="/dev/xvda", volume=ec2.BlockDeviceVolume.ebs(
                int(root_volume.to_gibibytes()), encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3,
                delete_on_termination=True))],
            detailed_monitoring=True,
        )

    def _group(self, instance_type: ec2.InstanceType, min_capacity: int,
               max_capacity: int) -> autoscaling.AutoScalingGroup:
        """The Auto Scaling group: ready once its minimum signalled, rolling one instance at a time, EC2 health
        checks until a load balancer's take over (:meth:`serve_requests`)."""
        notifications = sns.Topic(self, "Events", enforce_ssl=True,
                                  master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"))
        spot, grace = self.spot, self.health_grace
        group = autoscaling.AutoScalingGroup(
            self, "Group", vpc=self.vpc, vpc_subnets=self.subnets,
            **({"launch_template": self.launch_template} if spot is None else
               {"mixed_instances_policy": self._mixed(instance_type, spot), "capacity_rebalance": True}),
            min_capacity=min_capacity, max_capacity=max_capacity,
            health_checks=autoscaling.HealthChecks.ec2(grace_period=grace),
            signals=autoscaling.Signals.wait_for_min_capacity(timeout=grace),
            update_policy=autoscaling.UpdatePolicy.rolling_update(
                max_batch_size=1, min_instances_in_service=min_capacity, pause_time=grace),
            notifications=[autoscaling.NotificationConfiguration(topic=notifications)],
            group_metrics=[autoscaling.GroupMetrics.all()],
        )
        if spot is not None:
            cfn = l1(group, autoscaling.CfnAutoScalingGroup)
            nested = ("the group's launch template (inside its MixedInstancesPolicy, which this rule does not "
                      "read) ")
            acknowledge(cfn, {"AwsSolutions-EC26": nested + "encrypts every EBS volume it creates.",
                              NIST + "EC2IMDSv2Enabled": nested + "requires IMDSv2 tokens, hop limit 1."})
            # A replaced or scaled-in instance gets the time to drain before it is terminated: the load
            # balancer's checks find it leaving within LEAVE_S, and what it holds finishes.
            group.add_lifecycle_hook("Leave", lifecycle_transition=autoscaling.LifecycleTransition.
                                     INSTANCE_TERMINATING, heartbeat_timeout=Duration.seconds(LEAVE_S),
                                     default_result=autoscaling.DefaultResult.CONTINUE)
        return group

    @classmethod
    def from_config(cls, scope: Construct, id: str, *, config: ModelConfig, vpc: ec2.IVpc, front_door: FrontDoor,
                    artifact: ModelArtifact | None = None, vpc_subnets: ec2.SubnetSelection | None = None,
                    private_egress: PrivateEgress | None = None, sizing: Sizing | None = None,
                    path_prefix: str = "") -> Self:
        """This kind's section of the shared config, behind ``front_door``. ``sizing``: the figures
        ``crossover.size(config)`` computes (one instance's images/s and the realtime scaling target); without it,
        the config's ``images_per_second`` or the kind's placeholder. ``path_prefix``: where the front door serves
        it (``/cats`` for ``/cats/predict``)."""
        fleet: FleetSpec = getattr(config, cls.KIND)
        figures = (sizing or Sizing()).fleet(config, cls.KIND)
        artifact = artifact or model_artifact(scope, f"{id}Artifact", artifact_location(config, cls.KIND))
        return cls(scope, id, vpc=vpc, artifact=artifact,
                   spec=config.serving_spec(artifact.s3_uri, cls.KIND, path_prefix),
                   front_door=front_door, instance_type=ec2.InstanceType(fleet.instance_type),
                   min_capacity=config.scaling.min, max_capacity=config.scaling.max,
                   images_per_second=figures.images_per_second, requests_per_minute=figures.requests_per_minute,
                   vpc_subnets=vpc_subnets, root_volume=Size.gibibytes(fleet.root_volume_gib),
                   health_grace=Duration.seconds(fleet.health_grace_s),
                   backlog=Duration.seconds(config.pipeline.backlog_s), input_prefixes=config.inputs.s3,
                   private_egress=private_egress, spot=fleet.spot, **cls._options(config))

    @classmethod
    def _options(cls, config: ModelConfig) -> dict[str, Any]:
        """What this kind adds to the common arguments, from its config section."""
        return {"machine_image": None if getattr(config, cls.KIND).ami_id is None
                else PinnedImage(getattr(config, cls.KIND).ami_id)}

    @property
    def connections(self) -> ec2.Connections:
        """The instances' security group: their way out (``db.connections.allow_default_port_from(fleet)``)."""
        return self.group.connections

    @property
    def grant_principal(self) -> iam.IPrincipal:
        return self.role

    def watch(self, monitoring: ModelMonitoring, *, rollback: bool) -> list[cloudwatch.Alarm]:
        """Unhealthy instances behind the load balancer (a pipeline worker has none: model-load failures,
        which the service watches once for all its fleets, say the same)."""
        if self.route is None:
            return []
        return [monitoring.watch_targets(self.route, BACKEND_IDS[self.KIND], rollback=rollback)]

    def metric_requests(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """Requests the load balancer sent this fleet (Sum); behind a realtime front door only."""
        return self._group_route("metric_requests").metrics.request_count(**defaults(options))

    def metric_latency(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """Seconds from the load balancer to this fleet's answer (default p99); behind a realtime front door only."""
        return self._group_route("metric_latency").metrics.target_response_time(**defaults(options, statistic="p99"))

    def metric_errors(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """Instances the load balancer finds unhealthy (Maximum); behind a realtime front door only."""
        return self._group_route("metric_errors").metrics.unhealthy_host_count(
            **defaults(options, statistic="Maximum"))

    def _group_route(self, what: str) -> elbv2.ApplicationTargetGroup:
        if self.route is None:
            raise UserError(f"{self.node.path}: {what} reads the fleet's target group, and a pipeline fleet has none "
                            "(its service's metric_* count messages)")
        return self.route

    def metric_in_service_instances(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """Instances in service (Average)."""
        return cloudwatch.Metric(namespace="AWS/AutoScaling", metric_name="GroupInServiceInstances",
                                 dimensions_map={"AutoScalingGroupName": self.group.auto_scaling_group_name},
                                 **defaults(options, statistic="Average"))

    def _mixed(self, instance_type: ec2.InstanceType, spot: SpotSpec) -> autoscaling.MixedInstancesPolicy:
        """On-demand up to the base (and the percentage above it), spot for the rest, from every listed type."""
        return autoscaling.MixedInstancesPolicy(
            launch_template=self.launch_template,
            launch_template_overrides=[autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(t))
                                       for t in dict.fromkeys([instance_type.to_string(), *spot.instance_types])],
            instances_distribution=autoscaling.InstancesDistribution(
                on_demand_base_capacity=spot.on_demand_base,
                on_demand_percentage_above_base_capacity=spot.on_demand_percent_above_base,
                spot_allocation_strategy=SPOT_ALLOCATION[spot.allocation]))

    def _write_user_data(self, bundle: FileAsset, runtime_bundle: FileAsset, lock: str,
                         artifact: ModelArtifact, spec: Mapping[str, Any], runtime: str, ready_timeout_s: int) -> None:
        # On instances the model is a local file that bootstrap.sh downloads; the spec carries no tokens.
        local_spec = json.dumps({**spec, "artifact": "/opt/crossover/model"}, separators=(",", ":"))
        self.user_data.add_signal_on_exit_command(self.group)
        self.user_data.add_commands(
            "dnf install -y -q aws-cfn-bootstrap",  # cfn-signal, which the exit trap above calls
            f"export CROSSOVER_BUNDLE={bundle.s3_uri}",
            f"export CROSSOVER_RUNTIME_BUNDLE={runtime_bundle.s3_uri}",
            f"export CROSSOVER_RUNTIME_DIGEST={crossover.bundle.runtime_digest(lock)}",
            f"export CROSSOVER_MODEL={artifact.s3_uri}",
            f"export CROSSOVER_SPEC_JSON={shlex.quote(local_spec)}",
            f"export CROSSOVER_RUNTIME={runtime} CROSSOVER_PORT={PORT} CROSSOVER_READY_TIMEOUT_S={ready_timeout_s}",
            f"export AWS_DEFAULT_REGION={Aws.REGION}",  # boto3 in the server and worker: metrics, SQS, S3
            f"export CROSSOVER_SPOT={int(self.spot is not None)}",  # watch for interruption notices
        )

    def _boot(self, *exports: str) -> None:
        """The service's own variables, then crossover/ami/bootstrap.sh: the last thing the user data runs."""
        self.user_data.add_commands(*exports, BOOTSTRAP.read_text())

    @property
    def ready(self) -> CfnResource:
        """Complete once the group's minimum instances signalled ready (its creation policy)."""
        return l1(self.group, autoscaling.CfnAutoScalingGroup)

    def serve_requests(self, door: Requests) -> None:
        """Register the group behind the front door under its kind's id, scale on requests per target. Each instance
        signals ready only once the load balancer finds it healthy, so a switch, a canary or a rolling
        update's replacement never sends requests to an instance that cannot answer them yet."""
        # Registering the group as a target opens exactly the front door -> instances path on PORT.
        group = door.route_to(self.KIND, [self.group], port=PORT, vpc=self.vpc,
                              health_check=elbv2.HealthCheck(path="/ready", healthy_threshold_count=2,
                                                             interval=Duration.seconds(15)))
        self.route = group
        # Behind a load balancer its /ready checks decide health (the grace period stays); a worker has EC2's.
        l1(self.group, autoscaling.CfnAutoScalingGroup).health_check_type = "ELB"
        # DescribeTargetHealth takes no resource ARN (elasticloadbalancing's Describe* actions never do).
        self.role.add_to_policy(iam.PolicyStatement(actions=["elasticloadbalancing:DescribeTargetHealth"],
                                                    resources=["*"]))
        self._boot("export CROSSOVER_MODE=server", f"export CROSSOVER_TARGET_GROUP={group.target_group_arn}")
        spare_from = None if self.spot is None else capacity.spare_from(self.spot.on_demand_base,
                                                                         self.spot.on_demand_percent_above_base)
        if spare_from is None:
            self.group.scale_on_request_count("RequestsPerTarget", target_requests_per_minute=self.requests_per_minute)
        else:
            # A spot fleet plans as if one instance were already interrupted once it runs a spot instance among
            # two or more: requests per instance but one, so losing one keeps the rest within the planned rate (the
            # cost model prices that spare from the same count: crossover.capacity.spare_from).
            self._track("RequestsPerTargetButOne", target=self.requests_per_minute, metrics=[
                ("requests", "AWS/ApplicationELB", "RequestCount", {
                    "LoadBalancer": group.first_load_balancer_full_name,
                    "TargetGroup": group.target_group_full_name}, "Sum"),
                ("instances", "AWS/AutoScaling", "GroupInServiceInstances",
                 {"AutoScalingGroupName": self.group.auto_scaling_group_name}, "Average"),
            ], result=("perInstanceButOne",
                       f"requests / IF(instances >= {spare_from}, instances - 1, IF(instances > 0, instances, 1))",
                       "Requests per instance but one"))

    def consume(self, door: Messages) -> None:
        """Run the SQS worker; scale on backlog per instance, and start the first instance from zero."""
        queue, backlog = door.queue, self.backlog
        self._boot("export CROSSOVER_MODE=worker", f"export CROSSOVER_QUEUE_URL={queue.queue_url}",
                   f"export CROSSOVER_RESULTS_BUCKET={door.results.bucket_name}",
                   f"export CROSSOVER_MAX_RECEIVE_COUNT={door.max_receive_count}")
        queue.grant_consume_messages(self.role)
        door.grant_write_results(self.role)
        visible = queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(1), statistic="Maximum")
        in_service = cloudwatch.Metric(namespace="AWS/AutoScaling", metric_name="GroupInServiceInstances",
                                       dimensions_map={"AutoScalingGroupName": self.group.auto_scaling_group_name},
                                       period=Duration.minutes(1), statistic="Average")
        self._track("BacklogPerInstance", target=max(1.0, backlog.to_seconds() * self.images_per_second), metrics=[
            ("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": queue.queue_name}, "Sum"),
            ("instances", "AWS/AutoScaling", "GroupInServiceInstances",
             {"AutoScalingGroupName": self.group.auto_scaling_group_name}, "Average"),
        ], result=("backlog", "visible / IF(instances > 0, instances, 1)", "Backlog per instance"))
        # Target tracking cannot leave zero instances (there is no per-instance backlog to track): one
        # step policy starts the first instance when messages wait and nothing runs.
        self.group.scale_on_metric(
            "StartFromZero", adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            metric=cloudwatch.MathExpression(expression="IF(visible > 0 AND instances == 0, 1, 0)",
                                             using_metrics={"visible": visible, "instances": in_service},
                                             period=Duration.minutes(1), label="Waiting with no instance"),
            scaling_steps=[autoscaling.ScalingInterval(upper=0, change=0),
                           autoscaling.ScalingInterval(lower=1, change=1)])

    def _track(self, id: str, *, target: float, metrics: list[tuple[str, str, str, dict[str, str], str]],
               result: tuple[str, str, str]) -> None:
        """Target tracking on metric math: ``result`` (id, expression, label) over ``metrics`` (id, namespace,
        name, dimensions, statistic). Not in the L2, whose scale_to_track_metric takes a single metric: the
        typed L1 policy carries it."""
        policy = autoscaling.CfnScalingPolicy
        queries = [policy.TargetTrackingMetricDataQueryProperty(
            id=query_id, return_data=False, metric_stat=policy.TargetTrackingMetricStatProperty(
                stat=statistic, metric=policy.MetricProperty(
                    namespace=namespace, metric_name=name,
                    dimensions=[policy.MetricDimensionProperty(name=k, value=v) for k, v in dimensions.items()])))
            for query_id, namespace, name, dimensions, statistic in metrics]
        result_id, expression, label = result
        queries.append(policy.TargetTrackingMetricDataQueryProperty(id=result_id, label=label, return_data=True,
                                                                     expression=expression))
        policy(self, id, auto_scaling_group_name=self.group.auto_scaling_group_name,
               policy_type="TargetTrackingScaling",
               target_tracking_configuration=policy.TargetTrackingConfigurationProperty(
                   target_value=target,
                   customized_metric_specification=policy.CustomizedMetricSpecificationProperty(metrics=queries)))
