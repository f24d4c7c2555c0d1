"""The realtime front doors: a load balancer of the model's own (``RealtimeFrontDoor``), or a path prefix on a
team's load balancer (``PathFrontDoor``). Either way its identity never depends on the backend."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Unpack

import jsii
from aws_cdk import ArnFormat, Aws, CfnResource, Duration, Names, RemovalPolicy, Stack, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct, IValidation

from crossover.backends import BACKEND_IDS, BACKENDS
from crossover.compliance import CHECKOV, NIST, acknowledge, acknowledge_logs
from crossover.constructs.backend import Backend
from crossover.constructs.metrics import MINUTE, MetricOptions, defaults
from crossover.errors import UserError
from crossover.shape import BACKEND_HEADER

STAGING_PORT = 8008
# A backend's staging rule's priority: its place in crossover.backends, from 1.
STAGING_PRIORITY = {kind: i + 1 for i, kind in enumerate(BACKENDS)}
LOG_BUCKET = "This bucket only receives the load balancer's access logs"
INTERNAL_HTTP = ("The endpoint is internal, reachable only from its allowed peer (the VPC by default); "
                 "giving endpoint.certificate_arn makes it HTTPS with a redirect and WAF.")
STAGING = ("The staging listener takes no client's request: the security group admits nothing to its port. It "
           "exists so that the load balancer health-checks each backend's targets before the public listener "
           "sends them requests (a target group is checked only once a listener uses it).")


class RequestFrontDoor(Construct):
    """What both realtime front doors share: each backend's target group, health-checked from the start but sent
    no request until :meth:`forward` names it, and the routing that waits for every backend's readiness.

    Each backend has a group of its own (CloudFormation cannot change a group's target type in place, and during a
    canary two backends are behind the listener at once). A group is health-checked only once a listener uses it,
    and a fleet's instances wait to be found healthy before they signal ready: so each group is also staged on a
    listener that sends it no client's request (:meth:`_stage`).
    """

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        self.routes: list[tuple[elbv2.ApplicationTargetGroup, int]] = []
        self.node.add_validation(_Forwards(self))

    def attach(self, backend: Backend) -> None:
        backend.serve_requests(self)

    def route_to(self, kind: str, targets: Sequence[elbv2.IApplicationLoadBalancerTarget], *,
                 port: int | None = None, health_check: elbv2.HealthCheck | None = None,
                 vpc: ec2.IVpc | None = None) -> elbv2.ApplicationTargetGroup:
        """A target group ``<id>Targets`` for backend ``kind`` (a Lambda function, or instances on ``port``)."""
        name = BACKEND_IDS[kind]
        group = elbv2.ApplicationTargetGroup(
            self, f"{name}Targets", targets=list(targets), port=port, vpc=vpc, health_check=health_check,
            protocol=elbv2.ApplicationProtocol.HTTP if port else None,
            deregistration_delay=Duration.seconds(30) if port else None)
        self._stage(kind, group)
        return group

    def forward(self, routes: Sequence[tuple[elbv2.ApplicationTargetGroup, int]], *,
                after: Sequence[CfnResource]) -> None:
        """Send the service's requests to ``routes`` by weight (out of 100), and change the routing only once
        every resource in ``after`` is complete: each backend's readiness (its group's creation policy, or its
        alias), so that no request reaches a backend before it can answer."""
        self.routes = list(routes)
        action = (elbv2.ListenerAction.forward([routes[0][0]]) if len(routes) == 1 else
                  elbv2.ListenerAction.weighted_forward([elbv2.WeightedTargetGroup(target_group=group, weight=weight)
                                                         for group, weight in routes]))
        routing = self._forward(action)
        for resource in after:
            routing.node.add_dependency(resource)

    def _stage(self, kind: str, group: elbv2.ApplicationTargetGroup) -> None:
        raise NotImplementedError

    def _forward(self, action: elbv2.ListenerAction) -> IConstruct:
        """Route the service's requests with ``action``; returns what changes when the routing does."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def connections(self) -> ec2.Connections:
        """Who may call the endpoint (``connections.allow_default_port_from(clients)``)."""
        raise NotImplementedError

    def metric_request_count(self, **options: Unpack[MetricOptions]) -> cloudwatch.IMetric:
        """Requests the load balancer sent the service's backends (Sum)."""
        return self._per_group("RequestCount", **options)

    def _per_group(self, name: str, **options: Unpack[MetricOptions]) -> cloudwatch.IMetric:
        """``name`` of each forwarded target group, summed during a canary."""
        metrics = {f"group{i}": group.metrics.custom(name, **defaults(options, statistic="Sum"))
                   for i, (group, _) in enumerate(self.routes)}
        if len(metrics) == 1:
            return next(iter(metrics.values()))
        series = ", ".join(f"FILL({id}, 0)" for id in metrics)
        return cloudwatch.MathExpression(expression=f"SUM([{series}])", using_metrics=metrics,
                                         period=options.get("period", MINUTE), label=options.get("label", name))


