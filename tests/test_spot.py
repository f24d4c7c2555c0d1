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
from crossover.cost import catalog as prices
from crossover.cost import model, report
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
        # AND the realtime fleet plans as if one instance were lost (the spare the cost model prices), at the
        # per-instance rate the cost model plans for; the pipeline tracks its backlog as before
        (scaling,) = [r["Properties"]["TargetTrackingConfiguration"] for r in resources
                      if r["Type"] == "AWS::AutoScaling::ScalingPolicy"
                      and r["Properties"].get("PolicyType") == "TargetTrackingScaling"]
        (tracked,) = [m for m in scaling["CustomizedMetricSpecification"]["Metrics"] if m["ReturnData"]]
        if stack == "ModelStack-spot-gpu":
            # base 2, 25% above it on demand: the third instance is on demand too, the fourth the first spot one
            assert tracked["Expression"] == ("requests / IF(instances >= 4, instances - 1, "
                                             "IF(instances > 0, instances, 1))")
            priced = report.as_json(report.build(load(folder / "spot-gpu.yaml"), prices.load()))
            assert scaling["TargetValue"] == priced["backends"]["gpu (spot)"]["planned_requests_per_minute"]
        else:
            assert tracked["Expression"] == "visible / IF(instances > 0, instances, 1)"


def test_a_spot_fleet_is_priced_on_demand_up_to_its_floor_and_holds_a_spare(tmp_path: Path) -> None:
    # GIVEN a realtime gpu fleet planned at 10 requests/s per instance on a flat day, spot above a floor of 2
    # with 25% of the rest on demand
    path = variant(EXAMPLE, tmp_path, "priced", backend="gpu", gpu="{instance_type: g4dn.xlarge, "
                   "requests_per_minute_per_instance: 600, "
                   "spot: {on_demand_base: 2, on_demand_percent_above_base: 25}}",
                   traffic="{images_per_month: 7500000, p99_ms: 300, peak_to_average: 1}")
    c = load(path).config
    catalog = prices.load()
    capacity = 10 * 730 * 3600  # images a month one instance carries
    spot = model.estimate(c, "gpu", catalog, spot=c.gpu.spot)
    assert spot.line is not None and spot.line.capacity == pytest.approx(capacity)
    # WHEN the volume needs 4.5 instances' capacity THEN 5 + 1 spare run: 2 (base) + ceil(4 x 25%) = 3 on
    # demand at 0.526 $/h, 3 spot at 0.3196 $/h, each with its 100 GiB volume at 0.08 $/GiB-month
    volume = 4.5 * capacity
    assert spot.line.instances(volume) == 6
    parts = spot.parts(volume)
    assert parts["on-demand instances"] == pytest.approx(3 * 0.526 * 730)  # 1,151.94
    assert parts["spot instances"] == pytest.approx(3 * 0.3196 * 730)  # 699.92
    assert parts["volumes"] == pytest.approx(6 * 100 * 0.08)
    assert spot.monthly_usd(volume) == pytest.approx(sum(parts.values()))
    # AND on demand the same volume runs 5, all at the on-demand price
    on_demand = model.estimate(c, "gpu", catalog)
    assert on_demand.parts(volume)["instances"] == pytest.approx(5 * 0.526 * 730)
    # AND a spare only guards spot instances: 2 instances' worth is the on-demand base, and a third is on demand
    # too (25% of 1, rounded up): no spare; a fourth is spot: + its spare
    assert spot.line.instances(0.5 * capacity) == spot.line.instances(2 * capacity) == c.scaling.min == 2
    assert (spot.line.instances(2.5 * capacity), spot.line.instances(3.5 * capacity)) == (3, 5)
    # AND the spare counts against scaling.max (6): 5 carry the load
    assert spot.line.max_volume == pytest.approx(5 * capacity)
    # AND a pipeline's queue absorbs a lost instance: no spare
    pipe = variant(EXAMPLE, tmp_path, "pipe", backend="cpu", service="pipeline", scaling="{min: 0, max: 6}",
                   inputs="{s3: [my-images]}", cpu="{instance_type: c7i.large, images_per_second: 10, spot: {}}")
    queue = model.estimate(load(pipe).config, "cpu", catalog, spot=load(pipe).config.cpu.spot)
    assert queue.line is not None and queue.line.instances(2.5 * queue.line.capacity) == 3
    assert queue.parts(2.5 * queue.line.capacity)["spot instances"] == pytest.approx(3 * 0.0303 * 730)


def test_cost_shows_spot_rows_and_the_command_to_get_them(tmp_path: Path) -> None:
    # GIVEN resnet152 on gpu at a volume that needs 5 of its fleet's instances (and functions too slow for p99)
    path = variant(EXAMPLE, tmp_path, "rows", backend="gpu", gpu="{instance_type: g4dn.xlarge, "
                   "requests_per_minute_per_instance: 600}", scaling="{min: 2, max: 10}",
                   **{"lambda": "{memory_mib: 3008, reserved_concurrency: 100, latency_ms: 900}",
                      "lambda-managed": "{images_per_second: 1}"})
    result = report.build(load(path), prices.load(), volume=4.5 * 10 * 730 * 3600 / 3)
    data = report.as_json(result)
    # THEN gpu (spot), spot above an on-demand floor of scaling.min, is a row of its own, not the config's
    row = data["backends"]["gpu (spot)"]
    assert row["configured"] is False and row["spot"]["on_demand_base"] == 2
    assert (row["instances"], row["spot"]["on_demand_instances"], row["spot"]["spot_instances"]) == (6, 2, 4)
    assert row["monthly_usd"] < data["backends"]["gpu"]["monthly_usd"]
    # AND it is recommended, with what to add to the config
    assert data["recommended"] == "gpu (spot)" and data["action"] == "set gpu.spot: {on_demand_base: 2}"
    assert any("(spot)" in (x["below"] + x["above"]) for x in data["crossovers"])


def test_the_spare_starts_where_the_first_spot_instance_does() -> None:
    from crossover.capacity import spare_from

    # base 2 with 25% of the rest on demand: the third is on demand (25% of 1, rounded up), the fourth spot
    assert spare_from(2, 25) == 4
    # all spot: one instance needs no spare of its own (the policy counts instances but one from two on)
    assert (spare_from(0, 0), spare_from(2, 0), spare_from(0, 50)) == (2, 3, 2)
    assert spare_from(1, 100) is None  # never spot: no spare


def test_a_spot_spec_that_is_all_on_demand_promises_no_spare(tmp_path: Path) -> None:
    path = variant(EXAMPLE, tmp_path, "all-od", backend="gpu", gpu="{instance_type: g4dn.xlarge, "
                   "requests_per_minute_per_instance: 600, "
                   "spot: {on_demand_base: 1, on_demand_percent_above_base: 100}}")
    row = report.as_json(report.build(load(path), prices.load(), volume=1e8))["backends"]["gpu (spot)"]
    assert row["spot"]["spare"] is False and row["spot"]["spot_instances"] == 0
