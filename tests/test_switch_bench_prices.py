"""`crossover switch`, `crossover bench` and `crossover prices refresh`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import boto3
import pytest
from botocore.stub import ANY, Stubber

from crossover.cli import main
from crossover.config import load
from crossover.cost import catalog as catalog_module
from crossover.cost import report
from crossover.cost.refresh import refresh
from tests.conftest import DATA, EXAMPLES, ROOT


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for example in EXAMPLES:
        shutil.copy(example, folder / example.name)
    (folder / "efficientnet_lite0.yaml").write_text(
        (folder / "efficientnet_lite0.yaml").read_text().replace("../build/", f"{ROOT}/build/"))
    return folder


def test_switch_changes_only_the_backend_value(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = models / "resnet152.yaml"
    before = path.read_text()
    assert main(["switch", "resnet152", "gpu", "--models", str(models)]) == 0
    after = path.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(True), after.splitlines(True), strict=True) if a != b]
    assert changed == [("backend: lambda            # lambda | gpu | eia | inferentia | cpu\n",
                        "backend: gpu            # lambda | gpu | eia | inferentia | cpu\n")]
    out = capsys.readouterr().out
    assert "backend lambda -> gpu" in out
    steps = [line.strip() for line in out.splitlines() if line.startswith("  - ")]
    assert steps[0].startswith("- creates gpu (GPU Auto Scaling group") and "lambda, which keeps every" in steps[0]
    assert steps[1] == "- waits until gpu is ready: scaling.min instances have signalled ready, each once the " \
                       "load balancer found it healthy"
    assert steps[2] == "- then moves the listener: every request to gpu"
    assert steps[3].startswith("- then removes lambda (Lambda function") and "no longer names it" in steps[3]
    # the network's NAT gateway is shared by the three models in the folder: $12.17 each (crossover cost's rows)
    assert ("monthly at 7,500,000 images (us-east-1 prices in USD, catalog of 2026-07-15 (the bundled catalog)): "
            "before $182.86; after $833.49") in out


def test_a_canary_is_written_promoted_and_aborted_with_its_plan(models: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = models / "resnet152.yaml"
    original = path.read_text()
    # GIVEN resnet152 on lambda WHEN a 10% canary to gpu starts THEN one line is added after backend
    assert main(["switch", "resnet152", "gpu", "--canary", "10", "--models", str(models)]) == 0
    added = [line for line in path.read_text().splitlines() if line not in original.splitlines()]
    assert added == ["backend: gpu            # lambda | gpu | eia | inferentia | cpu",
                     "canary: {from: lambda, percent: 10}   # crossover switch --promote | --abort"]
    out = capsys.readouterr().out
    assert "then splits the listener: 90% to lambda, 10% to gpu" in out and "keeps lambda exactly" in out
    # The month of the canary: both backends at their share, what the stack has once (the load balancer, the
    # network, its monitoring) counted once
    during = float(out.split("after $", 1)[1].split()[0].replace(",", ""))
    priced = {e.backend: e for e in report.build(load(path), catalog_module.load(), shared_by=3).estimates
              if e.configured}
    gpu, lam = priced["gpu"], priced["lambda"]
    once = sum(p.fixed for p in lam.items if p.shared)
    assert during == pytest.approx(gpu.monthly_usd(0.1 * 7.5e6) + lam.monthly_usd(0.9 * 7.5e6) - once, abs=0.01)
    # AND a second switch waits for this one to end
    assert main(["switch", "resnet152", "cpu", "--models", str(models)]) == 1
    assert "finish it first with crossover switch --promote or --abort" in capsys.readouterr().err
    # WHEN it is aborted THEN the file is as it was before
    assert main(["switch", "resnet152", "--abort", "--models", str(models)]) == 0
    assert path.read_text() == original
    assert "every request back to lambda" in capsys.readouterr().out
    # WHEN another canary is promoted THEN only the backend line differs from the original
    main(["switch", "resnet152", "cpu", "--canary", "25", "--models", str(models)])
    assert main(["switch", "resnet152", "--promote", "--models", str(models)]) == 0
    assert path.read_text() == original.replace("backend: lambda   ", "backend: cpu   ")
    assert "then removes lambda" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--promote"], "no canary is in progress"), (["--abort"], "no canary is in progress"),
    (["gpu", "--canary", "0"], "expected a whole percent from 1 to 99; got '0'"),
    (["gpu", "--canary", "100"], "expected a whole percent from 1 to 99"),
    (["gpu", "--promote"], "give a backend to move to"), ([], "give a backend to move to"),
])
def test_switch_refuses_what_is_not_a_move(models: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                           message: str) -> None:
    path = models / "resnet152.yaml"
    before = path.read_bytes()
    with contextlib.suppress(SystemExit):  # argparse's own refusals exit 2
        assert main(["switch", "resnet152", *args, "--models", str(models)]) != 0
    assert path.read_bytes() == before
    assert message in capsys.readouterr().err


def test_switch_to_a_retired_backend_needs_force_and_says_what_validate_would(
        models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = models / "resnet152.yaml"
    before = path.read_bytes()
    # GIVEN eia, which AWS no longer sells THEN the switch is refused and the file kept
    assert main(["switch", "resnet152", "eia", "--models", str(models)]) == 1
    assert path.read_bytes() == before
    assert "backend: eia is retired: AWS Elastic Inference is no longer available" in capsys.readouterr().err
    # WHEN forced THEN it switches, with validate's warning beside the cheaper monthly figure
    assert main(["switch", "resnet152", "eia", "--force", "--models", str(models)]) == 0
    captured = capsys.readouterr()
    assert "backend lambda -> eia" in captured.out and "before $182.86; after $382.83" in captured.out
    assert "warning: backend 'eia': AWS Elastic Inference closed to new customers" in captured.err
    # AND a move to inferentia without a Neuron artifact says where the model will run, and that it cannot
    # carry the volume within scaling.max on those CPUs
    assert main(["switch", "resnet152", "inferentia", "--force", "--models", str(models)]) == 0
    err = capsys.readouterr().err
    assert "the ONNX model runs on the instance's CPUs, not its NeuronCores" in err
    assert "at 7,500,000 images/month inferentia needs 13 instances; scaling.max is 6: raise scaling.max to 13" in err


def test_switch_keeps_quotes_and_finds_the_model_by_file_name(models: Path) -> None:
    path = models / "mobilenet_v2.yaml"
    path.write_text(path.read_text().replace("backend: lambda", "backend: 'lambda'"))
    assert main(["switch", "mobilenet_v2", "cpu", "--models", str(models)]) == 0
    assert "backend: 'cpu'\n" in path.read_text()


@pytest.mark.parametrize("backend", ["gpus", "x: y"])
def test_fails_when_target_backend_is_invalid_and_leaves_the_file(models: Path, backend: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = models / "resnet152.yaml"
    before = path.read_bytes()
    assert main(["switch", "resnet152", backend, "--models", str(models)]) == 1
    assert path.read_bytes() == before
    err = capsys.readouterr().err
    assert "is unchanged" in err and "backend:" in err and "Traceback" not in err


def test_fails_when_the_model_is_unknown(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["switch", "nope", "gpu", "--models", str(models)]) == 1
    assert "no model named 'nope'; known: efficientnet-lite0, mobilenet-v2, resnet152" in capsys.readouterr().err


def test_bench_writes_a_profile_that_cost_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "models" / "efficientnet_lite0.yaml")
    assert main(["bench", config, "--repeat", "3", "--profiles", str(tmp_path)]) == 0
    profile = json.loads((tmp_path / "efficientnet-lite0.json").read_text())
    assert profile["threads"] == 1 and profile["latency_ms"] > 0 and profile["images_per_second"] > 0
    assert "CPUs available" in profile["machine"]
    # AND a cold start's parts: importing the Lambda handler in a fresh interpreter, loading the model, its size
    model_file = ROOT / "build" / "models" / "efficientnet_lite0.onnx"
    assert 0 < profile["import_s"] < 30 and profile["load_s"] > 0
    assert profile["model_mb"] == round(model_file.stat().st_size / 1e6, 1)
    capsys.readouterr()
    assert main(["cost", config, "--json", "--profiles", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backends"]["lambda"]["performance"]["source"].startswith(f"bench on {profile['machine']}")
    assert data["backends"]["cpu"]["performance"]["source"].startswith("bench on")
    assert data["backends"]["gpu"]["performance"]["source"].startswith("estimate")
    cold = data["backends"]["lambda"]["cold_start"]
    assert cold["init_source"].startswith(f"bench on {profile['machine']}: imports and load")
    init_s = profile["import_s"] + profile["load_s"] + profile["model_mb"] / 85
    assert cold["init_ms"] == round(init_s * 1000)


def _stubbed_pricing(region: str = "us-east-1") -> tuple[object, Stubber]:
    template = json.loads((DATA / "pricing" / "get_products_c5.xlarge.json").read_text())["c5.xlarge"]
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    for i, instance_type in enumerate(catalog_module.load().ec2):
        product = template["PriceList"][0].replace("c5.xlarge", instance_type).replace(
            "0.1700000000", f"{0.5 + i / 100:.10f}")
        expected = {"ServiceCode": "AmazonEC2", "MaxResults": 10, "Filters": [
            {"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in {
                "instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux", "tenancy": "Shared",
                "preInstalledSw": "NA", "capacitystatus": "Used"}.items()]}
        stubber.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [product]}, expected)
    return client, stubber


def _stubbed_spot() -> tuple[object, Stubber]:
    """Spot price history answers of the documented shape: each zone's price in effect now, and an older,
    lower one for us-east-1c that is no longer in effect."""
    template = json.loads((DATA / "pricing" / "describe_spot_price_history_g4dn.xlarge.json").read_text())
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    for i, instance_type in enumerate(catalog_module.load().spot):
        history = [{**entry, "InstanceType": instance_type,
                    "SpotPrice": f"{float(entry['SpotPrice']) + i / 1000:.6f}"}
                   for entry in template["g4dn.xlarge"]["SpotPriceHistory"]]
        stubber.add_response("describe_spot_price_history", {"SpotPriceHistory": history, "NextToken": ""}, {
            "InstanceTypes": [instance_type], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY,
            "EndTime": ANY})
    return client, stubber


def test_prices_refresh_writes_a_new_dated_catalog_from_the_price_list(tmp_path: Path) -> None:
    # GIVEN Price List and spot price history responses of the documented shape WHEN refreshed THEN a valid
    # catalog with those prices
    bundled = hashlib.sha256(catalog_module.BUNDLED.read_bytes()).hexdigest()
    client, stubber = _stubbed_pricing()
    ec2, spot_stubber = _stubbed_spot()
    with stubber, spot_stubber:
        out = refresh(client, tmp_path / "prices.yaml", ec2=ec2)
    stubber.assert_no_pending_responses()
    spot_stubber.assert_no_pending_responses()
    fresh = catalog_module.load(out)
    first = next(iter(fresh.ec2))
    assert fresh.ec2[first].usd == 0.5 and fresh.ec2[first].source == "pricelist"
    # what the group pays across its two zones: the mean of the two cheapest prices in effect, us-east-1b's 0.3196
    # and 1a's 0.3312 (not 1c's older 0.3015)
    first_spot = next(iter(fresh.spot))
    assert fresh.spot[first_spot].usd == pytest.approx((0.3196 + 0.3312) / 2)
    assert fresh.spot[first_spot].source == "spot-history" and fresh.region == "us-east-1"
    assert "describe_spot_price_history" in fresh.sources["spot-history"]
    assert fresh.lambda_ == catalog_module.load().lambda_  # carried over with its source
    assert hashlib.sha256(catalog_module.BUNDLED.read_bytes()).hexdigest() == bundled


def test_prices_refresh_writes_a_catalog_for_another_region_and_cost_asks_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the Price List asked for eu-west-1's prices (by region code)
    client, stubber = _stubbed_pricing("eu-west-1")
    ec2, spot_stubber = _stubbed_spot()
    with stubber, spot_stubber:
        out = refresh(client, tmp_path / "eu.yaml", ec2=ec2, region="eu-west-1")
    stubber.assert_no_pending_responses()
    assert catalog_module.load(out).region == "eu-west-1"
    # THEN cost prices that region with it, and refuses to price it with the bundled us-east-1 catalog
    model = str(ROOT / "models" / "resnet152.yaml")
    assert main(["cost", model, "--region", "eu-west-1", "--prices", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prices"]["region"] == "eu-west-1"
    monkeypatch.setenv("CDK_DEPLOY_REGION", "eu-west-1")  # the deploy environment's region is the default
    assert main(["cost", model]) == 1
    assert ("the bundled catalog holds us-east-1 prices, not eu-west-1's (no dated public copy of other regions' "
            "EC2 prices is bundled); write a catalog for it with crossover prices refresh --region eu-west-1, then "
            "pass it with --prices") in capsys.readouterr().err


def test_prices_refresh_without_credentials_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bundled = catalog_module.BUNDLED.read_bytes()
    assert main(["prices", "refresh", "--out", str(tmp_path / "p.yaml")]) == 1
    assert "no AWS credentials" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists() and catalog_module.BUNDLED.read_bytes() == bundled


class _Flaky(BaseHTTPRequestHandler):
    """Answers 200, except 503 for requests that arrive while ``failing`` is set; counts what it sent."""

    failing: ClassVar[threading.Event] = threading.Event()
    sent: ClassVar[Counter[int]] = Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def log_message(self, *_args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 503 if self.failing.is_set() else 200
        body = b'{"model": "m", "top": []}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with self.lock:
            self.sent[status] += 1


def test_watch_counts_exactly_what_the_endpoint_answered() -> None:
    from crossover.watch import NO_ANSWER, watch

    # GIVEN an endpoint that fails for a while in the middle of the watch
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Timer(0.6, _Flaky.failing.set).start()
    threading.Timer(1.2, _Flaky.failing.clear).start()
    seconds: list[int] = []
    try:
        tally = watch(f"http://127.0.0.1:{server.server_address[1]}", b"image", rate=40, duration_s=2,
                      report=lambda second, t: seconds.append(second))
    finally:
        server.shutdown()
    # THEN every request is in the tally, by the status the server sent, and nothing else
    assert tally.sent == 80 and dict(tally.statuses) == dict(_Flaky.sent)
    assert tally.statuses[503] > 0 and tally.failed == tally.statuses[503] and NO_ANSWER not in tally.statuses
    assert seconds == sorted(set(seconds)) and seconds[0] == 0  # one report a second, in order
    # AND a port where nothing listens is counted as no answer, not skipped
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert watch(f"http://127.0.0.1:{closed}", b"image", rate=20, duration_s=0.5).statuses == {NO_ANSWER: 10}
