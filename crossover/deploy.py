"""`make deploy MODEL=<name>`: the real `cdk deploy` with AWS credentials; without, a rehearsal.

With credentials: `cdk synth`, then `cdk deploy ModelStack-<name>` with the stack's live rollback
alarms as CloudFormation rollback triggers (crossover.rollout; a bootstrap hint if the account is not
bootstrapped), then `crossover smoke <name>`. Without: the same CLI deploys the same stack into a
local AWS emulator on loopback (crossover.rehearsal), then boto3 reads back what was created.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from crossover import ROOT, rollout
from crossover.app import models_folder
from crossover.config import ConfigError, LoadedConfig, find
from crossover.rehearsal import CDK, RehearsalError, bootstrap, check, deploy, emulator, table

console = Console(highlight=False, soft_wrap=True)
WATCH_RATE = 5.0  # requests a second that WATCH=1 sends through a deploy


def has_credentials() -> bool:
    import boto3

    return boto3.Session().get_credentials() is not None


def _say_triggers(arns: list[str]) -> None:
    names = ", ".join(arn.rsplit(":", 1)[-1] for arn in arns)
    console.print(f"rollback triggers: {names or 'none (a first deploy has nothing to roll back to)'}")


def rehearse(item: LoadedConfig) -> int:
    stack = item.config.stack_name
    console.print(f"[bold]No AWS credentials found[/bold]: rehearsing on a local AWS emulator (nothing "
                  f"leaves this machine). The same CDK CLI deploys the same {stack} template.")
    with emulator(ROOT / "cdk.out" / "emulator.log") as emu:
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
                  "`make deploy` runs the same deploy against your account.")
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


def real_deploy(item: LoadedConfig, watch: bool = False) -> int:
    import boto3

    stack, assembly = item.config.stack_name, ROOT / "cdk.out"
    if subprocess.run([CDK, "synth", stack, "--quiet", "--output", str(assembly)], cwd=ROOT).returncode != 0:
        return 1
    names = rollout.rollback_alarm_names(assembly, stack)
    arns = rollout.triggers(names, boto3.client("cloudwatch"))
    updates = [assembly]
    if rollout.staged(item.config.canary is not None, names, arns):
        staging = ROOT / "cdk.out-staging"
        if subprocess.run([CDK, "synth", stack, "--quiet", "--output", str(staging), *rollout.STAGING_CONTEXT],
                          cwd=ROOT).returncode != 0:
            return 1
        console.print("a canary deploy takes two updates: the new backend is created and made ready at weight "
                      "0, then it takes its share, judged by its own alarms")
        updates.insert(0, staging)
    result: subprocess.CompletedProcess[bytes] = subprocess.CompletedProcess([], 0)
    with watching(item, watch):
        for update in updates:
            arns = rollout.triggers(names, boto3.client("cloudwatch"))
            _say_triggers(arns)
            result = subprocess.run([CDK, *rollout.deploy_args(stack, update, arns,
                                                               item.config.rollout.monitor_minutes)], cwd=ROOT)
            if result.returncode != 0:
                break
    if result.returncode != 0:
        console.print("cdk deploy failed. If the account and region are not bootstrapped yet, run once: "
                      "npx cdk bootstrap")
        return 1
    from crossover.cli import main as cli

    return cli(["smoke", item.config.name])


def main(argv: list[str]) -> int:
    watch = "--watch" in argv
    argv = [a for a in argv if a != "--watch"]
    if len(argv) != 1:
        console.print("usage: python -m crossover.deploy <model name> [--watch]  (make deploy MODEL=<name> [WATCH=1])")
        return 2
    try:
        item = find(argv[0], models_folder())
        for warning in item.warnings:
            console.print(f"[yellow]warning[/yellow]: {warning}")
        if has_credentials():
            return real_deploy(item, watch)
        if watch:
            console.print("not watching: the emulator's load balancer serves no requests (watch a real deploy)")
        return rehearse(item)
    except ConfigError as e:
        console.print(str(e), markup=False)
    except RehearsalError as e:
        console.print(f"[red]error[/red]: {e}", markup=False)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
