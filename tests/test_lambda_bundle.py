"""The Lambda bundle runs before it ships: the code asset a deploy uploads, executed as Lambda executes it.

The bundle a synth writes for the bundled example (as a pipeline, so one function takes HTTP and SQS
events) is zipped and unpacked as CDK's publishing does, then run by a clean CPython of the function's
runtime version: the bundle on ``PYTHONPATH`` with what Lambda's runtime provides beside it (its runtime
interface client and boto3, requirements-lambda-runtime.txt), no site-packages, nothing from the
checkout or the dev environment. The runtime interface client calls the handler string from the
template, fed by a stand-in for the Lambda Runtime API on loopback; the init phase loads the real model
from S3 on the local emulator, from the CROSSOVER_SPEC the template sets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from crossover import bundle
from crossover.emulator import ACCOUNT, REGION
from tests.conftest import BUNDLE_INPUTS, CAT_CLASSES, DATA, ROOT, Synth
from tests.test_lambda_handler import alb_event, sqs_record, url_event

pytestmark = pytest.mark.slow
STACK = "ModelStack-efficientnet-lite0-pipe"
REPORT = ROOT / "build" / "reliability" / "lambda_bundle.json"


def interpreter() -> str:
    """CPython of the Lambda runtime's version; the test fails loudly without one (CROSSOVER_LAMBDA_PYTHON
    names another; CROSSOVER_SKIP_LAMBDA_BUNDLE=1 skips it, saying why)."""
    wanted = f"python{bundle.PYTHON_VERSION}"
    version = tuple(int(x) for x in bundle.PYTHON_VERSION.split("."))
    # A pyenv shim answers even where its version is not selected, and then fails: run each candidate.
    candidates = [os.environ.get("CROSSOVER_LAMBDA_PYTHON"), shutil.which(wanted),
                  *sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{bundle.PYTHON_VERSION}.*/bin/{wanted}"))]
    for found in filter(None, candidates):
        check = [found, "-c", f"import sys; assert sys.version_info[:2] == {version}"]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return found
    message = (f"NO {wanted} ON THIS MACHINE: the Lambda bundle cannot be executed before it ships. Install "
               f"CPython {bundle.PYTHON_VERSION} (pyenv install {bundle.PYTHON_VERSION}) or name one in "
               "CROSSOVER_LAMBDA_PYTHON.")
    if os.environ.get("CROSSOVER_SKIP_LAMBDA_BUNDLE") == "1":
        pytest.skip(message)
    pytest.fail(message)


def resolve(value: Any, refs: dict[str, str]) -> Any:
    """A template value with its intrinsic functions evaluated as CloudFormation would in the emulator."""
    pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws", "AWS::URLSuffix":
              "amazonaws.com"}
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(resolve(part, refs) for part in parts)
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        for name, real in pseudo.items():
            text = text.replace(f"${{{name}}}", real)
        return text
    if isinstance(value, dict) and "Ref" in value:
        return pseudo.get(value["Ref"]) or refs[value["Ref"]]
    return value


class RuntimeApi(ThreadingHTTPServer):
    """The Lambda Runtime API's invocation endpoints, on loopback: hands out ``events``, keeps the answers. With
    ``workers``, the first event goes out only once that many processes wait for work at once."""

    def __init__(self, events: list[Any], workers: int = 1) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeHandler)
        self.pending = list(enumerate(events))
        self.answers: dict[str, tuple[str, Any]] = {}
        self.first_poll: float | None = None
        self.workers, self.waiting, self.most_waiting = workers, 0, 0
        self.lock = threading.Condition()


class _RuntimeHandler(BaseHTTPRequestHandler):
    server: RuntimeApi

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        assert self.path == "/2018-06-01/runtime/invocation/next", self.path
        api = self.server
        with api.lock:
            api.first_poll = api.first_poll or time.monotonic()
            api.waiting += 1
            api.most_waiting = max(api.most_waiting, api.waiting)
            api.lock.notify_all()
            api.lock.wait_for(lambda: bool(api.pending) and api.most_waiting >= api.workers)
            api.waiting -= 1
            index, event = api.pending.pop(0)
        body = json.dumps(event).encode()
        self.send_response(200)
        for name, value in (("Lambda-Runtime-Aws-Request-Id", f"request-{index}"),
                            ("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000)),
                            ("Lambda-Runtime-Invoked-Function-Arn",
                             f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:crossover"),
                            ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000"),
                            # awslambdaric 4 reads these too, and crashes (SIGSEGV) on a missing one
                            ("Lambda-Runtime-Invocation-Id", f"invocation-{index}"),
                            ("Lambda-Runtime-Client-Context", "{}"), ("Lambda-Runtime-Cognito-Identity", "{}"),
                            ("Lambda-Runtime-Aws-Tenant-Id", "tenant"), ("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _, request, kind = self.path.rsplit("/", 2)  # .../invocation/<id>/response|error, .../init/error
        with self.server.lock:
            self.server.answers[request] = (kind, json.loads(body) if body else None)
            self.server.lock.notify_all()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def unpacked(synth: Synth, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The function's code asset, zipped and unpacked as a deploy publishes it, and its template properties."""
    (function,) = [r["Properties"] for r in synth.raw[STACK]["Resources"].values()
                   if r["Type"] == "AWS::Lambda::Function"]
    asset = synth.outdir / f"asset.{function['Code']['S3Key'].removesuffix('.zip')}"
    archive = tmp_path_factory.mktemp("bundle") / "code.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(asset.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(asset))
    task = archive.parent / "task"  # Lambda's /var/task
    with zipfile.ZipFile(archive) as code:
        code.extractall(task)
    return task, function


