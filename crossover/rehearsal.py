"""Deploying without an AWS account: the real CDK CLI against a local AWS emulator on loopback.

The emulator (crossover.emulator, moto's server) runs in a child process on a free port and is
stopped by its process id when the rehearsal ends, failed or not. Stacks deploy with
``--method=direct`` because the emulator only records stack outputs (hence exports) for stacks
created directly, not through change sets. After the deploy, boto3 reads back what was created and
the check fails if anything the backend needs is missing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from crossover import PROJECT, rollout
from crossover.emulator import ACCOUNT, REGION

CDK = str(PROJECT / "node_modules" / ".bin" / "cdk")


class RehearsalError(Exception):
    pass


@dataclass(frozen=True)
class Emulator:
    endpoint: str
    pid: int
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for boto3 and the CDK CLI to talk to the emulator, and nothing else."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
        return {**base, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "emulator",
                "AWS_SECRET_ACCESS_KEY": "emulator", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true", "CDK_DISABLE_CLI_TELEMETRY": "true", **extra}

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session(aws_access_key_id="emulator", aws_secret_access_key="emulator",
                                     region_name=REGION).client(service, endpoint_url=self.endpoint)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def emulator(log: Path) -> Iterator[Emulator]:
    """Start the emulator; always stop it by its process id, however the block ends."""
    port = _free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "crossover.emulator", "--port", str(port)],
                                   stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT)
    try:
        deadline = time.monotonic() + 60
        while "listening" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RehearsalError(f"the local AWS emulator did not start; see {log}")
            time.sleep(0.1)
        # `localhost`, not 127.0.0.1: the emulator answers path-style S3 URLs (CDK's templates) for it.
        yield Emulator(endpoint=f"http://localhost:{port}", pid=process.pid, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cdk(emu: Emulator, *args: str, models: Path | None = None) -> None:
    """Run the CDK CLI against the emulator, showing its output; on failure, raise with its error lines."""
    extra = {"CROSSOVER_MODELS": str(models)} if models else {}
    process = subprocess.Popen([CDK, *args, "--no-notices"], cwd=PROJECT, env=emu.env(**extra), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    errors = []
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.lstrip().startswith(("‣", "❌")):
            errors.append(line.strip())
    if process.wait() != 0:
        raise RehearsalError(f"`cdk {' '.join(args)}` failed (exit {process.returncode}):\n" + "\n".join(errors))


def bootstrap(emu: Emulator) -> None:
    cdk(emu, "bootstrap", f"aws://{ACCOUNT}/{REGION}")


def deploy(emu: Emulator, stack: str, *, models: Path | None = None, outdir: Path | None = None,
           monitor_minutes: int = 10, canary: bool = False) -> list[str]:
    """Synthesize, then deploy with the rollback triggers a real deploy gets; returns their ARNs (of the
    last update: a canary's first deploy takes two, see crossover.rollout.staged)."""
    assembly = outdir or PROJECT / "cdk.out"
    cdk(emu, "synth", stack, "--quiet", "--output", str(assembly), models=models)
    names = rollout.rollback_alarm_names(assembly, stack)
    arns = rollout.triggers(names, emu.client("cloudwatch"))
    if rollout.staged(canary, names, arns):
        staging = assembly.with_name(assembly.name + "-staging")
        cdk(emu, "synth", stack, "--quiet", "--output", str(staging), *rollout.STAGING_CONTEXT, models=models)
        print(f"{stack}: first update: the canary's backend is created and made ready at weight 0", flush=True)
        cdk(emu, *rollout.deploy_args(stack, staging, arns, monitor_minutes), "--method=direct", models=models)
        arns = rollout.triggers(names, emu.client("cloudwatch"))
        print(f"{stack}: second update: the canary takes its share, judged by its own alarms", flush=True)
    cdk(emu, *rollout.deploy_args(stack, assembly, arns, monitor_minutes), "--method=direct", models=models)
    return arns


@dataclass(frozen=True)
class Check:
    what: str
    found: str
    ok: bool


def check(emu: Emulator, stack: str, backend: str) -> tuple[str, list[Check]]:
    """Read back the deployed stack; returns its status and one check per thing the backend needs."""
    cfn = emu.client("cloudformation")
    status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    resources = {r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]}
    by_type: dict[str, list[str]] = {}
    for r in resources.values():
        by_type.setdefault(r["ResourceType"], []).append(r["PhysicalResourceId"])
    checks: list[Check] = []
    if "AWS::SQS::Queue" in by_type:
        return status, _pipeline_checks(emu, by_type, backend)
    elbv2 = emu.client("elbv2")
    (lb_arn,) = by_type.get("AWS::ElasticLoadBalancingV2::LoadBalancer", [None])
    if lb_arn:
        lb = elbv2.describe_load_balancers(LoadBalancerArns=[lb_arn])["LoadBalancers"][0]
        checks.append(Check("load balancer", f"{lb['Scheme']}, {lb['DNSName']}", lb["Scheme"] == "internal"))
        listeners = elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
        checks.append(Check("listener", ", ".join(f"{x['Protocol']}:{x['Port']}" for x in listeners), bool(listeners)))
    else:
        checks.append(Check("load balancer", "missing", False))
    groups = by_type.get("AWS::ElasticLoadBalancingV2::TargetGroup", [])
    target = elbv2.describe_target_groups(TargetGroupArns=groups)["TargetGroups"] if groups else []
    expected_type = "lambda" if backend == "lambda" else "instance"
    checks.append(Check("target group", ", ".join(f"{t['TargetType']}" for t in target) or "missing",
                        [t["TargetType"] for t in target] == [expected_type]))
    if backend == "lambda":
        names = by_type.get("AWS::Lambda::Function", [])
        fn = emu.client("lambda").get_function_configuration(FunctionName=names[0]) if names else None
        checks.append(Check("Lambda function", "missing" if fn is None else
                            f"{fn['Runtime']}, {fn['MemorySize']} MiB, {fn['Handler']}", fn is not None))
        checks.append(_alias_check(emu, names))
    else:
        checks += _fleet_checks(emu, by_type, backend)
    return status, checks


