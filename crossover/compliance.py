"""Compliance: cdk-nag packs on every stack, and every acknowledgement, each with its reason.

An acknowledgement names one L1 resource (its construct path inside a stack) and one granular
finding: a cdk-nag rule, a CDK CloudFormation-validation rule, a cfn-lint rule (``cfn-lint:E3002``) or
a checkov check (``checkov:CKV_AWS_18``); the last two are read by their tools from the template.
Nothing is acknowledged stack-wide; tests enforce both and a reason of substance. Each applied
acknowledgement is also written into its resource's Metadata, so the template shows what was accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aws_cdk import Acknowledgment, App, CfnResource, Names, Stack, Validations
from aws_cdk import aws_lambda as lambda_
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks, ServerlessChecks
from constructs import IConstruct

from crossover.stacks.model import BACKEND_IDS

# cdk-nag plugins apply to the whole app; NIST 800-53 rev 5 was asked of the instance backends and
# costs the Lambda and network stacks nothing extra to meet too.
PACKS = (AwsSolutionsChecks, ServerlessChecks, NIST80053R5Checks)
METADATA_KEY = "crossover:acknowledged"
CFN_LINT = "cfn-lint:"
CHECKOV = "checkov:"
NIST = "NIST.800.53.R5-"


Predicate = Callable[[Stack, str | None], bool]


@dataclass(frozen=True)
class Ack:
    """``path`` under ``Backend/`` applies to each backend of the stack (under its own id), and ``when``
    is asked with that backend's name; elsewhere with None."""

    path: str  # construct path inside the stack, down to the L1 resource
    finding: str  # granular id, e.g. "AwsSolutions-IAM5[Resource::*]"
    reason: str
    when: Predicate = lambda _stack, _backend: True  # only where the finding can arise


def _public(stack: Stack, _backend: str | None = None) -> bool:
    return bool(getattr(getattr(stack, "front_door", None), "public", False))


def _internal(stack: Stack, _backend: str | None = None) -> bool:
    return hasattr(stack, "front_door") and not _public(stack)


def _realtime(stack: Stack, _backend: str | None = None) -> bool:
    return hasattr(getattr(stack, "front_door", None), "listener")


def _on(kind: str) -> Predicate:
    return lambda _stack, backend: backend == kind


def _pipeline(stack: Stack, _backend: str | None = None) -> bool:
    return hasattr(getattr(stack, "front_door", None), "queue")


def _fleet(_stack: Stack, backend: str | None) -> bool:
    return backend not in (None, "lambda")


EI_RETIRED = ("Elastic Inference is retired (closed to new customers 2023-04-15); the eia backend keeps "
              "its historical deployment shape on purpose and is flagged at validate and synth. ")
LOG_BUCKET = "This bucket only receives the load balancer's access logs"
INLINE = ("The policy is attached to this one role and holds only its grants; a customer-managed policy "
          "would be the same statements in a second resource.")
CW_LOGS = ("CloudWatch Logs encrypts every log group at rest with service keys; the logs hold request "
           "metadata, not images, so a customer KMS key per stack adds cost without a reader to exclude.")
INTERNAL_HTTP = ("The endpoint is internal, reachable only from endpoint.allowed_cidr (the VPC by default); "
                 "giving endpoint.certificate_arn makes it HTTPS with a redirect and WAF.")
SYNC_LAMBDA = ("Nothing invokes the function asynchronously: the load balancer calls it synchronously and "
               "returns its errors to the caller, and an SQS event source retries and dead-letters through "
               "the queue's redrive policy; a function's dead-letter queue only receives asynchronous events.")
STAGING = ("The staging listener takes no client's request: the security group admits nothing to its port. It "
           "exists so that the load balancer health-checks each backend's targets before the public listener "
           "sends them requests (a target group is checked only once a listener uses it).")
RUNTIME_CHOICE = ("python3.13, not the newest runtime: it is the newest whose exact bundle these build machines "
                  "can execute before it ships (tests/test_lambda_bundle.py runs it under the runtime interface "
                  "client); AWS supports it for years yet, and it supports SnapStart.")
RESULTS_BUCKET = ("This bucket holds the pipeline's results, written only by its own consumer role; access "
                  "logs would record that role's writes, which CloudTrail already shows.")
RESULT_KEYS = ("Result keys are named by message id, unknown in advance: the consumer may put objects "
               "under results/ and errors/ of its own bucket only.")
SQS_SSE = ("Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled); checkov only counts a KMS key, "
           "which would make every producer of images need a key grant without protecting more.")
PUBLIC_SUBNET = ("Public subnets exist for NAT gateways and public load balancers, which need the route to "
                 "the internet gateway; no instance is ever placed in them.")