@pytest.fixture
def invoke(unpacked: tuple[Path, dict[str, Any]], synth: Synth, aws: str) -> Iterator[Any]:
    """Runs the bundle under the runtime interface client for a list of events; returns the answers."""
    task, function = unpacked
    python = interpreter()
    s3 = boto3.client("s3")
    results = "crossover-bundle-results"
    for bucket in (results, BUNDLE_INPUTS):
        s3.create_bucket(Bucket=bucket)
    variables = {k: resolve(v, {"ModelFrontDoorResultsD8909F87": results})
                 for k, v in function["Environment"]["Variables"].items()}
    spec = json.loads(variables["CROSSOVER_SPEC"])
    # The model as the deploy publishes it: the template's asset, in the bootstrap bucket under its hash.
    model_bucket, model_key = spec["artifact"].removeprefix("s3://").split("/", 1)
    s3.create_bucket(Bucket=model_bucket)
    s3.upload_file(str(synth.outdir / f"asset.{model_key}"), model_bucket, model_key)
    processes: list[subprocess.Popen[str]] = []

    def run(events: list[Any], workers: int = 1, **lambda_sets: str) -> tuple[dict[str, tuple[str, Any]], float]:
        api = RuntimeApi(events, workers)
        threading.Thread(target=api.serve_forever, daemon=True).start()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(task.parent), "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": f"{task}{os.pathsep}{bundle.runtime()}", "LAMBDA_TASK_ROOT": str(task),
               "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function["MemorySize"]), "AWS_LAMBDA_FUNCTION_NAME": "crossover",
               "AWS_LAMBDA_LOG_FORMAT": function["LoggingConfig"]["LogFormat"],
               "AWS_EXECUTION_ENV": f"AWS_Lambda_{function['Runtime']}", "AWS_REGION": REGION,
               "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": aws, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", **variables, **lambda_sets}
        started = time.monotonic()
        # -S: no site-packages of this interpreter; only the bundle and the runtime's own libraries.
        # A session of its own: on Lambda Managed Instances the client forks its workers, which go with it.
        process = subprocess.Popen([python, "-S", "-m", "awslambdaric", function["Handler"]], cwd=task, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        processes.append(process)
        with api.lock:
            done = api.lock.wait_for(lambda: len(api.answers) == len(events) or "error" in api.answers, 120)
        os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0]
        api.shutdown()
        assert done and "error" not in api.answers, output[-3000:]  # "error": the init failed
        assert api.first_poll is not None
        return api.answers, api.first_poll - started

    yield run
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_bundle_runs_in_a_clean_interpreter_with_the_real_model(invoke: Any, unpacked: tuple[Path, dict[str, Any]],
                                                                   photos: dict[str, bytes]) -> None:
    task, function = unpacked
    assert function["Runtime"] == f"python{bundle.PYTHON_VERSION}"
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUNDLE_INPUTS, Key="in/coffee.png", Body=photos["coffee"])
    events = [
        alb_event(photos["chelsea"]),
        url_event(photos["coffee"]),
        alb_event(b'{"url": "https://', "application/json"),
        [1, 2, 3],
        {"Records": [sqs_record(json.dumps({"id": "coffee-1", "image": f"s3://{BUNDLE_INPUTS}/in/coffee.png"})),
                     sqs_record("{poison")]},
    ]
    answers, init_s = invoke(events)
    kinds = {request: kind for request, (kind, _) in answers.items()}
    assert set(kinds.values()) == {"response"}, answers  # no invocation raised
    body = {request: answer for request, (_, answer) in answers.items()}
    alb = json.loads(body["request-0"]["body"])
    assert body["request-0"]["statusCode"] == 200 and alb["top"][0]["label"] in CAT_CLASSES
    assert json.loads(body["request-1"]["body"])["top"][0]["label"] == "espresso"
    assert (body["request-2"]["statusCode"], json.loads(body["request-2"]["body"])["error"]) == (400, "bad_json")
    assert body["request-3"]["statusCode"] == 400
    poison = events[4]["Records"][1]["messageId"]
    assert body["request-4"] == {"batchItemFailures": [{"itemIdentifier": poison}]}
    result = json.loads(s3.get_object(Bucket="crossover-bundle-results", Key="results/coffee-1.json")["Body"].read())
    assert result["top"][0]["label"] == "espresso"

    size = sum(p.stat().st_size for p in task.rglob("*") if p.is_file())
    assert size < 250 * 10**6, "over Lambda's 250 MB unzipped limit"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"runtime": function["Runtime"], "unzipped_mb": round(size / 10**6, 1),
                                  "init_s": round(init_s, 2), "model": "efficientnet-lite0",
                                  "model_mb": round((DATA.parent.parent / "build" / "models" /
                                                     "efficientnet_lite0.onnx").stat().st_size / 10**6, 1),
                                  "measured_at": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    print(f"\nLambda bundle: {size / 10**6:.1f} MB unzipped; init (interpreter, imports, model from S3) {init_s:.2f} s")


