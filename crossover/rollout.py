"""CloudFormation rollback triggers for a deploy: the stack's rollback alarms that exist right now.

Each ModelStack lists, in its ``RollbackAlarms`` output, the alarms that say a release is bad
(crossover.constructs.monitoring). CloudFormation fails an update outright if a trigger it is given
does not exist, and a switch of backend creates and deletes alarms; so the triggers are the alarms
the new template keeps that are already live. A first deploy has none: there is nothing to roll
back to. At most five are allowed, which every template stays within (tests/test_monitoring.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crossover.shape import CANARY_WEIGHT_CONTEXT, ROLLBACK_ALARMS_OUTPUT

STAGING_CONTEXT = ("--context", f"{CANARY_WEIGHT_CONTEXT}=0")


def rollback_alarm_names(assembly: Path, stack: str) -> list[str]:
    """The alarm names in the synthesized template's RollbackAlarms output (``cdk synth`` wrote it)."""
    template = json.loads((assembly / f"{stack}.template.json").read_text())
    value = template.get("Outputs", {}).get(ROLLBACK_ALARMS_OUTPUT, {}).get("Value", "")
    return [name for name in value.split(",") if name]


def triggers(names: list[str], cloudwatch: Any) -> list[str]:
    """The ARNs of the alarms among ``names`` that exist now."""
    if not names:
        return []
    return [alarm["AlarmArn"] for alarm in cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]]


def staged(canary: bool, names: list[str], arns: list[str]) -> bool:
    """Whether a deploy takes two updates: a canary whose own alarms do not exist yet cannot be judged by
    them in the update that creates them, so the first update creates the new backend (and its alarms) and
    waits for it with the canary's weight at 0, and the second gives it its share, judged by them."""
    return canary and len(arns) < len(names)


def deploy_args(stack: str, assembly: Path, arns: list[str], monitor_minutes: int) -> list[str]:
    """`cdk deploy` of the already synthesized ``assembly``, watched by the rollback triggers."""
    args = ["deploy", stack, "--app", str(assembly), "--require-approval", "never"]
    if arns:
        args += ["--rollback-trigger-alarm-arns", *arns, "--monitoring-time-minutes", str(monitor_minutes)]
    return args
