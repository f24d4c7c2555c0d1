"""Shared fixtures: one session-scoped synth of every example model (plus variants), real photos."""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from tests import ROOT

# The pinned Node 22 runs jsii, as under make (Node 20 is end-of-life and prints a banner).
os.environ["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ['PATH']}"
# Rehearsals remember (crossover.rehearsal): never into the checkout's own .cache/rehearsal during tests.
os.environ["CROSSOVER_REHEARSAL_STATE"] = tempfile.mkdtemp(prefix="crossover-rehearsals-")

DATA = Path(__file__).parent / "data"
EXAMPLES = sorted((ROOT / "models").glob("*.yaml"))


# The longest files (each whole on one worker: make test runs xdist with --dist loadfile). Run first, they finish
# while the other worker works through the rest; xdist's own order (most tests first) left the four long
# rehearsals of test_rehearsal.py for last, the run's tail on two workers.
SLOWEST = ("test_rehearsal.py", "test_rehearsal_moves.py", "test_package.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The SLOWEST files, then the others by how many tests they hold (xdist's order: make test passes
    --no-loadscope-reorder so that it keeps this one)."""
    counts = collections.Counter(item.path for item in items)
    items.sort(key=lambda item: (SLOWEST.index(item.path.name) if item.path.name in SLOWEST else len(SLOWEST),
                                 -counts[item.path]))


@dataclass
class Synth:
    outdir: Path
    templates: dict[str, Template]  # by stack name
    raw: dict[str, dict]  # by stack name, the template as JSON


def write_config(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def variant(example: Path, folder: Path, name: str, **replace: str) -> Path:
    """A copy of an example config under another name, with whole top-level lines replaced."""
    lines = []
    for line in example.read_text().splitlines():
        key = line.split(":", 1)[0]
        if key == "name":
            line = f"name: {name}"
        elif key in replace:
            line = f"{key}: {replace.pop(key)}"
        elif key == "  artifact" and "../build" in line:
            line = f"  artifact: {(example.parent / line.split(':', 1)[1].split('#')[0].strip()).resolve()}"
        lines.append(line)
    lines += [f"{k}: {v}" for k, v in replace.items()]
    return write_config(folder, name, "\n".join(lines) + "\n")


BACKENDS = ("lambda", "gpu", "eia", "inferentia", "cpu", "lambda-managed")
BUNDLE_INPUTS = "crossover-bundle-inputs"
PUBLIC = ("{certificate_arn: 'arn:aws:acm:us-east-1:123456789012:certificate/"
          "0b7d8c1e-1111-2222-3333-444455556666'}")


def stack_of(example: str, backend: str, service: str = "realtime") -> str:
    """The stack of an example model moved to ``backend`` (and ``service``) in the session synth."""
    if service == "pipeline":
        return f"ModelStack-{example}-pipe-{backend}"
    return f"ModelStack-{example}" if backend == "lambda" else f"ModelStack-{example}-{backend}"


def resources_of(template: dict[str, Any], backend: str) -> dict[str, Any]:
    """The resources of ``backend``'s own construct, by their logical ids (``ModelGpu...``; ``ModelLambda...`` but
    not ``ModelLambdaManaged...``)."""
    from crossover.backends import BACKEND_IDS

    id = BACKEND_IDS[backend]
    longer = [other for other in BACKEND_IDS.values() if other != id and other.startswith(id)]
    return {k: v for k, v in template["Resources"].items()
            if k.startswith("Model" + id) and not any(k.startswith("Model" + other) for other in longer)}


CANARY_PERCENT = 10


def canary_of(source: str, target: str) -> str:
    """The stack of resnet152 during a canary from ``source`` to ``target`` in the session synth."""
    return f"ModelStack-resnet152-{target}-from-{source}"


@pytest.fixture(scope="session")
def variants_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every example on every backend (the examples themselves are on lambda), plus public endpoints."""
    folder = tmp_path_factory.mktemp("models")
    for example in EXAMPLES:
        text = example.read_text().replace("../build/", f"{ROOT}/build/")
        (folder / example.name).write_text(text)
        name = next(line.split()[1] for line in text.splitlines() if line.startswith("name:"))
        for backend in BACKENDS[1:]:
            variant(folder / example.name, folder, f"{name}-{backend}", backend=backend)
    for backend in BACKENDS:
        variant(ROOT / "models" / "resnet152.yaml", folder, f"resnet152-pipe-{backend}", backend=backend,
                service="pipeline", scaling="{min: 0, max: 6}", inputs="{s3: [my-images]}",
                rollout="{lambda_traffic: linear-10-percent-every-1-minute, monitor_minutes: 5}")
    # The bundled example as a pipeline with declared inputs: tests/test_lambda_bundle.py runs its function.
    variant(folder / "efficientnet_lite0.yaml", folder, "efficientnet-lite0-pipe", service="pipeline",
            inputs=f"{{s3: [{BUNDLE_INPUTS}]}}")
    for source in BACKENDS:  # every canary: resnet152 moving from `source` to each other backend
        for target in BACKENDS:
            if target != source:
                variant(ROOT / "models" / "resnet152.yaml", folder, canary_of(source, target).removeprefix(
                    "ModelStack-"), backend=target, canary=f"{{from: {source}, percent: {CANARY_PERCENT}}}")
    variant(ROOT / "models" / "resnet152.yaml", folder, "resnet152-warm",
            **{"lambda": "{memory_mib: 3008, reserved_concurrency: 100, provisioned_concurrency: 5, "
                         "provisioned_concurrency_max: 20}"})
    variant(ROOT / "models" / "resnet152.yaml", folder, "resnet152-public", endpoint=PUBLIC)
    variant(ROOT / "models" / "resnet152.yaml", folder, "resnet152-gpu-public", endpoint=PUBLIC, backend="gpu")
    return folder


@pytest.fixture(scope="session")
def synth(variants_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    from crossover.app import build, new_app
    from crossover.config import load_all, model_files

    outdir = tmp_path_factory.mktemp("cdk.out")
    app = new_app(outdir=str(outdir), validation=True)  # CDK's own template validation too, once, over all
    stacks = build(app, load_all(model_files(variants_dir)))
    assembly = app.synth()
    templates = {name: Template.from_stack(stack) for name, stack in stacks.items()}
    raw = {s.stack_name: s.template for s in assembly.stacks}
    return Synth(outdir=outdir, templates=templates, raw=raw)


CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}


@pytest.fixture(scope="session")
def lite0_spec():  # type: ignore[no-untyped-def]
    from crossover_serving.spec import load

    return load(ROOT / "models" / "efficientnet_lite0.yaml")


@pytest.fixture(scope="session")
def lite0(lite0_spec):  # type: ignore[no-untyped-def]
    from crossover_serving.model import Model

    return Model(lite0_spec)


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The real photos, plus JPEG renderings: a 1024x768 and a 4000x3000 (upscaled) chelsea."""
    import io

    from PIL import Image

    out = {name: (DATA / f"{name}.png").read_bytes() for name in ("chelsea", "coffee")}
    cat = Image.open(DATA / "chelsea.png").convert("RGB")
    for name, size in (("chelsea_1024", (1024, 768)), ("chelsea_4000", (4000, 3000))):
        buffer = io.BytesIO()
        cat.resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        out[name] = buffer.getvalue()
    return out


@pytest.fixture(scope="session")
def aws() -> Iterator[str]:
    """A local AWS emulator (moto server) on loopback; boto3 clients in this process talk to it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    # `localhost`, not 127.0.0.1: moto serves path-style S3 URLs for that host name.
    endpoint = f"http://localhost:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