class RealtimeFrontDoor(RequestFrontDoor):
    """An ALB of the model's own in front of whichever backend serves it.

    Internal by default, in ``vpc_subnets`` (the VPC's private subnets), reachable from ``allowed_peer`` over
    HTTP on port 80.
    With ``certificate_arn`` it is internet-facing, serves HTTPS on 443 with a TLS 1.3 policy and
    redirects HTTP to HTTPS and sits behind a logged WAFv2 web ACL (AWS common and known-bad-input
    rules). Access logs go to an encrypted, versioned, SSL-only bucket; deletion protection is on by
    default. The ids of everything here are fixed, so switching a backend changes only the target groups and the
    listener's forward action, never the DNS name.
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
            acknowledge(self.security_group, ("AwsSolutions-EC23", NIST + "EC2RestrictedCommonPorts",
                                              NIST + "EC2RestrictedSSH"),
                        "The one ingress rule admits port 80 from a CIDR known "
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
        acknowledge(access_logs, {
            **dict.fromkeys(("AwsSolutions-S1", NIST + "S3BucketLoggingEnabled", CHECKOV + "CKV_AWS_18"), not_logged),
            NIST + "S3DefaultEncryptionKMS": "Application Load Balancer access logs can only be delivered to SSE-S3 "
                                             "buckets, not KMS-encrypted ones.",
            NIST + "S3BucketReplicationEnabled": LOG_BUCKET + ", kept 90 days and versioned; a cross-region replica "
                                                 "doubles storage for no reader."})

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
            acknowledge(self.listener, (NIST + "ELBv2ACMCertificateRequired", NIST + "ALBHttpToHttpsRedirection",
                                        CHECKOV + "CKV_AWS_2", CHECKOV + "CKV_AWS_103"), INTERNAL_HTTP)
            acknowledge(self.load_balancer, NIST + "ALBWAFEnabled",
                        INTERNAL_HTTP + " Only public endpoints face traffic a web ACL exists to filter.")
        # No client can reach this port (the security group admits none): see route_to().
        self.staging = self.load_balancer.add_listener(
            "Staging", port=STAGING_PORT, protocol=elbv2.ApplicationProtocol.HTTP, open=False,
            default_action=elbv2.ListenerAction.fixed_response(404, content_type="text/plain",
                                                               message_body="no backend named"))
        acknowledge(self.staging, (NIST + "ELBv2ACMCertificateRequired", NIST + "ALBHttpToHttpsRedirection",
                                   CHECKOV + "CKV_AWS_2", CHECKOV + "CKV_AWS_103"), STAGING)

    def _protect_with_waf(self) -> None:
        """A public endpoint gets a WAFv2 web ACL with AWS's common and known-bad-inputs rule groups."""
        # Imported here: the bindings take ~50 ms to load, on every synth of an app with no public endpoint.
        from aws_cdk import aws_wafv2 as wafv2

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
        # The load balancer checks that it may write to the bucket when the attribute is set: after its policy.
        self.load_balancer.node.add_dependency(bucket)

    @property
    def url(self) -> str:
        scheme = "https" if self.public else "http"
        return f"{scheme}://{self.load_balancer.load_balancer_dns_name}"

    @property
    def connections(self) -> ec2.Connections:
        return self.listener.connections

    def _stage(self, kind: str, group: elbv2.ApplicationTargetGroup) -> None:
        """On the staging listener, which no client can reach (the security group admits none to its port)."""
        self.staging.add_target_groups(BACKEND_IDS[kind], target_groups=[group], priority=STAGING_PRIORITY[kind],
                                       conditions=[elbv2.ListenerCondition.http_header(BACKEND_HEADER,
                                                                                       [BACKEND_IDS[kind]])])

    def _forward(self, action: elbv2.ListenerAction) -> IConstruct:
        self.listener.add_action("Forward", action=action)
        return self.listener

    # The load balancer is the service's own: its metrics also count what it answers itself (503 with no
    # healthy target, 502 for a target that failed), and a request refused before any target.
    def metric_request_count(self, **options: Unpack[MetricOptions]) -> cloudwatch.IMetric:
        return self.load_balancer.metrics.request_count(**defaults(options))

    def metric_target_response_time(self, **options: Unpack[MetricOptions]) -> cloudwatch.IMetric:
        """Seconds from the request leaving the load balancer to the answer (default p99)."""
        return self.load_balancer.metrics.target_response_time(**defaults(options, statistic="p99"))

    def metric_faults(self, **options: Unpack[MetricOptions]) -> cloudwatch.IMetric:
        """The load balancer's own 5xx: for a target that failed, or none healthy (Sum)."""
        return self.load_balancer.metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT,
                                                        **defaults(options))


