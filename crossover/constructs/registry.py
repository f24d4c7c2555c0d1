"""The construct that builds each backend of crossover.backends, by the config's name for it.

A backend's module is imported when a service first builds that backend: an app of Lambda models never loads the
fleets' Auto Scaling library (a synth's Python side is mostly the CDK's modules it imports)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from crossover.backends import BACKENDS

if TYPE_CHECKING:
    from crossover.constructs.instance_backends import CpuFleet, EiaFleet, GpuFleet, InferentiaFleet
    from crossover.constructs.lambda_backend import LambdaBackend
    from crossover.constructs.lambda_managed import LambdaManagedBackend

    BackendConstruct = (type[LambdaBackend] | type[GpuFleet] | type[EiaFleet] | type[InferentiaFleet] | type[CpuFleet]
                        | type[LambdaManagedBackend])

_INSTANCES = "crossover.constructs.instance_backends"
HOMES: dict[str, tuple[str, str]] = {  # kind: (module, class)
    "lambda": ("crossover.constructs.lambda_backend", "LambdaBackend"),
    "gpu": (_INSTANCES, "GpuFleet"),
    "eia": (_INSTANCES, "EiaFleet"),
    "inferentia": (_INSTANCES, "InferentiaFleet"),
    "cpu": (_INSTANCES, "CpuFleet"),
    "lambda-managed": ("crossover.constructs.lambda_managed", "LambdaManagedBackend"),
}
if tuple(HOMES) != BACKENDS:
    raise ImportError(f"crossover.backends names {BACKENDS}, the registry builds {tuple(HOMES)}")


def construct(kind: str) -> BackendConstruct:
    """The class that builds ``kind`` (one of crossover.backends.BACKENDS)."""
    module, name = HOMES[kind]
    cls: BackendConstruct = getattr(importlib.import_module(module), name)
    return cls
