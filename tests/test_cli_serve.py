"""`crossover serve` runs the real server in its own process; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CAT_CLASSES, DATA, ROOT

pytestmark = pytest.mark.slow


def test_serve_answers_on_loopback_and_stops_on_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-m", "crossover.cli", "serve", "models/efficientnet_lite0.yaml",
                                "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:(\d+)", process.stdout.readline())
        assert match, "serve did not print its address"
        base = f"http://127.0.0.1:{match.group(1)}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        request = urllib.request.Request(base + "/predict", data=(DATA / "chelsea.png").read_bytes(),
                                         headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["top"][0]["label"] in CAT_CLASSES
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_refuses_an_s3_artifact_without_a_local_copy(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "crossover.cli", "serve", str(ROOT / "models" / "resnet152.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "model.artifact is in S3 (s3://my-models/resnet152/model.onnx); download it and pass --artifact FILE" \
        in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr
