"""The shared config: every bad input gets one clear error naming file, key path, expected and found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crossover.cli import main
from crossover.config import ConfigError, load, load_all, model_files
from tests import ROOT
from tests.conftest import EXAMPLES, write_config

GOOD = "name: good\nbackend: lambda\nmodel: {artifact: s3://my-models/good/model.onnx}\n"


def problems(folder: Path, text: str) -> list[str]:
    path = write_config(folder, "case", text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [str(p) for p in caught.value.problems]


def test_examples_are_valid_and_switching_is_one_field() -> None:
    # GIVEN the shipped example configs WHEN loaded THEN each is valid and names its stack
    loaded = load_all(EXAMPLES)
    assert {c.config.stack_name for c in loaded} == {"ModelStack-resnet152", "ModelStack-mobilenet-v2",
                                                    "ModelStack-efficientnet-lite0"}


def test_defaults_fill_every_backend_section(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, "m", GOOD)).config
    assert (config.service, config.lambda_.memory_mib, config.gpu.instance_type) == ("realtime", 3008, "g4dn.xlarge")


@pytest.mark.parametrize(("text", "expected"), [
    ("", "case.yaml: expected a mapping of config keys; the file is empty"),
    ("- a\n- b\n", "case.yaml: expected a mapping of config keys at the top level; got a list"),
    ("name: x\nbackend: [lambda\n", "case.yaml:3:1: YAML error"),
    ("name: !!python/object/apply:os.system ['id']\n", "case.yaml:1:7: YAML error: could not determine a constructor"),
    ("name: a\nname: b\n", 'case.yaml:2:1: YAML error: while constructing a mapping found duplicate key "name"'),
    (GOOD + "scalng: {min: 1}\n", "case.yaml: scalng: expected one of the keys name, backend, service"),
    (GOOD + "lambda: {memory_mb: 512}\n", "did you mean 'memory_mib'?"),
    (GOOD + "scaling: {min: '2'}\n", "case.yaml: scaling.min: expected an integer; got string '2'"),
    (GOOD.replace("lambda", "gpus"), "case.yaml: backend: expected one of lambda, gpu, eia, inferentia, cpu, "
                                     "lambda-managed; got 'gpus'"),
    (GOOD + "service: batch\n", "case.yaml: service: expected one of realtime, pipeline; got 'batch'"),
    (GOOD + "scaling: {min: 5, max: 2}\n", "case.yaml: scaling: min (5) must be <= max (2)"),
    (GOOD + "scaling: {min: 1, max: 0}\n", "case.yaml: scaling.max: expected a number > 0; got 0"),
    (GOOD + "scaling: {min: -1}\n", "case.yaml: scaling.min: expected a number >= 0; got -1"),
    (GOOD + "traffic: {images_per_month: 0}\n", "case.yaml: traffic.images_per_month: expected a number > 0; got 0"),
    (GOOD + "lambda: {memory_mib: 64}\n", "case.yaml: lambda.memory_mib: expected a number >= 128; got 64"),
    (GOOD + "lambda: {memory_mib: 20000}\n", "case.yaml: lambda.memory_mib: expected a number <= 10240; got 20000"),
    (GOOD.replace("name: good", "name: my_model"), "case.yaml: name: expected a letter, then letters, digits and "
                                                   "hyphens (it forms the stack name ModelStack-<name>"),
    (GOOD.replace("name: good", "name: 9lives"), "case.yaml: name: expected a letter"),
    (GOOD.replace("name: good", f"name: {'a' * 120}"), "at most 128 characters"),
    (GOOD.replace("s3://my-models/good/model.onnx", "s3://x"), "case.yaml: model.artifact: expected an "
                                                               "s3://bucket/key URI or an existing local file"),
    (GOOD.replace("s3://my-models/good/model.onnx", "missing.onnx"), "got 'missing.onnx' (no file at "),
    ("backend: lambda\nmodel: {artifact: s3://b-b/k}\n", "case.yaml: name: expected this key; it is missing"),
    (GOOD + "gpu: {instance_type: c5.xlarge}\n", "case.yaml: gpu.instance_type: expected a GPU instance type "
                                                "(g4dn, g5, g6, g6e, gr6, p3, p3dn, p4d, p4de, p5, p5e, p5en); got "
                                                "'c5.xlarge'; c5.xlarge is a CPU type: use backend: cpu"),
    (GOOD + "eia: {accelerator: eia2.medium}\n", "case.yaml: eia.accelerator: expected one of eia1.medium, "
                                                "eia1.large, eia1.xlarge; got 'eia2.medium' (CloudFormation "
                                                "launch templates only ever accepted eia1 types)"),
    (GOOD + "eia: {instance_type: m5.large}\n", "case.yaml: eia.instance_type: expected a C5 instance type (c5)"),
    (GOOD + "cpu: {instance_type: inf2.xlarge}\n", "case.yaml: cpu.instance_type: expected a CPU instance type "
                                                  "(c5, c6i, c6a, c7i, c7a, c6g, c7g, c8g, m6i, m7i, m7a, m7g, "
                                                  "m8g); got 'inf2.xlarge'; inf2.xlarge is an Inferentia type: use "
                                                  "backend: inferentia"),
    (GOOD + "inferentia: {instance_type: g5.xlarge}\n", "got 'g5.xlarge'; g5.xlarge is a GPU type: use backend: gpu"),
    (GOOD.replace("backend: lambda", "backend: gpu").replace("model.onnx}", "model.onnx, load_s: 1200}"),
     "case.yaml: gpu.health_grace_s: expected at least the measured model load (model.load_s = 1200 s), or "
     "instances are replaced before they can become healthy; got 900"),
    (GOOD + "gpu: {health_grace_s: 30}\n", "case.yaml: gpu.health_grace_s: expected a number >= 60; got 30"),
    (GOOD + "gpu: {ami_id: my-image}\n", "case.yaml: gpu.ami_id: expected a value matching"),
    (GOOD + "service: pipeline\npipeline: {visibility_timeout_s: 100}\n",
     "case.yaml: pipeline.visibility_timeout_s: expected at least 6 x lambda.timeout_s = 180"),
    (GOOD + "service: pipeline\npipeline: {max_batching_window_s: 301}\n",
     "case.yaml: pipeline.max_batching_window_s: expected a number <= 300; got 301"),
    (GOOD + "service: pipeline\npipeline: {batch_size: 100}\n",
     "case.yaml: pipeline.max_batching_window_s: expected at least 1 when batch_size is over 10"),
    (GOOD + "service: pipeline\nendpoint: {certificate_arn: 'arn:aws:acm:us-east-1:123456789012:certificate/abc-1'}\n",
     "case.yaml: endpoint.certificate_arn: a pipeline has no HTTP endpoint to make public"),
    (GOOD + "scaling: {min: 0}\n", "case.yaml: scaling.min: expected >= 1 for a realtime service"),
    (GOOD + "service: pipeline\n", "case.yaml: inputs: a pipeline's messages name their images; declare where"),
    (GOOD + "canary: {from: lambda, percent: 10}\n", "canary.from: expected the backend the model moves from, not "
     "the one it moves to (backend: lambda); got 'lambda'"),
    (GOOD + "canary: {from: gpu, percent: 100}\n", "case.yaml: canary.percent: expected a number <= 99; got 100"),
    (GOOD + "canary: {from: gpu, percent: 0}\n", "case.yaml: canary.percent: expected a number >= 1; got 0"),
    (GOOD + "service: pipeline\ninputs: {s3: [my-images]}\ncanary: {from: gpu, percent: 10}\n",
     "canary: a pipeline has no weighted route to split"),
    (GOOD.replace("backend: lambda", "backend: gpu") + "scaling: {min: 2, max: 2}\n",
     "scaling.max: expected more than scaling.min (2) on an instance backend"),
    (GOOD + "lambda: {reserved_concurrency: 5, provisioned_concurrency: 6}\n",
     "lambda: provisioned_concurrency (6) must be <= reserved_concurrency (5)"),
    (GOOD + "lambda: {provisioned_concurrency_max: 4}\n",
     "lambda: provisioned_concurrency_max (4) scales provisioned concurrency up from provisioned_concurrency: "
     "set provisioned_concurrency too, at most 4"),
    (GOOD + "lambda: {reserved_concurrency: 5, provisioned_concurrency: 2, provisioned_concurrency_max: 8}\n",
     "lambda: provisioned_concurrency_max (8) must be <= reserved_concurrency (5)"),
    (GOOD + "inputs: {s3: [My_Images]}\n", "case.yaml: inputs.s3: expected a bucket or bucket/prefix/; a bucket "
     "name has only lowercase letters, digits, dots and hyphens; got 'My_Images'"),
    (GOOD + "inputs: {s3: [ab]}\n", "inputs.s3: expected a bucket or bucket/prefix/; a bucket name has 3 to 63 "
     "characters; 'ab' has 2"),
    (GOOD + "inputs: {s3: ['images/team-*/']}\n", "inputs.s3: expected a plain prefix (no wildcards"),
    (GOOD + "inputs: {https: 'yes'}\n", "inputs.https: expected true or false; got string 'yes'"),
    (GOOD.replace("s3://my-models/good/model.onnx", "s3://b/k.onnx"),
     "model.artifact: expected an s3://bucket/key URI or an existing local file; got 's3://b/k.onnx' (a bucket name "
     "has 3 to 63 characters; 'b' has 1)"),
    (GOOD.replace("s3://my-models/good/model.onnx", "s3://192.168.1.1/k.onnx"), "a bucket name is not an IP address"),
])
def test_fails_when_config_is_bad(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(str(tmp_path / "case.yaml")[: -len("case.yaml")]), found
    assert expected in found[0], found


def test_fails_when_two_files_share_a_name(tmp_path: Path) -> None:
    write_config(tmp_path, "a", GOOD)
    write_config(tmp_path, "b", GOOD)
    with pytest.raises(ConfigError) as caught:
        load_all(model_files(tmp_path))
    (problem,) = caught.value.problems
    assert str(problem).endswith(f"name: expected a name unique across configs; got 'good', also used by "
                                 f"{tmp_path / 'a.yaml'}")


def test_local_artifact_resolves_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "m.onnx").write_bytes(b"onnx")
    loaded = load(write_config(tmp_path, "m", GOOD.replace("s3://my-models/good/model.onnx", "weights/m.onnx")))
    assert loaded.artifact_path == tmp_path / "weights" / "m.onnx"


def test_validate_exits_0_with_a_summary_line_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, EXAMPLES)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(EXAMPLES)
    assert any("resnet152 on lambda (realtime), stack ModelStack-resnet152" in line for line in lines)


def test_validate_exits_1_listing_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_config(tmp_path, "bad", GOOD.replace("lambda", "gpus") + "service: batch\n")
    good = write_config(tmp_path, "good2", GOOD.replace("name: good", "name: good2"))
    assert main(["validate", str(bad), str(good)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: backend: expected one of" in err and f"{bad}: service: expected one of" in err


def test_warnings_print_but_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "w", GOOD + "lambda: {reserved_concurrency: null}\n")
    assert main(["validate", str(path)]) == 0
    assert "reserved_concurrency is unset" in capsys.readouterr().err


def test_a_user_mistake_never_shows_a_traceback(tmp_path: Path) -> None:
    # GIVEN a hostile config WHEN the real console script runs THEN one error line, exit 1, no traceback
    path = write_config(tmp_path, "evil", "name: !!python/object/apply:os.system ['touch pwned']\n")
    result = subprocess.run([sys.executable, "-m", "crossover.cli", "validate", str(path)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "YAML error" in result.stderr
    assert not (tmp_path / "pwned").exists()


def test_app_refuses_to_synthesize_an_invalid_config(tmp_path: Path) -> None:
    write_config(tmp_path, "bad", GOOD.replace("lambda", "gpus"))
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], capture_output=True, text=True,
                            env={"CROSSOVER_MODELS": str(tmp_path), "CDK_OUTDIR": str(tmp_path / "out"),
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "backend: expected one of lambda" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_declared_inputs_take_the_form_iam_and_the_fetcher_share(tmp_path: Path) -> None:
    text = GOOD + ("service: pipeline\n"
                   "inputs: {s3: [my-images, 's3://shared-data/team-a', shared-data/b/], https: true}\n")
    config = load(write_config(tmp_path, "m", text)).config
    assert config.inputs.s3 == ["my-images/", "shared-data/team-a/", "shared-data/b/"]
    assert config.serving_spec("s3://x/y")["inputs"] == {"s3": config.inputs.s3, "https": True}


def test_a_config_built_in_python_takes_the_python_names_of_lambda_and_from() -> None:
    from crossover.config import Canary, LambdaSpec, ModelConfig, ModelSpec

    config = ModelConfig(name="built", backend="gpu", model=ModelSpec(artifact="s3://team-models/m.onnx"),
                         lambda_=LambdaSpec(memory_mib=1024), canary=Canary(from_="lambda", percent=10))
    assert config.lambda_.memory_mib == 1024 and config.backends == ["gpu", "lambda"]


@pytest.mark.parametrize(("instance_type", "expected"), [
    ("m7g.medium", 1), ("c7i.large", 2), ("g4dn.xlarge", 4), ("inf2.24xlarge", 96), ("c7i.metal-24xl", 96),
    ("c7i.metal-48xl", 192)])
def test_vcpus_are_counted_from_every_size_a_fleet_accepts(instance_type: str, expected: int) -> None:
    from crossover.config import vcpus

    assert vcpus(instance_type) == expected


def test_fails_when_an_instance_size_does_not_say_its_vcpus(tmp_path: Path) -> None:
    path = write_config(tmp_path, "m", GOOD + "cpu: {instance_type: c7i.metal}\n")
    with pytest.raises(ConfigError, match=r"cpu.instance_type: expected a size whose vCPUs crossover can count "
                                          r"\(medium, large, xlarge, <N>xlarge, metal-<N>xl\); got 'c7i.metal'"):
        load(path)


def test_validate_warns_when_a_scaling_target_would_rest_on_a_placeholder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a gpu model with no gmacs, no images_per_second and no bench profile
    path = write_config(tmp_path, "m", GOOD.replace("backend: lambda", "backend: gpu"))
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "gpu: no throughput figure for g4dn.xlarge, so its scaling target assumes a placeholder 200 images/s" \
           in err and "set gpu.images_per_second to a measured figure, or model.gmacs" in err
    # AND with a figure, no such warning
    gpu = GOOD.replace("backend: lambda", "backend: gpu").replace("name: good", "name: n")
    measured = write_config(tmp_path, "n", gpu + "gpu: {images_per_second: 150}\n")
    assert main(["validate", str(measured)]) == 0
    assert "placeholder" not in capsys.readouterr().err


def test_traffic_hourly_is_a_day_of_24_hours_and_sets_the_peak(tmp_path: Path) -> None:
    base = "name: m\nbackend: lambda\nmodel: {artifact: s3://bkt/m.onnx}\n"
    # GIVEN a day of 24 hourly figures THEN its peak over its mean is the peak_to_average
    day = [100] * 12 + [300] * 12
    assert load(write_config(tmp_path, "ok", base + f"traffic: {{hourly: {day}}}\n")).config.traffic.peak_to_average \
        == 1.5
    # AND a day that is not 24 hours, has no traffic, or disagrees with a given peak_to_average says so, where
    def said(text: str) -> list[str]:
        return [p.removeprefix(f"{tmp_path}/") for p in problems(tmp_path, text)]

    assert said(base + "traffic: {hourly: [1, 2, 3]}\n") == [
        "case.yaml: traffic.hourly: expected 24 items; got [1, 2, 3]"]
    assert said(base + f"traffic: {{hourly: {[0] * 24}}}\n") == [
        "case.yaml: traffic: hourly: expected some traffic in the day; all 24 hours are 0"]
    assert said(base + f"traffic: {{hourly: {[1e308] * 24}}}\n") == [
        "case.yaml: traffic: hourly: the figures are too large to add up; give them in a smaller unit"]
    assert said(base + "traffic: {hourly: [.inf" + ", 1" * 23 + "]}\n")[0].startswith("case.yaml: traffic.hourly.0:")
    assert said(base + f"traffic: {{hourly: {day}, peak_to_average: 3}}\n") == [
        "case.yaml: traffic: peak_to_average (3) disagrees with hourly, whose peak is 1.5 times its mean: leave "
        "peak_to_average out"]


def test_how_images_arrive_is_checked_against_what_the_config_allows(tmp_path: Path) -> None:
    base = "name: m\nbackend: lambda\nmodel: {artifact: s3://bkt/m.onnx}\n"

    def said(text: str) -> list[str]:
        return [p.removeprefix(f"{tmp_path}/") for p in problems(tmp_path, base + text)]

    assert said("traffic: {from_url: 0.5}\n") == [
        "case.yaml: traffic.from_url: images arrive by URL only where inputs.https is true"]
    assert said("traffic: {from_s3: 0.5}\n") == [
        "case.yaml: traffic.from_s3: images come from S3 only from the locations inputs.s3 declares"]
    assert said("inputs: {s3: [bkt], https: true}\ntraffic: {from_url: 0.6, from_s3: 0.6}\n") == [
        "case.yaml: traffic: from_url (0.6) and from_s3 (0.6) are shares of the same images: together at most 1"]
    assert said("inputs: {https: true}\nnetwork: {nat_gateways: 0}\ntraffic: {from_url: 0.1}\n") == [
        "case.yaml: traffic.from_url: a network without NAT gateways has no way to fetch URLs (network.nat_gateways: "
        "0); set traffic.from_url to 0 or give the network a NAT gateway"]
