"""crossover: serve a trained image model on the AWS backend that fits its traffic.

The public API for a team's own CDK app: ``from crossover import ModelService, ModelConfig, load_config``.
It is imported on first use, so the CLI's commands that never synthesize do not load the CDK.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crossover.config import ModelConfig, load_config
    from crossover.service import ModelService

__all__ = ["ModelConfig", "ModelService", "load_config"]
_HOME = {"ModelService": "crossover.service", "ModelConfig": "crossover.config", "load_config": "crossover.config"}

PROJECT = Path.cwd()
"""The project the CLI and ``make`` work in, as for the cdk CLI: cdk.json, models/, profiles/, node_modules/.
Synth never reads from it: constructs take the config, and their own files ship in the package."""


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'crossover' has no attribute {name!r}")
