"""The prediction core on a real pretrained model and real photos, and on generated graphs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossover_serving.errors import InputError, ModelLoadError
from crossover_serving.images import Preprocessor
from crossover_serving.model import Model, available_cpus
from crossover_serving.spec import InputSpec, Spec
from tests.conftest import CAT_CLASSES, ROOT
from tests.graphs import tiny_classifier


def test_chelsea_is_a_cat_and_coffee_is_espresso(lite0: Model, photos: dict[str, bytes]) -> None:
    assert lite0.predict(photos["chelsea"])[0]["label"] in CAT_CLASSES
    top = lite0.predict(photos["coffee"])
    assert top[0]["label"] == "espresso" and top[0]["score"] > 0.9
    assert len(top) == 5 and top == sorted(top, key=lambda t: -t["score"])


def test_jpeg_draft_decoding_matches_full_decoding(lite0: Model, photos: dict[str, bytes]) -> None:
    # GIVEN a 4000x3000 JPEG WHEN decoded in draft mode THEN the tensor is close to a full decode
    spec = lite0.spec.input
    draft = lite0.preprocess(photos["chelsea_4000"])
    full_image = Image.open(io.BytesIO(photos["chelsea_4000"])).convert("RGB")
    buffer = io.BytesIO()
    full_image.save(buffer, "PNG")  # PNG is never drafted: the reference is a full decode
    full = Preprocessor(spec)(buffer.getvalue())
    assert draft.shape == full.shape == (3, 224, 224)
    assert float(np.abs(draft - full).mean()) < 0.05
    assert lite0.predict(photos["chelsea_4000"])[0]["label"] in CAT_CLASSES


def test_preprocessing_normalises_as_configured() -> None:
    spec = InputSpec(size=4, resize=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), layout="nhwc")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 255)).save(buffer, "PNG")
    tensor = Preprocessor(spec)(buffer.getvalue())
    assert tensor.shape == (4, 4, 3)
    np.testing.assert_allclose(tensor[0, 0], [1.0, -1.0, 1.0], atol=1e-5)


def test_batches_equal_single_inference(tmp_path: Path, lite0: Model, photos: dict[str, bytes]) -> None:
    tensors = [lite0.preprocess(photos[n]) for n in ("chelsea", "coffee", "chelsea_1024")]
    batched = lite0.predict_batch(tensors)
    single = [lite0.predict_batch([t])[0] for t in tensors]
    for b, s in zip(batched, single, strict=True):
        assert [x["label"] for x in b] == [x["label"] for x in s]
        np.testing.assert_allclose([x["score"] for x in b], [x["score"] for x in s], atol=1e-4)


def test_fixed_batch_graph_runs_one_image_at_a_time(tmp_path: Path) -> None:
    path = tiny_classifier(tmp_path / "fixed.onnx", batch=1)
    model = Model(Spec(name="fixed", artifact=str(path), input=InputSpec(size=32, resize=32), max_batch=8))
    assert (model.batchable, model.max_batch) == (False, 1)
    tensors = [np.full((3, 32, 32), v, np.float32) for v in (0.1, 0.5, 0.9)]
    assert model.predict_batch(tensors) == [model.predict_batch([t])[0] for t in tensors]


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    path = tiny_classifier(tmp_path / "m.onnx")
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    Model(Spec(name="m", artifact=str(path), sha256=good, input=InputSpec(size=32, resize=32)))
    with pytest.raises(ModelLoadError, match=r"has sha256 .* expected 0{64}; refusing to load it"):
        Model(Spec(name="m", artifact=str(path), sha256="0" * 64))


def test_unreadable_or_malformed_artifacts_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read the model artifact"):
        Model(Spec(name="m", artifact=str(tmp_path / "missing.onnx")))
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match=r"cannot load .* as ONNX"):
        Model(Spec(name="m", artifact=str(tmp_path / "junk.onnx")))


@pytest.mark.parametrize(("memory", "cpus"), [("128", 1), ("1769", 1), ("3008", 1), ("3538", 2),
                                               ("10240", 5), ("12000", 6)])
def test_lambda_threads_follow_memory(monkeypatch: pytest.MonkeyPatch, memory: str, cpus: int) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory)
    assert available_cpus() == cpus


def test_instance_threads_follow_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    assert available_cpus() == len(__import__("os").sched_getaffinity(0))


def test_spec_reads_the_yaml_config_with_its_backend_batch(tmp_path: Path) -> None:
    from crossover_serving.spec import load

    text = (ROOT / "models" / "resnet152.yaml").read_text().replace("backend: lambda", "backend: gpu")
    (tmp_path / "r.yaml").write_text(text)
    spec = load(tmp_path / "r.yaml")
    assert (spec.name, spec.max_batch, spec.artifact) == ("resnet152", 8, "s3://my-models/resnet152/model.onnx")


@pytest.mark.parametrize(("body", "code"), [
    (b"", "empty"), (b"\x00\x01garbage" * 50, "unsupported_format"), (b"hello, I am text", "unsupported_format"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "unsupported_format"),
    (b"%PDF-1.4\n1 0 obj << >> endobj\n", "unsupported_format"),
])
def test_decoder_refuses_what_is_not_an_allowed_image(body: bytes, code: str) -> None:
    with pytest.raises(InputError) as caught:
        Preprocessor(InputSpec())(body)
    assert caught.value.code == code and caught.value.status in (400, 415)


def test_neuron_format_without_the_neuron_sdk_fails_clearly(tmp_path: Path) -> None:
    # Here (no torch-neuronx) a Neuron artifact cannot run; the error says what the instance needs.
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 not really torchscript")
    with pytest.raises(ModelLoadError, match="format neuron needs torch and torch-neuronx"):
        Model(Spec(name="n", artifact=str(tmp_path / "model.pt"), format="neuron"))
