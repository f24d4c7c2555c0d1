"""cdk-nag is really on, and every acknowledgement is narrow and explained."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import CfnResource, Duration, Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct

from crossover import compliance
from crossover.app import new_app
from crossover.constructs.pipeline_front_door import PipelineFrontDoor
from tests import ROOT
from tests.conftest import Synth


def acknowledged(synth: Synth) -> list[tuple[str, str, str, str]]:
    """(stack, logical id, finding, reason) for every acknowledgement in the session's templates."""
    return [(stack, logical, entry["finding"], entry["reason"]) for stack, t in synth.raw.items()
            for logical, r in t["Resources"].items()
            for entry in r.get("Metadata", {}).get(compliance.METADATA_KEY, [])]


def test_every_acknowledgement_names_one_finding_with_a_real_reason(synth: Synth) -> None:
    for stack, logical, finding, reason in acknowledged(synth):
        assert (finding.count("-") >= 1 or finding.startswith(compliance.CHECKOV + "CKV_")) and " " not in finding, (
            stack, logical, finding)
        assert len(reason) >= compliance.MIN_REASON, f"reason too short for {finding} on {logical}: {reason!r}"


def test_acknowledgements_go_through_one_function() -> None:
    offenders = [p for p in (ROOT / "crossover").rglob("*.py")
                 if ".acknowledge(" in p.read_text() and p.name != "compliance.py"]
    assert offenders == []


def test_acknowledgements_are_recorded_on_single_resources(synth: Synth) -> None:
    recorded = acknowledged(synth)
    assert recorded, "no acknowledgement reached a template"
    for stack, t in synth.raw.items():
        assert compliance.METADATA_KEY not in t.get("Metadata", {}), f"stack-wide acknowledgement in {stack}"
    findings = {f for _, _, f, _ in recorded}
    assert "AwsSolutions-EC23" in findings  # only the public variants have it
    assert not any(f == "AwsSolutions-EC23" and not s.endswith("-public") for s, _, f, _ in recorded)


def test_fails_when_a_finding_on_crossovers_resources_is_not_acknowledged(tmp_path: Path) -> None:
    # GIVEN a bucket that allows plain HTTP inside one of crossover's constructs (a front door)
    app = new_app(outdir=str(tmp_path))
    stack = Stack(app, "Careless")
    door = PipelineFrontDoor(stack, "FrontDoor", visibility_timeout=Duration.seconds(60))
    s3.Bucket(door, "Open")
    compliance.apply(app)
    # WHEN synthesized with the packs THEN synth fails, naming the finding
    with pytest.raises(RuntimeError, match=r"ValidationFailed[\s\S]*AwsSolutions-S10"):
        app.synth()


