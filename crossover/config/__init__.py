"""The shared model config (``models/<name>.yaml``): its schema, reading a file, finding a model's.

``schema`` holds the sections and their rules, ``loading`` reads one file with precise errors, ``discovery``
finds configs in a folder. Everything a caller needs is importable from here.
"""

from crossover.backends import BACKEND_IDS, BACKENDS
from crossover.config.discovery import find, load_all, model_files, models_folder
from crossover.config.loading import ConfigError, LoadedConfig, Problem, describe, load, load_config, yaml_mapping
from crossover.config.schema import (
                                      GRAVITON_FAMILIES,
                                      RETIRED,
                                      STACK_PREFIX,
                                      Backend,
                                      Canary,
                                      FleetSpec,
                                      LambdaSpec,
                                      ModelConfig,
                                      ModelSpec,
                                      SpotSpec,
                                      is_s3_uri,
                                      vcpus,
)

__all__ = ["BACKENDS", "BACKEND_IDS", "GRAVITON_FAMILIES", "RETIRED", "STACK_PREFIX", "Backend", "Canary",
           "ConfigError", "FleetSpec", "LambdaSpec", "LoadedConfig", "ModelConfig", "ModelSpec", "Problem",
           "SpotSpec", "describe", "find", "is_s3_uri", "load", "load_all", "load_config", "model_files",
           "models_folder", "vcpus", "yaml_mapping"]
