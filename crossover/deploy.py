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
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from crossover import PROJECT, rollout
from crossover.config import BACKENDS, STACK_PREFIX, ConfigError, LoadedConfig, find, models_folder
from crossover.cost import profile
from crossover.errors import UserError
from crossover.preflight import preflight
from crossover.rehearsal import (
    READY,
    Emulator,
    RehearsalError,
    account,
    backend_of,
    check,
    events_since,
    guarantees,
    last_event,
    remember,
    run_cdk,
    shown,
    split,
    state_folder,
    table,
    template,
    updates,
)

console = Console(highlight=False, soft_wrap=True)
ASSEMBLY = PROJECT / "cdk.out"
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


def rehearse(item: LoadedConfig, why: str, *, fresh: bool = False, fail: str | None = None) -> int:
    """`make rehearse`: the persisted emulator as the account, then ``rehearse_on`` it."""
    console.print(f"[bold]{why}[/bold]: rehearsing on a local AWS emulator (nothing leaves this machine): the "
                  f"same checks, diff, change sets and rollback triggers `make deploy` runs, for "
                  f"{item.config.stack_name}")
    with account(fresh=fresh, fail=fail, say=_say) as emu:
        # Its own cloud assembly beside its state: a rehearsal never takes the lock of the checkout's cdk.out.
        return rehearse_on(emu, item, fail=fail, assembly=state_folder() / "cdk.out")


def rehearse_on(emu: Emulator, item: LoadedConfig, *, fail: str | None = None, assembly: Path = ASSEMBLY) -> int:
    """`make deploy` itself (preflight, diff, change sets, rollback triggers) against ``emu`` (the account this
    process uses), then what the deploy did, read back (``read_back``)."""
    _stage_artifact(emu, item)
    stack = item.config.stack_name
    old, since = template(emu, stack), last_event(emu, stack)
    code = real_deploy(item, yes=True, assembly=assembly, rehearsing=True)
    return read_back(emu, stack, old, since, code, backends=list(item.config.backends),
                     moving_to=fail or item.config.backend)


def rehearse_app(app: str, stack: str, *, cwd: Path, fresh: bool = False, fail: str | None = None) -> int:
    """`crossover rehearse --app CMD STACK`: a stack of a team's own CDK app, deployed into the persisted emulator
    by the CDK CLI as `cdk deploy` does it (synth, diff, change sets), read back with the same checks."""
    console.print(f"rehearsing {stack} of `{app}` on a local AWS emulator (nothing leaves this machine)",
                  markup=False)
    with account(fresh=fresh, fail=fail, say=_say) as emu:
        assembly = state_folder() / "apps" / stack
        old, since = template(emu, stack), last_event(emu, stack)
        if run_cdk("synth", stack, "--app", app, "--quiet", "--output", str(assembly), cwd=cwd) != 0:
            return 1
        run_cdk("diff", stack, "--app", str(assembly), "--no-notices", cwd=cwd)
        code = run_cdk("deploy", stack, "--app", str(assembly), "--require-approval", "never", "--no-notices",
                       cwd=cwd)
        return read_back(emu, stack, old, since, code, backends=None, moving_to=fail)


def read_back(emu: Emulator, stack: str, old: dict[str, Any], since: Any, code: int, *,
              backends: list[str] | None, moving_to: str | None) -> int:
    """What a deploy did, read back from the emulator: each update's order guarantees from its events, the checks
    (``backends``: what should serve; None: what the template holds), the listener's split; a failed move said in
    one line. Remembered in the rehearsal's history. 0 if all held."""
    done = updates(events_since(emu, stack, since))
    if not done:
        return code  # refused before anything changed (preflight, synth): it said why
    after = template(emu, stack)
    held = _say_guarantees(done, old, after)
    rolled_back = done[-1][0].endswith("ROLLBACK_COMPLETE")
    status, checks = check(emu, stack, None if rolled_back else backends)  # rolled back: what the stack still is
    shares = split(emu, stack)
    present = sorted({kind for r in after.values() if (kind := backend_of(r)) is not None})
    remember(f"{stack} on {shown(shares) or ', '.join(present)}: {status}")
    console.print(table(stack, status, checks))
    if shares:
        console.print(f"listener: {shown(shares)}", markup=False)
    if rolled_back:
        still = " and ".join(b for b, percent in shares if percent > 0) or " and ".join(present) or "nothing"
        console.print(f"the move to {moving_to or 'the new backend'} failed and was rolled back; {still} still "
                      "serves", markup=False)
        return 1
    missing = [c.what for c in checks if not c.ok]
    if code != 0 or missing or not held:
        console.print(f"rehearsal failed: {', '.join(missing) or 'an order the move must keep'} not as expected"
                      if code == 0 else "rehearsal failed: the deploy did not complete", markup=False)
        return 1
    console.print(f"{stack}: {status} on the emulator; its state is kept for the next rehearsal. With AWS "
                  "credentials, `make deploy` runs this same deploy against your account.", markup=False)
    return 0


