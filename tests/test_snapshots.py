"""A few scrubbed snapshots, one per backend x service: reviewable diffs for template changes.

Scrubbed: asset hashes, the hash in a Lambda version's logical id (it follows the code asset), CDK
metadata, the bootstrap version parameter and rule, the serving spec's asset location. Update with
`pytest --snapshot-update` and review the diff like code.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from tests.conftest import BACKENDS, Synth, stack_of

HASH = re.compile(r"[0-9a-f]{64}")
VERSION_ID = re.compile(r"(CurrentVersion[0-9A-F]{8})[0-9a-f]{32}")


def scrub(template: dict[str, Any]) -> dict[str, Any]:
    t = json.loads(VERSION_ID.sub(r"\1<hash>", HASH.sub("<hash>", json.dumps(template))))
    t["Resources"].pop("CDKMetadata", None)
    t.get("Conditions", {}).pop("CDKMetadataAvailable", None)
    t.get("Parameters", {}).pop("BootstrapVersion", None)
    t.get("Rules", {}).pop("CheckBootstrapVersion", None)
    for key in ("Parameters", "Rules", "Conditions"):
        if key in t and not t[key]:
            del t[key]
    for resource in t["Resources"].values():
        metadata = resource.get("Metadata", {})
        for key in [k for k in metadata if k.startswith("aws:")]:
            del metadata[key]
        if not metadata:
            resource.pop("Metadata", None)
    return t


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("service", ["realtime", "pipeline"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_snapshot(synth: Synth, snapshot_json: SnapshotAssertion, backend: str, service: str) -> None:
    assert scrub(synth.raw[stack_of("resnet152", backend, service)]) == snapshot_json


def test_snapshot_network(synth: Synth, snapshot_json: SnapshotAssertion) -> None:
    assert scrub(synth.raw["NetworkStack"]) == snapshot_json
