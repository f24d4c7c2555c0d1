"""MXNet models in: converted with MXNet's own exporter, checked against MXNet, served by crossover_serving/.

Uses the isolated .venv-mxnet that `crossover convert` builds (cached in the checkout between runs).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from crossover.cli import main
from crossover.config import load
from crossover.convert import environment
from crossover_serving.model import Model
from crossover_serving.spec import Spec
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
ZOO = {"resnet152_v1": "resnet152-v1", "alexnet": "alexnet", "mobilenet1.0": "mobilenet1-0"}  # zoo -> config


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mxnet")
    python = environment(Console(stderr=True))
    subprocess.run([str(python), str(ROOT / "tests" / "mxnet_zoo.py"), str(folder), *ZOO], check=True,
                   capture_output=True)
    return folder


def config(folder: Path, name: str, symbol: str, params: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"# {name}: trained with MXNet; crossover convert turns it into ONNX\n"
                    f"name: {name}\nbackend: eia            # the seed's deployment\n"
                    "model:\n  format: mxnet   # becomes onnx\n"
                    f"  artifact: onnx/{name}.onnx\n  mxnet: {{symbol: {symbol}, params: {params}}}\n")
    return path


@pytest.mark.parametrize("zoo", ZOO)
def test_zoo_models_convert_match_mxnet_and_serve(exported: Path, zoo: str, photos: dict[str, bytes],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = config(exported, ZOO[zoo], f"{zoo}-symbol.json", f"{zoo}-0000.params")
    before = path.read_text()
    assert main(["convert", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MXNet and ONNX Runtime agree within" in out
    # THEN only the format value changed, comments kept, and the config serves the converted model
    assert path.read_text() == before.replace("format: mxnet", "format: onnx")
    item = load(path)
    model = Model(Spec.from_mapping(item.config.serving_spec(str(item.artifact_path))))
    top = model.predict(photos["chelsea"])
    assert len(top) == 5 and all(0 <= t["score"] <= 1 for t in top)


@pytest.mark.parametrize(("symbol", "params", "expected"), [
    ("mobilenet1.0-symbol.json", "corrupt-0000.params", "model.mxnet.params: cannot read the params file"),
    ("resnet152_v1-symbol.json", "mobilenet1.0-0000.params", "model.mxnet: the params file lacks"),
    ("unsupported-symbol.json", "unsupported-0000.params", "No conversion function registered for op type khatri_rao"),
])
def test_fails_clearly_and_leaves_the_config(exported: Path, symbol: str, params: str, expected: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = config(exported, "broken", symbol, params)
    before = path.read_bytes()
    assert main(["convert", str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err and "is unchanged" in err and "Traceback" not in err, err
    assert path.read_bytes() == before


def test_unconverted_models_cannot_be_synthesized_or_served(exported: Path) -> None:
    from crossover.config import ConfigError

    path = config(exported, "pending", "mobilenet1.0-symbol.json", "mobilenet1.0-0000.params")
    with pytest.raises(ConfigError, match="got mxnet, which is served as ONNX: run `crossover convert"):
        load(path)