def _say(line: str) -> None:
    console.print(line, markup=False)


def _stage_artifact(emu: Emulator, item: LoadedConfig) -> None:
    """An s3:// model artifact must be readable for the deploy's preflight: in the emulator, a placeholder is
    put there (the real account must hold the real model)."""
    from crossover.config import is_s3_uri

    artifact = item.config.model.artifact
    if not is_s3_uri(artifact):
        return
    bucket, _, key = artifact.removeprefix("s3://").partition("/")
    s3 = emu.client("s3")
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
    elif any(o["Key"] == key for o in s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])):
        return
    s3.put_object(Bucket=bucket, Key=key, Body=b"placeholder: the rehearsal's stand-in for your model")
    _say(f"model.artifact {artifact}: a placeholder in the emulator's S3 (your account must hold the model)")


def _say_guarantees(done: list[tuple[str, list[tuple[str, str, str]]]], old: dict[str, Any],
                    new: dict[str, Any]) -> bool:
    """Each update's order guarantees, read from its events; whether they all held."""
    held = True
    ready = {kind for r in old.values() if r["Type"] in READY and (kind := backend_of(r)) is not None}
    for number, (status, events) in enumerate(done, start=1):
        console.print(f"update {number} of {len(done)} ({status}, {len(events)} resource events):", markup=False)
        if status.endswith("ROLLBACK_COMPLETE"):
            failed = [f"{kind} {logical_id}" for logical_id, kind, s in events if s.endswith("_FAILED")]
            console.print(f"  failed: {failed[0] if failed else 'the update'}; rolled back", markup=False)
            continue
        said = guarantees(events, old, new, ready)
        ready |= {kind for logical_id, _, s in events if s.endswith("_COMPLETE") and logical_id in new
                  and new[logical_id]["Type"] in READY and (kind := backend_of(new[logical_id])) is not None}
        for sentence, ok in said:
            held &= ok
            console.print(f"  {'yes' if ok else 'NO '}  {sentence}", markup=False)
    return held


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