def test_on_managed_instances_each_process_loads_the_model_and_serves(invoke: Any, photos: dict[str, bytes]) -> None:
    # GIVEN the bundle as Lambda Managed Instances run it: an environment of 4 GiB and 2 vCPUs whose runtime starts
    # AWS_LAMBDA_MAX_CONCURRENCY processes (the runtime interface client forks them, each importing the handler)
    events = [alb_event(photos[name]) for name in ("chelsea", "coffee", "chelsea", "coffee")]
    answers, _ = invoke(events, workers=2, AWS_LAMBDA_MAX_CONCURRENCY="2", CROSSOVER_ENVIRONMENT_VCPUS="2",
                        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="4096")
    # THEN both processes loaded the model and waited for work together (no event went out before), and every
    # request was answered with the model's labels
    labels = [json.loads(answers[f"request-{i}"][1]["body"])["top"][0]["label"] for i in range(len(events))]
    assert labels[1] == labels[3] == "espresso" and {labels[0], labels[2]} <= CAT_CLASSES


def test_the_bundle_holds_nothing_from_the_checkout(unpacked: tuple[Path, dict[str, Any]]) -> None:
    task, _ = unpacked
    names = {p.name for p in task.iterdir()}
    assert "crossover_serving" in names and not names & {"crossover", "tests", "models", ".venv", "bin"}
    assert not list(task.rglob("__pycache__")) and not list(task.rglob("requirements*.txt"))
