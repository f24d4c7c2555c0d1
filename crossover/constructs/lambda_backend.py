"""The ``lambda`` backend: serving/ as a Lambda function, bundled locally (no Docker)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, CfnResource, DockerImage, Duration, ILocalBundling, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_elasticloadbalancingv2_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from crossover import bundle
from crossover.constructs.artifact import ModelArtifact
from crossover.constructs.front_door import RealtimeFrontDoor
from crossover.constructs.inputs import grant_read_inputs
from crossover.constructs.pipeline_front_door import PipelineFrontDoor
from serving.names import SERVICE

HANDLER = "serving.lambda_handler.handler"
RUNTIME = lambda_.Runtime.PYTHON_3_13
assert RUNTIME.name == f"python{bundle.PYTHON_VERSION}", "bundle.PYTHON_VERSION must match the runtime"


@jsii.implements(ILocalBundling)
class _LocalPip:
    """Bundles on this machine with pip's cross-platform wheel download instead of a Docker image."""

    def __init__(self, architecture: str) -> None:
        self.architecture = architecture

    def try_bundle(self, output_dir: str, _options: Any = None) -> bool:
        bundle.build(Path(output_dir), self.architecture)
        return True


class LambdaBackend(Construct):
    """The model served by a Lambda function in the VPC's private subnets.

    The function loads the model from S3 at init (a ResNet-sized file does not fit beside ONNX Runtime
    in a 250 MB zip), runs on the newest Python runtime with X-Ray tracing, logs as JSON to a log group
    kept for ``log_retention``, keeps ``provisioned_concurrency`` environments initialised on its live alias
    (None: none), and has a role that can read exactly the model object and the S3 inputs
    requests may name (``input_prefixes``: ``bucket/`` or ``bucket/prefix/``), nothing else.
    ``reserved_concurrency`` caps (and guarantees) its share of the region's concurrency; None leaves
    it unreserved.

    Everything reaches the function through its ``live`` alias, which a deploy moves to the new
    version (:meth:`shift_traffic`): the load balancer target and the queue's event source name the
    alias, never ``$LATEST``.
    """

    def __init__(self, scope: Construct, id: str, *, vpc: ec2.IVpc, artifact: ModelArtifact, spec_json: str,
                 memory_mib: int = 3008, timeout_s: int = 30, reserved_concurrency: int | None = 100,
                 architecture: str = "x86_64", provisioned_concurrency: int | None = None,
                 input_prefixes: Sequence[str] = (),
                 log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH) -> None:
        super().__init__(scope, id)
        log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        # A role of our own instead of the AWS managed execution policies, which allow logs:* on every
        # log group. Lambda's VPC networking needs these EC2 actions, which take no resource ARNs.
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        role.add_to_policy(iam.PolicyStatement(resources=["*"], actions=[
            "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
            "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]))
        log_group.grant_write(role)
        artifact.grant_read(role)
        grant_read_inputs(role, input_prefixes)
        self.security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=vpc,
                                                description="Model function: outbound to S3 and HTTPS origins")
        self.function = lambda_.Function(
            self, "Function",
            runtime=RUNTIME, handler=HANDLER,
            architecture=lambda_.Architecture.ARM_64 if architecture == "arm64" else lambda_.Architecture.X86_64,
            code=lambda_.Code.from_asset(
                str(bundle.SERVING), exclude=["__pycache__", "*.pyc", ".*"],
                bundling=BundlingOptions(image=DockerImage.from_registry("unused-local-bundling"),
                                         local=_LocalPip(architecture))),  # type: ignore[arg-type]
            memory_size=memory_mib, timeout=Duration.seconds(timeout_s),
            reserved_concurrent_executions=reserved_concurrency,
            environment={"CROSSOVER_SPEC": spec_json, "POWERTOOLS_SERVICE_NAME": SERVICE},
            role=role, log_group=log_group, logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            vpc=vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[self.security_group],
        )
        self.alias = lambda_.Alias(self, "Live", alias_name="live", version=self.function.current_version,
                                   provisioned_concurrent_executions=provisioned_concurrency)

    def shift_traffic(self, alarms: list[cloudwatch.Alarm], shift: str) -> codedeploy.LambdaDeploymentGroup:
        """Move ``live`` to each new version in ``shift`` steps (a CodeDeploy configuration, e.g.
        canary-10-percent-5-minutes), rolling back when any of ``alarms`` fires or the deployment fails."""
        config = getattr(codedeploy.LambdaDeploymentConfig, shift.upper().replace("-", "_"))
        return codedeploy.LambdaDeploymentGroup(
            self, "Rollout", alias=self.alias, deployment_config=config, alarms=alarms,
            auto_rollback=codedeploy.AutoRollbackConfig(failed_deployment=True, stopped_deployment=True,
                                                        deployment_in_alarm=True))

    @property
    def ready(self) -> CfnResource:
        """Complete once the live alias names the published version, with its provisioned concurrency
        (if any) allocated: initialised environments, the model loaded."""
        alias = self.alias.node.default_child
        assert isinstance(alias, CfnResource)
        return alias

    def serve_realtime(self, front_door: RealtimeFrontDoor, *, name: str) -> elbv2.ApplicationTargetGroup:
        return front_door.route_to(name, [targets.LambdaTarget(self.alias)])

    def serve_pipeline(self, front_door: PipelineFrontDoor, *, batch_size: int = 10, max_batching_window_s: int = 0,
                       max_concurrency: int = 10) -> None:
        """Consume the queue in batches, reporting failures per message; write results to the bucket."""
        self.alias.add_event_source(sources.SqsEventSource(
            front_door.queue, batch_size=batch_size, max_batching_window=Duration.seconds(max_batching_window_s),
            report_batch_item_failures=True, max_concurrency=max_concurrency))
        front_door.grant_write_results(self.function)
        self.function.add_environment("RESULTS_BUCKET", front_door.results.bucket_name)
        self.function.add_environment("MAX_RECEIVE_COUNT", str(front_door.max_receive_count))
