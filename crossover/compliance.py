"""Compliance: cdk-nag packs on an app, and the one way a construct acknowledges a finding on its own resource.

Each construct acknowledges what it knowingly accepts where it creates the resource (:func:`acknowledge`):
one L1 resource, one granular finding (a cdk-nag rule, a CDK CloudFormation-validation rule, a cfn-lint rule
``cfn-lint:E3002`` or a checkov check ``checkov:CKV_AWS_18``; the last two are read by their tools from the
template), and a reason. So a ``ModelService`` in a team's own stack brings its acknowledgements along, and
:func:`apply` (the packs) is all that is left app-wide. Nothing is acknowledged stack-wide; each
acknowledgement is also written into its resource's Metadata, so the template shows what was accepted.

In a team's app, :func:`apply` tells the two apart: a finding on a resource of crossover's constructs fails the
synth (each construct acknowledged what it accepts; what is left is a bug, or a grant the team made to a service,
which the team acknowledges); a finding on the team's own resources is reported as the team's, with the line that
acknowledges it, and fails the synth only with ``strict=True``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import jsii
from aws_cdk import (
    Acknowledgment,
    App,
    CfnResource,
    IPolicyValidationContext,
    IPolicyValidationPlugin,
    PolicyValidationPluginReport,
    PolicyViolatingResource,
    PolicyViolation,
    Stack,
    Validations,
)
from aws_cdk import aws_iam as iam
from constructs import IConstruct

if TYPE_CHECKING:
    from cdk_nag import NagPack

# cdk-nag plugins apply to the whole app (AwsSolutions, Serverless, NIST 800-53 rev 5: asked of the instance
# backends, and it costs the Lambda and network stacks nothing extra to meet too). Imported by apply() alone:
# loading cdk-nag costs a synth ~0.15 s, and constructs that only acknowledge findings do not need it.
PACKS = ("AwsSolutionsChecks", "ServerlessChecks", "NIST80053R5Checks")
METADATA_KEY = "crossover:acknowledged"
CFN_LINT = "cfn-lint:"
CHECKOV = "checkov:"
NIST = "NIST.800.53.R5-"
MIN_REASON = 40  # characters: a reason says why the finding does not apply here, not just that it does not


def apply(app: App, *, strict: bool = False) -> None:
    """The packs, on every stack of ``app``: a finding on crossover's resources that no construct acknowledged
    fails the synth; a finding on the app's own resources is printed as the app's, with the line that
    acknowledges it, and fails the synth too with ``strict``."""
    import cdk_nag

    Validations.of(app).add_plugins(*(_Owned(getattr(cdk_nag, pack)(), app, strict) for pack in PACKS))


@jsii.implements(IPolicyValidationPlugin)
class _Owned:
    """A cdk-nag pack whose report keeps the findings on crossover's resources (a resource is crossover's when a
    construct above it is a class of crossover's) and reports the others as the app's own."""

    def __init__(self, pack: NagPack, app: App, strict: bool) -> None:
        self.pack, self.app, self.strict = pack, app, strict

    @property
    def name(self) -> str:
        return str(self.pack.name)

    @property
    def rule_ids(self) -> list[str] | None:
        return self.pack.rule_ids

    @property
    def version(self) -> str | None:
        return self.pack.version

    def validate(self, context: IPolicyValidationContext) -> PolicyValidationPluginReport:
        report = self.pack.validate(context)
        ours: list[tuple[PolicyViolation, PolicyViolatingResource]] = []
        theirs: list[tuple[PolicyViolation, PolicyViolatingResource, bool]] = []
        for violation in report.violations:
            for resource in violation.violating_resources:
                construct = self._at(resource.construct_path or "")
                crossovers = construct is None or _crossovers(construct)  # a resource it cannot place: judged strictly
                if self.strict or (crossovers and not _granted(construct, violation.rule_name)):
                    ours.append((violation, resource))
                else:
                    theirs.append((violation, resource, crossovers))
        for violation, resource, crossovers in theirs:
            where = ("crossover.compliance.policy_of(<the service's backend you granted to>)" if crossovers
                     else "<that construct>")
            print(f"warning: {resource.construct_path}: {violation.rule_name}: {violation.description.strip()} "
                  f"(yours, not crossover's). Fix it, or acknowledge it where you create it: "
                  f'crossover.compliance.acknowledge({where}, "{violation.rule_name}", "<why it does not apply>")',
                  file=sys.stderr)
        kept = [PolicyViolation(rule_name=v.rule_name, description=v.description, fix=v.fix, severity=v.severity,
                                rule_metadata=v.rule_metadata, violating_resources=[r])
                for v, r in ours]
        return PolicyValidationPluginReport(success=not kept, violations=kept, metadata=report.metadata,
                                            plugin_version=report.plugin_version)

    def _at(self, path: str) -> IConstruct | None:
        """The construct at ``path``, found child by child (a handful of calls, not one per construct)."""
        construct: IConstruct | None = self.app
        for part in path.split("/"):  # the app is the root: its own path is empty
            construct = construct.node.try_find_child(part) if construct is not None else None
        return construct


def _granted(construct: IConstruct | None, rule: str) -> bool:
    """A wildcard left on a crossover role's policy: every construct acknowledges its own wildcards, so this one
    came from a grant the app made to the service (``bucket.grant_read(service)``) and is the app's to judge."""
    return rule.startswith("AwsSolutions-IAM5") and isinstance(construct, iam.CfnPolicy)


