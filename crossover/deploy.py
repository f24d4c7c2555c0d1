"""`make deploy | rehearse | destroy MODEL=<name>`: a real deploy with a safety net, a rehearsal, a teardown.

With AWS credentials, `make deploy` first checks what would fail half-way (crossover.preflight: region,
CDK bootstrap, permissions, the model artifact, EC2 vCPU quotas), synthesizes, prints the account, the
region and `cdk diff`, and asks before it deploys (`YES=1` answers for automation); then `cdk deploy
ModelStack-<name>` with the stack's live rollback alarms as CloudFormation rollback triggers
(crossover.rollout), then `crossover smoke <name>`. Without credentials, or with `make rehearse`, the
same CLI deploys the same stack into a local AWS emulator on loopback (crossover.rehearsal). `make
destroy` removes a model stack after a confirmation, turning the endpoint's deletion protection off
first, and says what it leaves behind.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from crossover import PROJECT, rollout
from crossover.app import models_folder
from crossover.config import STACK_PREFIX, ConfigError, LoadedConfig, find
from crossover.cost import profile
from crossover.errors import UserError
from crossover.preflight import preflight
from crossover.rehearsal import CDK, RehearsalError, bootstrap, check, deploy, emulator, table
from crossover.stacks.model import SERVICE_ID

console = Console(highlight=False, soft_wrap=True)
WATCH_RATE = 5.0  # requests a second that WATCH=1 sends through a deploy
Ask = Callable[[str], str]  # the prompt for a confirmation; None: the terminal's, if there is one


def confirmed(question: str, yes: bool, ask: Ask | None) -> bool:
    """Whether the user agreed: ``yes`` (YES=1) agrees; a terminal asks; no terminal and no YES refuses."""
    if yes:
        return True
    if ask is None:
        if not sys.stdin.isatty():
            console.print(f"{question} Not asked: no terminal to answer on. Run with YES=1 to agree ahead.",
                          markup=False)
            return False
        ask = input
    return ask(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def has_credentials() -> bool:
    import boto3

    return boto3.Session().get_credentials() is not None


def _say_triggers(arns: list[str]) -> None:
    names = ", ".join(arn.rsplit(":", 1)[-1] for arn in arns)
    console.print(f"rollback triggers: {names or 'none (a first deploy has nothing to roll back to)'}")


def rehearse(item: LoadedConfig, why: str) -> int:
    stack = item.config.stack_name
    console.print(f"[bold]{why}[/bold]: rehearsing on a local AWS emulator (nothing leaves this machine). The "
                  f"same CDK CLI deploys the same {stack} template.")
    with emulator(PROJECT / "cdk.out" / "emulator.log") as emu:
        console.print(f"emulator on {emu.endpoint} (pid {emu.pid})")
        bootstrap(emu)
        _say_triggers(deploy(emu, stack, monitor_minutes=item.config.rollout.monitor_minutes,
                             canary=item.config.canary is not None))
        status, checks = check(emu, stack, item.config.backend)
    console.print(table(stack, status, checks))
    missing = [c.what for c in checks if not c.ok]
    if missing:
        console.print(f"[red]rehearsal failed[/red]: {', '.join(missing)} not as expected")
        return 1
    console.print(f"{stack}: {status} on the emulator; the emulator was stopped. With AWS credentials, "
                  "`make deploy` runs the same deploy against your account, after showing the diff.")
    return 0


@contextmanager
def watching(item: LoadedConfig, enabled: bool) -> Iterator[None]:
    """With ``enabled``, `crossover watch` runs against the deployed endpoint for as long as the block does,
    then prints its tally: the client's own proof that the deploy dropped nothing."""
    if not enabled:
        yield
        return
    import boto3

    from crossover.cost.bench import photo
    from crossover.smoke import SmokeError, endpoint
    from crossover.watch import watch

    try:
        url = endpoint(boto3.Session().client("cloudformation"), item.config.stack_name)
    except SmokeError as e:
        console.print(f"not watching: {e}", markup=False)
        yield
        return
    stop, tallies = threading.Event(), []
    thread = threading.Thread(target=lambda: tallies.append(watch(
        url, photo(), rate=WATCH_RATE, duration_s=24 * 3600, stop=stop,
        report=lambda second, t: console.print(f"watch {second:>5} s  {t.line()}", markup=False))), daemon=True)
    console.print(f"watching {url}/predict at {WATCH_RATE:g} requests a second while the deploy runs", markup=False)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        tally = tallies[0]
        console.print(f"watch tally: {tally.sent} sent; {tally.line()}; {tally.failed} not 200", markup=False)