ACKNOWLEDGEMENTS: tuple[Ack, ...] = (
    # The front door's access-log bucket.
    Ack("FrontDoor/AccessLogs/Resource", "AwsSolutions-S1",
        LOG_BUCKET + "; logging its own access would need yet another bucket and adds nothing an auditor uses."),
    Ack("FrontDoor/AccessLogs/Resource", NIST + "S3BucketLoggingEnabled",
        LOG_BUCKET + "; logging its own access would need yet another bucket and adds nothing an auditor uses."),
    Ack("FrontDoor/AccessLogs/Resource", NIST + "S3DefaultEncryptionKMS",
        "Application Load Balancer access logs can only be delivered to SSE-S3 buckets, not KMS-encrypted ones."),
    Ack("FrontDoor/AccessLogs/Resource", CHECKOV + "CKV_AWS_18",
        LOG_BUCKET + "; logging its own access would need yet another bucket and adds nothing an auditor uses."),
    Ack("FrontDoor/AccessLogs/Resource", NIST + "S3BucketReplicationEnabled",
        LOG_BUCKET + ", kept 90 days and versioned; a cross-region replica doubles storage for no reader."),
    # The front door itself.
    Ack("FrontDoor/SecurityGroup/Resource", "AwsSolutions-EC23",
        "A public endpoint exists only when the config gives a certificate: the world may reach 443 "
        "(HTTPS) and 80, which only redirects to HTTPS.", when=_public),
    Ack("FrontDoor/LoadBalancer/Listener/Resource", NIST + "ELBv2ACMCertificateRequired", INTERNAL_HTTP,
        when=_internal),
    Ack("FrontDoor/LoadBalancer/Listener/Resource", NIST + "ALBHttpToHttpsRedirection", INTERNAL_HTTP,
        when=_internal),
    Ack("FrontDoor/LoadBalancer/Redirect80To443/Resource", NIST + "ELBv2ACMCertificateRequired",
        "Port 80 of a public endpoint answers nothing but a redirect to HTTPS on 443, which uses the "
        "configured ACM certificate.", when=_public),
    Ack("FrontDoor/WafLogs/Resource", NIST + "CloudWatchLogGroupEncrypted", CW_LOGS, when=_public),
    Ack("FrontDoor/WafLogs/Resource", CHECKOV + "CKV_AWS_158", CW_LOGS, when=_public),
    Ack("FrontDoor/SecurityGroup/Resource", CHECKOV + "CKV_AWS_260",
        "Port 80 of a public endpoint (one with a certificate) only redirects to HTTPS on 443.", when=_public),
    Ack("FrontDoor/LoadBalancer/Listener/Resource", CHECKOV + "CKV_AWS_2", INTERNAL_HTTP, when=_internal),
    Ack("FrontDoor/LoadBalancer/Listener/Resource", CHECKOV + "CKV_AWS_103", INTERNAL_HTTP, when=_internal),
    Ack("FrontDoor/LoadBalancer/Staging/Resource", NIST + "ELBv2ACMCertificateRequired", STAGING, when=_realtime),
    Ack("FrontDoor/LoadBalancer/Staging/Resource", NIST + "ALBHttpToHttpsRedirection", STAGING, when=_realtime),
    Ack("FrontDoor/LoadBalancer/Staging/Resource", CHECKOV + "CKV_AWS_2", STAGING, when=_realtime),
    Ack("FrontDoor/LoadBalancer/Staging/Resource", CHECKOV + "CKV_AWS_103", STAGING, when=_realtime),
    Ack("FrontDoor/LoadBalancer/Resource", NIST + "ALBWAFEnabled",
        INTERNAL_HTTP + " Only public endpoints face traffic a web ACL exists to filter.", when=_internal),
    # The pipeline front door.
    Ack("FrontDoor/Results/Resource", "AwsSolutions-S1", RESULTS_BUCKET),
    Ack("FrontDoor/Results/Resource", NIST + "S3BucketLoggingEnabled", RESULTS_BUCKET),
    Ack("FrontDoor/Results/Resource", CHECKOV + "CKV_AWS_18", RESULTS_BUCKET),
    Ack("FrontDoor/Queue/Resource", CHECKOV + "CKV_AWS_27", SQS_SSE),
    Ack("FrontDoor/DeadLetterQueue/Resource", CHECKOV + "CKV_AWS_27", SQS_SSE),
    Ack("FrontDoor/Results/Resource", NIST + "S3BucketReplicationEnabled",
        "Results are derived from images the owner keeps and can be recomputed from the queue's inputs; a "
        "cross-region replica doubles storage for data that expires after pipeline.results_days."),
    Ack("FrontDoor/DeadLetterQueue/Resource", "Serverless-SQSRedrivePolicy",
        "This is the dead-letter queue: what lands here is kept 14 days for inspection, with its error "
        "in errors/<id>.json; a queue behind it would only move the same messages again."),
    Ack("Backend/Role/DefaultPolicy/Resource", "AwsSolutions-IAM5[Resource::<FrontDoorResults12853F62.Arn>/results/*]",
        RESULT_KEYS, when=_pipeline),
    Ack("Backend/Role/DefaultPolicy/Resource", "AwsSolutions-IAM5[Resource::<FrontDoorResults12853F62.Arn>/errors/*]",
        RESULT_KEYS, when=_pipeline),
    # The lambda backend.
    Ack("Backend/Role/DefaultPolicy/Resource", "AwsSolutions-IAM5[Resource::*]",
        "Only the EC2 network-interface actions a VPC function needs and X-Ray's PutTraceSegments/"
        "PutTelemetryRecords, none of which support resource-level permissions.", when=_on("lambda")),
    Ack("Backend/Function/Resource", "Serverless-LambdaDLQ", SYNC_LAMBDA, when=_on("lambda")),
    Ack("Backend/Function/Resource", "AwsSolutions-L1", RUNTIME_CHOICE, when=_on("lambda")),
    Ack("Backend/Function/Resource", "Serverless-LambdaLatestVersion", RUNTIME_CHOICE, when=_on("lambda")),
    Ack("Backend/Function/Resource", NIST + "LambdaDLQ", SYNC_LAMBDA, when=_on("lambda")),
    Ack("Backend/Function/Resource", CHECKOV + "CKV_AWS_116", SYNC_LAMBDA, when=_on("lambda")),
    Ack("Backend/Function/Resource", CHECKOV + "CKV_AWS_173",
        "The environment holds the serving spec (model name, its S3 location, preprocessing) and the results "
        "bucket's name, no secret; Lambda encrypts it at rest with its service key.", when=_on("lambda")),
    Ack("Backend/Role/DefaultPolicy/Resource", CHECKOV + "CKV_AWS_111",
        "The EC2 network-interface actions a VPC function needs take no resource ARNs; everything else the "
        "role may do names its resource.", when=_on("lambda")),
    Ack("Backend/Live/{invoke}", CHECKOV + "CKV_AWS_364",
        "The load balancer's permission to invoke the live alias: the target group must be created after it "
        "(ELB checks the permission on registration), so naming the group's ARN here would be a cycle.",
        when=_on("lambda")),
    Ack("Backend/Live/SqsEventSource:{queue}/Resource", "Serverless-LambdaEventSourceMappingDestination",
        "SQS event sources take no on-failure destination: a failing message is retried by SQS and moved by "
        "the queue's redrive policy to the dead-letter queue, with its error in errors/<id>.json.",
        when=_pipeline),
    Ack("Backend/Rollout/ServiceRole/Resource", "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
        "service-role/AWSCodeDeployRoleForLambdaLimited]",
        "CodeDeploy's own, AWS-maintained policy for Lambda traffic shifts (the Limited variant: update "
        "aliases, read alarms, invoke only CodeDeployHook_* functions), kept current as the service changes.",
        when=_on("lambda")),
    # The instance backends.
    Ack("Backend/Role/DefaultPolicy/Resource", "AwsSolutions-IAM5[Resource::*]",
        "cloudwatch:PutMetricData takes no resource ARN (a condition limits it to the crossover metric "
        "namespace), nor does elasticloadbalancing:DescribeTargetHealth, with which an instance waits to be "
        "found healthy before it signals ready.", when=_fleet),
    # Both kinds of backend.
    Ack("Backend/Role/DefaultPolicy/Resource", NIST + "IAMNoInlinePolicy", INLINE),
    Ack("Backend/Logs/Resource", NIST + "CloudWatchLogGroupEncrypted", CW_LOGS),
    Ack("Backend/Logs/Resource", CHECKOV + "CKV_AWS_158", CW_LOGS),
    # The eia backend, faithful to a retired service.
    Ack("Backend/LaunchTemplate/Resource", "CloudFormation-Validate::F3002",
        EI_RETIRED + "Current CloudFormation schemas no longer list ElasticInferenceAccelerators.",
        when=_on("eia")),
    Ack("Backend/LaunchTemplate/Resource", "cfn-lint:E3002",
        EI_RETIRED + "cfn-lint's schema no longer lists ElasticInferenceAccelerators.", when=_on("eia")),
    Ack("Backend/Role/DefaultPolicy/Resource", "cfn-lint:W3037",
        EI_RETIRED + "cfn-lint's IAM catalogue no longer knows the elastic-inference action prefix.",
        when=_on("eia")),
    Ack("Backend/Role/DefaultPolicy/Resource",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:elastic-inference:<AWS::Region>:<AWS::AccountId>:"
        "elastic-inference-accelerator/*]",
        EI_RETIRED + "elastic-inference:Connect names no single accelerator: it is scoped to this account "
        "and region.", when=_on("eia")),
    # The image pipelines (ImageStack-*).
    Ack("BuildRole/Resource", "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
        "EC2InstanceProfileForImageBuilder]",
        "EC2 Image Builder requires this AWS-maintained policy on its build instances; it follows the "
        "service's own needs as they change."),
    Ack("BuildRole/Resource", "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
        "AmazonSSMManagedInstanceCore]",
        "Image Builder drives its build instances through Systems Manager, which needs this AWS-maintained "
        "policy; build instances have no inbound access at all."),
    # The shared network.
    Ack("Vpc/Resource", NIST + "VPCDefaultSecurityGroupClosed",
        "No resource uses the default security group; closing it takes CDK's Lambda-backed custom resource "
        "(another function and role per VPC, which also hangs local emulators)."),
    Ack("Vpc/PublicSubnet1/DefaultRoute", NIST + "VPCNoUnrestrictedRouteToIGW", PUBLIC_SUBNET),
    Ack("Vpc/PublicSubnet2/DefaultRoute", NIST + "VPCNoUnrestrictedRouteToIGW", PUBLIC_SUBNET),
    Ack("Vpc/Reject/IAMRole/DefaultPolicy/Resource", NIST + "IAMNoInlinePolicy", INLINE),
    Ack("FlowLogs/Resource", NIST + "CloudWatchLogGroupEncrypted", CW_LOGS),
    Ack("FlowLogs/Resource", CHECKOV + "CKV_AWS_158", CW_LOGS),
)


