"""`make deploy MODEL=<name>`: the real `cdk deploy` with AWS credentials; without, a rehearsal.

With credentials: `cdk synth`, then `cdk deploy ModelStack-<name>` with the stack's live rollback
alarms as CloudFormation rollback triggers (crossover.rollout; a bootstrap hint if the account is not
bootstrapped), then `crossover smoke <name>`. Without: the same CLI deploys the same stack into a
local AWS emulator on loopback (crossover.rehearsal), then boto3 reads back what was created.
"""

from __future__ import annotations

import subprocess
import sys

from rich.console import Console

from crossover import ROOT, rollout
from crossover.app import models_folder
from crossover.config import ConfigError, LoadedConfig, find
from crossover.rehearsal import CDK, RehearsalError, bootstrap, check, deploy, emulator, table

console = Console(highlight=False, soft_wrap=True)


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
        _say_triggers(deploy(emu, stack, monitor_minutes=item.config.rollout.monitor_minutes))
        status, checks = check(emu, stack, item.config.backend)
    console.print(table(stack, status, checks))
    missing = [c.what for c in checks if not c.ok]
    if missing:
        console.print(f"[red]rehearsal failed[/red]: {', '.join(missing)} not as expected")
        return 1
    console.print(f"{stack}: {status} on the emulator; the emulator was stopped. With AWS credentials, "
                  "`make deploy` runs the same deploy against your account.")
    return 0


def real_deploy(item: LoadedConfig) -> int:
    import boto3

    stack, assembly = item.config.stack_name, ROOT / "cdk.out"
    if subprocess.run([CDK, "synth", stack, "--quiet", "--output", str(assembly)], cwd=ROOT).returncode != 0:
        return 1
    arns = rollout.triggers(rollout.rollback_alarm_names(assembly, stack), boto3.client("cloudwatch"))
    _say_triggers(arns)
    args = rollout.deploy_args(stack, assembly, arns, item.config.rollout.monitor_minutes)
    result = subprocess.run([CDK, *args], cwd=ROOT, capture_output=False)
    if result.returncode != 0:
        console.print("cdk deploy failed. If the account and region are not bootstrapped yet, run once: "
                      "npx cdk bootstrap")
        return 1
    from crossover.cli import main as cli

    return cli(["smoke", item.config.name])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        console.print("usage: python -m crossover.deploy <model name>  (make deploy MODEL=<name>)")
        return 2
    try:
        item = find(argv[0], models_folder())
        for warning in item.warnings:
            console.print(f"[yellow]warning[/yellow]: {warning}")
        return real_deploy(item) if has_credentials() else rehearse(item)
    except ConfigError as e:
        console.print(str(e), markup=False)
    except RehearsalError as e:
        console.print(f"[red]error[/red]: {e}", markup=False)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
