#!/usr/bin/env python3
"""A platform team's own CDK app: its own stack, VPC and load balancer, two crossover models on it, configs built in
Python, used with the CDK idioms a team reaches for (grants, connections, alarms on metrics).

    pip install crossover-cdk        # the kit, from a wheel or an index: no copy of crossover's app
    cdk synth                        # this folder's cdk.json runs this file

The tagging model runs on Lambda, the detector on a GPU fleet; both sit on the team's one internal load balancer,
under /tagger and /detector. Moving either is one field (``backend=``) and a deploy: its endpoint stays.
"""

import gc

# A synth is a short batch job: the CDK's Python bindings are ~130,000 objects that live to the end, and the cyclic
# garbage collector's ~370 collections while they load cost ~0.1 s a synth and free nothing. It stays off for the run
# (the process's peak memory is the same: 234 MB with 20 model stacks either way).
gc.disable()

from aws_cdk import App, CfnOutput, RemovalPolicy, Stack  # noqa: E402
from aws_cdk import aws_cloudwatch as cloudwatch  # noqa: E402
from aws_cdk import aws_cloudwatch_actions as actions  # noqa: E402
from aws_cdk import aws_ec2 as ec2  # noqa: E402
from aws_cdk import aws_elasticloadbalancingv2 as elbv2  # noqa: E402
from aws_cdk import aws_logs as logs  # noqa: E402
from aws_cdk import aws_s3 as s3  # noqa: E402
from constructs import Construct  # noqa: E402

from crossover import ModelConfig, ModelService, size  # noqa: E402
from crossover.compliance import CHECKOV, NIST, acknowledge, acknowledge_logs, apply, policy_of  # noqa: E402
from crossover.config.schema import Endpoint, GpuSpec, LambdaSpec, ModelSpec, Scaling, Traffic  # noqa: E402

SHARED = Endpoint(services_per_load_balancer=2)  # the cost model splits the load balancer's hours between them


class InferenceStack(Stack):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id, description="The platform team's inference services")
        vpc = self._vpc()
        load_balancer = self._load_balancer(vpc)
        services = {}
        for name, config, prefix in (
                ("Tagger", ModelConfig(
                    name="tagger", backend="lambda", endpoint=SHARED,
                    model=ModelSpec(artifact="s3://team-models/mobilenet-v2/model.onnx", gmacs=0.30),
                    traffic=Traffic(images_per_month=2_000_000, p99_ms=500),
                    lambda_=LambdaSpec(memory_mib=2048, reserved_concurrency=50)), "/tagger"),
                ("Detector", ModelConfig(
                    name="detector", backend="gpu", endpoint=SHARED,
                    model=ModelSpec(artifact="s3://team-models/resnet152/model.onnx", gmacs=11.51),
                    traffic=Traffic(images_per_month=40_000_000, p99_ms=200),
                    scaling=Scaling(min=1, max=4), gpu=GpuSpec(instance_type="g5.xlarge")), "/detector")):
            # size(): the scaling target and the volume band, from the cost model (300 images/s: one g5.xlarge
            # in the team's own load test)
            sizing = size(config, throughput=300.0 if config.backend == "gpu" else None)
            services[name] = ModelService(self, name, config=config, vpc=vpc, sizing=sizing,
                                          load_balancer=load_balancer, path_prefix=prefix)
            CfnOutput(self, f"{name}Endpoint", value=str(services[name].endpoint))
        # The idioms: the team's clients may call the load balancer; both models may read the team's labels
        # bucket; the team pages on its own alarm over the detector's p99.
        clients = ec2.SecurityGroup(self, "Clients", vpc=vpc, description="Callers of the models")
        clients.connections.allow_to_default_port(services["Tagger"], "Callers to the model endpoints")
        labels = s3.Bucket(self, "Labels", enforce_ssl=True, versioned=True,
                           encryption=s3.BucketEncryption.S3_MANAGED,
                           block_public_access=s3.BlockPublicAccess.BLOCK_ALL)
        for service in services.values():
            labels.grant_read(service)
            for backend in service.backends.values():  # the grant's wildcards are the team's to accept
                wildcards = ("Action::s3:GetObject*", "Action::s3:GetBucket*", "Action::s3:List*",
                             f"Resource::<{self.get_logical_id(labels.node.default_child)}.Arn>/*")
                acknowledge(policy_of(backend), tuple(f"AwsSolutions-IAM5[{w}]" for w in wildcards),
                            "Read-only access to the team's labels bucket, every object in it by design.")
        slow = cloudwatch.Alarm(self, "DetectorSlow", metric=services["Detector"].metric_latency(), threshold=250,
                                evaluation_periods=3, alarm_description="detector p99 over 250 ms (the team's page)")
        slow.add_alarm_action(actions.SnsAction(services["Detector"].monitoring.topic))
        self._acknowledge_own(labels)

    def _load_balancer(self, vpc: ec2.Vpc) -> elbv2.ApplicationLoadBalancer:
        """The team's existing internal load balancer: one HTTP listener, which answers 404 for unknown paths."""
        security_group = ec2.SecurityGroup(self, "LoadBalancerSecurityGroup", vpc=vpc, allow_all_outbound=False,
                                           description="Internal load balancer of the team")
        load_balancer = elbv2.ApplicationLoadBalancer(self, "LoadBalancer", vpc=vpc, internet_facing=False,
                                                      security_group=security_group, drop_invalid_header_fields=True)
        load_balancer.add_listener("Http", port=80, open=False, default_action=elbv2.ListenerAction.fixed_response(
            404, content_type="text/plain", message_body="no model here"))
        return load_balancer

    def _acknowledge_own(self, labels: s3.Bucket) -> None:
        """The team's own findings on its own resources, each with its reason (crossover's constructs bring theirs)."""
        internal = "An internal load balancer reached only from the team's VPC; TLS ends at the team's edge proxy."
        load_balancer = self.node.find_child("LoadBalancer")
        listener = load_balancer.node.find_child("Http")
        acknowledge(load_balancer, ("AwsSolutions-ELB2", NIST + "ELBLoggingEnabled",
                                    NIST + "ELBDeletionProtectionEnabled", NIST + "ALBWAFEnabled",
                                    CHECKOV + "CKV_AWS_91", CHECKOV + "CKV_AWS_150"), internal)
        acknowledge(listener, (NIST + "ELBv2ACMCertificateRequired", NIST + "ALBHttpToHttpsRedirection",
                               CHECKOV + "CKV_AWS_2", CHECKOV + "CKV_AWS_103"), internal)
        acknowledge(labels, ("AwsSolutions-S1", NIST + "S3BucketLoggingEnabled", NIST + "S3BucketReplicationEnabled",
                             NIST + "S3DefaultEncryptionKMS", CHECKOV + "CKV_AWS_18", CHECKOV + "CKV_AWS_21"),
                    "A small, read-only bucket of label files the team publishes from git.")

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
# The cdk-nag packs: crossover's resources bring their acknowledgements, and this app acknowledged each finding
# of its own (strict: one it did not would fail the synth, not just be reported).
apply(app, strict=True)
app.synth()
gc.freeze()  # the process ends here: the interpreter's last collections would walk every object again (~0.25 s)
