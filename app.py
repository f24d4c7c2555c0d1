#!/usr/bin/env python3
"""CDK entry point: the shared NetworkStack plus one ModelStack-<name> per models/*.yaml.

CROSSOVER_ONLY=<name> (set by `make deploy` / `make rehearse`) builds that model's stack alone: a deploy of
one model neither waits for nor is blocked by the others' configs.
"""

import os
import sys

from crossover.app import build, new_app
from crossover.config import ConfigError, find, load_all, model_files, models_folder

only = os.environ.get("CROSSOVER_ONLY")
try:
    configs = [find(only, models_folder())] if only else load_all(model_files(models_folder()))
except ConfigError as error:
    # Nothing is synthesized from an invalid config; the CLI prints this under its own banner.
    print(error, file=sys.stderr)
    sys.exit(1)
for item in configs:
    for warning in item.warnings:
        print(f"warning: {item.path.name}: {warning}", file=sys.stderr)

app = new_app()
build(app, configs)
app.synth()
