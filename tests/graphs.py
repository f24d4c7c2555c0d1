"""Small ONNX graphs built with the onnx package (no torch), for structural and batching tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(path: Path, *, classes: int = 10, batch: int | str = "batch", size: int = 32,
                    seed: int = 0, heavy: int = 0) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Gemm: logits for ``classes`` classes.

    ``heavy`` adds that many 64-channel 3x3 convolutions to make inference measurably slow.
    """
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.5, (classes, 16)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"])]
    last, channels = "r1", 16
    for i in range(heavy):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.05, (64, channels, 3, 3)).astype(np.float32), f"h{i}"))
        nodes += [helper.make_node("Conv", [last, f"h{i}"], [f"hc{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"hc{i}"], [f"hr{i}"])]
        last, channels = f"hr{i}", 64
    if channels != 16:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (16, channels, 1, 1)).astype(np.float32), "back"))
        nodes.append(helper.make_node("Conv", [last, "back"], ["back16"]))
        last = "back16"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           [batch, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
