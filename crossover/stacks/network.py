"""NetworkStack: the one VPC that every model stack shares."""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from crossover.compliance import CHECKOV, INLINE, NIST, acknowledge, acknowledge_logs, policy_of
from crossover.constructs.backend import PrivateEgress
from crossover.shape import AZS, NAT_GATEWAYS, PRIVATE_ENDPOINTS

LOOKUP_FUNCTION = "AWS679f53fac002430cb0da5b7982bd2287"  # the id of AwsCustomResource's singleton handler


class NetworkStack(Stack):
    """A VPC over two AZs: public subnets (NAT, public load balancers) and private subnets with egress.

    ``cidr`` is kept as a plain string too: internal load balancers admit it, and a literal lets
    cdk-nag check the rule (a cross-stack token would not). Environment-agnostic (AZs come from
    ``Fn::GetAZs`` at deploy time), so synth needs no account.
    Flow logs go to CloudWatch; S3 traffic (model artifacts, results) stays on a gateway endpoint.

    With ``nat_gateways=0`` the private subnets are isolated and the VPC gets an interface endpoint for each
    service instances call (crossover.shape.PRIVATE_ENDPOINTS); ``private_egress`` then names those ways out
    for the backends' security groups (None while there is a NAT).
    """

    def __init__(self, scope: Construct, id: str, *, cidr: str = "10.0.0.0/16", nat_gateways: int = NAT_GATEWAYS,
                 **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        self.cidr = cidr
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            max_azs=AZS,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                # Public subnets hold NAT gateways and public load balancers, never instances.
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24,
                                        map_public_ip_on_launch=False),
                ec2.SubnetConfiguration(name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                                        if nat_gateways else ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=20),
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={"Reject": ec2.FlowLogOptions(
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                traffic_type=ec2.FlowLogTrafficType.ALL)},
            # The restricting custom resource is a Lambda function of its own (and hangs local
            # emulators); nothing here uses the default security group.
            restrict_default_security_group=False,
        )
        acknowledge(self.vpc, NIST + "VPCDefaultSecurityGroupClosed", "No resource uses the default security group; "
                    "closing it takes CDK's Lambda-backed custom resource (another function and role per VPC, which "
                    "also hangs local emulators).")
        for subnet in self.vpc.public_subnets:
            route = subnet.node.find_child("DefaultRoute")
            acknowledge(route, NIST + "VPCNoUnrestrictedRouteToIGW", "Public subnets exist for NAT gateways and "
                        "public load balancers, which need the route to the internet gateway; no instance is ever "
                        "placed there.")
        reject_role = self.vpc.node.find_child("Reject").node.find_child("IAMRole")
        acknowledge(policy_of(reject_role), NIST + "IAMNoInlinePolicy", INLINE)  # type: ignore[arg-type]
        acknowledge_logs(flow_logs)
        self.private_egress = None if nat_gateways else self._endpoints()

    @property
    def private_subnets(self) -> ec2.SubnetSelection:
        """Where backends run: the private subnets, with a NAT or isolated."""
        return ec2.SubnetSelection(subnet_group_name="Private")

    def _endpoints(self) -> PrivateEgress:
        security_group = ec2.SecurityGroup(self, "EndpointSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
                                           description="Interface endpoints: HTTPS from the VPC")
        security_group.add_ingress_rule(ec2.Peer.ipv4(self.cidr), ec2.Port.tcp(443), "HTTPS from the VPC")
        for service in PRIVATE_ENDPOINTS:
            self.vpc.add_interface_endpoint(
                service.title(), service=ec2.InterfaceVpcEndpointAwsService(service), private_dns_enabled=True,
                security_groups=[security_group], open=False, subnets=self.private_subnets)
        # Security groups name S3's gateway endpoint by its managed prefix list, whose id differs by region and
        # which CloudFormation cannot look up: one SDK call at deploy reads it (cdk-nag findings below).
        lookup = cr.AwsCustomResource(
            self, "S3PrefixList", install_latest_aws_sdk=False,
            on_update=cr.AwsSdkCall(
                service="EC2", action="describeManagedPrefixLists",
                parameters={"Filters": [{"Name": "prefix-list-name", "Values": [f"com.amazonaws.{self.region}.s3"]}]},
                physical_resource_id=cr.PhysicalResourceId.of("s3-prefix-list"),
                output_paths=["PrefixLists.0.PrefixListId"]),
            policy=cr.AwsCustomResourcePolicy.from_statements([iam.PolicyStatement(
                actions=["ec2:DescribeManagedPrefixLists"], resources=["*"])]))
        self._acknowledge_lookup(lookup)
        return PrivateEgress(cidr=self.cidr, s3_prefix_list_id=lookup.get_response_field("PrefixLists.0.PrefixListId"))

    def _acknowledge_lookup(self, lookup: cr.AwsCustomResource) -> None:
        """CDK's function behind AwsCustomResource (a singleton under a fixed id) runs one read-only EC2 call
        when the stack is created or updated; what the packs ask of serving functions does not apply to it."""
        function = self.node.find_child(LOOKUP_FUNCTION)
        handler = function.node.find_child("Resource")
        once = ("CDK's AwsCustomResource handler runs once per stack create or update, for one read-only "
                "DescribeManagedPrefixLists call; ")
        acknowledge(function.node.find_child("ServiceRole"), "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::"
                    "aws:policy/service-role/AWSLambdaBasicExecutionRole]", once + "the AWS-managed basic execution "
                    "policy lets it write its own logs and nothing else.")
        acknowledge(lookup.node.find_child("CustomResourcePolicy"), {
            NIST + "IAMNoInlinePolicy": INLINE,
            "AwsSolutions-IAM5[Resource::*]": "ec2:DescribeManagedPrefixLists takes no resource ARN; the call only "
                                              "reads the name and id of AWS's S3 prefix list."})
        synchronous = "CloudFormation invokes it synchronously and fails the deploy on an error: no message to keep."
        outside = "it calls the EC2 API, which this NAT-free VPC has no endpoint for, and touches nothing in the VPC."
        acknowledge(handler, {finding: once + why for finding, why in (
            ("Serverless-LambdaDefaultMemorySize", "the default 128 MB is plenty for one SDK call."),
            ("Serverless-LambdaDLQ", synchronous), (NIST + "LambdaDLQ", synchronous),
            (CHECKOV + "CKV_AWS_116", synchronous),
            (NIST + "LambdaConcurrency", "CloudFormation invokes it at most once per deploy."),
            (CHECKOV + "CKV_AWS_115", "CloudFormation invokes it at most once per deploy."),
            (NIST + "LambdaInsideVPC", outside), (CHECKOV + "CKV_AWS_117", outside),
            ("Serverless-LambdaTracing", "a trace of one SDK call per deploy would show nothing that "
             "CloudFormation's events do not."))})
        acknowledge_logs(function.node.find_child("LogGroup"))
