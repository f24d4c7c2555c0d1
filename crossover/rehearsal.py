"""Deploying without an AWS account: the real CDK CLI against a local AWS emulator on loopback.

The emulator (crossover.emulator, moto's server) runs in a child process on a free port and is stopped
by its process id when the rehearsal ends, failed or not. Its state persists between rehearsals, per
checkout (``.cache/rehearsal/``, or ``$CROSSOVER_REHEARSAL_STATE``): each rehearsal starts from what the
previous one left, so after ``crossover switch`` it rehearses the move as the stack update it will be on
AWS. ``account(fresh=True)`` starts from an empty account instead. Inside ``account`` this process and
every child it starts (the CDK CLI) see the emulator as the AWS account behind the credentials, so a
rehearsal runs the real deploy's own code path: preflight, diff, change sets, rollback triggers.

After a deploy, ``updates`` reads the stack's events back, ``guarantees`` says from their order what waited
for what, ``split`` reads the listener's weights, and ``check`` fails if anything a backend needs is missing.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from crossover import PROJECT
from crossover.backends import FUNCTIONS, KINDS
from crossover.config import BACKEND_IDS
from crossover.emulator import ACCOUNT, REGION, references
from crossover.shape import BACKEND_HEADER

CDK = str(PROJECT / "node_modules" / ".bin" / "cdk")
LISTENER, RULE = "AWS::ElasticLoadBalancingV2::Listener", "AWS::ElasticLoadBalancingV2::ListenerRule"
# What a route waits for before it may send a backend traffic, by the word a person uses for it.
READY = {"AWS::AutoScaling::AutoScalingGroup": "group", "AWS::Lambda::Alias": "alias"}


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
def emulator(log: Path, *, state: Path | None = None, fail: str | None = None) -> Iterator[Emulator]:
    """Start the emulator (from ``state`` if it exists, saving to it when stopped; with ``fail``, that backend
    never becomes ready); always stop it by its process id, however the block ends."""
    port = _free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    extra = [*(["--state", str(state)] if state else []), *(["--fail", fail] if fail else [])]
    with log.open("w") as output:  # this run's log only: a request log grows by ~100 KB a rehearsal
        process = subprocess.Popen([sys.executable, "-m", "crossover.emulator", "--port", str(port), *extra],
                                   stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT)
    try:
        deadline = time.monotonic() + 60
        while f"listening on http://localhost:{port}" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                saved = " (a saved state that no longer loads: FRESH=1 starts from an empty account)" if state else ""
                raise RehearsalError(f"the local AWS emulator did not start; see {log}{saved}")
            time.sleep(0.1)
        # `localhost`, not 127.0.0.1: the emulator answers path-style S3 URLs (CDK's templates) for it.
        yield Emulator(endpoint=f"http://localhost:{port}", pid=process.pid, log=log)
    finally:
        process.terminate()  # the emulator saves its state on SIGTERM: give it the time that takes
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if state is not None and process.returncode != 0:
        raise RehearsalError(f"the emulator could not save its state to {state} (exit {process.returncode}); "
                             f"see {log}. The next rehearsal starts from the state saved before this one.")


def state_folder() -> Path:
    return Path(os.environ.get("CROSSOVER_REHEARSAL_STATE", PROJECT / ".cache" / "rehearsal"))


def _history(folder: Path) -> list[dict[str, str]]:
    path = folder / "history.json"
    return list(json.loads(path.read_text())) if path.exists() else []


def remember(what: str) -> None:
    """Add a line to the persisted account's history: the next rehearsal says what it starts from."""
    folder = state_folder()
    entries = [*_history(folder), {"at": datetime.datetime.now().isoformat(timespec="seconds"), "what": what}]
    (folder / "history.json").write_text(json.dumps(entries[-50:], indent=1))


@contextmanager
def account(*, fresh: bool = False, fail: str | None = None,
            say: Callable[[str], None] = print) -> Iterator[Emulator]:
    """The persisted emulator as this process's AWS account (and its children's) for the block: started from
    the state the last rehearsal left, or empty with ``fresh``; bootstrapped for the CDK if it is not yet."""
    folder = state_folder()
    state = folder / "emulator.state"
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    history = _history(folder)
    if fresh:
        say("starting from an empty account (--fresh)")
    elif not state.exists() or not history:
        say(f"starting from an empty account: no earlier rehearsal in {_shown(folder)}")
    else:
        last = history[-1]
        say(f"starting from what the rehearsal of {last['at'].replace('T', ' ')} left: {last['what']} "
            f"(state in {_shown(folder)}; FRESH=1 starts from an empty account)")
    with emulator(folder / "emulator.log", state=state, fail=fail) as emu, using(emu):
        say(f"emulator on {emu.endpoint} (pid {emu.pid})")
        if not _bootstrapped(emu):
            bootstrap(emu)
        yield emu


