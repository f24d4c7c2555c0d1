"""crossover: serve a trained image model on the AWS backend that fits its traffic.

The public API for a team's own CDK app: ``from crossover import ModelService, ModelConfig, load_config, size``
(and the types the docs name: ``Sizing``, ``PrivateEgress``, ``RealtimeFrontDoor``, ``PathFrontDoor``, the backends).
It is imported on first use, so the CLI's commands that never synthesize do not load the CDK.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossover.errors import report_user_errors

if TYPE_CHECKING:
    from crossover.config import ModelConfig, load_config
    from crossover.constructs.backend import PrivateEgress
    from crossover.constructs.front_door import PathFrontDoor, RealtimeFrontDoor
    from crossover.constructs.instance_backends import CpuFleet, EiaFleet, GpuFleet, InferentiaFleet
    from crossover.constructs.lambda_backend import LambdaBackend
    from crossover.constructs.lambda_managed import LambdaManagedBackend
    from crossover.constructs.pipeline_front_door import PipelineFrontDoor
    from crossover.figures import FleetFigures, Sizing
    from crossover.service import ModelService
    from crossover.sizing import size

__all__ = ["CpuFleet", "EiaFleet", "FleetFigures", "GpuFleet", "InferentiaFleet", "LambdaBackend",
           "LambdaManagedBackend", "ModelConfig", "ModelService", "PathFrontDoor", "PipelineFrontDoor", "PrivateEgress",
           "RealtimeFrontDoor", "Sizing", "load_config", "size"]
_MODULES = {
    "crossover.config": ("ModelConfig", "load_config"),
    "crossover.service": ("ModelService",),
    "crossover.sizing": ("size",),
    "crossover.figures": ("Sizing", "FleetFigures"),
    "crossover.constructs.backend": ("PrivateEgress",),
    "crossover.constructs.front_door": ("RealtimeFrontDoor", "PathFrontDoor"),
    "crossover.constructs.pipeline_front_door": ("PipelineFrontDoor",),
    "crossover.constructs.lambda_backend": ("LambdaBackend",),
    "crossover.constructs.lambda_managed": ("LambdaManagedBackend",),
    "crossover.constructs.instance_backends": ("GpuFleet", "EiaFleet", "InferentiaFleet", "CpuFleet"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

report_user_errors()

PROJECT = Path.cwd()
"""The project the CLI and ``make`` work in, as for the cdk CLI: cdk.json, models/, profiles/, node_modules/.
Synth never reads from it: constructs take the config, and their own files ship in the package."""


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'crossover' has no attribute {name!r}")
