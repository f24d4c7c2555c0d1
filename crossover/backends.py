"""The one table of backends: every part of crossover that names a backend reads it from here.

No CDK import: the config schema, the cost model and the CLI read it too. The constructs that build each kind
are registered beside it in crossover.constructs.registry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One backend: ``id`` is its construct id, stable whatever else is deployed (a canary adds the new backend
    beside the old one without touching it; a realtime backend's target group is ``<id>Targets``; the tools
    read templates by it). ``holds``: what a move to it creates and a move away removes."""

    name: str
    id: str
    holds: str
    fleet: bool = True  # instances in an Auto Scaling group (the rest: a Lambda function and its live alias)
    spot: bool = False  # may run spot instances (EI is retired: never priced as spot)
    placeholder_images_per_second: float = 0.0  # a fleet's throughput when nothing measured or estimated it


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("lambda", "Lambda", "Lambda function, its live alias and CodeDeploy group, role, log group and security "
         "group", fleet=False),
    Kind("gpu", "Gpu", "GPU Auto Scaling group, launch template, role, security group, log group, scaling policy",
         spot=True, placeholder_images_per_second=200.0),
    Kind("eia", "Eia", "C5 Auto Scaling group with Elastic Inference, launch template, EI endpoint, role, scaling "
         "policy", placeholder_images_per_second=60.0),
    Kind("inferentia", "Inferentia", "Inferentia Auto Scaling group, launch template, role, security group, "
         "scaling policy", spot=True, placeholder_images_per_second=400.0),
    Kind("cpu", "Cpu", "CPU Auto Scaling group, launch template, role, security group, log group, scaling policy",
         spot=True, placeholder_images_per_second=12.0),
    Kind("lambda-managed", "LambdaManaged", "Lambda function on a Lambda Managed Instances capacity provider, its "
         "live alias and CodeDeploy group, role, operator role and security group", fleet=False),
)}
BACKENDS: tuple[str, ...] = tuple(KINDS)
BACKEND_IDS = {name: kind.id for name, kind in KINDS.items()}
FUNCTIONS: tuple[str, ...] = tuple(name for name, kind in KINDS.items() if not kind.fleet)
FLEETS: tuple[str, ...] = tuple(name for name, kind in KINDS.items() if kind.fleet)
SPOT_BACKENDS: tuple[str, ...] = tuple(name for name, kind in KINDS.items() if kind.spot)
