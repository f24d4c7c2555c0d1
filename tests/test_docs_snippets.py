"""Every Python snippet in the README and docs/ runs as written, in a fresh process from the checkout's root (as a
reader pastes it into a file there), and synthesizes; a block that cannot run here says why in an HTML comment
right above it (``<!-- not run here: ... -->``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ROOT

pytestmark = pytest.mark.slow
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)```", re.DOTALL)
NOT_RUN = "<!-- not run here:"


def snippets() -> list[tuple[str, str]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for i, match in enumerate(BLOCK.finditer(text)):
            if not match["before"].startswith(NOT_RUN):
                found.append((f"{page.name}#{i + 1}", match["code"]))
    return found


def test_the_snippets_are_found_and_the_skipped_ones_say_why() -> None:
    assert len(snippets()) >= 3
    skipped = re.findall(r"<!-- not run here: (.*?) -->\n```python", (ROOT / "docs" / "backends.md").read_text())
    assert all(len(reason) > 20 for reason in skipped)


@pytest.mark.parametrize(("where", "code"), snippets(), ids=[where for where, _ in snippets()])
def test_a_snippet_runs_as_written(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path / "out"),
           "PATH": f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{where}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
