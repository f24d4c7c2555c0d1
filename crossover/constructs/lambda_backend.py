"""The ``lambda`` backend: crossover_serving/ as a Lambda function, bundled locally (no Docker)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Unpack

import jsii
from aws_cdk import Annotations, CfnResource, Duration, Names, RemovalPolicy, Size
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from crossover import bundle
from crossover.compliance import CHECKOV, INLINE, NIST, acknowledge, acknowledge_logs, policy_of
from crossover.config import ModelConfig
from crossover.constructs.artifact import FileAsset, ModelArtifact, built_here, file_asset
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
from crossover.figures import Sizing
from crossover_serving.names import SERVICE

HANDLER = "crossover_serving.lambda_handler.handler"
ASSET_METADATA = "aws:cdk:enable-asset-metadata"  # the context the CDK CLI sets for asset paths in templates
# Provisioned concurrency's utilisation target: 30% headroom for a burst while more environments initialise.
PROVISIONED_UTILISATION = 0.7
RUNTIME = lambda_.Runtime.PYTHON_3_13  # bundle.PYTHON_VERSION builds for it (tests/test_lambda_bundle.py)
SYNC_LAMBDA = ("Nothing invokes the function asynchronously: the load balancer calls it synchronously and "
               "returns its errors to the caller, and an SQS event source retries and dead-letters through "
               "the queue's redrive policy; a function's dead-letter queue only receives asynchronous events.")
RUNTIME_CHOICE = ("python3.13, not the newest runtime: it is the newest whose exact bundle these build machines "
                  "can execute before it ships (tests/test_lambda_bundle.py runs it under the runtime interface "
                  "client); AWS supports it for years yet, and it supports SnapStart.")


@jsii.implements(ec2.IConnectable, iam.IGrantable)
class LambdaBackend(Construct):
    """The model served by a Lambda function in ``vpc_subnets`` (crossover's one default: the VPC's private
    subnets), bound to ``front_door`` on construction.

    The function loads the model from S3 at init (a ResNet-sized file does not fit beside ONNX Runtime
    in a 250 MB zip), runs on python3.13 (RUNTIME_CHOICE says why) with X-Ray tracing, logs as JSON to a log group
    kept for ``log_retention``, keeps ``provisioned_concurrency`` environments initialised on its live alias
    (None: none; with ``provisioned_concurrency_max``, scaled on their utilisation up to that many) or, with
    ``snapstart``, starts new environments from a snapshot taken after init, and has a
    role that can read exactly the model object and the S3 inputs requests may name (``input_prefixes``:
    ``bucket/`` or ``bucket/prefix/``), nothing else.
    ``reserved_concurrency`` caps (and guarantees) its share of the region's concurrency; None leaves
    it unreserved. On a pipeline it consumes the queue in batches of ``batch_size``, gathered for up to
    ``max_batching_window``, with at most ``max_concurrency`` concurrent batches.

    Everything reaches the function through its ``live`` alias, which a deploy moves to the new
    version (:meth:`shift_traffic`): the load balancer target and the queue's event source name the
    alias, never ``$LATEST``.
    """

    KIND: ClassVar[str] = "lambda"
    ALARMS: ClassVar[str] = "Lambda"  # its alarms' prefix
    # Why its role has actions on every resource (cdk-nag, checkov): none of them takes a resource ARN.
    WILDCARDS: ClassVar[str] = ("Only the EC2 network-interface actions a VPC function needs and X-Ray's "
                                "PutTraceSegments/PutTelemetryRecords, none of which support resource-level "
                                "permissions.")

    def __init__(self, scope: Construct, id: str, *, vpc: ec2.IVpc, artifact: ModelArtifact, spec: Mapping[str, Any],
                 front_door: FrontDoor, vpc_subnets: ec2.SubnetSelection | None = None,
                 memory_size: Size = Size.mebibytes(3008), timeout: Duration = Duration.seconds(30),
                 reserved_concurrency: int | None = 100,
                 architecture: lambda_.Architecture = lambda_.Architecture.X86_64,
                 provisioned_concurrency: int | None = None, provisioned_concurrency_max: int | None = None,
                 input_prefixes: Sequence[str] = (),
                 batch_size: int = 10, max_batching_window: Duration = Duration.seconds(0), max_concurrency: int = 10,
                 log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
                 private_egress: PrivateEgress | None = None, snapstart: bool = False) -> None:
        super().__init__(scope, id)
        self.batch_size, self.max_concurrency = batch_size, max_concurrency
        self.max_batching_window = max_batching_window
        log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        acknowledge_logs(log_group)
        # A role of our own instead of the AWS managed execution policies, which allow logs:* on every
        # log group.
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=private_egress is None,
            description="Model function: outbound to S3 and HTTPS origins")
        if private_egress is not None:
            private_egress.allow_from(self.security_group)
        placement = self._placement(vpc, vpc_subnets)
        log_group.grant_write(self.role)
        artifact.grant_read(self.role)
        grant_read_inputs(self.role, input_prefixes)
        code = file_asset(self, "Code", path=bundle.SERVING, deploy_time=True, exclude=["__pycache__", "*.pyc", ".*"],
                          bundling=built_here(lambda output: bundle.build(output, architecture.name)))
        self.function = lambda_.Function(
            self, "Function",
            runtime=RUNTIME, handler=HANDLER, architecture=architecture, code=_PublishedCode(code),
            memory_size=int(memory_size.to_mebibytes()), timeout=timeout,
            reserved_concurrent_executions=reserved_concurrency,
            environment={"CROSSOVER_SPEC": json.dumps(spec, separators=(",", ":")), "POWERTOOLS_SERVICE_NAME": SERVICE},
            role=self.role, log_group=log_group, logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            # The snapshot is taken after init, which loads the model and creates no SDK client or connection
            # (crossover_serving.lambda_handler): nothing in it is stale or must be unique after a restore.
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snapstart else None,
            **placement,
        )
        if snapstart:
            Annotations.of(self.function).acknowledge_warning(
                "@aws-cdk/aws-lambda:snapStartRequirePublish", "every deploy publishes a version: the live alias")
        self.alias = lambda_.Alias(self, "Live", alias_name="live", version=self.function.current_version,
                                   provisioned_concurrent_executions=provisioned_concurrency)
        if provisioned_concurrency_max is not None:
            # Application Auto Scaling adds environments when the provisioned ones are busy, on the alias
            # CodeDeploy moves: the scalable target follows whichever version it names.
            self.alias.add_auto_scaling(min_capacity=provisioned_concurrency or 1,
                                        max_capacity=provisioned_concurrency_max).scale_on_utilization(
                utilization_target=PROVISIONED_UTILISATION)
        self.route: elbv2.ApplicationTargetGroup | None = None
        self._acknowledge()
        front_door.attach(self)

    def _placement(self, vpc: ec2.IVpc, vpc_subnets: ec2.SubnetSelection | None) -> dict[str, Any]:
        """Where the function runs: in the VPC's subnets, with the security group. Lambda's VPC networking needs
        these EC2 actions, which take no resource ARNs."""
        self.role.add_to_policy(iam.PolicyStatement(resources=["*"], actions=[
            "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
            "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]))
        return {"vpc": vpc, "vpc_subnets": private_subnets(self, vpc, vpc_subnets),
                "security_groups": [self.security_group]}

    @classmethod
    def from_config(cls, scope: Construct, id: str, *, config: ModelConfig, vpc: ec2.IVpc, front_door: FrontDoor,
                    artifact: ModelArtifact | None = None, vpc_subnets: ec2.SubnetSelection | None = None,
                    private_egress: PrivateEgress | None = None, sizing: Sizing | None = None,
                    path_prefix: str = "") -> LambdaBackend:
        """The ``lambda`` section of the shared config, behind ``front_door`` (``artifact``: the model file when
        the caller already published it; else it is published here; ``path_prefix``: where the front door serves
        it, ``/cats`` for ``/cats/predict``). ``sizing`` is for the fleets: a function has no instances."""
        spec, pipe = config.lambda_, config.pipeline
        artifact = artifact or model_artifact(scope, f"{id}Artifact", artifact_location(config, cls.KIND))
        return cls(scope, id, vpc=vpc, artifact=artifact,
                   spec=config.serving_spec(artifact.s3_uri, cls.KIND, path_prefix),
                   front_door=front_door, vpc_subnets=vpc_subnets, private_egress=private_egress,
                   snapstart=spec.snapstart,
                   memory_size=Size.mebibytes(spec.memory_mib),
                   timeout=Duration.seconds(spec.timeout_s), reserved_concurrency=spec.reserved_concurrency,
                   architecture=ARCHITECTURES[spec.architecture], provisioned_concurrency=spec.provisioned_concurrency,
                   provisioned_concurrency_max=spec.provisioned_concurrency_max,
                   input_prefixes=config.inputs.s3, batch_size=pipe.batch_size,
                   max_batching_window=Duration.seconds(pipe.max_batching_window_s),
                   max_concurrency=pipe.max_concurrency)

    @property
    def connections(self) -> ec2.Connections:
        """The function's security group: its way out (``db.connections.allow_default_port_from(backend)``)."""
        return ec2.Connections(security_groups=[self.security_group])

    @property
    def grant_principal(self) -> iam.IPrincipal:
        return self.role

    @property
    def ready(self) -> CfnResource:
        """Complete once the live alias names the published version, with its provisioned concurrency
        (if any) allocated: initialised environments, the model loaded."""
        return l1(self.alias, lambda_.CfnAlias)

    def serve_requests(self, door: Requests) -> None:
        """The live alias as the target of its group. The load balancer's permission to invoke it comes first
        (ELB checks it when the target registers)."""
        permission = lambda_.CfnPermission(self, "LoadBalancerInvoke", action="lambda:InvokeFunction",
                                           function_name=self.alias.function_arn,
                                           principal="elasticloadbalancing.amazonaws.com")
        acknowledge(permission, CHECKOV + "CKV_AWS_364", "The load balancer's permission to invoke the live "
                    "alias: the target group must be created after it (ELB checks the permission on "
                    "registration), so naming the group's ARN here would be a cycle.")
        self.route = door.route_to(self.KIND, [_AliasTarget(self.alias)])
        self.route.node.add_dependency(permission)

    def consume(self, door: Messages) -> None:
        """Consume the queue in batches, reporting failures per message; write results to the bucket."""
        # The id CDK's SqsEventSource gave it: a new logical id would create a second mapping for the same queue
        # and alias before deleting the first, which Lambda refuses, and a deployed pipeline could not upgrade.
        mapping = self.alias.add_event_source_mapping(
            f"SqsEventSource:{Names.node_unique_id(door.queue.node)}", event_source_arn=door.queue.queue_arn,
            batch_size=self.batch_size, max_batching_window=self.max_batching_window,
            report_batch_item_failures=True, max_concurrency=self.max_concurrency)
        door.queue.grant_consume_messages(self.alias)
        door.grant_write_results(self.function)
        self.function.add_environment("RESULTS_BUCKET", door.results.bucket_name)
        self.function.add_environment("MAX_RECEIVE_COUNT", str(door.max_receive_count))
        acknowledge(mapping, "Serverless-LambdaEventSourceMappingDestination", "SQS event sources take no "
                    "on-failure destination: a failing message is retried by SQS and moved by the queue's redrive "
                    "policy to the dead-letter queue, with its error in errors/<id>.json.")

    def watch(self, monitoring: ModelMonitoring, *, rollback: bool) -> list[cloudwatch.Alarm]:
        """Errors and throttles through the live alias, so the alarms see what a traffic shift sends there."""
        return monitoring.watch_function(self.alias, rollback=rollback, name=self.ALARMS)

    def metric_errors(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """Invocations of the live alias that failed (the function crashed or timed out; Sum)."""
        return self.alias.metric_errors(**defaults(options))

    def metric_requests(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """Invocations of the live alias (Sum)."""
        return self.alias.metric_invocations(**defaults(options))

    def metric_latency(self, **options: Unpack[MetricOptions]) -> cloudwatch.Metric:
        """The live alias's duration in milliseconds (default p99)."""
        return self.alias.metric_duration(**defaults(options, statistic="p99"))

    def shift_traffic(self, alarms: list[cloudwatch.Alarm], shift: str) -> codedeploy.LambdaDeploymentGroup:
        """Move ``live`` to each new version in ``shift`` steps (a CodeDeploy configuration, e.g.
        canary-10-percent-5-minutes), rolling back when any of ``alarms`` fires or the deployment fails."""
        config = getattr(codedeploy.LambdaDeploymentConfig, shift.upper().replace("-", "_"))
        group = codedeploy.LambdaDeploymentGroup(
            self, "Rollout", alias=self.alias, deployment_config=config, alarms=alarms,
            auto_rollback=codedeploy.AutoRollbackConfig(failed_deployment=True, stopped_deployment=True,
                                                        deployment_in_alarm=True))
        acknowledge(group.role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSCodeDeployRoleForLambdaLimited]", "CodeDeploy's own, AWS-maintained policy for Lambda "
                    "traffic shifts (the Limited variant: update aliases, read alarms, invoke only "
                    "CodeDeployHook_* functions), kept current as the service changes.")
        return group

    def _acknowledge(self) -> None:
        acknowledge(policy_of(self.role), {
            "AwsSolutions-IAM5[Resource::*]": self.WILDCARDS,
            CHECKOV + "CKV_AWS_111": self.WILDCARDS + " Everything else the role may do names its resource.",
            NIST + "IAMNoInlinePolicy": INLINE})
        acknowledge(self.function, {
            **dict.fromkeys(("Serverless-LambdaDLQ", NIST + "LambdaDLQ", CHECKOV + "CKV_AWS_116"), SYNC_LAMBDA),
            **dict.fromkeys(("AwsSolutions-L1", "Serverless-LambdaLatestVersion"), RUNTIME_CHOICE),
            CHECKOV + "CKV_AWS_173": "The environment holds the serving spec (model name, its S3 location, "
                                     "preprocessing) and the results bucket's name, no secret; Lambda encrypts it at "
                                     "rest with its service key."})


ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}


