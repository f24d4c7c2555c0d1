"""A NAT-free network (`network: {nat_gateways: 0}`): isolated subnets, interface endpoints for what instances
call, and backends whose security groups reach those and S3 alone, clean under cdk-nag, cfn-lint and checkov."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crossover.config import ConfigError, load, load_all, model_files
from crossover.cost import catalog as prices
from crossover.cost import model
from crossover.shape import AZS, PRIVATE_ENDPOINTS
from tests import ROOT
from tests.conftest import variant
from tests.lint import cfn_lint

PRIVATE = "{nat_gateways: 0}"
EXAMPLE = ROOT / "models" / "resnet152.yaml"


@dataclass
class Private:
    outdir: Path
    raw: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Private:
    """One app, every model NAT-free: realtime on CPU instances and on Lambda, a GPU pipeline, an EI fleet."""
    from crossover.app import build, new_app

    folder = tmp_path_factory.mktemp("private-models")
    variant(EXAMPLE, folder, "private-cpu", backend="cpu", network=PRIVATE)
    variant(EXAMPLE, folder, "private-lambda", network=PRIVATE)
    variant(EXAMPLE, folder, "private-eia", backend="eia", network=PRIVATE)
    variant(EXAMPLE, folder, "private-gpu-pipe", backend="gpu", service="pipeline", scaling="{min: 0, max: 6}",
            inputs="{s3: [my-images]}", network=PRIVATE)
    outdir = tmp_path_factory.mktemp("private-out")
    app = new_app(outdir=str(outdir))
    build(app, load_all(model_files(folder)))  # cdk-nag's packs run here: an unacknowledged finding fails synth
    assembly = app.synth()
    return Private(outdir, {s.stack_name: s.template for s in assembly.stacks})


def of_type(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]


def test_the_network_has_no_nat_and_an_endpoint_for_each_service_instances_call(private: Private) -> None:
    network = private.raw["NetworkStack"]
    assert of_type(network, "AWS::EC2::NatGateway") == []
    # The only default route goes to the internet gateway, from the public subnets (public load balancers)
    routes = of_type(network, "AWS::EC2::Route")
    assert routes and all("GatewayId" in r and r["DestinationCidrBlock"] == "0.0.0.0/0" for r in routes)
    assert len(routes) == AZS
    endpoints = of_type(network, "AWS::EC2::VPCEndpoint")
    interface = sorted(json.dumps(e["ServiceName"]) for e in endpoints if e.get("VpcEndpointType") == "Interface")
    assert len(interface) == len(PRIVATE_ENDPOINTS)
    assert all(e["PrivateDnsEnabled"] for e in endpoints if e.get("VpcEndpointType") == "Interface")
    for service in PRIVATE_ENDPOINTS:
        assert any(f".{service}" in name for name in interface), service
    (gateway,) = [e for e in endpoints if e.get("VpcEndpointType") == "Gateway"]
    assert len(gateway["RouteTableIds"]) == 2 * AZS  # public and isolated subnets reach S3 privately


def egress_rules(template: dict[str, Any]) -> list[dict[str, Any]]:
    inline = [rule for group in of_type(template, "AWS::EC2::SecurityGroup")
              for rule in group.get("SecurityGroupEgress", [])]
    return inline + of_type(template, "AWS::EC2::SecurityGroupEgress")


@pytest.mark.parametrize("model", ["private-cpu", "private-lambda", "private-eia", "private-gpu-pipe"])
def test_no_backend_may_reach_the_internet(private: Private, model: str) -> None:
    template = private.raw[f"ModelStack-{model}"]
    rules = egress_rules(template)
    assert rules and not [r for r in rules if r.get("CidrIp") == "0.0.0.0/0" or r.get("CidrIpv6") == "::/0"]
    (backend,) = [id for id, r in template["Resources"].items() if r["Type"] == "AWS::EC2::SecurityGroup"
                  and r["Properties"]["GroupDescription"].startswith(("Model instances", "Model function"))]
    own = template["Resources"][backend]["Properties"].get("SecurityGroupEgress", []) + [
        r for r in of_type(template, "AWS::EC2::SecurityGroupEgress")
        if r["GroupId"] == {"Fn::GetAtt": [backend, "GroupId"]}]
    ways_out = {(r.get("CidrIp") or json.dumps(r.get("DestinationPrefixListId")), r["FromPort"], r["ToPort"])
                for r in own}
    assert ("10.0.0.0/16", 443, 443) in ways_out  # the interface endpoints
    assert any("Fn::ImportValue" in way and "S3PrefixList" in way for way, _, _ in ways_out)  # S3's prefix list
    assert len(ways_out) == 2


def test_cfn_lint_and_checkov_find_nothing_in_the_nat_free_templates(private: Private) -> None:
    templates = sorted(str(p) for p in private.outdir.glob("*.template.json"))
    cfn_lint(templates)
    result = subprocess.run([str(ROOT / ".venv-checkov" / "bin" / "checkov"), "--directory", str(private.outdir),
                             "--framework", "cloudformation", "--output", "json", "--compact"],
                            capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    failed = [(f["check_id"], f["file_path"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert failed == [] and report["summary"]["parsing_errors"] == 0


def test_models_that_share_the_network_must_agree_on_its_shape(tmp_path: Path) -> None:
    variant(EXAMPLE, tmp_path, "a", network=PRIVATE)
    variant(EXAMPLE, tmp_path, "b")
    with pytest.raises(ConfigError, match=r"b\.yaml: network: expected the same network as .*a\.yaml"):
        load_all(model_files(tmp_path))


def test_a_nat_free_network_is_priced_as_its_endpoints(tmp_path: Path) -> None:
    catalog = prices.load()
    hours = catalog.hours_per_month
    endpoints = model.network(catalog, 0, shared_by=1).fixed
    per_endpoint = AZS * catalog.vpc_endpoint.hourly_usd_per_az.usd * hours
    assert endpoints == pytest.approx(len(PRIVATE_ENDPOINTS) * per_endpoint)
    nat = model.network(catalog, 1, shared_by=2).fixed
    assert nat == pytest.approx((catalog.nat.hourly_usd.usd + catalog.ipv4.hourly_usd.usd) * hours / 2)  # + its address
    assert model.network(catalog, 1, shared_by=1).fixed < endpoints  # why the NAT stays the default
    config = load(variant(EXAMPLE, tmp_path, "p", network=PRIVATE)).config
    (part,) = [p for p in model.estimate(config, "cpu", catalog).items if p.name == "network"]
    assert part.fixed == pytest.approx(endpoints)
