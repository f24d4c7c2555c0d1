"""Run with .venv-mxnet's python: export Gluon model-zoo networks, randomly initialised (no download).

    python tests/mxnet_zoo.py OUT_DIR resnet152_v1 alexnet mobilenet1_0
writes OUT_DIR/<name>-symbol.json and OUT_DIR/<name>-0000.params for each, plus two broken cases:
one with an operator MXNet's ONNX exporter cannot translate, and corrupt params.
"""

import sys
from pathlib import Path

import mxnet as mx
from mxnet.gluon.model_zoo import vision


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(0)
    for name in sys.argv[2:]:
        net = vision.get_model(name, pretrained=False)
        net.initialize(mx.init.Xavier())
        net.hybridize()
        net(mx.nd.zeros((1, 3, 224, 224)))
        net.export(str(out / name))
    data = mx.sym.var("data")
    unsupported = mx.sym.khatri_rao(mx.sym.flatten(data), mx.sym.flatten(data))
    unsupported.save(str(out / "unsupported-symbol.json"))
    mx.nd.save(str(out / "unsupported-0000.params"), {})
    (out / "corrupt-0000.params").write_bytes(b"\x00not an MXNet params file" * 100)


if __name__ == "__main__":
    main()
