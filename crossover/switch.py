"""`crossover switch`: move a model to another backend by editing its config, and say what the move does.

``switch <name> <backend>`` changes only the ``backend:`` value; with ``--canary P`` it also writes
``canary: {from: <old>, percent: P}``: the next deploy keeps both backends and splits requests between
them. ``--promote`` removes ``canary`` (the new backend takes everything, the old one is removed);
``--abort`` restores ``backend: <old>`` and removes ``canary``. ruamel.yaml's round-trip parser finds
where each value sits and only those characters or lines change, so every comment, blank line and
unrelated line stays byte for byte. The result is validated and the original restored if it is invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ruamel.yaml import YAML

from crossover.backends import KINDS
from crossover.config import BACKENDS, RETIRED, ConfigError, LoadedConfig, Problem, load

# What each backend holds, under its own id: created by a move to it, removed by a move away.
KEPT = "front door (load balancer, listener, security group, access-log bucket), the Endpoint output"
READY = {"lambda": "its live alias names the published version (and any provisioned concurrency is allocated)",
         "lambda-managed": "its live alias names the published version, active once lambda-managed.min_environments "
                           "execution environments run on the capacity provider's instances, the model loaded",
         "fleet": "scaling.min instances have signalled ready, each once the load balancer found it healthy"}
_SCALAR = re.compile(r"""(?P<quote>["']?)(?P<value>[A-Za-z0-9_-]+)(?P=quote)""")


def readiness(backend: str) -> str:
    return READY["fleet" if KINDS[backend].fleet else backend]


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


def without_key(text: str, key: str) -> str:
    """``text`` without the top-level ``key`` and its value (block or flow), keeping every other line; the
    comments and blank lines between it and the next key stay, as they may belong to that key."""
    node = YAML(typ="rt").load(text)
    if key not in node:
        return text
    lines = text.splitlines(keepends=True)
    start = node.lc.key(key)[0]
    end = min([node.lc.key(k)[0] for k in node if node.lc.key(k)[0] > start], default=len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return "".join(lines[:start] + lines[end:])


def with_canary(text: str, source: str, percent: int) -> str:
    """``text`` with ``canary: {from: source, percent: percent}`` on the line after ``backend:``."""
    text = without_key(text, "canary")
    line = YAML(typ="rt").load(text).lc.key("backend")[0]
    lines = text.splitlines(keepends=True)
    lines.insert(line + 1, f"canary: {{from: {source}, percent: {percent}}}   # crossover switch --promote | --abort\n")
    return "".join(lines)


@dataclass(frozen=True)
class Move:
    """What a config change does at the next deploy; ``kind``: switch, canary, promote, abort, none."""

    kind: str
    before: LoadedConfig
    after: LoadedConfig


def _write(item: LoadedConfig, text: str) -> LoadedConfig:
    """Write ``text`` to the config and reload it; the original comes back if it does not validate."""
    original = item.path.read_text()
    item.path.write_text(text)
    try:
        return load(item.path)
    except ConfigError:
        item.path.write_text(original)
        raise


def _problem(item: LoadedConfig, key: str, message: str) -> ConfigError:
    return ConfigError([Problem(str(item.path), key, message)])


def switch(item: LoadedConfig, backend: str, *, canary: int | None = None, force: bool = False) -> Move:
    """Rewrite ``item``'s file to ``backend`` (with ``canary`` percent: a canary from the current one). A
    backend AWS no longer sells is refused unless ``force``."""
    if backend not in BACKENDS:
        raise _problem(item, "backend", f"expected one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend in RETIRED and not force and backend != item.config.backend:
        raise _problem(item, "backend", f"{backend} is retired: AWS Elastic Inference is no longer available to "
                       "new deployments (its successor is inferentia); pass --force to switch to it anyway")
    if item.config.canary is not None:
        raise _problem(item, "canary", f"a canary from {item.config.canary.from_} to {item.config.backend} is in "
                       "progress: finish it first with crossover switch --promote or --abort")
    original = item.path.read_text()
    if backend == item.config.backend:
        return Move("none", item, item)
    try:
        updated, old = rewrite_backend(original, backend)
    except (KeyError, ValueError) as e:
        raise _problem(item, "backend", f"cannot rewrite the backend value: {e}") from None
    if canary is not None:
        updated = with_canary(updated, old, canary)
    return Move("canary" if canary is not None else "switch", item, _write(item, updated))


def promote(item: LoadedConfig) -> Move:
    """End a canary: the new backend takes every request; the next deploy removes the old one."""
    if item.config.canary is None:
        raise _problem(item, "canary", "no canary is in progress; start one with crossover switch "
                       f"{item.config.name} <backend> --canary PERCENT")
    return Move("promote", item, _write(item, without_key(item.path.read_text(), "canary")))


def abort(item: LoadedConfig) -> Move:
    """Undo a canary: the backend it moved from takes every request back; the next deploy removes the new one."""
    if item.config.canary is None:
        raise _problem(item, "canary", "no canary is in progress: nothing to abort")
    updated, _ = rewrite_backend(without_key(item.path.read_text(), "canary"), item.config.canary.from_)
    return Move("abort", item, _write(item, updated))


def plan(move: Move) -> list[str]:
    """What the next deploy does, in order: what is created, what waits for what, what is removed and when."""
    before, after = move.before.config, move.after.config
    if move.kind == "switch":
        new, old = after.backend, before.backend
        return [f"creates {new} ({KINDS[new].holds}) beside {old}, which keeps every request meanwhile",
                f"waits until {new} is ready: {readiness(new)}",
                f"then moves the listener: every request to {new}",
                f"then removes {old} ({KINDS[old].holds}), after the listener no longer names it",
                f"keeps the {KEPT}"]
    if move.kind == "canary":
        assert after.canary is not None
        new, old, share = after.backend, after.canary.from_, after.canary.percent
        return [f"creates {new} ({KINDS[new].holds}) and its canary alarms; {old} keeps every request meanwhile",
                f"waits until {new} is ready: {readiness(new)}",
                f"then splits the listener: {100 - share}% to {old}, {share}% to {new} (make deploy: a second "
                "update, judged by the canary's own p99 and 5xx alarms, which roll it back)",
                f"keeps {old} exactly as it is, until --promote or --abort",
                f"keeps the {KEPT}"]
    if move.kind == "promote":
        assert before.canary is not None
        new, old = before.backend, before.canary.from_
        return [f"moves the listener: every request to {new} (already ready)",
                f"then removes {old} ({KINDS[old].holds}) and the canary alarms", f"keeps the {KEPT}"]
    if move.kind == "abort":
        assert before.canary is not None
        new, old = before.backend, before.canary.from_
        return [f"moves the listener: every request back to {old} (never stopped serving)",
                f"then removes {new} ({KINDS[new].holds}) and the canary alarms", f"keeps the {KEPT}"]
    return []


def shares(config: LoadedConfig) -> dict[str, float]:
    """Each serving backend's share of the requests in ``config``'s state."""
    c = config.config
    if c.canary is None:
        return {c.backend: 1.0}
    return {c.backend: c.canary.percent / 100, c.canary.from_: 1 - c.canary.percent / 100}


def cold_start_warning(move: Move) -> str | None:
    """A move onto Lambda without warm capacity: its first requests each start an environment."""
    after = move.after.config
    if move.kind in ("switch", "promote") and after.backend == "lambda" and move.before.config.backend != "lambda" \
            and not after.lambda_.provisioned_concurrency:
        return ("every new Lambda environment downloads and loads the model on its first request; to meet the "
                "load warm, set lambda.provisioned_concurrency (the deploy then waits for it) or move with "
                "--canary first")
    return None