@jsii.implements(elbv2.IApplicationLoadBalancerTarget)
class _AliasTarget:
    """The alias as a load balancer target; LambdaBackend grants the invoke permission itself, so it can name it."""

    def __init__(self, alias: lambda_.Alias) -> None:
        self.alias = alias

    def attach_to_application_target_group(self, _group: elbv2.IApplicationTargetGroup
                                           ) -> elbv2.LoadBalancerTargetProps:
        return elbv2.LoadBalancerTargetProps(target_type=elbv2.TargetType.LAMBDA,
                                             target_json={"id": self.alias.function_arn})


class _PublishedCode(lambda_.Code):
    """The serving bundle (a folder that ``file_asset`` published from this backend) as the function's code: what
    ``Code.from_asset`` gives, the S3 location and the asset metadata the CDK CLI asks for (SAM's local invoke
    finds the code by it)."""

    def __init__(self, asset: FileAsset) -> None:
        super().__init__()
        self.asset = asset

    def bind(self, scope: Construct) -> lambda_.CodeConfig:
        return lambda_.CodeConfig(s3_location=s3.Location(bucket_name=self.asset.bucket_name,
                                                          object_key=self.asset.object_key))

    def bind_to_resource(self, resource: CfnResource, *, resource_property: str | None = None) -> None:
        if resource.node.try_get_context(ASSET_METADATA):
            resource.add_metadata("aws:asset:path", self.asset.staged_path)
            resource.add_metadata("aws:asset:is-bundled", self.asset.bundled)
            resource.add_metadata("aws:asset:property", resource_property or "Code")
