#!/usr/bin/env python3
"""A platform team's own CDK app: its own stack and VPC, two crossover models in it, configs built in Python.

    pip install crossover            # the kit, from a wheel or an index: no copy of crossover's app
    cdk synth                        # this folder's cdk.json runs this file

The tagging model runs on Lambda, the detector on a GPU fleet; both are internal endpoints in the team's VPC.
Moving either is one field (``backend=``) and a deploy: its endpoint stays.
"""

from aws_cdk import App, CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from crossover import ModelConfig, ModelService
from crossover.compliance import NIST, acknowledge, acknowledge_logs, apply
from crossover.config.schema import GpuSpec, LambdaSpec, ModelSpec, Scaling, Traffic


class InferenceStack(Stack):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id, description="The platform team's inference services")
        vpc = self._vpc()
        tagger = ModelService(self, "Tagger", vpc=vpc, config=ModelConfig(
            name="tagger", backend="lambda",
            model=ModelSpec(artifact="s3://team-models/mobilenet-v2/model.onnx", gmacs=0.30),
            traffic=Traffic(images_per_month=2_000_000, p99_ms=500),
            lambda_=LambdaSpec(memory_mib=2048, reserved_concurrency=50)))
        detector = ModelService(self, "Detector", vpc=vpc, config=ModelConfig(
            name="detector", backend="gpu",
            model=ModelSpec(artifact="s3://team-models/resnet152/model.onnx", gmacs=11.51),
            traffic=Traffic(images_per_month=40_000_000, p99_ms=200),
            scaling=Scaling(min=1, max=4), gpu=GpuSpec(instance_type="g5.xlarge")),
            throughput=300.0)  # images/s one g5.xlarge served in the team's own load test
        for name, service in (("Tagger", tagger), ("Detector", detector)):
            CfnOutput(self, f"{name}Endpoint", value=str(service.endpoint))

    def _vpc(self) -> ec2.Vpc:
        """The team's VPC, as it already has one: crossover needs only private subnets with egress."""
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
        vpc = ec2.Vpc(self, "Vpc", max_azs=2, nat_gateways=1, restrict_default_security_group=False,
                      subnet_configuration=[
                          ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC,
                                                  map_public_ip_on_launch=False),
                          ec2.SubnetConfiguration(name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)],
                      gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(
                          service=ec2.GatewayVpcEndpointAwsService.S3)},
                      flow_logs={"All": ec2.FlowLogOptions(
                          destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))})
        # The team's own acknowledgements, for its own resources: crossover's constructs bring theirs.
        acknowledge_logs(flow_logs)
        acknowledge(vpc, NIST + "VPCDefaultSecurityGroupClosed", "Nothing in this VPC uses its default security "
                    "group; closing it would add a custom-resource Lambda function to the stack.")
        for subnet in vpc.public_subnets:
            acknowledge(subnet.node.find_child("DefaultRoute"), NIST + "VPCNoUnrestrictedRouteToIGW",
                        "Public subnets hold only the NAT gateway, which needs the route to the internet gateway.")
        role = vpc.node.find_child("All").node.find_child("IAMRole")
        acknowledge(role.node.find_child("DefaultPolicy").node.default_child, NIST + "IAMNoInlinePolicy",
                    "The flow log's role holds only its own grant to write the flow log group.")
        return vpc


app = App()
InferenceStack(app, "TeamInference")
apply(app)  # the cdk-nag packs: every finding on crossover's resources is already acknowledged where it arises
app.synth()