def real_deploy(item: LoadedConfig, *, watch: bool = False, yes: bool = False, ask: Ask | None = None) -> int:
    import boto3

    session = boto3.Session()
    account, region = preflight(item, session, console)
    stack, assembly = item.config.stack_name, PROJECT / "cdk.out"
    if subprocess.run([CDK, "synth", stack, "--quiet", "--output", str(assembly)], cwd=PROJECT).returncode != 0:
        return 1
    console.print(f"{stack} in account {account}, region {region}: what the deploy changes (cdk diff):")
    subprocess.run([CDK, "diff", stack, "--app", str(assembly), "--no-notices"], cwd=PROJECT)
    if not confirmed(f"Deploy {stack} to account {account} in {region}?", yes, ask):
        console.print(f"{stack}: not deployed")
        return 1
    names = rollout.rollback_alarm_names(assembly, stack)
    arns = rollout.triggers(names, session.client("cloudwatch"))
    updates = [assembly]
    if rollout.staged(item.config.canary is not None, names, arns):
        staging = PROJECT / "cdk.out-staging"
        if subprocess.run([CDK, "synth", stack, "--quiet", "--output", str(staging), *rollout.STAGING_CONTEXT],
                          cwd=PROJECT).returncode != 0:
            return 1
        console.print("a canary deploy takes two updates: the new backend is created and made ready at weight "
                      "0, then it takes its share, judged by its own alarms")
        updates.insert(0, staging)
    result: subprocess.CompletedProcess[bytes] = subprocess.CompletedProcess([], 0)
    with watching(item, watch):
        for update in updates:
            arns = rollout.triggers(names, session.client("cloudwatch"))
            _say_triggers(arns)
            result = subprocess.run([CDK, *rollout.deploy_args(stack, update, arns,
                                                               item.config.rollout.monitor_minutes)], cwd=PROJECT)
            if result.returncode != 0:
                break
    if result.returncode != 0:
        console.print("cdk deploy failed: CloudFormation rolled the stack back; its events above say which "
                      f"resource failed and why (also: aws cloudformation describe-stack-events --stack-name {stack})")
        return 1
    return after_deploy(item)


def after_deploy(item: LoadedConfig) -> int:
    """Smoke-test what this machine can reach: a public endpoint. An internal one answers only inside its VPC,
    and a pipeline has no endpoint: say what checks them instead."""
    config = item.config
    if config.service == "pipeline":
        console.print(f"{config.stack_name} deployed: send images with `crossover enqueue {config.name} s3://…`, "
                      f"collect them with `crossover results {config.name}`")
        return 0
    if config.endpoint.certificate_arn is None:
        console.print(f"{config.stack_name} deployed; its endpoint is internal: run `crossover smoke {config.name}` "
                      "from inside the VPC to check it")
        return 0
    from crossover.cli import main as cli

    return cli(["smoke", config.name])


def _resources(cloudformation: Any, stack: str) -> list[dict[str, Any]]:
    pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
    return [r for page in pages for r in page["StackResourceSummaries"]]


