#!/usr/bin/env python3
"""CDK entry point: the shared NetworkStack plus one ModelStack-<name> per models/*.yaml."""

import sys

from crossover.app import build, models_folder, new_app
from crossover.config import ConfigError, load_all, model_files

try:
    configs = load_all(model_files(models_folder()))
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
