"""`crossover convert`: an MXNet model (symbol + params) to the ONNX artifact the kit serves.

MXNet 1.9.1 installs only beside numpy < 1.24, so the export runs in an isolated environment
(.venv-mxnet, from requirements-mxnet.txt) that this module builds once and reuses while the pins are
unchanged. The exporter is MXNet's own; afterwards the same fixed input goes through MXNet and through
ONNX Runtime, and the conversion is refused when they differ by more than the tolerance. Only then is
the config rewritten (artifact and format, in place, keeping every comment).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from crossover import PROJECT
from crossover.config import ConfigError, LoadedConfig, Problem, is_s3_uri, load
from crossover.errors import UserError
from crossover.switch import rewrite_value

ENV = PROJECT / ".venv-mxnet"
REQUIREMENTS = PROJECT / "requirements-mxnet.txt"
WORKER = Path(__file__).with_name("mxnet_worker.py")


class ConvertError(UserError):
    pass


@dataclass(frozen=True)
class Converted:
    onnx: Path
    max_difference: float
    scale: float


def environment(console: Console) -> Path:
    """The isolated MXNet environment's python, built on first use (and again when the pins change)."""
    python = ENV / "bin" / "python"
    stamp = ENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.is_file() and stamp.read_text() == digest:
        return python
    with console.status("building the isolated MXNet environment (.venv-mxnet; once, about a minute) ..."):
        steps = [[sys.executable, "-m", "venv", "--clear", str(ENV)],
                 [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                  str(REQUIREMENTS)]]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                raise ConvertError(f"cannot build the MXNet environment ({' '.join(step[:3])} ...):\n"
                                   f"{(result.stderr or result.stdout).strip()[-2000:]}")
    stamp.write_text(digest)
    return python


def _local(location: str, item: LoadedConfig, scratch: Path) -> Path:
    if not is_s3_uri(location):
        local = item.local(location)
        assert local is not None
        return local
    import boto3

    bucket, key = location.removeprefix("s3://").split("/", 1)
    target = scratch / key.rsplit("/", 1)[-1]
    boto3.client("s3").download_file(bucket, key, str(target))
    return target


def convert(item: LoadedConfig, console: Console, *, tolerance: float = 1e-4) -> Converted:
    """Export, check equivalence, then point the config at the ONNX; the config is untouched on any error."""
    import onnxruntime as ort

    model = item.config.model
    assert model.mxnet is not None
    out = item.local(model.artifact)
    assert out is not None
    python = environment(console)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        partial = scratch / "model.onnx"
        command = [str(python), str(WORKER), "--symbol", str(_local(model.mxnet.symbol, item, scratch)),
                   "--params", str(_local(model.mxnet.params, item, scratch)), "--out", str(partial),
                   "--input", str(scratch / "x.npy"), "--output", str(scratch / "y.npy"),
                   "--input-name", model.mxnet.input_name, "--size", str(model.input.size)]
        with console.status("exporting with MXNet's ONNX exporter ..."):
            result = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        answer = json.loads(lines[-1]) if lines else {"error": "export", "message": result.stderr.strip()[-1500:]}
        if "error" in answer:
            key = {"params": "model.mxnet.params", "symbol": "model.mxnet.symbol"}.get(answer["error"], "model.mxnet")
            raise ConfigError([Problem(str(item.path), key, answer["message"])])
        session = ort.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
        x, expected = np.load(scratch / "x.npy"), np.load(scratch / "y.npy")
        got = session.run(None, {answer["input_name"]: x})[0]
        difference = float(np.abs(got - expected).max())
        scale = max(1.0, float(np.abs(expected).max()))
        if not difference <= tolerance * scale:
            raise ConvertError(f"ONNX Runtime and MXNet disagree: largest difference {difference:.3g} "
                               f"(tolerance {tolerance:g} x {scale:.3g}); {model.artifact} was not written")
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.replace(out)
    # model.artifact already names the file just written: only the format changes.
    item.path.write_text(rewrite_value(item.path.read_text(), ("model", "format"), "onnx")[0])
    load(item.path)  # the converted config is valid and servable
    return Converted(out, difference, scale)
