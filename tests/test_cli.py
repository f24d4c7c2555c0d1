"""One CLI shape: every command takes a model's name or its config path, every option has help, volumes
read as people write them, and no command answers a missing region, credentials or stack with a traceback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from crossover.cli import MODEL_HELP, main, parser
from tests.conftest import ROOT

# Every command that acts on one model, with the arguments it needs besides the model.
MODEL_COMMANDS = {"serve": [], "cost": [], "advise": [], "switch": [], "bench": [], "smoke": [],
                  "watch": ["--duration", "1"], "enqueue": ["s3://my-images/cat.jpg"], "results": [], "convert": [],
                  "work": []}
AWS_COMMANDS = ["advise", "smoke", "watch", "enqueue", "results"]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def test_every_model_command_takes_a_name_or_a_path_and_every_option_has_help() -> None:
    subcommands = _subcommands()
    assert set(MODEL_COMMANDS) | {"validate", "prices", "rehearse"} == set(subcommands)
    for name in MODEL_COMMANDS:
        (model,) = [a for a in subcommands[name]._actions if a.dest == "model"]
        assert model.help == MODEL_HELP, name
    nested = [sub for p in subcommands.values() for a in p._actions
              if isinstance(a, argparse._SubParsersAction) for sub in a.choices.values()]
    for sub in [*subcommands.values(), *nested]:
        undocumented = [a.dest for a in sub._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
        assert not undocumented, (sub.prog, undocumented)


def test_a_name_and_a_path_name_the_same_model(capsys: pytest.CaptureFixture[str]) -> None:
    answers = []
    for model in ("resnet152", str(ROOT / "models" / "resnet152.yaml"), "models/resnet152.yaml"):
        assert main(["cost", model, "--json", "--models", str(ROOT / "models")]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0] == answers[1] == answers[2] and answers[0]["model"] == "resnet152"
    assert main(["validate", "mobilenet-v2", str(ROOT / "models" / "resnet152.yaml"), "--models",
                 str(ROOT / "models")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
@pytest.mark.parametrize("model", ["nope", "models/nope.yaml"])
def test_fails_when_the_model_does_not_exist_with_one_line(command: str, model: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, model, *MODEL_COMMANDS[command], "--models", str(ROOT / "models")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("no model named 'nope'; known: efficientnet-lite0, mobilenet-v2, resnet152" in err
            or "models/nope.yaml: no such config file" in err), err


@pytest.mark.parametrize(("text", "images"), [("10M", 1e7), ("7.5m", 7.5e6), ("2.5e7", 2.5e7), ("1_000_000", 1e6),
                                              ("250k", 2.5e5), ("1B", 1e9), ("3,000", 3e3)])
def test_volumes_read_as_people_write_them(text: str, images: float, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "resnet152", "--volume", text, "--json", "--models", str(ROOT / "models")]) == 0
    assert json.loads(capsys.readouterr().out)["volume"] == pytest.approx(images)


@pytest.mark.parametrize("text", ["ten", "-5M", "0", "5X"])
def test_fails_when_a_volume_is_not_one(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["cost", "resnet152", f"--volume={text}"])
    assert exit_.value.code == 2
    assert f"expected images per month, such as 7500000, 7.5M, 2.5e7 or 1_000_000; got {text!r}" in \
           capsys.readouterr().err


def test_a_negative_volume_after_its_flag_is_named_not_taken_for_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cost", "resnet152", "--volume", "-5M"])
    assert "expected images per month, such as 7500000, 7.5M, 2.5e7 or 1_000_000; got '-5M'" in capsys.readouterr().err


def test_a_broken_config_beside_it_does_not_block_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "resnet152.yaml").write_text((ROOT / "models" / "resnet152.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("name: broken\nbackend: gpus\n")
    assert main(["cost", "resnet152", "--json", "--models", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "resnet152"
    # AND a name that matches none shows the broken file's problems: it may be the one meant
    assert main(["cost", "resnet", "--models", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no model named 'resnet'; known: resnet152" in err and "broken.yaml: backend:" in err


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No region and no credentials from anywhere: environment, shared files or instance metadata."""
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.mark.parametrize("command", AWS_COMMANDS)
def test_without_aws_every_command_names_the_fix(command: str, no_aws: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN no region WHEN the command needs AWS THEN one line says how to set one
    assert main([command, "resnet152", *MODEL_COMMANDS[command], "--models", str(ROOT / "models")]) == 1
    err = capsys.readouterr().err
    assert "error: no AWS region: set AWS_DEFAULT_REGION" in err and "Traceback" not in err
    # AND with a region but no credentials, one line says how to get them
    no_aws.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main([command, "resnet152", *MODEL_COMMANDS[command], "--models", str(ROOT / "models")]) == 1
    err = capsys.readouterr().err
    assert "error: no AWS credentials: set AWS_PROFILE or run `aws configure`" in err and "Traceback" not in err


@pytest.mark.parametrize("command", AWS_COMMANDS)
def test_a_stack_that_is_not_deployed_is_one_line(command: str, aws: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "resnet152", *MODEL_COMMANDS[command], "--models", str(ROOT / "models")]) == 1
    err = capsys.readouterr().err
    assert "ModelStack-resnet152 is not deployed here" in err and "Traceback" not in err