def real_deploy(item: LoadedConfig, *, watch: bool = False, yes: bool = False, ask: Ask | None = None,
                assembly: Path = ASSEMBLY, rehearsing: bool = False) -> int:
    """Preflight, synth, diff, a confirmation, then `cdk deploy` (change sets) with the rollback triggers; a canary
    whose alarms do not exist yet takes two updates. ``rehearsing``: the account is the emulator (no smoke test
    after: its load balancer serves nothing)."""
    import boto3

    session = boto3.Session()
    account_id, region = preflight(item, session, console)
    stack = item.config.stack_name
    if run_cdk("synth", stack, "--quiet", "--output", str(assembly), CROSSOVER_ONLY=item.config.name) != 0:
        return 1
    console.print(f"{stack} in account {account_id}, region {region}: what the deploy changes (cdk diff):")
    run_cdk("diff", stack, "--app", str(assembly), "--no-notices")
    if not confirmed(f"Deploy {stack} to account {account_id} in {region}?", yes, ask):
        console.print(f"{stack}: not deployed")
        return 1
    names = rollout.rollback_alarm_names(assembly, stack)
    arns = rollout.triggers(names, session.client("cloudwatch"))
    stages = [assembly]
    if rollout.staged(item.config.canary is not None, names, arns):
        staging = assembly.with_name(assembly.name + "-staging")
        if run_cdk("synth", stack, "--quiet", "--output", str(staging), *rollout.STAGING_CONTEXT,
                   CROSSOVER_ONLY=item.config.name) != 0:
            return 1
        console.print("a canary deploy takes two updates: the new backend is created and made ready at weight "
                      "0, then it takes its share, judged by its own alarms")
        stages.insert(0, staging)
    code = 0
    with watching(item, watch):
        for update in stages:
            arns = rollout.triggers(names, session.client("cloudwatch"))
            _say_triggers(arns)
            code = run_cdk(*rollout.deploy_args(stack, update, arns, item.config.rollout.monitor_minutes))
            if code != 0:
                break
    if code != 0:
        console.print("cdk deploy failed: CloudFormation rolled the stack back; its events above say which "
                      f"resource failed and why (also: aws cloudformation describe-stack-events --stack-name {stack})",
                      markup=False)
        return 1
    return 0 if rehearsing else after_deploy(item)


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
    account_id, region = preflight(item, session, console, deploying=False)
    cloudformation, stack = session.client("cloudformation"), item.config.stack_name
    try:
        resources = _resources(cloudformation, stack)
        body = cloudformation.get_template(StackName=stack)["TemplateBody"]
    except ClientError:
        console.print(f"{stack} is not deployed in account {account_id}, region {region}: nothing to remove")
        return 0
    console.print(f"{stack} in account {account_id}, region {region}: {len(resources)} resources to delete")
    policies = {k: r.get("DeletionPolicy") for k, r in (json.loads(body) if isinstance(body, str) else body)[
        "Resources"].items()}
    retained = [r for r in resources if policies.get(r["LogicalResourceId"]) in ("Retain", "RetainExceptOnCreate")]
    if not confirmed(f"Delete {stack} and its endpoint from account {account_id} in {region}?", yes, ask):
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
    for r in retained:
        name = r["PhysicalResourceId"]
        if r["ResourceType"] == "AWS::S3::Bucket":
            what = ("the load balancer's access-log bucket", "logs expire after 90 days") if "AccessLogs" in r[
                "LogicalResourceId"] else ("the results bucket", "results expire after pipeline.results_days")
            console.print(f"kept: {what[0]} {name} (retained by design, {what[1]}); delete it with "
                          f"`aws s3 rb s3://{name} --force` when you no longer need it", markup=False)
        else:
            console.print(f"kept: {r['ResourceType']} {name} (the template retains it)", markup=False)
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
        console.print("NetworkStack (VPC, NAT gateway: about $37 a month) now serves no model: remove it with "
                      "`npx cdk destroy NetworkStack`")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossover.deploy", description=(
        "make deploy | rehearse | destroy MODEL=<name> [WATCH=1] [YES=1] [FRESH=1] [FAIL=<backend>] [REHEARSE=1]"))
    parser.add_argument("model", help="the model's name (models/<name>.yaml)")
    parser.add_argument("--watch", action="store_true", help="send requests through the deploy and count answers")
    parser.add_argument("--yes", action="store_true", help="agree to the deploy or the deletion without asking")
    parser.add_argument("--rehearse", action="store_true", help="on the local emulator, credentials or not")
    parser.add_argument("--destroy", action="store_true", help="delete the model's stack (with --rehearse: the "
                        "rehearsed one)")
    parser.add_argument("--fresh", action="store_true", help="rehearse from an empty account, not from what the "
                        "last rehearsal left")
    parser.add_argument("--fail", choices=BACKENDS, metavar="BACKEND", help="rehearse a failed move: this backend "
                        "never becomes ready, so the update rolls back")
    args = parser.parse_args(argv)
    # Stopped (SIGTERM), exit through the finally blocks: they stop the CDK CLI and save the emulator's state.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        item = find(args.model, models_folder())
        for warning in profile.warnings(item):
            console.print("[yellow]warning[/yellow]: ", end="")
            console.print(warning, markup=False)
        credentials = has_credentials()
        rehearsing = args.rehearse or (not credentials and not args.destroy)
        if (args.fresh or args.fail) and not rehearsing:
            raise UserError("--fresh and --fail (FRESH=1, FAIL=…) are for rehearsals: add --rehearse (make rehearse)")
        if args.destroy and args.rehearse:
            with account(say=_say):
                # Nothing real is at stake: the question that guards an account is not asked of the emulator.
                code = destroy(item, yes=True)
                remember(f"{item.config.stack_name} destroyed" if code == 0 else "a teardown that was not agreed")
            if code == 0:
                console.print("(all of this in the rehearsal's emulator, not your account: what it keeps stays there "
                              f"until `make rehearse MODEL={args.model} FRESH=1` starts from an empty one)",
                              markup=False)
            return code
        if args.destroy:
            if not credentials:
                console.print("no AWS credentials: nothing is deployed in an AWS account to remove (a rehearsed "
                              f"stack: make destroy MODEL={args.model} REHEARSE=1)")
                return 0
            return destroy(item, yes=args.yes)
        if not rehearsing:
            return real_deploy(item, watch=args.watch, yes=args.yes)
        if args.watch:
            console.print("not watching: the emulator's load balancer serves no requests (watch a real deploy)")
        return rehearse(item, "make rehearse" if args.rehearse else "No AWS credentials found", fresh=args.fresh,
                        fail=args.fail)
    except ConfigError as e:
        console.print(str(e), markup=False)
    except (RehearsalError, UserError) as e:
        console.print("[red]error[/red]: ", end="")
        console.print(str(e), markup=False)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
