"""`crossover switch <name> <backend>`: change only the `backend:` value of a model's config.

ruamel.yaml's round-trip parser finds where the value sits; only those characters are replaced, so
every comment, blank line and unrelated line stays byte for byte. The result is validated and the
original restored if it is invalid.
"""

from __future__ import annotations

import re
from pathlib import Path

from ruamel.yaml import YAML

from crossover.config import BACKENDS, ConfigError, LoadedConfig, Problem, load

# What each backend's `Backend` construct holds: these are replaced by a switch; the front door stays.
DEPLOYS = {
    "lambda": "Lambda function, its live alias and CodeDeploy group, role, log group and security group",
    "gpu": "GPU Auto Scaling group, launch template, role, security group, log group, scaling policy",
    "eia": "C5 Auto Scaling group with Elastic Inference, launch template, EI endpoint, role, scaling policy",
    "inferentia": "Inferentia Auto Scaling group, launch template, role, security group, scaling policy",
    "cpu": "CPU Auto Scaling group, launch template, role, security group, log group, scaling policy",
}
KEPT = "front door (load balancer, listener, security group, access-log bucket), the Endpoint output"
_SCALAR = re.compile(r"""(?P<quote>["']?)(?P<value>[A-Za-z0-9_-]+)(?P=quote)""")


def rewrite_value(text: str, keys: tuple[str, ...], value: str) -> tuple[str, str]:
    """``text`` with the scalar at ``keys`` (e.g. ("model", "format")) replaced; returns (new text, old value)."""
    node = YAML(typ="rt").load(text)
    for key in keys[:-1]:
        node = node[key]
    line, column = node.lc.value(keys[-1])
    lines = text.splitlines(keepends=True)
    match = _SCALAR.match(lines[line], column)
    if match is None:
        raise ValueError(f"cannot find the {'.'.join(keys)} value at line {line + 1}")
    lines[line] = lines[line][: match.start("value")] + value + lines[line][match.end("value"):]
    return "".join(lines), match.group("value")


def rewrite_backend(text: str, backend: str) -> tuple[str, str]:
    """``text`` with its top-level backend value replaced; returns (new text, old value)."""
    return rewrite_value(text, ("backend",), backend)


def switch(item: LoadedConfig, backend: str) -> tuple[str, LoadedConfig]:
    """Rewrite ``item``'s file to ``backend``; returns (old backend, reloaded config). Restores on error."""
    path: Path = item.path
    if backend not in BACKENDS:
        raise ConfigError([Problem(str(path), "backend", f"expected one of {', '.join(BACKENDS)}; got {backend!r}")])
    original = path.read_text()
    try:
        updated, old = rewrite_backend(original, backend)
    except (KeyError, ValueError) as e:
        raise ConfigError([Problem(str(path), "backend", f"cannot rewrite the backend value: {e}")]) from None
    path.write_text(updated)
    try:
        return old, load(path)
    except ConfigError:
        path.write_text(original)
        raise
