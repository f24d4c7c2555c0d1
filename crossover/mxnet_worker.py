"""Runs inside .venv-mxnet (MXNet 1.9.1, numpy < 1.24): export one MXNet model to ONNX and record
MXNet's own answer to a fixed input, for the kit to compare against ONNX Runtime.

Imports nothing from crossover (that environment does not have it). Prints one JSON line: the
result, or {"error": kind, "message": ...} with exit status 2.
"""

import argparse
import json
import sys
from typing import NoReturn


def fail(kind: str, message: str) -> NoReturn:
    print(json.dumps({"error": kind, "message": message}))
    sys.exit(2)


def reason(error: Exception) -> str:
    """MXNet's errors carry a C++ stack; its last line says what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--symbol", "--params", "--out", "--input", "--output", "--input-name"):
        parser.add_argument(name, required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()

    import mxnet as mx
    import numpy as np
    import onnx
    from mxnet import onnx as mx2onnx

    try:
        symbol = mx.sym.load(args.symbol)
    except Exception as e:  # MXNet raises MXNetError or ValueError for an unreadable symbol file
        fail("symbol", f"cannot read the symbol file: {reason(e)}")
    try:
        saved = mx.nd.load(args.params)
    except Exception as e:
        fail("params", f"cannot read the params file: {reason(e)}")
    if isinstance(saved, list):  # unnamed arrays: an empty file loads as [], anything else is not a checkpoint
        if saved:
            fail("params", "expected a checkpoint of named arrays (arg:..., aux:...); got unnamed arrays")
        saved = {}
    arg_params = {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith("arg:")}
    aux_params = {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith("aux:")}
    missing = sorted(set(symbol.list_arguments()) - set(arg_params) - {args.input_name}) + sorted(
        set(symbol.list_auxiliary_states()) - set(aux_params))
    if missing:
        fail("mismatch", f"the params file lacks {len(missing)} weights the symbol needs, e.g. {missing[:3]}")

    shape = (1, 3, args.size, args.size)
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    try:
        module = mx.mod.Module(symbol=symbol, data_names=[args.input_name], label_names=None, context=mx.cpu())
        module.bind(for_training=False, data_shapes=[(args.input_name, shape)])
        module.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)
        module.forward(mx.io.DataBatch([mx.nd.array(x)]))
        y = module.get_outputs()[0].asnumpy()
    except Exception as e:  # shape mismatches surface here as MXNetError
        fail("mismatch", f"MXNet cannot run the symbol with these params: {reason(e)}")
    try:
        mx2onnx.export_model(args.symbol, args.params, [shape], [np.float32], args.out, dynamic=True,
                             dynamic_input_shapes=[(None, 3, args.size, args.size)])
    except AttributeError as e:  # mx2onnx reports an operator it cannot translate this way
        fail("operator", reason(e))
    except Exception as e:
        fail("export", f"MXNet's ONNX exporter failed: {reason(e)}")
    model = onnx.load(args.out)
    # Old exporters list the weights as graph inputs too, which blocks constant folding in ONNX Runtime.
    weights = {init.name for init in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, args.out)
    np.save(args.input, x)
    np.save(args.output, y)
    print(json.dumps({"onnx": args.out, "input_name": kept[0].name, "mxnet": mx.__version__}))


if __name__ == "__main__":
    main()