def test_the_apps_own_findings_are_reported_as_its_own_with_the_line_that_fixes_each(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # GIVEN the same bucket in the app's own stack, outside every crossover construct
    app = new_app(outdir=str(tmp_path / "out"))
    s3.Bucket(Stack(app, "Team"), "Open")
    compliance.apply(app)
    # WHEN synthesized THEN the synth goes on, and each finding is printed as the app's with its acknowledge line
    app.synth()
    err = capfd.readouterr().err
    assert ("warning: Team/Open/Resource: AwsSolutions-S10: " in err and "(yours, not crossover's)" in err
            and 'crossover.compliance.acknowledge(<that construct>, "AwsSolutions-S10", "<why it does not apply>")'
            in err)
    # AND with strict=True the same finding fails the synth
    strict = new_app(outdir=str(tmp_path / "strict"))
    s3.Bucket(Stack(strict, "Team"), "Open")
    compliance.apply(strict, strict=True)
    with pytest.raises(RuntimeError, match=r"ValidationFailed[\s\S]*AwsSolutions-S10"):
        strict.synth()


def test_an_acknowledgement_names_one_resource_and_gives_a_reason(tmp_path: Path) -> None:
    app = new_app(outdir=str(tmp_path))
    stack = Stack(app, "Broad")
    group = Construct(stack, "Buckets")
    for id in ("A", "B"):
        s3.Bucket(group, id, enforce_ssl=True)
    with pytest.raises(ValueError, match="must name one L1 resource; Broad/Buckets is not"):
        compliance.acknowledge(group, "AwsSolutions-S1", "two buckets are not one resource, whatever the reason")
    with pytest.raises(ValueError, match="a reason of substance"):
        compliance.acknowledge(group.node.find_child("A"), "AwsSolutions-S1", "because")
    # AND in a mapping of findings to reasons each reason is held to the same, and a reason beside one is refused
    bucket, why = group.node.find_child("A"), "an access-log bucket: logging its own writes would loop"
    with pytest.raises(ValueError, match="a reason of substance"):
        compliance.acknowledge(bucket, {"AwsSolutions-S1": why, "AwsSolutions-S10": "because"})
    with pytest.raises(ValueError, match="a reason of substance"):
        compliance.acknowledge(bucket, {"": why})
    with pytest.raises(ValueError, match="give no reason beside it"):
        compliance.acknowledge(bucket, {"AwsSolutions-S1": why}, why)  # type: ignore[call-overload]


def test_several_findings_and_later_acknowledgements_all_reach_the_template(tmp_path: Path) -> None:
    # GIVEN a bucket acknowledged twice: three findings of three tools for one reason, then two with their own
    app = new_app(outdir=str(tmp_path))
    stack = Stack(app, "Acks")
    bucket = s3.Bucket(stack, "Logs", enforce_ssl=True)
    cfn = bucket.node.default_child
    assert isinstance(cfn, CfnResource)
    cfn.add_metadata("checkov", {"skip": [{"id": "CKV_AWS_21", "comment": "the team's own"}]})
    why = "an access-log bucket: logging its own writes would loop"
    compliance.acknowledge(bucket, ("AwsSolutions-S1", "checkov:CKV_AWS_18", "cfn-lint:W3005"), why)
    compliance.acknowledge(bucket, {"checkov:CKV_AWS_144": "replication of access logs is not wanted here",
                                    "AwsSolutions-S10": "every reader of these logs is in the account, over TLS"})
    # WHEN synthesized
    resources = app.synth().get_stack_by_name("Acks").template["Resources"].values()
    (resource,) = [r for r in resources if r["Type"] == "AWS::S3::Bucket"]
    # THEN cdk-nag's finding is acknowledged where the packs look, every finding is in the template with its
    # reason, the tools' own keys hold theirs, and nothing earlier is lost
    assert [e.data for e in cfn.node.metadata if e.type == "aws:cdk:acknowledged-rules"] == [
        {"Annotation::AwsSolutions-S1": why},
        {"Annotation::AwsSolutions-S10": "every reader of these logs is in the account, over TLS"}]
    metadata = resource["Metadata"]
    assert [(a["finding"], a["reason"]) for a in metadata[compliance.METADATA_KEY]] == [
        ("AwsSolutions-S1", why), ("checkov:CKV_AWS_18", why), ("cfn-lint:W3005", why),
        ("checkov:CKV_AWS_144", "replication of access logs is not wanted here"),
        ("AwsSolutions-S10", "every reader of these logs is in the account, over TLS")]
    assert [skip["id"] for skip in metadata["checkov"]["skip"]] == ["CKV_AWS_21", "CKV_AWS_18", "CKV_AWS_144"]
    assert metadata["cfn-lint"] == {"config": {"ignore_checks": ["W3005"]}}


def test_checkov_finds_nothing_unacknowledged_in_any_template(synth: Synth) -> None:
    """checkov over every synthesized template (every example on every backend and service): zero
    failures; each check it skips is skipped on one resource, with the reason as its comment."""
    import json
    import subprocess

    result = subprocess.run([str(ROOT / ".venv-checkov" / "bin" / "checkov"), "--directory", str(synth.outdir),
                             "--framework", "cloudformation", "--output", "json", "--compact"],
                            capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    failed = [(f["check_id"], f["file_path"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert failed == [] and result.returncode == 0, failed
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["passed"] > 500
    skipped = report["results"]["skipped_checks"]
    reasons = {reason for _, _, finding, reason in acknowledged(synth) if finding.startswith(compliance.CHECKOV)}
    assert skipped and all(s["check_result"]["suppress_comment"] in reasons for s in skipped)
