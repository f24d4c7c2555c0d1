"""`make deploy MODEL=<name>`: the real `cdk deploy` with AWS credentials; without, a synth and report.

Without credentials nothing can be deployed, so this synthesizes the model's stack with the pinned
CDK CLI, shows what it would create, the cdk-nag outcome and cfn-lint's findings, and says plainly
that nothing was deployed and why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from crossover import ROOT, compliance
from crossover.app import models_folder
from crossover.config import ConfigError, find

console = Console(highlight=False, soft_wrap=True)
CDK = str(ROOT / "node_modules" / ".bin" / "cdk")


class DeployError(Exception):
    pass


def has_credentials() -> bool:
    import boto3

    return boto3.Session().get_credentials() is not None


def _cdk(*args: str) -> None:
    result = subprocess.run([CDK, *args], cwd=ROOT)
    if result.returncode != 0:
        raise DeployError(f"`cdk {' '.join(args)}` failed (exit {result.returncode}); see its output above")


def report(stack: str, outdir: Path) -> int:
    """Print the resources, nag outcome and lint findings of ``stack``; return the cfn-lint error count."""
    template_path = outdir / f"{stack}.template.json"
    template = json.loads(template_path.read_text())
    kinds = Counter(r["Type"] for r in template["Resources"].values() if r["Type"] != "AWS::CDK::Metadata")
    table = Table(title=f"{stack}: {sum(kinds.values())} resources")
    table.add_column("type")
    table.add_column("count", justify="right")
    for kind, count in sorted(kinds.items()):
        table.add_row(kind, str(count))
    console.print(table)
    accepted = [(logical, entry["finding"]) for logical, r in template["Resources"].items()
                for entry in r.get("Metadata", {}).get(compliance.METADATA_KEY, [])]
    packs = ", ".join(p.__name__.removesuffix("Checks") for p in compliance.PACKS)
    console.print(f"cdk-nag ({packs}): 0 unacknowledged findings; {len(accepted)} acknowledged, each with "
                  "its reason in the template's resource Metadata:")
    for logical, finding in accepted:
        console.print(f"  {logical}: {finding}")
    lint = subprocess.run([str(ROOT / ".venv" / "bin" / "cfn-lint"), "--format", "parseable",
                           str(template_path), str(outdir / "NetworkStack.template.json")],
                          capture_output=True, text=True)
    findings = lint.stdout.splitlines()
    errors = sum(":E" in f for f in findings)
    console.print(f"cfn-lint: {errors} errors, {len(findings) - errors} warnings (stack and NetworkStack)")
    for finding in findings:
        console.print(f"  {finding}", markup=False)
    return errors


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        console.print("usage: python -m crossover.deploy <model name>  (make deploy MODEL=<name>)")
        return 2
    try:
        item = find(argv[0], models_folder())
        for warning in item.warnings:
            console.print(f"[yellow]warning[/yellow]: {warning}")
        stack = item.config.stack_name
        if has_credentials():
            _cdk("deploy", stack, "--outputs-file", str(ROOT / "cdk.out" / f"{stack}.outputs.json"))
            return 0
        _cdk("synth", stack, "--quiet")
        errors = report(stack, ROOT / "cdk.out")
    except ConfigError as e:
        console.print(str(e), markup=False)
        return 1
    except DeployError as e:
        console.print(f"[red]error[/red]: {e}")
        return 1
    console.print(f"\n[bold]Nothing was deployed[/bold]: no AWS credentials were found (environment, "
                  f"~/.aws or an instance role). {stack} was synthesized into cdk.out/ and checked instead. "
                  "Configure credentials and run `make deploy` again to deploy it.")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
