"""Finding configs: every model in a folder (names unique across files), or one by name."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from crossover.config.loading import ConfigError, LoadedConfig, Problem, load


def load_all(paths: Iterable[Path], *, converting: bool = False) -> list[LoadedConfig]:
    """Load several configs, collecting every problem across all files (and duplicate names)."""
    loaded: list[LoadedConfig] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            loaded.append(load(path, converting=converting))
        except ConfigError as e:
            problems.extend(e.problems)
    seen: dict[str, Path] = {}
    for item in loaded:
        first = seen.setdefault(item.config.name, item.path)
        if first != item.path:
            problems.append(Problem(str(item.path), "name",
                                    f"expected a name unique across configs; got {item.config.name!r}, "
                                    f"also used by {first}"))
    # One NetworkStack serves every model of the app: its shape cannot differ between them.
    for item in loaded[1:]:
        if item.config.network != loaded[0].config.network:
            problems.append(Problem(str(item.path), "network", (
                f"expected the same network as {loaded[0].path} (every model shares NetworkStack); got "
                f"nat_gateways {item.config.network.nat_gateways}, there {loaded[0].config.network.nat_gateways}")))
    if problems:
        raise ConfigError(problems)
    return loaded


def find(name: str, folder: Path, *, converting: bool = False) -> LoadedConfig:
    """The config in ``folder`` whose ``name`` (or file name) is ``name``; ConfigError if none. Other configs
    that do not load are no obstacle (`crossover validate` reports them): only when none matches are their
    problems shown, since the one meant may be among them."""
    files = model_files(folder)
    known: list[str] = []
    problems: list[Problem] = []
    for path in sorted(files, key=lambda p: p.stem != name):  # the file named so first: usually the only one read
        try:
            item = load(path, converting=converting)
        except ConfigError as e:
            if path.stem == name:
                raise
            problems.extend(e.problems)
            continue
        if name in (item.config.name, path.stem):
            return item
        known.append(item.config.name)
    raise ConfigError([Problem(str(folder), "", f"no model named {name!r}; known: {', '.join(sorted(known))}"),
                       *problems])


def models_folder() -> Path:
    """Where the app and the deploy look for configs: ``$CROSSOVER_MODELS``, else the checkout's models/."""
    from crossover import PROJECT

    return Path(os.environ.get("CROSSOVER_MODELS", PROJECT / "models"))


def model_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
