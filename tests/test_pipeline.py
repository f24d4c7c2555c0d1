"""service: pipeline — the queue, dead-letter queue and results bucket, and their consumers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crossover.backends import KINDS
from tests.conftest import BACKENDS, Synth, stack_of

FLEETS = [b for b in BACKENDS if KINDS[b].fleet]


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


CLIENT_OUTPUTS = {"QueueUrl", "DeadLetterQueueUrl", "ResultsBucket"}
# The pipeline front door's logical ids: a contract (clients hold the queue URL and the bucket).
QUEUE, DEAD_LETTERS, RESULTS = ("ModelFrontDoorQueueF6AFEA90", "ModelFrontDoorDeadLetterQueueC61C7A9F",
                                "ModelFrontDoorResultsD8909F87")


def front_door(template: dict[str, Any]) -> dict[str, Any]:
    """The queue, dead-letter queue, bucket and their policies, with the outputs that clients use."""
    kept = {k: v for k, v in template["Resources"].items() if k.startswith("ModelFrontDoor")}
    return {"resources": kept, "outputs": {k: v for k, v in template["Outputs"].items() if k in CLIENT_OUTPUTS}}


@pytest.mark.parametrize("source", BACKENDS)
def test_switching_a_pipeline_keeps_its_queues_and_bucket(synth: Synth, source: str) -> None:
    before = front_door(synth.raw[stack_of("resnet152", source, "pipeline")])
    assert {QUEUE, DEAD_LETTERS, RESULTS} <= set(
        before["resources"])
    assert set(before["outputs"]) == CLIENT_OUTPUTS
    for target in BACKENDS:
        assert front_door(synth.raw[stack_of("resnet152", target, "pipeline")]) == before, f"{source} -> {target}"


def test_queues_are_encrypted_ssl_only_and_redrive_to_the_dead_letter_queue(synth: Synth) -> None:
    template = synth.raw[stack_of("resnet152", "lambda", "pipeline")]
    queues = resources(template, "AWS::SQS::Queue")
    assert all(q["Properties"]["SqsManagedSseEnabled"] for q in queues.values())
    main = queues[QUEUE]["Properties"]
    assert main["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [DEAD_LETTERS, "Arn"]},
                                     "maxReceiveCount": 3}
    function = next(iter(resources(template, "AWS::Lambda::Function").values()))["Properties"]
    assert main["VisibilityTimeout"] >= 6 * function["Timeout"]
    policies = [json.dumps(p["Properties"]) for p in resources(template, "AWS::SQS::QueuePolicy").values()]
    assert len(policies) == 2 and all('"aws:SecureTransport": "false"' in p and '"Deny"' in p for p in policies)


def test_results_bucket_is_encrypted_private_ssl_only_and_expires(synth: Synth) -> None:
    template = synth.raw[stack_of("resnet152", "gpu", "pipeline")]
    bucket = resources(template, "AWS::S3::Bucket")[RESULTS]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 30
    policy = next(p for p in resources(template, "AWS::S3::BucketPolicy").values())
    assert '"aws:SecureTransport": "false"' in json.dumps(policy)


def test_lambda_consumes_in_batches_and_reports_each_failure(synth: Synth) -> None:
    template = synth.raw[stack_of("resnet152", "lambda", "pipeline")]
    (mapping,) = resources(template, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"] == {"MaximumConcurrency": 10} and props["BatchSize"] == 10
    function = next(iter(resources(template, "AWS::Lambda::Function").values()))["Properties"]
    variables = function["Environment"]["Variables"]
    assert variables["MAX_RECEIVE_COUNT"] == "3" and variables["RESULTS_BUCKET"] == {"Ref": RESULTS}
    assert not resources(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")


def _puts(template: dict[str, Any]) -> list[str]:
    statements = [s for p in resources(template, "AWS::IAM::Policy").values()
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    return sorted(json.dumps(s["Resource"]) for s in statements if s["Action"] == "s3:PutObject")


@pytest.mark.parametrize("backend", BACKENDS)
def test_consumers_may_write_only_results_and_errors(synth: Synth, backend: str) -> None:
    puts = _puts(synth.raw[stack_of("resnet152", backend, "pipeline")])
    assert len(puts) == 1 and "/results/*" in puts[0] and "/errors/*" in puts[0]


@pytest.mark.parametrize("backend", FLEETS)
def test_fleets_scale_on_backlog_per_instance_and_start_from_zero(synth: Synth, backend: str) -> None:
    template = synth.raw[stack_of("resnet152", backend, "pipeline")]
    (group,) = resources(template, "AWS::AutoScaling::AutoScalingGroup").values()
    assert group["Properties"]["MinSize"] == "0" and group["Properties"]["HealthCheckType"] == "EC2"
    policies = {k: v["Properties"] for k, v in resources(template, "AWS::AutoScaling::ScalingPolicy").items()}
    tracking = next(p for p in policies.values() if p["PolicyType"] == "TargetTrackingScaling")
    metrics = tracking["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]["Metrics"]
    expression = next(m for m in metrics if m.get("ReturnData"))
    assert expression["Expression"] == "visible / IF(instances > 0, instances, 1)"
    names = {m["Id"]: m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m}
    assert names == {"visible": "ApproximateNumberOfMessagesVisible", "instances": "GroupInServiceInstances"}
    step = next(p for p in policies.values() if p["PolicyType"] == "StepScaling")
    assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]
    alarm = next(a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values())
    assert any(m.get("Expression") == "IF(visible > 0 AND instances == 0, 1, 0)" for m in alarm["Metrics"])


def test_fleet_target_is_acceptable_wait_over_processing_time(synth: Synth) -> None:
    from crossover.config import load
    from crossover.cost.profile import images_per_second
    from tests.conftest import ROOT

    template = synth.raw[stack_of("resnet152", "gpu", "pipeline")]
    tracking = next(v["Properties"] for v in resources(template, "AWS::AutoScaling::ScalingPolicy").values()
                    if v["Properties"]["PolicyType"] == "TargetTrackingScaling")
    figure = images_per_second(load(ROOT / "models" / "resnet152.yaml").config, "gpu", None)
    assert figure is not None
    assert tracking["TargetTrackingConfiguration"]["TargetValue"] == pytest.approx(300 * figure.value)


def test_fleet_user_data_runs_the_worker(synth: Synth) -> None:
    template = synth.raw[stack_of("resnet152", "cpu", "pipeline")]
    data = next(iter(resources(template, "AWS::EC2::LaunchTemplate").values()))["Properties"]["LaunchTemplateData"]
    script = "".join(p if isinstance(p, str) else "<token>" for p in data["UserData"]["Fn::Base64"]["Fn::Join"][1])
    assert "export CROSSOVER_MODE=worker" in script and "export CROSSOVER_MAX_RECEIVE_COUNT=3" in script
    assert script.index("CROSSOVER_MODE=worker") < script.index("# Instance bootstrap")


def test_enqueue_sends_one_message_per_image_and_results_collects_both_prefixes(aws: str, tmp_path: Any) -> None:
    import uuid

    import boto3

    from crossover.pipeline_cli import collect, enqueue, message_id

    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    queue = sqs.create_queue(QueueName=f"enqueue-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    uris = [f"s3://photos/cat-{i}.jpg" for i in range(23)] + ["https://example.com/a b.png"]
    assert enqueue(sqs, queue, uris) == 24
    bodies = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in batch]
        sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                          for i, m in enumerate(batch)])
    assert sorted(b["image"] for b in bodies) == sorted(uris)
    assert all(b["id"] == message_id(b["image"]) for b in bodies)
    assert message_id("https://example.com/a b.png").startswith("a_b.png-")
    from crossover.smoke import SmokeError

    with pytest.raises(SmokeError, match=r"only s3:// and https:// images can be enqueued; got \['file:///etc/passwd'\]"):
        enqueue(sqs, queue, ["file:///etc/passwd"])
    bucket = f"results-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="results/x.json", Body=b'{"id": "x"}')
    s3.put_object(Bucket=bucket, Key="errors/y.json", Body=b'{"id": "y"}')
    assert collect(s3, bucket, tmp_path) == (1, 1)
    assert (tmp_path / "results" / "x.json").read_bytes() == b'{"id": "x"}'


def test_enqueue_refuses_unsafe_uris_and_undeployed_stacks(aws: str, capsys: pytest.CaptureFixture[str]) -> None:
    from crossover.cli import main
    from tests.conftest import ROOT

    config = str(ROOT / "models" / "resnet152.yaml")
    assert main(["enqueue", config, "file:///etc/passwd"]) == 1
    assert "ModelStack-resnet152 is not deployed here" in capsys.readouterr().err
    assert main(["results", config]) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_role_reads_exactly_the_declared_inputs(synth: Synth, backend: str) -> None:
    def object_reads(template: dict[str, Any]) -> list[str]:
        """Every object ARN the stack's roles may GetObject (CDK merges statements of one action)."""
        found = []
        for policy in resources(template, "AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Action"] == "s3:GetObject":
                    arns = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                    found += [json.dumps(arn) for arn in arns]
        return found

    mine = json.dumps({"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::my-images/*"]]})
    # GIVEN a pipeline whose config declares inputs.s3: [my-images] THEN its role may read that bucket's objects
    pipeline = object_reads(synth.raw[stack_of("resnet152", backend, "pipeline")])
    assert mine in pipeline and not [arn for arn in pipeline if arn.endswith('*"]]}') and arn != mine]
    # AND a realtime model that declares nothing may read no input bucket at all
    assert not [arn for arn in object_reads(synth.raw[stack_of("resnet152", backend)]) if "my-images" in arn]
