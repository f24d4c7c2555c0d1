"""The realtime front door: an Application Load Balancer whose identity never depends on the backend."""

from __future__ import annotations

from collections.abc import Sequence

import jsii
from aws_cdk import ArnFormat, Aws, CfnResource, Duration, Names, RemovalPolicy, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct, IValidation

from crossover.compliance import CHECKOV, NIST, acknowledge, acknowledge_logs

STAGING_PORT = 8008
BACKEND_HEADER = "x-crossover-backend"
STAGING_PRIORITY = {"Lambda": 1, "Gpu": 2, "Eia": 3, "Inferentia": 4, "Cpu": 5}
LOG_BUCKET = "This bucket only receives the load balancer's access logs"
INTERNAL_HTTP = ("The endpoint is internal, reachable only from its allowed peer (the VPC by default); "
                 "giving endpoint.certificate_arn makes it HTTPS with a redirect and WAF.")
STAGING = ("The staging listener takes no client's request: the security group admits nothing to its port. It "
           "exists so that the load balancer health-checks each backend's targets before the public listener "
           "sends them requests (a target group is checked only once a listener uses it).")


class RealtimeFrontDoor(Construct):
    """An ALB in front of whichever backend serves the model.

    Internal by default, in ``vpc_subnets`` (the VPC's private subnets), reachable from ``allowed_peer`` over
    HTTP on port 80.
    With ``certificate_arn`` it is internet-facing, serves HTTPS on 443 with a TLS 1.3 policy and
    redirects HTTP to HTTPS and sits behind a logged WAFv2 web ACL (AWS common and known-bad-input
    rules). Access logs go to an encrypted, versioned, SSL-only bucket; deletion protection is on by
    default. Backends plug in through :meth:`route_to` and :meth:`forward`; the ids of everything here
    are fixed, so switching a backend changes only the target groups and the listener's forward action,
    never the DNS name.
    """

    def __init__(self, scope: Construct, id: str, *, vpc: ec2.IVpc, allowed_peer: ec2.IPeer,
                 vpc_subnets: ec2.SubnetSelection | None = None, certificate_arn: str | None = None,
                 idle_timeout: Duration = Duration.seconds(60), deletion_protection: bool = True) -> None:
        super().__init__(scope, id)
        self.public = certificate_arn is not None
        self.security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=vpc, allow_all_outbound=False,
                                                description="Model front door")
        peer = ec2.Peer.any_ipv4() if self.public else allowed_peer
        port = 443 if self.public else 80
        self.security_group.add_ingress_rule(peer, ec2.Port.tcp(port), "Clients of the model endpoint")
        if Token.is_unresolved(peer.unique_id):  # e.g. the VPC's own CIDR block, a CloudFormation attribute
            for finding in ("AwsSolutions-EC23", NIST + "EC2RestrictedCommonPorts", NIST + "EC2RestrictedSSH"):
                acknowledge(self.security_group, finding, "The one ingress rule admits port 80 from a CIDR known "
                            "only at deploy (by default the VPC's own block), which cdk-nag cannot read at synth; it "
                            "is never the world (only a public endpoint is, on 443 and 80), SSH or another port.")
        if self.public:
            self.security_group.add_ingress_rule(peer, ec2.Port.tcp(80), "HTTP, redirected to HTTPS")
            acknowledge(self.security_group, "AwsSolutions-EC23", "A public endpoint exists only when the config "
                        "gives a certificate: the world may reach 443 (HTTPS) and 80, which only redirects to HTTPS.")
            acknowledge(self.security_group, CHECKOV + "CKV_AWS_260",
                        "Port 80 of a public endpoint (one with a certificate) only redirects to HTTPS on 443.")

        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self, "LoadBalancer", vpc=vpc, internet_facing=self.public, security_group=self.security_group,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC) if self.public else vpc_subnets,
            drop_invalid_header_fields=True, idle_timeout=idle_timeout,
            deletion_protection=deletion_protection,
        )
        # ALB access logs support SSE-S3 only (not KMS).
        access_logs = s3.Bucket(self, "AccessLogs", encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True,
                                  block_public_access=s3.BlockPublicAccess.BLOCK_ALL, versioned=True,
                                  lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90),
                                                                    noncurrent_version_expiration=Duration.days(7))],
                                  removal_policy=RemovalPolicy.RETAIN)
        self._log_to(access_logs)
        not_logged = LOG_BUCKET + ("; logging its own access would need yet another bucket and adds nothing an "
                                   "auditor uses.")
        for finding in ("AwsSolutions-S1", NIST + "S3BucketLoggingEnabled", CHECKOV + "CKV_AWS_18"):
            acknowledge(access_logs, finding, not_logged)
        acknowledge(access_logs, NIST + "S3DefaultEncryptionKMS",
                    "Application Load Balancer access logs can only be delivered to SSE-S3 buckets, not "
                    "KMS-encrypted ones.")
        acknowledge(access_logs, NIST + "S3BucketReplicationEnabled",
                    LOG_BUCKET + ", kept 90 days and versioned; a cross-region replica doubles storage for no reader.")

        if certificate_arn is not None:
            self.listener = self.load_balancer.add_listener(
                "Listener", port=443, protocol=elbv2.ApplicationProtocol.HTTPS, open=False,
                certificates=[elbv2.ListenerCertificate.from_arn(certificate_arn)],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS)
            redirect = self.load_balancer.add_redirect(source_port=80, target_port=443)
            acknowledge(redirect, NIST + "ELBv2ACMCertificateRequired", "Port 80 of a public endpoint answers "
                        "nothing but a redirect to HTTPS on 443, which uses the configured ACM certificate.")
            self._protect_with_waf()
        else:
            self.listener = self.load_balancer.add_listener(
                "Listener", port=80, protocol=elbv2.ApplicationProtocol.HTTP, open=False)
            for finding in (NIST + "ELBv2ACMCertificateRequired", NIST + "ALBHttpToHttpsRedirection",
                            CHECKOV + "CKV_AWS_2", CHECKOV + "CKV_AWS_103"):
                acknowledge(self.listener, finding, INTERNAL_HTTP)
            acknowledge(self.load_balancer, NIST + "ALBWAFEnabled",
                        INTERNAL_HTTP + " Only public endpoints face traffic a web ACL exists to filter.")
        # No client can reach this port (the security group admits none): see route_to().
        self.staging = self.load_balancer.add_listener(
            "Staging", port=STAGING_PORT, protocol=elbv2.ApplicationProtocol.HTTP, open=False,
            default_action=elbv2.ListenerAction.fixed_response(404, content_type="text/plain",
                                                               message_body="no backend named"))
        for finding in (NIST + "ELBv2ACMCertificateRequired", NIST + "ALBHttpToHttpsRedirection",
                        CHECKOV + "CKV_AWS_2", CHECKOV + "CKV_AWS_103"):
            acknowledge(self.staging, finding, STAGING)
        self.forwarded = False
        self.node.add_validation(_Forwards(self))

    def _protect_with_waf(self) -> None:
        """A public endpoint gets a WAFv2 web ACL with AWS's common and known-bad-inputs rule groups."""
        rules = [wafv2.CfnWebACL.RuleProperty(
            name=group, priority=i, override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            statement=wafv2.CfnWebACL.StatementProperty(managed_rule_group_statement=(
                wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(vendor_name="AWS", name=group))),
            visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=group, sampled_requests_enabled=True))
            for i, group in enumerate(("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"))]
        acl = wafv2.CfnWebACL(self, "WebAcl", scope="REGIONAL", default_action=wafv2.CfnWebACL.DefaultActionProperty(
            allow={}), rules=rules, visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name="crossover", sampled_requests_enabled=True))
        wafv2.CfnWebACLAssociation(self, "WebAclAssociation", resource_arn=self.load_balancer.load_balancer_arn,
                                   web_acl_arn=acl.attr_arn)
        # WAF only logs to groups named aws-waf-logs-*, by an ARN without the trailing ":*"; the rest of the
        # name comes from this construct's path, so two front doors in one stack never share a group.
        name = "aws-waf-logs-" + Names.unique_resource_name(self, max_length=240, separator="-")
        waf_logs = logs.LogGroup(self, "WafLogs", log_group_name=name, retention=logs.RetentionDays.ONE_MONTH,
                                 removal_policy=RemovalPolicy.DESTROY)
        acknowledge_logs(waf_logs)
        arn = Stack.of(self).format_arn(service="logs", resource="log-group", resource_name=name,
                                        arn_format=ArnFormat.COLON_RESOURCE_NAME)
        wafv2.CfnLoggingConfiguration(self, "WebAclLogging", resource_arn=acl.attr_arn, log_destination_configs=[arn])

    def _log_to(self, bucket: s3.Bucket) -> None:
        # log_access_logs() needs a concrete region to pick the regional ELB account; the log-delivery
        # service principal works in every region, so the stack stays environment-agnostic.
        bucket.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("logdelivery.elasticloadbalancing.amazonaws.com")],
            actions=["s3:PutObject"], resources=[bucket.arn_for_objects(f"AWSLogs/{Aws.ACCOUNT_ID}/*")]))
        self.load_balancer.set_attribute("access_logs.s3.enabled", "true")
        self.load_balancer.set_attribute("access_logs.s3.bucket", bucket.bucket_name)
        # The load balancer checks that it may write to the bucket when the attribute is set.
        assert bucket.policy is not None
        self.load_balancer.node.add_dependency(bucket.policy)

    @property
    def url(self) -> str:
        scheme = "https" if self.public else "http"
        return f"{scheme}://{self.load_balancer.load_balancer_dns_name}"

    def route_to(self, name: str, targets: Sequence[elbv2.IApplicationLoadBalancerTarget], *,
                 port: int | None = None, health_check: elbv2.HealthCheck | None = None,
                 vpc: ec2.IVpc | None = None) -> elbv2.ApplicationTargetGroup:
        """A target group ``<name>Targets`` for one backend (a Lambda function, or instances on ``port``),
        health-checked from the start but sent no request until :meth:`forward` names it.

        Each backend has a group of its own (CloudFormation cannot change a group's target type in place,
        and during a canary two backends are behind the listener at once). The staging listener forwards
        to it through a rule: a target group is health-checked only once a listener uses it, and a fleet's
        instances wait to be found healthy before they signal ready.
        """
        group = elbv2.ApplicationTargetGroup(
            self, f"{name}Targets", targets=list(targets), port=port, vpc=vpc, health_check=health_check,
            protocol=elbv2.ApplicationProtocol.HTTP if port else None,
            deregistration_delay=Duration.seconds(30) if port else None)
        self.staging.add_target_groups(name, target_groups=[group], priority=STAGING_PRIORITY[name],
                                       conditions=[elbv2.ListenerCondition.http_header(BACKEND_HEADER, [name])])
        return group

    def forward(self, routes: Sequence[tuple[elbv2.ApplicationTargetGroup, int]], *,
                after: Sequence[CfnResource]) -> None:
        """Send the listener's requests to ``routes`` by weight (out of 100), and change the listener only once
        every resource in ``after`` is complete: each backend's readiness (its group's creation policy, or
        its alias), so that no request reaches a backend before it can answer."""
        action = (elbv2.ListenerAction.forward([routes[0][0]]) if len(routes) == 1 else
                  elbv2.ListenerAction.weighted_forward([elbv2.WeightedTargetGroup(target_group=group, weight=weight)
                                                         for group, weight in routes]))
        self.listener.add_action("Forward", action=action)
        self.forwarded = True
        for resource in after:
            self.listener.node.add_dependency(resource)


@jsii.implements(IValidation)
class _Forwards:
    """A front door whose listener forwards nowhere would deploy and answer every request with an error."""

    def __init__(self, front_door: RealtimeFrontDoor) -> None:
        self.front_door = front_door

    def validate(self) -> list[str]:
        return [] if self.front_door.forwarded else [
            "no backend behind this front door: call forward() with its backends' routes (ModelService does)"]
