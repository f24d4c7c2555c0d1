"""Compliance: cdk-nag packs on an app, and the one way a construct acknowledges a finding on its own resource.

Each construct acknowledges what it knowingly accepts where it creates the resource (:func:`acknowledge`):
one L1 resource, one granular finding (a cdk-nag rule, a CDK CloudFormation-validation rule, a cfn-lint rule
``cfn-lint:E3002`` or a checkov check ``checkov:CKV_AWS_18``; the last two are read by their tools from the
template), and a reason. So a ``ModelService`` in a team's own stack brings its acknowledgements along, and
:func:`apply` (the packs) is all that is left app-wide. Nothing is acknowledged stack-wide; each
acknowledgement is also written into its resource's Metadata, so the template shows what was accepted.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, CfnResource, Stack, Validations
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks, ServerlessChecks
from constructs import IConstruct

# cdk-nag plugins apply to the whole app; NIST 800-53 rev 5 was asked of the instance backends and
# costs the Lambda and network stacks nothing extra to meet too.
PACKS = (AwsSolutionsChecks, ServerlessChecks, NIST80053R5Checks)
METADATA_KEY = "crossover:acknowledged"
CFN_LINT = "cfn-lint:"
CHECKOV = "checkov:"
NIST = "NIST.800.53.R5-"
MIN_REASON = 40  # characters: a reason says why the finding does not apply here, not just that it does not


def apply(app: App) -> None:
    """The packs, on every stack of ``app``: a finding no construct acknowledged fails the synth."""
    Validations.of(app).add_plugins(*(pack() for pack in PACKS))


def acknowledge(resource: IConstruct, finding: str, reason: str) -> None:
    """Accept ``finding`` on ``resource`` (an L1 resource, or an L2 whose default child is one) for ``reason``."""
    target = resource if isinstance(resource, CfnResource) else resource.node.default_child
    if not isinstance(target, CfnResource):
        raise ValueError(f"acknowledgement {finding} must name one L1 resource; {resource.node.path} is not")
    if len(reason) < MIN_REASON or " " in finding:
        raise ValueError(f"acknowledgement {finding!r} on {resource.node.path}: one finding, and a reason of "
                         f"substance (at least {MIN_REASON} characters)")
    if finding.startswith(CHECKOV):
        skips = (target.get_metadata("checkov") or {}).get("skip", [])
        target.add_metadata("checkov", {"skip": [*skips, {"id": finding.removeprefix(CHECKOV), "comment": reason}]})
    elif finding.startswith(CFN_LINT):
        # cfn-lint reads resource-level ignores from the template itself.
        config = (target.get_metadata("cfn-lint") or {}).get("config", {})
        ignored = [*config.get("ignore_checks", []), finding.removeprefix(CFN_LINT)]
        target.add_metadata("cfn-lint", {"config": {"ignore_checks": ignored}})
    else:
        Validations.of(target).acknowledge(Acknowledgment(id=finding, reason=reason))
    # Also in the template's resource Metadata: an auditor sees what was accepted, and why.
    accepted = target.get_metadata(METADATA_KEY) or []
    target.add_metadata(METADATA_KEY, [*accepted, {"finding": finding, "reason": reason}])


def policy_of(principal: iam.IGrantable) -> CfnResource:
    """The inline default policy that grants on ``principal`` (a role, or a function's role) were written to."""
    role = principal.grant_principal
    policy = role.node.try_find_child("DefaultPolicy") if isinstance(role, iam.Role) else None
    if policy is None:
        raise ValueError(f"{principal} has no default policy to acknowledge a finding on")
    assert isinstance(policy.node.default_child, CfnResource)
    return policy.node.default_child


def logical_id(resource: IConstruct) -> str:
    """The logical id cdk-nag prints in a finding that names ``resource`` (e.g. ``<ResultsABC123.Arn>``)."""
    target = resource if isinstance(resource, CfnResource) else resource.node.default_child
    assert isinstance(target, CfnResource)
    return str(Stack.of(target).resolve(target.logical_id))


# Reasons that more than one construct gives.
INLINE = ("The policy is attached to this one role and holds only its grants; a customer-managed policy "
          "would be the same statements in a second resource.")
CW_LOGS = ("CloudWatch Logs encrypts every log group at rest with service keys; the logs hold request "
           "metadata, not images, so a customer KMS key per stack adds cost without a reader to exclude.")
EI_RETIRED = ("Elastic Inference is retired (closed to new customers 2023-04-15); the eia backend keeps "
              "its historical deployment shape on purpose and is flagged at validate and synth. ")
INPUTS = ("The config's inputs.s3 declares this bucket or prefix as where requests and messages keep their "
          "images: their object keys are not known in advance, and the serving code refuses every object "
          "outside the declared locations before calling S3.")


def acknowledge_logs(log_group: IConstruct) -> None:
    """A log group encrypted with CloudWatch Logs' service keys (NIST and checkov ask for a customer key)."""
    acknowledge(log_group, NIST + "CloudWatchLogGroupEncrypted", CW_LOGS)
    acknowledge(log_group, CHECKOV + "CKV_AWS_158", CW_LOGS)
