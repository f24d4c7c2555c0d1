"""NetworkStack: the one VPC that every model stack shares."""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from crossover.compliance import INLINE, NIST, acknowledge, acknowledge_logs, policy_of
from crossover.shape import AZS, NAT_GATEWAYS


class NetworkStack(Stack):
    """A VPC over two AZs: public subnets (NAT, public load balancers) and private subnets with egress.

    ``cidr`` is kept as a plain string too: internal load balancers admit it, and a literal lets
    cdk-nag check the rule (a cross-stack token would not). Environment-agnostic (AZs come from
    ``Fn::GetAZs`` at deploy time), so synth needs no account.
    Flow logs go to CloudWatch; S3 traffic (model artifacts, results) stays on a gateway endpoint.
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
                ec2.SubnetConfiguration(name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=20),
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