def _pipeline_checks(emu: Emulator, by_type: dict[str, list[str]], backend: str) -> list[Check]:
    sqs = emu.client("sqs")
    queues = {url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
              for url in by_type.get("AWS::SQS::Queue", [])}
    inputs = {u: json.loads(a["RedrivePolicy"])["maxReceiveCount"] for u, a in queues.items() if "RedrivePolicy" in a}
    dead = [u for u in queues if u not in inputs]
    buckets = by_type.get("AWS::S3::Bucket", [])
    checks = [
        Check("queue with redrive", ", ".join(f"{u.rsplit('/', 1)[-1]} (after {n} receives)" for u, n in inputs.items())
              or "missing", len(inputs) == 1),
        Check("dead-letter queue", ", ".join(u.rsplit("/", 1)[-1] for u in dead) or "missing", len(dead) == 1),
        Check("results bucket", ", ".join(buckets) or "missing", len(buckets) == 1),
    ]
    if backend == "lambda":
        mappings = by_type.get("AWS::Lambda::EventSourceMapping", [])
        checks.append(Check("SQS event source", ", ".join(mappings) or "missing", len(mappings) == 1))
        checks.append(_alias_check(emu, by_type.get("AWS::Lambda::Function", [])))
        return checks
    return checks + _fleet_checks(emu, by_type, backend)


def _alias_check(emu: Emulator, functions: list[str]) -> Check:
    """The ``live`` alias that serves and that CodeDeploy moves between versions."""
    try:
        alias = emu.client("lambda").get_alias(FunctionName=functions[0], Name="live")
    except Exception:  # no function, or no alias: both mean the check fails
        return Check("Lambda alias live", "missing", False)
    return Check("Lambda alias live", f"version {alias['FunctionVersion']}", alias["FunctionVersion"].isdigit())


def _fleet_checks(emu: Emulator, by_type: dict[str, list[str]], backend: str) -> list[Check]:
    checks = []
    names = by_type.get("AWS::AutoScaling::AutoScalingGroup", [])
    groups = emu.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=names)[
        "AutoScalingGroups"] if names else []
    checks.append(Check("Auto Scaling group", ", ".join(f"min {g['MinSize']} max {g['MaxSize']}" for g in groups)
                        or "missing", len(groups) == 1))
    for group in groups:
        # A spot group: its types and on-demand floor (the emulator drops CloudFormation's CapacityRebalance,
        # so the template tests check that).
        policy = group.get("MixedInstancesPolicy") or {}  # the emulator shows an empty one on other groups
        if policy.get("LaunchTemplate"):
            types = [o["InstanceType"] for o in policy["LaunchTemplate"].get("Overrides", [])]
            base = policy.get("InstancesDistribution", {}).get("OnDemandBaseCapacity", 0)
            checks.append(Check("spot", f"{', '.join(types)}; on-demand base {base}", bool(types)))
    templates = by_type.get("AWS::EC2::LaunchTemplate", [])
    data: dict[str, Any] = {}
    if templates:
        versions = emu.client("ec2").describe_launch_template_versions(LaunchTemplateId=templates[0])
        data = versions["LaunchTemplateVersions"][-1]["LaunchTemplateData"]
    tokens = data.get("MetadataOptions", {}).get("HttpTokens")
    checks.append(Check("launch template", f"{data.get('InstanceType')}, IMDSv2 {tokens}" if data else "missing",
                        tokens == "required"))
    if backend == "eia":
        accelerators = data.get("ElasticInferenceAccelerators", [])
        checks.append(Check("Elastic Inference accelerator", ", ".join(a["Type"] for a in accelerators) or "missing",
                            bool(accelerators)))
        endpoints = by_type.get("AWS::EC2::VPCEndpoint", [])
        checks.append(Check("EI runtime endpoint", ", ".join(endpoints) or "missing", bool(endpoints)))
    return checks


def table(stack: str, status: str, checks: list[Check]) -> Table:
    t = Table(title=f"{stack}: {status}")
    t.add_column("expected")
    t.add_column("found")
    t.add_column("ok", justify="center")
    for c in checks:
        t.add_row(c.what, c.found, "yes" if c.ok else "[red]NO[/red]")
    return t
