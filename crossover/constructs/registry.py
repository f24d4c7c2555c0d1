"""The construct that builds each backend of crossover.backends, by the config's name for it."""

from __future__ import annotations

from crossover.backends import BACKENDS
from crossover.constructs.instance_backends import CpuFleet, EiaFleet, GpuFleet, InferentiaFleet
from crossover.constructs.lambda_backend import LambdaBackend

CONSTRUCTS: dict[str, type[LambdaBackend] | type[GpuFleet] | type[EiaFleet] | type[InferentiaFleet] |
                 type[CpuFleet]] = {cls.KIND: cls for cls in (LambdaBackend, GpuFleet, EiaFleet, InferentiaFleet,
                                                               CpuFleet)}
if tuple(CONSTRUCTS) != BACKENDS:
    raise ImportError(f"crossover.backends names {BACKENDS}, the constructs build {tuple(CONSTRUCTS)}")
