"""Load the model once and answer batches of preprocessed tensors with top-k labels."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from crossover_serving.budget import Budget, available_memory, processes
from crossover_serving.errors import ModelLoadError
from crossover_serving.images import Preprocessor
from crossover_serving.names import ENVIRONMENT_VCPUS, LAMBDA_MIB_PER_VCPU
from crossover_serving.spec import Spec

DECODE_SHARE = 0.75  # of the memory left after the model loads, for one image at a time


def available_cpus() -> int:
    """The vCPUs this process may really use: on Lambda Managed Instances its share of its environment's, on
    Lambda the memory-derived share, else the CPU affinity."""
    environment = os.environ.get(ENVIRONMENT_VCPUS, "")
    if environment.isdigit():  # its processes each take a share (more threads than vCPUs only contend)
        return max(1, int(environment) // processes())
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if memory:
        return max(1, min(6, int(memory) // LAMBDA_MIB_PER_VCPU))
    return len(os.sched_getaffinity(0))


def read_artifact(uri: str, sha256: str | None = None) -> bytes:
    """The model file's bytes from a local path or ``s3://bucket/key``, refused if the checksum differs."""
    try:
        if uri.startswith("s3://"):
            import boto3  # only needed for S3 artifacts; boto3 is in the Lambda runtime and instance image

            bucket, key = uri.removeprefix("s3://").split("/", 1)
            data: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        else:
            data = Path(uri).read_bytes()
    except Exception as e:  # any failure to fetch is the same operator problem: say where and why
        raise ModelLoadError(f"cannot read the model artifact {uri}: {e}") from e
    if sha256 is not None and (actual := hashlib.sha256(data).hexdigest()) != sha256:
        raise ModelLoadError(f"model artifact {uri} has sha256 {actual}, expected {sha256}; refusing to load it")
    return data


def read_labels(labels: str) -> list[str]:
    if labels == "imagenet":
        return resources.files("crossover_serving").joinpath("labels/imagenet.txt").read_text().splitlines()
    return Path(labels).read_text().splitlines()


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads would burn the cores that image decoding needs in the same process.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


def providers() -> list[str]:
    """CUDA when this ONNX Runtime build and machine have it, else CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class Model:
    """One loaded model: ``predict_batch(tensors)`` returns, per tensor, ``[{"label", "score"}, ...]``.

    ``format: onnx`` runs on ONNX Runtime (CUDA when present); ``format: neuron`` runs a
    Neuron-compiled TorchScript module on Inferentia's NeuronCores.
    """

    def __init__(self, spec: Spec, *, threads: int | None = None) -> None:
        self.spec = spec
        self.labels = read_labels(spec.labels)
        self.preprocess = Preprocessor(spec.input)
        data = read_artifact(spec.artifact, spec.sha256)
        if spec.format == "neuron":
            self._infer: Callable[[np.ndarray], np.ndarray] = _neuron(data)
            self.batchable = False  # compiled for one input shape
        else:
            self._infer, self.batchable = _onnx(spec.artifact, data, threads or available_cpus())
        self.max_batch = spec.max_batch if self.batchable else 1
        # Measured once the model is in memory: what is left is what decoding may use.
        self.decode_budget = Budget(available_memory(DECODE_SHARE), "decoding this image")

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.batchable:
            return self._infer(batch)
        return np.concatenate([self._infer(one[None]) for one in batch])

    def predict_batch(self, tensors: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        batch = tensors[0][None] if len(tensors) == 1 else np.stack(tensors)  # one image: a view, not a copy
        return [self._top(row) for row in self.run(batch).reshape(len(tensors), -1)]

    def _top(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        """The top-k labels of one image: softmax of its logits (outputs that already are probabilities pass
        through), in as few numpy calls as it takes (each costs microseconds on caches the model just swept)."""
        scores = outputs
        if not (outputs.min() >= 0 and abs(float(outputs.sum()) - 1) <= 1e-3):
            scores = np.exp(outputs - outputs.max())
            scores /= scores.sum()
        picks = np.argsort(-scores, kind="stable")[: self.spec.top_k].tolist()
        return [{"label": self._label(i), "score": round(score, 6)} for i, score in zip(picks, scores[picks].tolist(),
                                                                                          strict=True)]

    def predict(self, image: bytes) -> list[dict[str, Any]]:
        """One image, decoded only if it fits the decode budget (Lambda and the worker decode one at a time)."""
        opened = self.preprocess.open(image)
        self.decode_budget.check(opened.decode_bytes)
        return self.predict_batch([self.preprocess.decode(opened)])[0]

    def warm_up(self) -> None:
        size = self.spec.input.size
        shape = (3, size, size) if self.spec.input.layout == "nchw" else (size, size, 3)
        self.predict_batch([np.zeros(shape, np.float32)])

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


def _onnx(artifact: str, data: bytes, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    """An ONNX Runtime session as a function, and whether it takes a batch dimension larger than 1."""
    try:
        session = ort.InferenceSession(data, sess_options=session_options(threads), providers=providers())
    except Exception as e:  # ORT raises its own exception types for a malformed graph
        raise ModelLoadError(f"cannot load {artifact} as ONNX: {e}") from e
    first = session.get_inputs()[0]
    # A graph exported with a fixed batch of 1 is run one image at a time.
    batchable = not isinstance(first.shape[0], int) or first.shape[0] != 1
    return (lambda batch: np.asarray(session.run(None, {first.name: batch})[0])), batchable


def _neuron(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A module compiled with torch_neuronx.trace and saved with torch.jit.save."""
    try:
        import torch
        import torch_neuronx  # noqa: F401 - registers the Neuron operators the compiled module calls
    except ImportError as e:
        raise ModelLoadError("format neuron needs torch and torch-neuronx, as in the Neuron DLAMI's PyTorch "
                             f"environment: {e}") from e
    try:
        module = torch.jit.load(io.BytesIO(data))
    except Exception as e:  # torch raises RuntimeError subclasses for a file that is not TorchScript
        raise ModelLoadError(f"cannot load the Neuron artifact as TorchScript: {e}") from e

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(module(torch.from_numpy(batch)).numpy())

    return infer