class PathFrontDoor(RequestFrontDoor):
    """The service under ``path_prefix`` (``/cats``: requests to ``/cats`` and ``/cats/*``) on a listener of a
    team's own load balancer: several models, one load balancer. The load balancer, its listener, TLS, WAF,
    logs and who may reach it are the team's; this adds listener rules and target groups only.

    The listener's rules for the service sit at ``priority * 10 + 1..6`` (default ``priority``: from a hash of
    the prefix): the forward rule first, then a staging rule per backend, which asks for a header and a source
    address no client has and so never matches a request: it only makes the load balancer health-check the group
    before the forward rule names it. Two services on one listener whose prefixes overlap, or whose blocks
    collide, are refused at synth.
    """

    def __init__(self, scope: Construct, id: str, *, listener: elbv2.IApplicationListener,
                 load_balancer: elbv2.IApplicationLoadBalancer, path_prefix: str, priority: int | None = None) -> None:
        super().__init__(scope, id)
        self.listener, self.load_balancer, self.path_prefix = listener, load_balancer, path_prefix
        if priority is not None and not 0 <= priority < RULE_BLOCKS:
            raise UserError(f"{self.node.path}: priority {priority} is outside 0 to {RULE_BLOCKS - 1} (its rules sit "
                            "at priority * 10 + 1 to + 6, and a listener's priorities end at 50,000)")
        self.block = priority if priority is not None else 1 + zlib.crc32(path_prefix.encode()) % (RULE_BLOCKS - 1)
        self.paths = elbv2.ListenerCondition.path_patterns([path_prefix, f"{path_prefix}/*"])
        self.node.add_validation(_OneListenerRule(self))

    @property
    def url(self) -> str:
        """``<scheme>://<dns name>[:port]<prefix>``, from the listener's protocol and port (an imported listener,
        whose protocol the app cannot read: HTTP on its default port)."""
        listener = self.listener.node.default_child
        scheme = str(getattr(listener, "protocol", "HTTP")).lower()
        port = getattr(listener, "port", None)
        shown = "" if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f":{port}"
        return f"{scheme}://{self.load_balancer.load_balancer_dns_name}{shown}{self.path_prefix}"

    @property
    def connections(self) -> ec2.Connections:
        """The listener's: the load balancer's security group, with the listener's port as the default."""
        return self.listener.connections

    def _stage(self, kind: str, group: elbv2.ApplicationTargetGroup) -> None:
        """A rule no request can match: behind the forward rule, and from a source address no client has. On a
        listener clients reach, even the first deploy (before the forward rule exists) sends a backend nothing
        before it is ready."""
        elbv2.ApplicationListenerRule(
            self, f"{BACKEND_IDS[kind]}Staging", listener=self.listener, priority=self.block * 10 + 1 +
            STAGING_PRIORITY[kind], target_groups=[group],
            conditions=[elbv2.ListenerCondition.http_header(BACKEND_HEADER, [BACKEND_IDS[kind]]),
                        elbv2.ListenerCondition.source_ips([NO_CLIENT])])

    def _forward(self, action: elbv2.ListenerAction) -> IConstruct:
        return elbv2.ApplicationListenerRule(self, "Forward", listener=self.listener, priority=self.block * 10 + 1,
                                             conditions=[self.paths], action=action)


RULE_BLOCKS = 5000  # listener rule priorities go to 50,000: blocks of ten
NO_CLIENT = "255.255.255.255/32"  # the limited broadcast address: never a TCP client's source


@jsii.implements(IValidation)
class _Forwards:
    """A front door that forwards nowhere would deploy and answer every request with an error."""

    def __init__(self, front_door: RequestFrontDoor) -> None:
        self.front_door = front_door

    def validate(self) -> list[str]:
        return [] if self.front_door.routes else [
            "no backend behind this front door: call forward() with its backends' routes (ModelService does)"]


@jsii.implements(IValidation)
class _OneListenerRule:
    """Two services on one listener must differ in path prefix and in rule block."""

    def __init__(self, door: PathFrontDoor) -> None:
        self.door = door

    def validate(self) -> list[str]:
        mine = self.door.path_prefix
        others = [d for d in self.door.node.root.node.find_all() if isinstance(d, PathFrontDoor)
                  and d is not self.door and d.listener.node.path == self.door.listener.node.path]
        problems = []
        for other in others:
            theirs = other.path_prefix
            if mine == theirs or mine.startswith(theirs + "/") or theirs.startswith(mine + "/"):
                problems.append(f"{other.node.path} is on the same listener under {theirs}, which overlaps {mine}: "
                                "one service's rule would take the other's requests; give each a prefix of its own")
            elif other.block == self.door.block:
                problems.append(f"{other.node.path} is on the same listener in the same block of rules "
                                f"({other.block}): give one of them priority= (0 to {RULE_BLOCKS - 1})")
        return problems