def destroy(item: LoadedConfig, *, yes: bool = False, ask: Ask | None = None) -> int:
    """Remove the model's stack: its endpoint's deletion protection is turned off explicitly, once agreed."""
    import boto3
    from botocore.exceptions import ClientError

    session = boto3.Session()
    account, region = preflight(item, session, console, deploying=False)
    cloudformation, stack = session.client("cloudformation"), item.config.stack_name
    try:
        resources = _resources(cloudformation, stack)
    except ClientError:
        console.print(f"{stack} is not deployed in account {account}, region {region}: nothing to remove")
        return 0
    console.print(f"{stack} in account {account}, region {region}: {len(resources)} resources to delete")
    retained = [r["LogicalResourceId"] for r in resources if r["ResourceType"] == "AWS::S3::Bucket"
                and r["LogicalResourceId"].startswith(f"{SERVICE_ID}FrontDoorAccessLogs")]
    if not confirmed(f"Delete {stack} and its endpoint from account {account} in {region}?", yes, ask):
        console.print(f"{stack}: not deleted")
        return 1
    elbv2 = session.client("elbv2")
    for r in resources:
        if r["ResourceType"] == "AWS::ElasticLoadBalancingV2::LoadBalancer":
            elbv2.modify_load_balancer_attributes(LoadBalancerArn=r["PhysicalResourceId"], Attributes=[
                {"Key": "deletion_protection.enabled", "Value": "false"}])
            console.print(f"turned off the deletion protection of the endpoint {r['PhysicalResourceId']}",
                          markup=False)
    cloudformation.delete_stack(StackName=stack)
    cloudformation.get_waiter("stack_delete_complete").wait(StackName=stack, WaiterConfig={"Delay": 10,
                                                                                         "MaxAttempts": 180})
    console.print(f"{stack}: deleted")
    for bucket in retained:
        console.print(f"kept: the load balancer's access-log bucket ({bucket}; retained by design, logs expire "
                      "after 90 days); delete it with `aws s3 rb s3://<bucket> --force` when you no longer need "
                      "them", markup=False)
    _say_network(cloudformation)
    return 0


def _say_network(cloudformation: Any) -> None:
    """What the shared network still serves (every model stack imports it), and how to remove it once
    nothing does."""
    live = [stack["StackName"] for page in cloudformation.get_paginator("list_stacks").paginate()
            for stack in page["StackSummaries"] if stack["StackStatus"] != "DELETE_COMPLETE"]
    users = sorted(name for name in live if name.startswith(STACK_PREFIX))
    if users:
        console.print(f"kept: NetworkStack (VPC, NAT gateway), used by {', '.join(users)}")
    elif "NetworkStack" in live:
        console.print("NetworkStack (VPC, NAT gateway: about $33 a month) now serves no model: remove it with "
                      "`npx cdk destroy NetworkStack`")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossover.deploy",
                                     description="make deploy | rehearse | destroy MODEL=<name> [WATCH=1] [YES=1]")
    parser.add_argument("model", help="the model's name (models/<name>.yaml)")
    parser.add_argument("--watch", action="store_true", help="send requests through the deploy and count answers")
    parser.add_argument("--yes", action="store_true", help="agree to the deploy or the deletion without asking")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--rehearse", action="store_true", help="deploy on the local emulator, credentials or not")
    action.add_argument("--destroy", action="store_true", help="delete the model's stack from the account")
    args = parser.parse_args(argv)
    try:
        item = find(args.model, models_folder())
        for warning in profile.warnings(item):
            console.print("[yellow]warning[/yellow]: ", end="")
            console.print(warning, markup=False)
        credentials = has_credentials()
        if args.destroy:
            if not credentials:
                console.print("no AWS credentials: nothing is deployed anywhere to remove (a rehearsal's emulator "
                              "is stopped when it ends)")
                return 0
            return destroy(item, yes=args.yes)
        if credentials and not args.rehearse:
            return real_deploy(item, watch=args.watch, yes=args.yes)
        if args.watch:
            console.print("not watching: the emulator's load balancer serves no requests (watch a real deploy)")
        return rehearse(item, "make rehearse" if args.rehearse else "No AWS credentials found")
    except ConfigError as e:
        console.print(str(e), markup=False)
    except (RehearsalError, UserError) as e:
        console.print(f"[red]error[/red]: {e}", markup=False)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
