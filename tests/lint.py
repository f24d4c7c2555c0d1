"""cfn-lint, judged by its exit code and its parsed findings together: either alone can mislead (a crash prints
no finding; a finding printed in a format nobody parses passes silently)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests import ROOT

# cfn-lint's exit code: a bitmask of what it found (1: cfn-lint itself failed).
ERROR, WARNING, INFORMATIONAL = 2, 4, 8
SEVERITY = {"E": ERROR, "W": WARNING, "I": INFORMATIONAL}
# The findings a template may have: W3005, the DependsOn CDK writes beside a reference that already implies it
# (harmless; docs/reliability.md). What crossover acknowledges (E3002, W3037 on the retired eia backend) is
# skipped on its one resource (crossover.compliance writes cfn-lint's ignore_checks) and so never printed.
ACCEPTED = frozenset({"W3005"})
# --format parseable: file:line:column:end line:end column:rule:message
FINDING = re.compile(r"^(?P<file>.+):\d+:\d+:\d+:\d+:(?P<rule>[EWI]\d{4}):(?P<message>.*)$")


def cfn_lint(templates: list[Path] | list[str]) -> list[tuple[str, str, str]]:
    """Run cfn-lint over ``templates`` and return its findings (file, rule, message), having asserted that every
    line it printed is a finding, that its exit code is the one those findings make, and that every finding is
    an accepted one (so the exit code is 0, or 4 for W3005 alone)."""
    assert templates, "no template to lint"
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "cfn-lint"), "--format", "parseable", *map(str, templates)],
                            capture_output=True, text=True, timeout=600)
    findings = []
    for line in result.stdout.splitlines():
        match = FINDING.match(line)
        assert match, f"not a cfn-lint finding: {line!r} (exit code {result.returncode}): {result.stderr}"
        findings.append((match["file"], match["rule"], match["message"]))
    made = 0
    for _, rule, _ in findings:
        made |= SEVERITY[rule[0]]
    assert result.returncode == made, f"cfn-lint exited {result.returncode}, its findings make {made}: " + (
        result.stderr or result.stdout)[-2000:]
    unaccepted = [f for f in findings if f[1] not in ACCEPTED]
    assert unaccepted == [], "\n".join(":".join(f) for f in unaccepted)
    assert result.returncode in (0, WARNING)
    return findings