@contextmanager
def using(emu: Emulator, **extra: str) -> Iterator[None]:
    """This process, and every child it starts, sees ``emu`` as the AWS account behind the credentials."""
    saved, env = dict(os.environ), emu.env(**extra)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def _bootstrapped(emu: Emulator) -> bool:
    stacks = emu.client("cloudformation").list_stacks()["StackSummaries"]
    return any(s["StackName"] == "CDKToolkit" and s["StackStatus"].endswith("_COMPLETE")
               and not s["StackStatus"].startswith("DELETE") for s in stacks)


@contextmanager
def child(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """A child process that never outlives the block, however it ends (an error, Ctrl-C, SIGTERM): the CDK CLI
    holds cdk.out's lock while it runs, and one left behind fails the next deploy."""
    process: subprocess.Popen[str] = subprocess.Popen(args, text=True, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_cdk(*args: str, cwd: Path = PROJECT, **env: str) -> int:
    """The CDK CLI with this process's environment (and ``env``) and terminal; its exit status. Its stderr (the
    diff, each resource's progress events, its errors) joins stdout: one stream reads the whole deploy in order."""
    with child([CDK, *args], cwd=cwd, env={**os.environ, **env}, stderr=subprocess.STDOUT) as process:
        return process.wait()


def cdk(emu: Emulator, *args: str, cwd: Path = PROJECT) -> None:
    """Run the CDK CLI against the emulator, showing its output; on failure, raise with its error lines."""
    errors = []
    with child([CDK, *args, "--no-notices"], cwd=cwd, env=emu.env(), stdout=subprocess.PIPE,
               stderr=subprocess.STDOUT) as process:
        for line in process.stdout or []:
            print(line, end="", flush=True)
            if line.lstrip().startswith(("‣", "❌")):
                errors.append(line.strip())
        if process.wait() != 0:
            raise RehearsalError(f"`cdk {' '.join(args)}` failed (exit {process.returncode}):\n" + "\n".join(errors))


def bootstrap(emu: Emulator) -> None:
    # Outside the checkout: in it, the CLI would synthesize the whole app first (and fail on any broken config).
    cdk(emu, "bootstrap", f"aws://{ACCOUNT}/{REGION}", cwd=emu.log.parent)


# -- reading a deploy back: its events, what waited for what, the listener's split --------------------------


def backend_of(resource: dict[str, Any]) -> str | None:
    """The backend a template resource belongs to, by its construct path: the backend's own construct
    (``Gpu``), its target group (``GpuTargets``) or its staging rule (``GpuRule``)."""
    path = resource.get("Metadata", {}).get("aws:cdk:path", "").split("/")
    for kind, id in BACKEND_IDS.items():
        if any(part in (id, f"{id}Targets", f"{id}Rule") for part in path):
            return kind
    return None


def template(emu: Emulator, stack: str) -> dict[str, Any]:
    """The stack's deployed template's resources; empty if it is not deployed."""
    from botocore.exceptions import ClientError

    try:
        body = emu.client("cloudformation").get_template(StackName=stack)["TemplateBody"]
    except ClientError:
        return {}
    return dict((json.loads(body) if isinstance(body, str) else body).get("Resources", {}))


Update = list[tuple[str, str, str]]  # (logical id, resource type, status), in the order they happened


def events_since(emu: Emulator, stack: str, since: datetime.datetime | None) -> list[dict[str, Any]]:
    cloudformation = emu.client("cloudformation")
    try:
        pages = list(cloudformation.get_paginator("describe_stack_events").paginate(StackName=stack))
    except Exception:  # not deployed: no events
        return []
    events = sorted((e for page in pages for e in page["StackEvents"]), key=lambda e: e["Timestamp"])
    return [e for e in events if since is None or e["Timestamp"] > since]


def last_event(emu: Emulator, stack: str) -> datetime.datetime | None:
    events = events_since(emu, stack, None)
    return events[-1]["Timestamp"] if events else None


def updates(events: list[dict[str, Any]]) -> list[tuple[str, Update]]:
    """Each update's final stack status and its resource events, in order."""
    found: list[tuple[str, Update]] = []
    current: Update = []
    for event in events:
        status = event["ResourceStatus"]
        if event["ResourceType"] != "AWS::CloudFormation::Stack":
            current.append((event["LogicalResourceId"], event["ResourceType"], status))
        elif status.endswith("_COMPLETE") and "CLEANUP" not in status:  # the stack's own event closes each update
            found.append((status, current))
            current = []
    return found


def guarantees(update: Update, old: dict[str, Any], new: dict[str, Any],
               ready_before: set[str]) -> list[tuple[str, bool]]:
    """What waited for what, read from one update's events: each route (a listener that forwards) changed only
    once every backend it sends to was ready (in this update, or before it: ``ready_before``), and each backend
    removed went only after the routes moved (or, with no route to move, after the new backend was ready).
    Returns (sentence, held)."""
    def at(logical_id: str, *statuses: str) -> list[int]:
        return [i for i, (x, _, s) in enumerate(update) if x == logical_id and s in statuses]

    def targets(route: dict[str, Any]) -> set[str]:
        refs = references(route_actions(route))
        return {kind for ref in refs if ref in new and (kind := backend_of(new[ref])) is not None}

    ready = {}  # backend -> (index of its readiness completing, what it is)
    for logical_id, resource in new.items():
        done = at(logical_id, "CREATE_COMPLETE", "UPDATE_COMPLETE")
        if resource["Type"] in READY and done and (kind := backend_of(resource)) is not None:
            ready[kind] = (done[0], f"the {kind} {READY[resource['Type']]}")
    said: list[tuple[str, bool]] = []
    moved: list[int] = []
    for route, resource in new.items():
        starts = at(route, "CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS") if route_actions(resource) else []
        if not starts:
            continue
        moved += at(route, "CREATE_COMPLETE", "UPDATE_COMPLETE")
        what = "listener" if resource["Type"] == LISTENER else "listener rule"
        verb = "created" if at(route, "CREATE_IN_PROGRESS") else "changed"
        for kind in sorted(targets(resource)):
            if kind in ready:
                said.append((f"{what} {verb} after {ready[kind][1]} was ready", starts[0] > ready[kind][0]))
            else:
                said.append((f"{what} {verb}; {kind} was ready before this update", kind in ready_before))
    if not moved:
        said += [(f"{what} was ready; no listener changed", True) for _, what in ready.values()]
    removed: dict[str, list[int]] = {}
    for i, (logical_id, _, status) in enumerate(update):
        kind = backend_of(old.get(logical_id, {}))
        if status == "DELETE_COMPLETE" and logical_id not in new and kind is not None:
            removed.setdefault(kind, []).append(i)
    for kind, deleted in removed.items():
        after = moved or [i for i, _ in ready.values()]
        said.append((f"{kind} removed after {'the listener moved' if moved else 'the new backend was ready'}",
                     min(deleted) > max(after, default=-1)))
    return said


def route_actions(resource: dict[str, Any]) -> list[Any]:
    """What a resource that routes clients' requests does with them: a listener's default actions, a listener
    rule's actions (a team's load balancer: ModelService(path_prefix=...)). Nothing for anything else, and for a
    staging rule, which asks for the backend header and routes no client's request."""
    properties = resource.get("Properties", {})
    if resource["Type"] == LISTENER:
        return list(properties.get("DefaultActions", []))
    staging = any(c.get("HttpHeaderConfig", {}).get("HttpHeaderName") == BACKEND_HEADER
                  for c in properties.get("Conditions", []))
    return list(properties.get("Actions", [])) if resource["Type"] == RULE and not staging else []


def split(emu: Emulator, stack: str) -> list[tuple[str, float]]:
    """Where the stack's listeners and listener rules that forward send requests: (backend, percent), e.g.
    [("lambda", 90.0), ("cpu", 10.0)]."""
    resources = template(emu, stack)
    cloudformation, elbv2 = emu.client("cloudformation"), emu.client("elbv2")
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for page in
                cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
                for r in page["StackResourceSummaries"]}
    by_arn = {physical[x]: backend_of(r) or x for x, r in resources.items() if x in physical}
    shares = []
    for logical_id, resource in resources.items():
        if not route_actions(resource) or logical_id not in physical:
            continue
        actions = (elbv2.describe_listeners(ListenerArns=[physical[logical_id]])["Listeners"][0]["DefaultActions"]
                   if resource["Type"] == LISTENER else
                   elbv2.describe_rules(RuleArns=[physical[logical_id]])["Rules"][0]["Actions"])
        for action in actions:
            if action["Type"] != "forward":
                continue
            groups = action.get("ForwardConfig", {}).get("TargetGroups") or [
                {"TargetGroupArn": action["TargetGroupArn"], "Weight": 1}]
            total = sum(g.get("Weight", 1) for g in groups) or 1
            shares += [(by_arn.get(g["TargetGroupArn"], "?"), 100 * g.get("Weight", 1) / total) for g in groups]
    return sorted(shares, key=lambda share: -share[1])


def shown(shares: list[tuple[str, float]]) -> str:
    return " / ".join(f"{backend} {percent:g}%" for backend, percent in shares)


# -- checking what a backend needs is there -------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    what: str
    found: str
    ok: bool


def check(emu: Emulator, stack: str, backends: list[str] | None = None) -> tuple[str, list[Check]]:
    """Read back the deployed stack; returns its status and one check per thing its backends need. ``backends``:
    what should serve (a canary: both); None: whatever the template holds (a team's own app)."""
    cfn = emu.client("cloudformation")
    status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    resources = template(emu, stack)
    physical = {r["LogicalResourceId"]: r for page in cfn.get_paginator("list_stack_resources").paginate(
        StackName=stack) for r in page["StackResourceSummaries"]}
    present = sorted({k for r in resources.values() if (k := backend_of(r)) is not None})
    expected = sorted(backends) if backends is not None else present
    by_type: dict[str, dict[str, list[str]]] = {}  # type -> backend (or "") -> physical ids
    for logical_id, r in resources.items():
        if logical_id in physical:
            by_type.setdefault(r["Type"], {}).setdefault(backend_of(r) or "", []).append(
                physical[logical_id]["PhysicalResourceId"])
    checks = [Check("backends", ", ".join(present) or "none", present == expected)]
    if "AWS::SQS::Queue" in by_type:
        checks += _pipeline_checks(emu, by_type)
    else:
        checks += _realtime_checks(emu, by_type, expected)
    for kind in expected:
        if KINDS[kind].fleet:
            checks += _fleet_checks(emu, by_type, kind)
        else:
            checks += _lambda_checks(emu, by_type.get("AWS::Lambda::Function", {}).get(kind, []), kind)
    return status, checks


def _all(by_type: dict[str, dict[str, list[str]]], kind: str) -> list[str]:
    return [x for ids in by_type.get(kind, {}).values() for x in ids]


def _realtime_checks(emu: Emulator, by_type: dict[str, dict[str, list[str]]], expected: list[str]) -> list[Check]:
    elbv2, checks = emu.client("elbv2"), []
    balancers = _all(by_type, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    for lb in elbv2.describe_load_balancers(LoadBalancerArns=balancers)["LoadBalancers"] if balancers else []:
        checks.append(Check("load balancer", f"{lb['Scheme']}, {lb['DNSName']}", lb["Scheme"] == "internal"))
        listeners = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        checks.append(Check("listener", ", ".join(f"{x['Protocol']}:{x['Port']}" for x in listeners), bool(listeners)))
    if not balancers:
        checks.append(Check("load balancer", "missing", False))
    for kind in expected:
        groups = by_type.get("AWS::ElasticLoadBalancingV2::TargetGroup", {}).get(kind, [])
        found = elbv2.describe_target_groups(TargetGroupArns=groups)["TargetGroups"] if groups else []
        wanted = "instance" if KINDS[kind].fleet else "lambda"
        checks.append(Check(f"{kind} target group", ", ".join(t["TargetType"] for t in found) or "missing",
                            bool(found) and all(t["TargetType"] == wanted for t in found)))
    return checks


def _pipeline_checks(emu: Emulator, by_type: dict[str, dict[str, list[str]]]) -> list[Check]:
    sqs = emu.client("sqs")
    queues = {url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
              for url in _all(by_type, "AWS::SQS::Queue")}
    inputs = {u: json.loads(a["RedrivePolicy"])["maxReceiveCount"] for u, a in queues.items() if "RedrivePolicy" in a}
    dead = [u for u in queues if u not in inputs]
    buckets = _all(by_type, "AWS::S3::Bucket")
    checks = [
        Check("queue with redrive", ", ".join(f"{u.rsplit('/', 1)[-1]} (after {n} receives)" for u, n in inputs.items())
              or "missing", len(inputs) == 1),
        Check("dead-letter queue", ", ".join(u.rsplit("/", 1)[-1] for u in dead) or "missing", len(dead) == 1),
        Check("results bucket", ", ".join(buckets) or "missing", len(buckets) == 1),
    ]
    if set(by_type.get("AWS::Lambda::Function", {})) & set(FUNCTIONS):
        mappings = _all(by_type, "AWS::Lambda::EventSourceMapping")
        checks.append(Check("SQS event source", ", ".join(mappings) or "missing", len(mappings) == 1))
    return checks


def _lambda_checks(emu: Emulator, functions: list[str], kind: str) -> list[Check]:
    """The function, its capacity provider on lambda-managed, and the ``live`` alias that serves and that
    CodeDeploy moves between versions."""
    client, name = emu.client("lambda"), "Lambda" if kind == "lambda" else kind
    fn = client.get_function_configuration(FunctionName=functions[0]) if functions else None
    checks = [Check(f"{name} function", "missing" if fn is None else
                    f"{fn['Runtime']}, {fn['MemorySize']} MiB, {fn['Handler']}", fn is not None)]
    if kind == "lambda-managed":
        checks.append(_capacity_check(client, fn))
    try:
        alias = client.get_alias(FunctionName=functions[0], Name="live")
    except Exception:  # no function, or no alias: both mean the check fails
        return [*checks, Check(f"{name} alias live", "missing", False)]
    version = alias["FunctionVersion"]
    return [*checks, Check(f"{name} alias live", f"version {version}", version.isdigit())]


def _capacity_check(client: Any, fn: dict[str, Any] | None) -> Check:
    """The capacity provider the function names, as the Lambda API describes it: its instance types and cap."""
    config = (fn or {}).get("CapacityProviderConfig", {}).get("LambdaManagedInstancesCapacityProviderConfig", {})
    arn = config.get("CapacityProviderArn")
    if arn is None:
        return Check("capacity provider", "the function names none", False)
    provider = client.get_capacity_provider(CapacityProviderName=arn.rsplit(":", 1)[-1])["CapacityProvider"]
    types = provider.get("InstanceRequirements", {}).get("AllowedInstanceTypes", ["any"])
    vcpus = provider.get("CapacityProviderScalingConfig", {}).get("MaxVCpuCount")
    return Check("capacity provider", f"{', '.join(types)}, at most {vcpus} vCPUs, "
                 f"{config.get('PerExecutionEnvironmentMaxConcurrency')} per environment",
                 provider["State"] == "Active" and bool(provider["VpcConfig"]["SubnetIds"]))


def _fleet_checks(emu: Emulator, by_type: dict[str, dict[str, list[str]]], kind: str) -> list[Check]:
    checks = []
    names = by_type.get("AWS::AutoScaling::AutoScalingGroup", {}).get(kind, [])
    groups = emu.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=names)[
        "AutoScalingGroups"] if names else []
    checks.append(Check(f"{kind} Auto Scaling group", ", ".join(f"min {g['MinSize']} max {g['MaxSize']}"
                                                                for g in groups) or "missing", len(groups) == 1))
    for group in groups:
        # A spot group: its types and on-demand floor (the emulator drops CloudFormation's CapacityRebalance,
        # so the template tests check that).
        policy = group.get("MixedInstancesPolicy") or {}  # the emulator shows an empty one on other groups
        if policy.get("LaunchTemplate"):
            types = [o["InstanceType"] for o in policy["LaunchTemplate"].get("Overrides", [])]
            base = policy.get("InstancesDistribution", {}).get("OnDemandBaseCapacity", 0)
            checks.append(Check("spot", f"{', '.join(types)}; on-demand base {base}", bool(types)))
    templates = by_type.get("AWS::EC2::LaunchTemplate", {}).get(kind, [])
    data: dict[str, Any] = {}
    if templates:
        versions = emu.client("ec2").describe_launch_template_versions(LaunchTemplateId=templates[0])
        data = versions["LaunchTemplateVersions"][-1]["LaunchTemplateData"]
    tokens = data.get("MetadataOptions", {}).get("HttpTokens")
    checks.append(Check("launch template", f"{data.get('InstanceType')}, IMDSv2 {tokens}" if data else "missing",
                        tokens == "required"))
    if kind == "eia":
        accelerators = data.get("ElasticInferenceAccelerators", [])
        checks.append(Check("Elastic Inference accelerator", ", ".join(a["Type"] for a in accelerators) or "missing",
                            bool(accelerators)))
        endpoints = _all(by_type, "AWS::EC2::VPCEndpoint")
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
