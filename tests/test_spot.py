"""Spot fleets: the group's mixed instances policy, capacity rebalancing and drain hook; the config's checks on
the types; and instances that leave cleanly on a notice read from a fake instance metadata service (IMDSv2)
on loopback: the server fails readiness and still answers, the worker finishes the message in hand and
releases the rest of its batch."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from crossover.config import ConfigError, load
from crossover_serving.fetch import FetchPolicy
from crossover_serving.interruption import SpotWatch
from crossover_serving.model import Model
from crossover_serving.server import InferenceServer, Limits
from crossover_serving.spec import Spec
from crossover_serving.worker import Worker
from tests import ROOT
from tests.conftest import variant
from tests.test_server import TEST_POLICY

EXAMPLE = ROOT / "models" / "resnet152.yaml"
INSTANCE_ACTION = json.dumps({"action": "terminate", "time": "2026-12-03T21:00:00Z"})


class FakeMetadata:
    """IMDSv2 on loopback: a token from PUT /latest/api/token, then the spot documents EC2 would post (404
    until :meth:`post`). Requests without the token get 401, as from the real service."""

    def __init__(self) -> None:
        self.posted: dict[str, str] = {}
        metadata = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_PUT(self) -> None:
                ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                self._answer(200 if ok else 400, "token-1" if ok else "")

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
                    self._answer(401, "")
                elif self.path in metadata.posted:
                    self._answer(200, metadata.posted[self.path])
                else:
                    self._answer(404, "Not Found")

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def post(self, notice: str, document: str) -> None:
        path = {"instance-action": "/latest/meta-data/spot/instance-action",
                "rebalance": "/latest/meta-data/events/recommendations/rebalance"}[notice]
        self.posted[path] = document


@pytest.fixture
def metadata() -> Iterator[FakeMetadata]:
    fake = FakeMetadata()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_the_watch_reads_nothing_until_ec2_posts_a_notice(metadata: FakeMetadata) -> None:
    watch = SpotWatch(lambda _notice: None, endpoint=metadata.endpoint)
    assert watch.check() is None
    metadata.post("instance-action", INSTANCE_ACTION)
    assert watch.check() == f"instance-action: {INSTANCE_ACTION}"
    assert SpotWatch(lambda _notice: None, endpoint="http://127.0.0.1:9").check() is None  # off EC2: nothing


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.request(method, path, body=body, headers=headers or {})
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())


def test_a_server_told_of_a_rebalance_fails_readiness_and_still_answers(
        metadata: FakeMetadata, lite0_spec: Spec, photos: dict[str, bytes]) -> None:
    server = InferenceServer(lite0_spec, limits=Limits(deadline_s=10.0), policy=TEST_POLICY).start()
    try:
        deadline = time.monotonic() + 30
        while not server.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        SpotWatch(server.leave, endpoint=metadata.endpoint, interval_s=0.05).start()
        assert call(server.port, "GET", "/ready")[0] == 200
        # WHEN EC2 recommends rebalancing this instance
        metadata.post("rebalance", json.dumps({"noticeTime": "2026-12-03T20:58:00Z"}))
        while call(server.port, "GET", "/ready")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        # THEN the load balancer's check fails (it drains the target), and a request that still comes is answered
        assert call(server.port, "GET", "/ready") == (503, {"status": "leaving"})
        status, body = call(server.port, "POST", "/predict", photos["coffee"], {"Content-Type": "image/png"})
        assert status == 200 and body["top"][0]["label"] == "espresso"
        assert server.leaving is not None and server.leaving.startswith("rebalance: ")
    finally:
        server.drain()


def test_a_worker_told_of_an_interruption_finishes_its_message_and_releases_the_rest(
        aws: str, metadata: FakeMetadata, lite0: Model, photos: dict[str, bytes]) -> None:
    # GIVEN five messages; the first one's image is on an origin that, while serving it, makes EC2 post an
    # interruption notice for this instance
    class Origin(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            metadata.post("instance-action", INSTANCE_ACTION)
            time.sleep(0.5)  # the watch looks every 50 ms: the notice lands while this message is in hand
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(photos["coffee"])))
            self.end_headers()
            self.wfile.write(photos["coffee"])

    origin = ThreadingHTTPServer(("127.0.0.2", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    tag = uuid.uuid4().hex[:8]
    queue = sqs.create_queue(QueueName=f"spot-{tag}", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    bucket = f"spot-{tag}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/coffee.png", Body=photos["coffee"])
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(
        {"id": "first", "image": f"http://127.0.0.2:{origin.server_address[1]}/coffee.png"}))
    for i in range(4):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"id": f"m{i}", "image": f"s3://{bucket}/in/coffee.png"}))
    policy = FetchPolicy(schemes=("http",), s3_prefixes=(f"{bucket}/",), allowed_networks=TEST_POLICY.allowed_networks)
    worker = Worker(lite0, queue_url=queue, bucket=bucket, sqs=sqs, s3=s3, wait_s=0, policy=policy)
    SpotWatch(worker.leave, endpoint=metadata.endpoint, interval_s=0.05).start()
    try:
        # WHEN it takes the batch
        assert worker.poll_once() == (1, 0)
    finally:
        origin.shutdown()
        origin.server_close()
    # THEN the message in hand has its result; the other four are back in the queue at once (not after
    # the 300 s visibility timeout), unprocessed; and the worker takes no more
    assert json.loads(s3.get_object(Bucket=bucket, Key="results/first.json")["Body"].read())["top"]
    written = s3.list_objects_v2(Bucket=bucket, Prefix="results/").get("Contents", [])
    assert [o["Key"] for o in written] == ["results/first.json"]
    visible = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
    assert visible["Attributes"]["ApproximateNumberOfMessages"] == "4"
    assert worker.stop.is_set() and worker.leaving is not None and worker.leaving.startswith("instance-action")
    worker.run()  # returns at once: it does not poll again


def config(folder: Path, name: str, gpu: str) -> Path:
    return variant(EXAMPLE, folder, name, backend="gpu", gpu=gpu)


@pytest.mark.parametrize(("spot", "message"), [
    ("{instance_types: [c5.xlarge]}", "gpu: spot.instance_types: expected a GPU instance type"),
    ("{instance_types: [g5.large]}", "g5.large has fewer vCPUs (2) than g4dn.xlarge (4)"),
    ("{on_demand_percent_above_base: 120}", "gpu.spot.on_demand_percent_above_base: expected a number <= 100"),
    ("{allocation: cheapest}", "price-capacity-optimized"),
])
def test_spot_types_that_do_not_fit_the_backend_are_refused(tmp_path: Path, spot: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(config(tmp_path, "refused", f"{{instance_type: g4dn.xlarge, spot: {spot}}}"))


def test_graviton_and_x86_or_inf1_and_inf2_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("c7g.large is not the architecture of c7i.large")):
        load(variant(EXAMPLE, tmp_path, "arm", backend="cpu", cpu="{instance_type: c7i.large, spot: "
                     "{instance_types: [c7g.large]}}"))
    with pytest.raises(ConfigError, match="compiled with Neuron for inf2 does not run on inf1"):
        load(variant(EXAMPLE, tmp_path, "inf", backend="inferentia", inferentia="{instance_type: inf2.xlarge, "
                     "spot: {instance_types: [inf1.2xlarge]}}"))


def test_a_base_below_the_minimum_is_explained(tmp_path: Path) -> None:
    below = load(config(tmp_path, "below", "{instance_type: g4dn.xlarge, spot: {on_demand_base: 1}}"))
    (warning,) = below.warnings
    assert "gpu.spot.on_demand_base 1 is below scaling.min 2" in warning and "on_demand_base: 2" in warning
    assert load(config(tmp_path, "at", "{instance_type: g4dn.xlarge, spot: {on_demand_base: 2}}")).warnings == []


def test_a_spot_group_mixes_types_rebalances_and_drains(tmp_path: Path) -> None:
    from crossover.app import build, new_app
    from crossover.config import load_all, model_files

    folder = tmp_path / "models"
    folder.mkdir()
    config(folder, "spot-gpu", "{instance_type: g4dn.xlarge, spot: {on_demand_base: 2, "
                               "on_demand_percent_above_base: 25, instance_types: [g5.xlarge, g6.xlarge]}}")
    variant(EXAMPLE, folder, "spot-pipe", backend="cpu", service="pipeline", scaling="{min: 0, max: 6}",
            inputs="{s3: [my-images]}", cpu="{instance_type: c7i.large, spot: {allocation: capacity-optimized}}")
    app = new_app(outdir=str(tmp_path / "out"))
    build(app, load_all(model_files(folder)))  # cdk-nag runs here
    assembly = app.synth()
    for stack, types, base, percent, strategy in (
            ("ModelStack-spot-gpu", ["g4dn.xlarge", "g5.xlarge", "g6.xlarge"], 2, 25, "price-capacity-optimized"),
            ("ModelStack-spot-pipe", ["c7i.large"], 0, 0, "capacity-optimized")):
        resources = assembly.get_stack_by_name(stack).template["Resources"].values()
        (group,) = [r["Properties"] for r in resources if r["Type"] == "AWS::AutoScaling::AutoScalingGroup"]
        assert group["CapacityRebalance"] is True and "LaunchTemplate" not in group
        policy = group["MixedInstancesPolicy"]
        assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == types
        assert policy["InstancesDistribution"] == {"OnDemandBaseCapacity": base,
                                                   "OnDemandPercentageAboveBaseCapacity": percent,
                                                   "SpotAllocationStrategy": strategy}
        (hook,) = [r["Properties"] for r in resources if r["Type"] == "AWS::AutoScaling::LifecycleHook"]
        assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
        assert (hook["HeartbeatTimeout"], hook["DefaultResult"]) == (90, "CONTINUE")
        (launch,) = [r["Properties"] for r in resources if r["Type"] == "AWS::EC2::LaunchTemplate"]
        script = "".join(p for p in launch["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Join"][1]
                         if isinstance(p, str))
        assert "export CROSSOVER_SPOT=1" in script and 'command+=" --watch-spot"' in script
