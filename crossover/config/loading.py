"""Reading a config file: YAML in, a validated ModelConfig out, or every problem at once.

Every problem is reported as ``FILE: KEY.PATH: what was expected; what was found`` and nothing is
synthesized from an invalid config.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from crossover.config.schema import ModelConfig, bucket_problem, is_s3_uri
from crossover.errors import UserError


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    config: ModelConfig
    warnings: list[str] = field(default_factory=list)

    @property
    def artifact_path(self) -> Path | None:
        """The local artifact file, or None when the artifact is an S3 URI."""
        return self.local(self.config.model.artifact)

    def local(self, artifact: str) -> Path | None:
        return None if is_s3_uri(artifact) else resolve_local(self.path, artifact)

    @property
    def resolved(self) -> ModelConfig:
        """The config with its local files as absolute paths: what a construct takes, wherever it runs."""
        config = self.config
        update: dict[str, Any] = {}
        if (artifact := self.artifact_path) is not None:
            update["model"] = config.model.model_copy(update={"artifact": str(artifact)})
        neuron = config.inferentia.neuron_artifact
        if neuron is not None and (local := self.local(neuron)) is not None:
            update["inferentia"] = config.inferentia.model_copy(update={"neuron_artifact": str(local)})
        return config.model_copy(update=update)


class ConfigError(UserError):
    """One or more problems in one or more config files; str() is one problem per line."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def resolve_local(config_path: Path, artifact: str) -> Path:
    """Local artifacts are relative to the config file's folder, like paths in docker-compose."""
    return (config_path.parent / artifact).resolve()


def yaml_mapping(path: Path, shown: str) -> dict[str, Any]:
    # The safe loader refuses !!python/* tags; ruamel refuses duplicate keys by default.
    yaml = YAML(typ="safe", pure=True)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(shown, "", f"cannot read the file: {e}")]) from None
    try:
        data = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConfigError([Problem(where, "", f"YAML error: {what}")]) from None
    except YAMLError as e:
        raise ConfigError([Problem(shown, "", f"YAML error: {e}")]) from None
    if data is None:
        raise ConfigError([Problem(shown, "", "expected a mapping of config keys; the file is empty")])
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem(shown, "", f"expected a mapping of config keys at the top level; got a {_kind(data)}")]
        )
    return data


def _kind(value: object) -> str:
    return {list: "list", str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The schema class that owns the mapping at ``loc`` (for listing valid keys)."""
    current: type[BaseModel] = root
    for part in loc:
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        annotation = fields[str(part)].annotation if str(part) in fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        current = annotation
    return current


def describe(error: Any, root: type[BaseModel] | None = None) -> str:
    """One pydantic error as 'what was expected; what was found' (``root``: the schema, for key hints)."""
    kind, got, ctx = error["type"], error.get("input"), error.get("ctx", {})
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        owner = _model_at(root or ModelConfig, loc[:-1])
        keys = _valid_keys(owner) if owner else []
        near = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"expected one of the keys {', '.join(keys)}; got unknown key {loc[-1]!r}{hint}"
    if kind == "missing":
        return "expected this key; it is missing"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", "")))
        return f"expected one of {choices}; got {got!r}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        return f"expected a value matching {ctx.get('pattern')}; got {got!r}"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        bound = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
                 "less_than_equal": "<= {le}"}[kind].format(**ctx)
        return f"expected a number {bound}; got {got!r}"
    if kind in {"too_short", "too_long"}:
        return f"expected {ctx.get('min_length', ctx.get('max_length'))} items; got {got!r}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        wanted = {"int": "an integer", "float": "a number", "string": "a string", "bool": "true or false",
                  "list": "a list", "model": "a mapping", "dict": "a mapping"}.get(kind.split("_")[0], kind)
        return f"expected {wanted}; got {_kind(got)} {got!r}"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}; got {got!r}"


def _check_artifact(artifact: str, path: Path) -> str | None:
    if is_s3_uri(artifact):
        bucket, _, key = artifact.removeprefix("s3://").partition("/")
        why = bucket_problem(bucket) or (None if key and not key.endswith("/") else "it names no object key")
        return None if why is None else (
            f"expected an s3://bucket/key URI or an existing local file; got {artifact!r} ({why})")
    local = resolve_local(path, artifact)
    if local.is_file():
        return None
    return (f"expected an s3://bucket/key URI or an existing local file; got {artifact!r} "
            f"(no file at {local}; for the bundled example run `make artifacts`)")


def load(path: Path, shown: str | None = None, *, converting: bool = False) -> LoadedConfig:
    """Load and validate one config file; raises ConfigError listing every problem found.

    An MXNet model is refused until converted, except by `crossover convert` (``converting``).
    """
    shown = shown or str(path)
    data = yaml_mapping(path, shown)
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(
            [Problem(shown, ".".join(str(p) for p in err["loc"]), describe(err)) for err in e.errors()]
        ) from None
    mxnet = config.model.mxnet
    unconverted = config.model.format == "mxnet"
    artifacts = {"model.artifact": None if unconverted else config.model.artifact,
                 "inferentia.neuron_artifact": config.inferentia.neuron_artifact,
                 "model.mxnet.symbol": mxnet.symbol if mxnet else None,
                 "model.mxnet.params": mxnet.params if mxnet else None}
    problems = [Problem(shown, key, problem) for key, artifact in artifacts.items()
                if artifact is not None and (problem := _check_artifact(artifact, path)) is not None]
    if unconverted and not converting:
        problems.append(Problem(shown, "model.format", "expected onnx; got mxnet, which is served as ONNX: run "
                                f"`crossover convert {shown}` first (it writes model.artifact)"))
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(path=path, config=config, warnings=config.warnings())




def load_config(path: Path | str) -> ModelConfig:
    """The config in ``path``, validated, with local artifact paths made absolute (relative paths in the file
    are relative to its folder): the one shared config, for ``ModelService`` in a team's own app."""
    return load(Path(path)).resolved
