"""Torchvision-shaped MobileNetV2 and ResNet-50 as ONNX graphs with random weights (no torch).

Same layer shapes and multiply-adds as torchvision's models (batch norms folded into the
convolutions, as an inference export would), so timings stand in for the real networks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1,
             act: str | None = "relu") -> str:
        w, b, y = self.name("w"), self.name("b"), self.name("c")
        fan_in = cin // group * k * k
        weight = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k)).astype(np.float32)
        self.inits += [numpy_helper.from_array(weight, w), numpy_helper.from_array(np.zeros(cout, np.float32), b)]
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[k // 2] * 4, group=group))
        if act is None:
            return y
        out = self.name("a")
        if act == "relu6":
            lo, hi = self.name("lo"), self.name("hi")
            self.inits += [numpy_helper.from_array(np.array(0, np.float32), lo),
                           numpy_helper.from_array(np.array(6, np.float32), hi)]
            self.nodes.append(helper.make_node("Clip", [y, lo, hi], [out]))
        else:
            self.nodes.append(helper.make_node("Relu", [y], [out]))
        return out

    def add(self, a: str, b: str, relu: bool = False) -> str:
        y = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        if not relu:
            return y
        out = self.name("a")
        self.nodes.append(helper.make_node("Relu", [y], [out]))
        return out

    def head(self, x: str, channels: int, classes: int = 1000) -> None:
        self.nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"]),
                       helper.make_node("Flatten", ["pool"], ["flat"])]
        w = self.rng.normal(0, 0.01, (classes, channels)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, "fc_w"), numpy_helper.from_array(np.zeros(classes, np.float32),
                                                                                     "fc_b")]
        self.nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))

    def save(self, path: Path, name: str) -> Path:
        graph = helper.make_graph(self.nodes, name,
                                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, path)
        return path


def mobilenet_v2(path: Path) -> Path:
    g = _Builder()
    x, cin = g.conv("input", 3, 32, 3, 2, act="relu6"), 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:
        for i in range(n):
            stride, hidden = (s if i == 0 else 1), cin * t
            y = g.conv(x, cin, hidden, 1, act="relu6") if t != 1 else x
            y = g.conv(y, hidden, hidden, 3, stride, group=hidden, act="relu6")
            y = g.conv(y, hidden, c, 1, act=None)
            x, cin = (g.add(x, y) if stride == 1 and cin == c else y), c
    x = g.conv(x, cin, 1280, 1, act="relu6")
    g.head(x, 1280)
    return g.save(path, "mobilenet_v2")


def resnet50(path: Path) -> Path:
    return resnet(path, (3, 4, 6, 3), "resnet50")


def resnet152(path: Path) -> Path:
    return resnet(path, (3, 8, 36, 3), "resnet152")


def resnet(path: Path, depths: tuple[int, int, int, int], name: str) -> Path:
    g = _Builder()
    x = g.conv("input", 3, 64, 7, 2)
    pooled = g.name("maxpool")
    g.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = pooled, 64
    for width, blocks, stride in zip((64, 128, 256, 512), depths, (1, 2, 2, 2), strict=True):
        for i in range(blocks):
            s = stride if i == 0 else 1
            y = g.conv(x, cin, width, 1)
            y = g.conv(y, width, width, 3, s)
            y = g.conv(y, width, width * 4, 1, act=None)
            shortcut = g.conv(x, cin, width * 4, 1, s, act=None) if i == 0 else x
            x, cin = g.add(y, shortcut, relu=True), width * 4
    g.head(x, 2048)
    return g.save(path, name)
