"""Instances boot from what the deploy published: the runtime bundle a fleet names installs into a fresh
environment with no package index and no network, and the serving bundle then answers /ready and predicts."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests import ROOT
from tests.conftest import CAT_CLASSES, Synth, stack_of
from tests.test_locks import normal, pins

# Any connection pip or the server tried to open beyond loopback would go to this closed port and fail.
UNREACHABLE = "http://127.0.0.1:9"
OFFLINE = {"http_proxy": UNREACHABLE, "https_proxy": UNREACHABLE, "HTTP_PROXY": UNREACHABLE,
           "HTTPS_PROXY": UNREACHABLE, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1", "PIP_CONFIG_FILE": "/dev/null"}


def user_data(template: dict) -> str:
    (launch,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::EC2::LaunchTemplate"]
    parts = launch["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "<token>" for p in parts)


def staged(synth: Synth, stack: str, script: str, variable: str) -> Path:
    """The folder cdk deploy zips and uploads as the object that ``export <variable>=s3://...`` names."""
    key = re.search(rf"^export {variable}=s3://<token>/(\w+)\.zip$", script, re.M)
    assert key, f"the user data exports no {variable}"
    manifest = json.loads((synth.outdir / f"{stack}.assets.json").read_text())
    return synth.outdir / manifest["files"][key[1]]["source"]["path"]  # absolute when staged by an earlier app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_fresh_environment_from_the_published_bundles_serves_offline(synth: Synth, tmp_path: Path,
                                                                       photos: dict[str, bytes]) -> None:
    stack = stack_of("efficientnet-lite0", "cpu")
    script = user_data(synth.raw[stack])
    runtime = staged(synth, stack, script, "CROSSOVER_RUNTIME_BUNDLE")
    serving = staged(synth, stack, script, "CROSSOVER_BUNDLE")
    lock = pins(runtime / "requirements.txt")
    assert lock == pins(ROOT / "crossover_serving" / "locks" / "instance-x86_64.txt")  # c7i: x86_64, CPU flavour
    assert {p.suffix for p in runtime.iterdir()} == {".whl", ".txt", ".sh", ""}  # wheels, the lock, install.sh, digest

    # What bootstrap.sh does on a stock image, with the network unreachable: a Python 3.11 environment
    # (Amazon Linux 2023's), then the bundle's own install.sh.
    python = shutil.which("python3.11")
    assert python, "python3.11 (the instances' Python) must be on PATH"
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **OFFLINE}
    install = subprocess.run(["bash", str(runtime / "install.sh"), str(venv)], env=env, capture_output=True,
                             text=True)
    assert install.returncode == 0, install.stderr
    digest = re.search(r"^export CROSSOVER_RUNTIME_DIGEST=(\w+)$", script, re.M)
    assert digest and (venv / "crossover-runtime").read_text().strip() == digest[1]  # a baked image's stamp too
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all"], env=env,
                            capture_output=True, text=True, check=True).stdout
    installed = {normal(n): v for n, v in (line.split("==") for line in frozen.splitlines())}
    for seeded in ("pip", "setuptools"):  # what python -m venv puts in every environment
        installed.pop(seeded, None)
    assert installed == {normal(n): v for n, v in lock.items()}  # the lock, all of it, nothing else

    # The serving bundle where bootstrap.sh unpacks it, and the spec the fleet's user data carries.
    app = tmp_path / "app"
    app.mkdir()
    (app / "crossover_serving").symlink_to(serving, target_is_directory=True)
    spec = json.loads(shlex.split(re.search(r"^export CROSSOVER_SPEC_JSON=(.*)$", script, re.M)[1])[0])
    assert spec["artifact"] == "/opt/crossover/model"
    spec["artifact"] = str(ROOT / "build" / "models" / "efficientnet_lite0.onnx")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    port = free_port()
    server = subprocess.Popen([str(venv / "bin" / "python"), "-m", "crossover_serving.server", "--config",
                               str(tmp_path / "spec.json"), "--port", str(port)], cwd=app, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as ready:
                    assert json.load(ready) == {"status": "ready", "model": spec["name"]}
                    break
            except OSError:
                time.sleep(0.2)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=photos["chelsea"],
                                         headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.load(answer)["top"][0]["label"] in CAT_CLASSES
    finally:
        server.terminate()
        server.wait(timeout=30)