def _find(stack: Stack, path: str) -> IConstruct | None:
    if "{queue}" in path:
        queue = getattr(getattr(stack, "front_door", None), "queue", None)
        if queue is None:
            return None
        # CDK names an event source mapping after its queue's unique id.
        path = path.replace("{queue}", Names.unique_id(queue))
    node: IConstruct | None = stack
    for part in path.split("/"):
        if node is not None and part == "{invoke}":  # CDK names a permission by a hash of its principal
            permissions = [c for c in node.node.children if isinstance(c, lambda_.CfnPermission)]
            node = permissions[0] if len(permissions) == 1 else None
            continue
        node = node.node.try_find_child(part) if node is not None else None
    return node


INPUTS = ("The config's inputs.s3 declares this bucket or prefix as where requests and messages keep their "
          "images: their object keys are not known in advance, and the serving code refuses every object "
          "outside the declared locations before calling S3.")


def _input_acks(stack: Stack) -> list[Ack]:
    """One acknowledgement per declared S3 input: the wildcard under it is the grant's purpose."""
    return [Ack("Backend/Role/DefaultPolicy/Resource", f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::"
                f"{prefix}*]", INPUTS) for prefix in getattr(stack, "input_prefixes", [])]


def _placed(stack: Stack, ack: Ack) -> list[tuple[str, str | None]]:
    """Where ``ack`` applies in ``stack``: (path, backend) for each backend under Backend/, else once."""
    if not ack.path.startswith("Backend/"):
        return [(ack.path, None)]
    return [(BACKEND_IDS[name] + ack.path.removeprefix("Backend"), name) for name in getattr(stack, "backends", {})]


