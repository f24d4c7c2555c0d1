"""The serving spec: which model, how to preprocess, how many to batch.

crossover writes it as JSON (CROSSOVER_SPEC in Lambda, a file on instances) from a validated config;
``load()`` also reads a ``models/<name>.yaml`` directly for local use (``--config``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class InputSpec:
    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: str = "nchw"


@dataclass(frozen=True)
class InputsSpec:
    """What a request or message may name instead of sending the image (the config's ``inputs``)."""

    s3: tuple[str, ...] = ()  # "bucket/" or "bucket/prefix/"
    https: bool = False


@dataclass(frozen=True)
class Spec:
    name: str
    artifact: str  # local path or s3://bucket/key
    # The backend serving it (crossover.config.BACKEND_IDS' keys): ServerFaults are also published per backend,
    # so a canary is judged by its own faults alone. None when served locally.
    backend: str | None = None
    format: str = "onnx"  # onnx | neuron (a Neuron-compiled TorchScript module, on Inferentia)
    sha256: str | None = None
    input: InputSpec = field(default_factory=InputSpec)
    labels: str = "imagenet"  # "imagenet" (bundled) or a path to a file with one label per line
    top_k: int = 5
    max_batch: int = 1
    inputs: InputsSpec = field(default_factory=InputsSpec)
    # Where a shared load balancer serves the model (ModelService(path_prefix="/cats")): it answers
    # <prefix>/predict as /predict. The unprefixed paths still answer (health checks, local tools).
    path_prefix: str = ""

    def route(self, path: str) -> str:
        """``path`` without the prefix the model is served under."""
        prefix = self.path_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            return path[len(prefix):] or "/"
        return path

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Spec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown serving spec keys: {', '.join(sorted(unknown))}")
        raw_input = dict(data.get("input") or {})
        for key in ("mean", "std"):
            if key in raw_input:
                raw_input[key] = tuple(raw_input[key])
        raw_inputs = dict(data.get("inputs") or {})
        raw_inputs["s3"] = tuple(raw_inputs.get("s3", ()))
        return cls(**{**data, "input": InputSpec(**raw_input), "inputs": InputsSpec(**raw_inputs)})


def load(path: Path) -> Spec:
    """A JSON spec, or the ``name`` and ``model`` sections of a crossover model config (YAML)."""
    if path.suffix == ".json":
        return Spec.from_mapping(json.loads(path.read_text()))
    from ruamel.yaml import YAML  # only local use reads YAML; Lambda and instances get JSON

    config = YAML(typ="safe", pure=True).load(path.read_text())
    # The model section also holds figures only the kit reads (gmacs, load_s): take what serving uses.
    serving_keys = {f.name for f in fields(Spec)}
    model = {k: v for k, v in config["model"].items() if k in serving_keys}
    if not str(model["artifact"]).startswith("s3://"):
        model["artifact"] = str((path.parent / model["artifact"]).resolve())
    backend = config.get("backend", "cpu")
    max_batch = (config.get(backend) or {}).get("max_batch", 1)
    return Spec.from_mapping({"name": config["name"], **model, "max_batch": max_batch, "backend": backend,
                              "inputs": config.get("inputs") or {}})
