"""Builds the CDK app from models/*.yaml; app.py at the checkout's root is the entry point."""

from __future__ import annotations

import json
import os
from typing import Any

from aws_cdk import App, Environment

from crossover import PROJECT, compliance
from crossover.config import LoadedConfig
from crossover.cost.profile import Measured
from crossover.errors import UserError
from crossover.shape import NAT_GATEWAYS
from crossover.stacks.image import IMAGES, ImageStack
from crossover.stacks.model import ModelStack
from crossover.stacks.network import NetworkStack

IMAGES_CONTEXT = "crossover:images"


def environment() -> Environment | None:
    """Environment-agnostic unless CDK_DEPLOY_ACCOUNT / CDK_DEPLOY_REGION pin one explicitly.

    CDK_DEFAULT_* are deliberately ignored: the CLI sets them whenever credentials exist, which would
    make the same checkout synthesize differently (and need lookups) on a machine with credentials.
    """
    account, region = os.environ.get("CDK_DEPLOY_ACCOUNT"), os.environ.get("CDK_DEPLOY_REGION")
    return Environment(account=account, region=region) if account or region else None


def new_app(*, validation: bool = False, **kwargs: Any) -> App:
    """An App with the project's cdk.json context, so in-process synths use the same feature flags as `cdk synth`.

    CDK's built-in CloudFormation validation is off unless ``validation`` or ``CDK_VALIDATION=true``: its
    engine costs ~1.4 s to load on every synth (a bare app takes 2.0-2.2 s with it, 0.6-0.65 s without), and cfn-lint,
    which `make test` runs over every template, checks the same schema with more rules. The tests' session
    synth turns it on, so CI still runs it over every backend and service.
    """
    context = json.loads((PROJECT / "cdk.json").read_text())["context"]
    validation = validation or os.environ.get("CDK_VALIDATION", "").lower() == "true"
    return App(context=context, builtin_cloud_formation_validation=validation, **kwargs)


def build(app: App, configs: list[LoadedConfig]) -> dict[str, ModelStack]:
    env = environment()
    nat_gateways = configs[0].config.network.nat_gateways if configs else NAT_GATEWAYS  # load_all: all agree
    network = NetworkStack(app, "NetworkStack", env=env, description="crossover shared network",
                           nat_gateways=nat_gateways)
    stacks = {item.config.name: ModelStack(app, item.config.stack_name, config=item.resolved, network=network,
                                           measured=Measured.read(item.config.name), env=env)
              for item in configs}
    # ImageStack-<kind> bakes the images of a fleet kind some model runs (or that `-c crossover:images=gpu,cpu`
    # asks for, to bake before a move): an app of Lambda models synthesizes none. Deployed only when asked for (cdk
    # deploy ImageStack-gpu). Image builds reach Image Builder, Systems Manager and the OS repositories: a NAT-free
    # network has no way out for them (fleets there boot from the bundle).
    asked = {kind.strip() for kind in str(app.node.try_get_context(IMAGES_CONTEXT) or "").split(",")} - {""}
    if unknown := asked - set(IMAGES):
        raise UserError(f"-c {IMAGES_CONTEXT}: expected kinds of {', '.join(IMAGES)}; got {', '.join(sorted(unknown))}")
    used = {kind for item in configs for kind in item.config.backends} | asked
    for backend in [kind for kind in IMAGES if kind in used] if nat_gateways else ():
        ImageStack(app, f"ImageStack-{backend}", backend=backend, vpc=network.vpc, env=env)
    compliance.apply(app, strict=True)  # every resource here is crossover's: any finding is a bug
    return stacks
