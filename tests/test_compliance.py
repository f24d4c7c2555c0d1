"""cdk-nag is really on, and every acknowledgement is narrow and explained."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import Stack
from aws_cdk import aws_s3 as s3

from crossover import ROOT, compliance
from crossover.app import new_app
from tests.conftest import Synth


def test_every_acknowledgement_names_one_finding_with_a_real_reason() -> None:
    for ack in compliance.ACKNOWLEDGEMENTS:
        assert ack.path.endswith("/Resource") or ack.path.count("/") >= 1, ack
        assert ack.path not in ("", "/") and "*" not in ack.path, f"stack-wide acknowledgement: {ack}"
        assert (ack.finding.count("-") >= 1 or ack.finding.startswith(compliance.CHECKOV + "CKV_")) and (
            " " not in ack.finding), ack
        assert len(ack.reason) >= 20, f"reason too short for {ack.finding}: {ack.reason!r}"


def test_acknowledgements_live_in_one_module() -> None:
    offenders = [p for p in (ROOT / "crossover").rglob("*.py")
                 if ".acknowledge(" in p.read_text() and p.name != "compliance.py"]
    assert offenders == []


def test_acknowledgements_are_recorded_on_single_resources(synth: Synth) -> None:
    recorded = [(stack, logical, entry["finding"]) for stack, t in synth.raw.items()
                for logical, r in t["Resources"].items()
                for entry in r.get("Metadata", {}).get(compliance.METADATA_KEY, [])]
    assert recorded, "no acknowledgement reached a template"
    for stack, t in synth.raw.items():
        assert compliance.METADATA_KEY not in t.get("Metadata", {}), f"stack-wide acknowledgement in {stack}"
    findings = {f for _, _, f in recorded}
    assert "AwsSolutions-EC23" in findings  # only the public variants have it
    assert not any(f == "AwsSolutions-EC23" and not s.endswith("-public") for s, _, f in recorded)


def test_fails_when_a_finding_is_not_acknowledged(tmp_path: Path) -> None:
    # GIVEN a stack with a bucket that allows plain HTTP WHEN synthesized with the packs THEN synth fails
    app = new_app(outdir=str(tmp_path))
    stack = Stack(app, "Careless")
    s3.Bucket(stack, "Open")
    compliance.apply(app)
    with pytest.raises(RuntimeError, match=r"ValidationFailed[\s\S]*AwsSolutions-S10"):
        app.synth()


def test_fails_when_an_acknowledgement_targets_more_than_one_resource(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    app = new_app(outdir=str(tmp_path))
    stack = Stack(app, "Broad")
    s3.Bucket(stack, "Bucket", enforce_ssl=True)
    monkeypatch.setattr(compliance, "ACKNOWLEDGEMENTS",
                        (compliance.Ack("Bucket", "AwsSolutions-S1", "an L2 holds several resources"),))
    with pytest.raises(ValueError, match="must name one L1 resource; Bucket is not"):
        compliance.apply(app)


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
    reasons = {a.reason for a in compliance.ACKNOWLEDGEMENTS if a.finding.startswith(compliance.CHECKOV)}
    assert skipped and all(s["check_result"]["suppress_comment"] in reasons for s in skipped)