def _crossovers(construct: IConstruct) -> bool:
    """Whether ``construct`` belongs to one of crossover's constructs (a ModelService, NetworkStack, ..., or an
    app's own subclass of one)."""
    return any(cls.__module__.startswith("crossover.") for scope in construct.node.scopes
               for cls in type(scope).__mro__)


@overload
def acknowledge(resource: IConstruct, finding: str | Sequence[str], reason: str) -> None: ...
@overload
def acknowledge(resource: IConstruct, finding: Mapping[str, str]) -> None: ...
def acknowledge(resource: IConstruct, finding: str | Sequence[str] | Mapping[str, str], reason: str | None = None
                ) -> None:
    """Accept ``finding`` (or each of several findings, for one ``reason``; or each finding of a mapping, for its
    own reason) on ``resource`` (an L1 resource, or an L2 whose default child is one)."""
    target = resource if isinstance(resource, CfnResource) else resource.node.default_child
    reasons = dict(finding) if isinstance(finding, Mapping) else \
        dict.fromkeys([finding] if isinstance(finding, str) else finding, reason or "")
    if not isinstance(target, CfnResource):
        raise ValueError(f"acknowledgement {next(iter(reasons), '')} must name one L1 resource; "
                         f"{resource.node.path} is not")
    if isinstance(finding, Mapping) and reason is not None:
        raise ValueError(f"acknowledgement {list(reasons)!r} on {resource.node.path}: a mapping gives each finding "
                         "its reason; give no reason beside it")
    if not reasons or any(not f or " " in f or not isinstance(why, str) or len(why) < MIN_REASON
                          for f, why in reasons.items()):
        raise ValueError(f"acknowledgement {list(reasons) or finding!r} on {resource.node.path}: each one finding, "
                         f"and a reason of substance (at least {MIN_REASON} characters)")
    # Every call into the CDK is a round trip to its Node process, and this makes 4-10 of them: the findings on one
    # resource go in one call (the default app acknowledges 87 findings in 29 calls).
    validated = [Acknowledgment(id=f, reason=why) for f, why in reasons.items()
                 if not f.startswith((CHECKOV, CFN_LINT))]
    if validated:
        Validations.of(target).acknowledge(*validated)
    checkov = [{"id": f.removeprefix(CHECKOV), "comment": why} for f, why in reasons.items() if f.startswith(CHECKOV)]
    if checkov:
        _extend(target, "checkov", checkov, lambda old, new: {"skip": [*(old or {}).get("skip", []), *new]})
    ignored = [f.removeprefix(CFN_LINT) for f in reasons if f.startswith(CFN_LINT)]
    if ignored:  # cfn-lint reads resource-level ignores from the template itself
        _extend(target, "cfn-lint", ignored, lambda old, new: {"config": {"ignore_checks": [
            *(old or {}).get("config", {}).get("ignore_checks", []), *new]}})
    # Also in the template's resource Metadata: an auditor sees what was accepted, and why.
    _extend(target, METADATA_KEY, [{"finding": f, "reason": why} for f, why in reasons.items()],
            lambda old, new: [*(old or []), *new])


def _extend(target: CfnResource, key: str, new: list[Any], merge: Callable[[Any, list[Any]], Any]) -> None:
    """Add ``new`` to the value of ``target``'s metadata ``key`` (the app may have written the tools' keys itself)."""
    target.add_metadata(key, merge(target.get_metadata(key), new))


def policy_of(principal: iam.IGrantable) -> CfnResource:
    """The inline default policy that grants on ``principal`` (a role, or a function's role) were written to."""
    role = principal.grant_principal
    policy = role.node.try_find_child("DefaultPolicy") if isinstance(role, iam.Role) else None
    if policy is None or not isinstance(policy.node.default_child, CfnResource):
        raise ValueError(f"{principal} has no default policy to acknowledge a finding on")
    return policy.node.default_child


def logical_id(resource: IConstruct) -> str:
    """The logical id cdk-nag prints in a finding that names ``resource`` (e.g. ``<ResultsABC123.Arn>``)."""
    target = resource if isinstance(resource, CfnResource) else resource.node.default_child
    if not isinstance(target, CfnResource):
        raise ValueError(f"{resource.node.path} is not one CloudFormation resource")
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
    acknowledge(log_group, (NIST + "CloudWatchLogGroupEncrypted", CHECKOV + "CKV_AWS_158"), CW_LOGS)