def apply(app: App) -> None:
    Validations.of(app).add_plugins(*(pack() for pack in PACKS))
    for stack in (c for c in app.node.children if isinstance(c, Stack)):
        placed = [(path, backend, ack) for ack in (*ACKNOWLEDGEMENTS, *_input_acks(stack))
                  for path, backend in _placed(stack, ack)]
        for path, backend, ack in placed:
            target = _find(stack, path)
            if target is None or not ack.when(stack, backend):
                continue
            if not isinstance(target, CfnResource):
                raise ValueError(f"acknowledgement {ack.finding} must name one L1 resource; {path} is not")
            if ack.finding.startswith(CHECKOV):
                skips = (target.get_metadata("checkov") or {}).get("skip", [])
                target.add_metadata("checkov", {"skip": [*skips, {"id": ack.finding.removeprefix(CHECKOV),
                                                                  "comment": ack.reason}]})
            elif ack.finding.startswith(CFN_LINT):
                # cfn-lint reads resource-level ignores from the template itself.
                config = (target.get_metadata("cfn-lint") or {}).get("config", {})
                ignored = [*config.get("ignore_checks", []), ack.finding.removeprefix(CFN_LINT)]
                target.add_metadata("cfn-lint", {"config": {"ignore_checks": ignored}})
            else:
                Validations.of(target).acknowledge(Acknowledgment(id=ack.finding, reason=ack.reason))
            # Also in the template's resource Metadata: an auditor sees what was accepted, and why.
            accepted = target.get_metadata(METADATA_KEY) or []
            target.add_metadata(METADATA_KEY, [*accepted, {"finding": ack.finding, "reason": ack.reason}])
