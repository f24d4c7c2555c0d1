"""The `crossover` command: validate configs, price backends and find the crossovers, advise from a deployed
model's metrics, switch a model's backend, measure a model, and serve it locally."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from crossover.config import BACKENDS, ConfigError, LoadedConfig, Problem, find, load, load_all, model_files
from crossover.cost import profile
from crossover.cost.catalog import Catalog
from crossover.errors import UserError, extra

if TYPE_CHECKING:
    from crossover.cost.report import Report

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
MODEL_HELP = "a model's name (its `name:` or file name in --models) or the path of its config file"


def _is_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or Path(text).is_file()


def _model(args: argparse.Namespace, *, converting: bool = False) -> LoadedConfig:
    """The config that ``args.model`` names: a path to a config file, or a model's name in ``args.models``."""
    if not _is_path(args.model):
        return find(args.model, Path(args.models), converting=converting)
    path = Path(args.model)
    if not path.is_file():
        raise ConfigError([Problem(args.model, "", "no such config file")])
    return load(path, converting=converting)


def _aws_problem(error: Exception) -> str | None:
    """What to do about an AWS error the user can fix; None for anything else. botocore is only imported
    by commands that call AWS, so an error from it can only exist once it is."""
    found = sys.modules.get("botocore.exceptions")
    if found is None or not isinstance(error, found.BotoCoreError | found.ClientError):
        return None
    if isinstance(error, found.NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION, or a profile's region with `aws configure`"
    if isinstance(error, found.NoCredentialsError | found.PartialCredentialsError):
        return ("no AWS credentials: set AWS_PROFILE or run `aws configure` (with no account, `make deploy` "
                "rehearses on a local emulator instead)")
    if isinstance(error, found.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        hint = {"ExpiredToken": "; refresh your credentials (e.g. aws sso login)",
                "ExpiredTokenException": "; refresh your credentials (e.g. aws sso login)",
                "AccessDenied": "; your credentials lack this permission",
                "AccessDeniedException": "; your credentials lack this permission"}.get(code, "")
        return f"AWS refused the call: {error}{hint}"
    return f"AWS call failed: {error}"


def _validate(args: argparse.Namespace) -> int:
    given = args.models_or_paths
    paths = [Path(m) for m in given if _is_path(m)] if given else model_files(Path(args.models))
    if not given and not paths:
        err.print(f"no model configs found in {args.models}/")
        return 1
    try:
        missing = [Problem(str(p), "", "no such config file") for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(missing)
        loaded = load_all(paths) + [find(m, Path(args.models)) for m in given if not _is_path(m)]
    except ConfigError as error:
        _problems(error)
        err.print(f"[red]{len(error.problems)} problem(s); nothing was synthesized[/red]")
        return 1
    for item in loaded:
        c = item.config
        out.print(f"{item.path}: ok — {c.name} on {c.backend} ({c.service}), stack {c.stack_name}", markup=False)
        for warning in profile.warnings(item):
            err.print(f"[yellow]warning[/yellow] {item.path}: ", end="")
            err.print(warning, markup=False)
    return 0


def _serve(args: argparse.Namespace) -> int:
    with extra("serve", "crossover serve"):
        from crossover_serving.errors import ModelLoadError
        from crossover_serving.model import Model
        from crossover_serving.server import InferenceServer
        from crossover_serving.spec import Spec

    item = _model(args)
    artifact = args.artifact or item.artifact_path
    if artifact is None:
        err.print(f"{item.path}: model.artifact is in S3 ({item.config.model.artifact}); download it and pass "
                  "--artifact FILE", markup=False)
        return 1
    spec = Spec.from_mapping(item.config.serving_spec(str(artifact)))
    try:
        Model(spec)  # fail here, with the reason, rather than serve a server that never becomes ready
    except ModelLoadError as e:
        err.print(f"{item.path}: {e}", markup=False)
        return 1
    server = InferenceServer(spec, host=args.host, port=args.port)
    out.print(f"serving {spec.name} on http://{args.host}:{server.port} "
              "(POST /predict, GET /health, GET /ready); Ctrl-C stops", markup=False)
    server.serve()
    return 0


def _problems(error: ConfigError) -> int:
    for problem in error.problems:
        err.print(str(problem), markup=False)
    return 1


def _catalog(path: str | None) -> tuple[Catalog, str]:
    from crossover.cost import catalog

    chosen = Path(path) if path else catalog.BUNDLED
    if not chosen.is_file():
        raise ConfigError([Problem(str(chosen), "", "no such price file")])
    return catalog.load(chosen), str(chosen) if path else "the bundled catalog"


def _priced_in(path: str | None, region: str | None) -> tuple[Catalog, str]:
    """The catalog at ``path`` (default: the bundled one), which must hold prices for ``region`` (default: the
    deploy environment's region, CDK_DEPLOY_REGION, else the catalog's own)."""
    loaded, shown = _catalog(path)
    wanted = region or os.environ.get("CDK_DEPLOY_REGION") or loaded.region
    if wanted != loaded.region:
        raise UserError(f"{shown} holds {loaded.region} prices, not {wanted}'s (no dated public copy of other "
                        "regions' EC2 prices is bundled); write a catalog for it with crossover prices refresh "
                        f"--region {wanted}, then pass it with --prices")
    return loaded, shown


def _shared_by(config_path: Path, given: int | None = None) -> int:
    """How many model stacks share the network: ``given`` (--shared-by), else the configs beside this one
    (app.py deploys one stack per file in that folder, all on one NetworkStack)."""
    return given or max(1, len(model_files(config_path.parent)))


def _cost(args: argparse.Namespace) -> int:
    from crossover.cost import report

    item = _model(args)
    catalog, shown = _priced_in(args.prices, args.region)
    result = report.build(item, catalog, volume=args.volume, prices_name=shown, profiles=Path(args.profiles),
                          shared_by=_shared_by(item.path, args.shared_by))
    if all(e.line is None for e in result.estimates):
        err.print(f"{item.path}: no backend can be priced:", markup=False)
        for e in result.estimates:
            err.print(f"  {e.backend}: {e.problem}", markup=False)
        return 1
    if args.json:
        out.print_json(data=report.as_json(result))
    else:
        _show(result)
    if args.plot:
        report.plot(result, Path(args.plot))
        err.print(f"plot written to {args.plot}", markup=False)
    selected = result.selected
    if selected.problem:
        err.print(f"{item.path}: backend {selected.backend} cannot be priced: {selected.problem}", markup=False)
        return 1
    return 0


def _show(result: Report, then: str = "action") -> None:
    """A cost report as `crossover cost` prints it: the table, notes, limits, crossovers, the recommendation and,
    labelled ``then``, what to do about it."""
    from crossover.cost import report

    out.print(report.table(result))
    for line in report.notes(result):
        out.print(line, markup=False)
    for backend, most, limit in result.limits():
        out.print(f"limit: {backend} carries at most {most:,.0f} images/month within {limit.setting} "
                  f"({limit.value:,.0f})", markup=False)
    for c in result.crossovers:
        how = {"equal": "both cost the same there", "step": f"{c.below} adds an instance there",
               "limit": f"{c.below} reaches its limit there"}[c.kind]
        out.print(f"crossover: {c.below} is cheaper below {c.images_per_month:,.0f} images/month, "
                  f"{c.above} above ({how})", markup=False)
    if not result.crossovers:
        out.print("crossover: none between 1e3 and 1e10 images/month among the backends that meet p99")
    rule = ("the cheapest within its limits; a pipeline has no latency target" if result.service == "pipeline"
            else f"the cheapest that meets p99 {result.p99_ms} ms within its limits")
    best = result.recommended.name if result.recommended else "none at this volume"
    out.print(f"recommended: {best} ({rule}; * in the table); the config's backend: {result.selected.name}",
              markup=False)
    out.print(f"{then}: {report.action(result)}", markup=False)


def _advise(args: argparse.Namespace) -> int:
    import boto3

    from crossover import advise
    from crossover.cost import report

    item = _model(args)
    catalog, shown = _priced_in(args.prices, args.region)
    session = boto3.Session()
    observed = advise.observe(session.client("cloudwatch"), session.client("cloudformation"), item.config,
                              days=args.days, now=datetime.now(UTC))
    shared_by = _shared_by(item.path, args.shared_by)
    guessed = report.build(item, catalog, prices_name=shown, shared_by=shared_by)
    assumed = next(e.performance for e in guessed.estimates if e.backend == observed.backend)
    calibrated = LoadedConfig(item.path, advise.recalibrate(item.config, observed))
    result = report.build(calibrated, catalog, prices_name=shown, shared_by=shared_by)
    notes = advise.differences(item.config, observed, None if assumed is None else assumed.value)
    if args.json:  # as_json carries the action
        out.print_json(data={**report.as_json(result), "observed": dataclasses.asdict(observed),
                             "differences": notes})
        return 0
    out.print(f"observed on {observed.backend} over {observed.days:g} days: {observed.images:,.0f} images "
              f"({observed.images_per_month:,.0f} a month), busiest hour {observed.busiest_hour:,.0f} "
              f"(peak-to-average {observed.peak_to_average:.1f})", markup=False)
    day = observed.hourly
    top = max(range(24), key=lambda h: day[h])
    out.print(f"  average day: busiest {top:02d}:00-{top + 1:02d}:00 UTC at {day[top] / (sum(day) / 24):.1f}x the "
              "day's mean (a realtime fleet's cost follows this day: traffic.hourly)", markup=False)
    for name, value, unit in (("p99", observed.p99_ms, " ms"), ("Lambda duration per image", observed.lambda_ms,
                              " ms"), ("instance hours", observed.instance_hours, ""),
                              ("images/s per instance served", observed.images_per_second, ""),
                              ("utilisation", observed.utilisation, "%"),
                              ("images/s per instance at full utilisation", observed.capacity, "")):
        if value is not None:
            out.print(f"  {name}: {value:,.1f}{unit}", markup=False)
    if observed.p99_ms is None and item.config.service == "realtime":
        out.print("  p99: not available (CloudWatch returned no percentile)", markup=False)
    for line in notes:
        out.print(f"differs: {line}", markup=False)
    _show(result, then="advice")
    return 0


def _switch(args: argparse.Namespace) -> int:
    from crossover.cost import model, report
    from crossover.switch import Move, abort, cold_start_warning, plan, promote, shares, switch

    item = _model(args)
    chosen = [bool(args.backend), args.promote, args.abort]
    if sum(chosen) != 1:
        err.print("give a backend to move to (optionally with --canary PERCENT), or --promote, or --abort")
        return 2
    try:
        move: Move = (promote(item) if args.promote else abort(item) if args.abort
                      else switch(item, args.backend, canary=args.canary, force=args.force))
        catalog, shown = _catalog(None)
    except ConfigError as error:
        err.print(f"[red]not switched[/red]: {item.path} is unchanged")
        return _problems(error)
    if move.kind == "none":
        out.print(f"{item.path}: already on {item.config.backend}; nothing changed", markup=False)
        return 0
    before, after = move.before.config, move.after.config
    share = after.canary.percent if after.canary else 0
    described = {"switch": f"backend {before.backend} -> {after.backend}",
                 "canary": f"backend {before.backend} -> {after.backend}, canary {share}%",
                 "promote": f"canary promoted: {before.backend} takes every request",
                 "abort": f"canary aborted: backend {before.backend} -> {after.backend}"}[move.kind]
    out.print(f"{item.path}: {described}", markup=False)
    out.print("the next deploy:", markup=False)
    for step in plan(move):
        out.print(f"  - {step}", markup=False)
    result = report.build(move.after, catalog, prices_name=shown, shared_by=_shared_by(item.path))
    estimates = {e.backend: e for e in result.estimates if e.configured}
    months = [(label, model.split_usd(estimates, shares(state), result.volume))
              for label, state in (("before", move.before), ("after", move.after))]
    monthly = "; ".join(f"{label} {_usd(usd)}" for label, usd in months)
    out.print(f"  monthly at {result.volume:,.0f} images ({result.prices}): {monthly}", markup=False)
    over = estimates[after.backend].over(result.volume)
    warnings = [*profile.warnings(move.after), cold_start_warning(move),
                None if over is None else f"at {result.volume:,.0f} images/month {after.backend} {over}"]
    for warning in filter(None, warnings):
        err.print("[yellow]warning[/yellow]: ", end="")
        err.print(warning, markup=False)
    out.print(f"  deploy it: make deploy MODEL={after.name}", markup=False)
    return 0


def _smoke(args: argparse.Namespace) -> int:
    import boto3

    from crossover.cost.bench import photo
    from crossover.smoke import SmokeError, endpoint, smoke

    item = _model(args)
    try:
        url = endpoint(boto3.Session().client("cloudformation"), item.config.stack_name)
        result = smoke(url, item.config.name, photo(), timeout_s=args.timeout)
    except SmokeError as e:
        err.print(f"[red]smoke failed[/red]: {e}", markup=False)
        return 1
    best = result.top[0]
    out.print(f"{item.config.stack_name}: {result.endpoint}/predict answered in {result.latency_ms:.0f} ms; "
              f"top label {best['label']!r} ({best['score']:.3f}) of {len(result.top)}", markup=False)
    return 0


def _watch(args: argparse.Namespace) -> int:
    from crossover.cost.bench import photo
    from crossover.smoke import endpoint
    from crossover.watch import watch

    item = _model(args)
    if args.url:
        url = args.url
    else:
        import boto3

        url = endpoint(boto3.Session().client("cloudformation"), item.config.stack_name)
    out.print(f"watching {url}/predict: {args.rate:g} requests a second for {args.duration:g} s", markup=False)
    tally = watch(url, photo(), rate=args.rate, duration_s=args.duration, timeout_s=args.timeout,
                  report=lambda second, t: out.print(f"  {second:>4} s  {t.line()}", markup=False))
    out.print(f"tally: {tally.sent} sent; {tally.line()}; {tally.failed} not 200", markup=False)
    return 0 if tally.failed == 0 else 1


def _pipeline_stack(args: argparse.Namespace) -> tuple[Any, dict[str, str], str]:
    import boto3

    from crossover.smoke import stack_outputs

    item = _model(args)
    session = boto3.Session()
    stack = item.config.stack_name
    return session, stack_outputs(session.client("cloudformation"), stack, "QueueUrl"), stack


@contextmanager
def _account(args: argparse.Namespace) -> Iterator[None]:
    """With --rehearsal, the persisted rehearsal emulator is the AWS account for the command; else the real one."""
    if not args.rehearsal:
        yield
        return
    from crossover.rehearsal import account

    with account(say=lambda line: err.print(line, markup=False)):
        yield


def _enqueue(args: argparse.Namespace) -> int:
    from crossover.pipeline_cli import enqueue, upload
    from crossover.smoke import SmokeError

    uris = list(args.uris)
    if args.file:
        try:
            uris += [line.strip() for line in Path(args.file).read_text().splitlines() if line.strip()]
        except OSError as e:
            raise SmokeError(f"cannot read {args.file}: {e.strerror}") from None
    if not uris:
        raise SmokeError("no images: give URIs or --file FILE (one s3:// or https:// URI a line)")
    with _account(args):
        session, found, stack = _pipeline_stack(args)
        if args.rehearsal:  # local files go into the emulator's S3, under the pipeline's first declared input
            uris = upload(session.client("s3"), _model(args).config.inputs.s3, uris)
        sent = enqueue(session.client("sqs"), found["QueueUrl"], uris)
    out.print(f"{stack}: {sent} messages queued; `crossover results {args.model}"
              f"{' --rehearsal' if args.rehearsal else ''}` collects what comes back", markup=False)
    return 0


def _work(args: argparse.Namespace) -> int:
    from crossover.rehearsal import account

    with extra("serve", "crossover work"):
        from crossover_serving.model import Model
        from crossover_serving.spec import Spec
        from crossover_serving.worker import Worker
    import boto3

    item = _model(args)
    artifact = args.artifact or item.artifact_path
    if artifact is None:
        raise UserError(f"{item.path}: model.artifact is in S3 ({item.config.model.artifact}); download it and "
                        "pass --artifact FILE")
    model = Model(Spec.from_mapping(item.config.serving_spec(str(artifact))))
    with account(say=lambda line: err.print(line, markup=False)):
        _, found, stack = _pipeline_stack(args)
        worker = Worker(model, queue_url=found["QueueUrl"], bucket=found["ResultsBucket"], sqs=boto3.client("sqs"),
                        s3=boto3.client("s3"), wait_s=1)
        done = failed = 0
        while True:  # until a receive finds the queue empty
            succeeded, errors = worker.poll_once()
            if succeeded + errors == 0:
                break
            done, failed = done + succeeded, failed + errors
    out.print(f"{stack}: this machine's worker processed {done} messages, {failed} failed (they return to the "
              "queue, then its dead-letter queue)", markup=False)
    return 0 if failed == 0 else 1


def _results(args: argparse.Namespace) -> int:
    from crossover.pipeline_cli import collect

    with _account(args):
        session, found, stack = _pipeline_stack(args)
        results, errors = collect(session.client("s3"), found["ResultsBucket"], Path(args.out))
    out.print(f"{stack}: {results} results and {errors} errors (dead-lettered messages) in {args.out}/",
              markup=False)
    return 0


def _rehearse(args: argparse.Namespace) -> int:
    from crossover import deploy

    if args.app:
        return deploy.rehearse_app(args.app, args.target, cwd=Path(args.dir), fresh=args.fresh, fail=args.fail)
    return deploy.main([args.target, "--rehearse", *(["--fresh"] if args.fresh else []),
                        *(["--fail", args.fail] if args.fail else [])])


def _convert(args: argparse.Namespace) -> int:
    from crossover.convert import ConvertError, convert

    try:
        item = _model(args, converting=True)
        if item.config.model.mxnet is None:
            raise ConfigError([Problem(str(item.path), "model.mxnet", "expected {symbol: ..., params: ...} to "
                                       "convert from; this model has no MXNet source")])
        result = convert(item, err, tolerance=args.tolerance)
    except ConfigError as error:
        err.print(f"[red]not converted[/red]: {args.model} is unchanged")
        return _problems(error)
    except ConvertError as e:
        err.print(f"[red]not converted[/red]: {e}; {args.model} is unchanged", markup=False)
        return 1
    out.print(f"{item.path}: converted to {result.onnx}; MXNet and ONNX Runtime agree within "
              f"{result.max_difference:.3g} (outputs up to {result.scale:.3g}); format is now onnx", markup=False)
    return 0


def _usd(value: float | None) -> str:
    return "unknown (see crossover cost)" if value is None else f"${value:,.2f}"


def _bench(args: argparse.Namespace) -> int:
    with extra("serve", "crossover bench"):
        from crossover.cost.bench import run
        from crossover_serving.errors import ModelLoadError
        from crossover_serving.spec import Spec

    item = _model(args)
    artifact = args.artifact or item.artifact_path
    if artifact is None:
        err.print(f"{item.path}: model.artifact is in S3 ({item.config.model.artifact}); download it and pass "
                  "--artifact FILE", markup=False)
        return 1
    try:
        path = run(Spec.from_mapping(item.config.serving_spec(str(artifact))), repeat=args.repeat,
                   folder=Path(args.profiles))
    except ModelLoadError as e:
        err.print(f"{item.path}: {e}", markup=False)
        return 1
    out.print(f"profile written to {path}; `crossover cost {args.model}` now uses it", markup=False)
    out.print(path.read_text(), markup=False)
    return 0


def _refresh(args: argparse.Namespace) -> int:
    import datetime

    import boto3

    from crossover.cost.refresh import RefreshError, refresh

    out_path = Path(args.out or f"prices-{datetime.date.today().isoformat()}.yaml")
    session = boto3.Session()  # a fresh one: credentials are looked up now, not reused from earlier calls
    try:
        if session.get_credentials() is None:
            raise RefreshError("no AWS credentials: the Price List API and the spot price history need them (any "
                               "account can read them); the bundled catalog is unchanged")
        # The Price List API answers from us-east-1 for every region; spot prices come from the region itself.
        written = refresh(session.client("pricing", region_name="us-east-1"), out_path,
                          ec2=session.client("ec2", region_name=args.region), region=args.region)
    except RefreshError as e:
        err.print(f"[red]error[/red]: {e}")
        return 1
    out.print(f"wrote {written}; use it with crossover cost --prices {written}", markup=False)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="crossover", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, run: Any, help: str, *, model: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if model:
            sub.add_argument("model", help=MODEL_HELP)
        sub.add_argument("--models", default="models", help="folder of model configs that names are looked up in "
                                                            "(default: models)")
        sub.set_defaults(run=run)
        return sub

    validate = command("validate", _validate, "check model configs (default: every file in --models)", model=False)
    validate.add_argument("models_or_paths", nargs="*", metavar="model", help=MODEL_HELP)
    serve = command("serve", _serve, "run the instance HTTP server locally on a model's artifact")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--artifact", type=Path, help="a local copy of an s3:// artifact")
    cost = command("cost", _cost, "monthly cost per backend, crossovers, recommendation")
    cost.add_argument("--prices", help="a price catalog (default: the bundled, dated one)")
    cost.add_argument("--region", help="the region to price (default: CDK_DEPLOY_REGION, else the catalog's)")
    cost.add_argument("--volume", type=_volume, help="images per month, e.g. 7500000, 7.5M, 2.5e7 or 1_000_000 "
                                                     "(default: traffic.images_per_month)")
    cost.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cost.add_argument("--plot", metavar="FILE.png", help="draw cost against volume with the crossovers")
    cost.add_argument("--profiles", default=str(profile.PROFILES), help="folder of `crossover bench` profiles")
    cost.add_argument("--shared-by", type=_whole, metavar="N",
                      help="model stacks sharing the network's NAT gateway (default: the configs in the config's "
                           "folder)")
    advise_ = command("advise", _advise, "recalibrate the cost model with the deployed model's own metrics and "
                                         "say whether to switch")
    advise_.add_argument("--days", type=_positive, default=14.0, help="how many days back to read (default 14)")
    advise_.add_argument("--prices", help="a price catalog (default: the bundled, dated one)")
    advise_.add_argument("--region", help="the region to price (default: CDK_DEPLOY_REGION, else the catalog's)")
    advise_.add_argument("--json", action="store_true", help="print JSON: crossover cost --json's keys, plus "
                                                            "observed, differences and action")
    advise_.add_argument("--shared-by", type=_whole, metavar="N",
                         help="model stacks sharing the network (default: the configs in the config's folder)")
    switch = command("switch", _switch, "move a model to another backend, at once or as a canary")
    switch.add_argument("backend", nargs="?", help=" | ".join(BACKENDS))
    switch.add_argument("--canary", type=_percent, metavar="PERCENT",
                        help="keep the current backend and send it 100-PERCENT%% of requests until --promote/--abort")
    switch.add_argument("--promote", action="store_true", help="end a canary: the new backend takes every request")
    switch.add_argument("--abort", action="store_true", help="undo a canary: the old backend takes every request")
    switch.add_argument("--force", action="store_true", help="switch to a retired backend (eia) all the same")
    bench = command("bench", _bench, "measure the model here and write profiles/<name>.json")
    bench.add_argument("--artifact", type=Path, help="a local copy of an s3:// artifact")
    bench.add_argument("--repeat", type=_whole, default=20, help="timed runs per measurement (default 20)")
    bench.add_argument("--profiles", default=str(profile.PROFILES), help="where to write the profile")
    smoke = command("smoke", _smoke, "send a real photo to a deployed model and check the answer")
    smoke.add_argument("--timeout", type=_positive, default=30.0, help="seconds to wait for the answer (default 30)")
    watch = command("watch", _watch, "send a photo at a steady rate and count every answer (run it during a deploy "
                                     "to prove a switch dropped nothing)")
    watch.add_argument("--rate", type=_positive, default=5.0, help="requests a second (default 5)")
    watch.add_argument("--duration", type=_positive, default=60.0, help="seconds to send for (default 60)")
    watch.add_argument("--timeout", type=_positive, default=10.0, help="seconds a request may wait for its answer")
    watch.add_argument("--url", help="the endpoint (default: the deployed stack's Endpoint output)")
    rehearsal = "against the rehearsal's emulator (make rehearse), not the AWS account"
    enqueue = command("enqueue", _enqueue, "send images to a deployed pipeline's queue")
    enqueue.add_argument("uris", nargs="*", help="s3:// or https:// images (with --rehearsal, local files too)")
    enqueue.add_argument("--file", help="a file of URIs, one a line")
    enqueue.add_argument("--rehearsal", action="store_true", help=rehearsal)
    work = command("work", _work, "process a rehearsed pipeline's queue here, with the instances' worker, until "
                   "it is empty (the emulator runs no Lambda or instances)")
    work.add_argument("--artifact", type=Path, help="a local copy of an s3:// artifact")
    results = command("results", _results, "download a deployed pipeline's results and errors")
    results.add_argument("--out", default="results", help="folder to write results/ and errors/ into")
    results.add_argument("--rehearsal", action="store_true", help=rehearsal)
    rehearse = command("rehearse", _rehearse, "deploy a model, or a stack of a team's own CDK app (--app), into "
                       "the local AWS emulator, from what the last rehearsal left", model=False)
    rehearse.add_argument("target", help="a model's name; with --app, a stack of that app")
    rehearse.add_argument("--app", help='the app\'s command, as in cdk.json (e.g. "python app.py")')
    rehearse.add_argument("--dir", default=".", help="where --app runs (default: here)")
    rehearse.add_argument("--fresh", action="store_true", help="start from an empty account")
    rehearse.add_argument("--fail", choices=BACKENDS, metavar="BACKEND",
                          help="this backend never becomes ready: the move to it rolls back")
    convert = command("convert", _convert, "convert a model's MXNet symbol + params to its ONNX artifact")
    convert.add_argument("--tolerance", type=float, default=1e-4,
                         help="largest MXNet vs ONNX Runtime difference allowed, relative to the output scale")
    prices = commands.add_parser("prices", help="the price catalog")
    prices_commands = prices.add_subparsers(dest="prices_command", required=True)
    refresh = prices_commands.add_parser("refresh",
                                         help="fetch current EC2 on-demand and spot prices into a new dated catalog")
    refresh.add_argument("--out", help="where to write it (default: prices-<date>.yaml)")
    refresh.add_argument("--region", default="us-east-1", help="the region to price (default: us-east-1)")
    refresh.set_defaults(run=_refresh)
    return root


def _percent(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 99:
        raise argparse.ArgumentTypeError(f"expected a whole percent from 1 to 99; got {text!r}")
    return int(text)


def _whole(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1; got {text!r}")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
    return value


def _glued(argv: list[str]) -> list[str]:
    """``--volume -5M`` as ``--volume=-5M``: argparse would take a negative value for an unknown option and say
    only "expected one argument"; glued, _volume says what is wrong with it."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--volume" and argv[i + 1].startswith("-"):
            return [*argv[:i], f"--volume={argv[i + 1]}", *argv[i + 2:]]
    return argv


_SCALE = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


def _volume(text: str) -> float:
    """Images per month: a number, with an optional k, M or B (G) for thousands, millions, billions."""
    scale = _SCALE.get(text.strip()[-1:].lower(), 1.0)
    try:
        return _positive(text.strip()[:-1] if scale != 1.0 else text) * scale
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected images per month, such as 7500000, 7.5M, 2.5e7 or 1_000_000; "
                                         f"got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(_glued(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(args.run(args))
    except ConfigError as error:
        return _problems(error)
    except Exception as e:
        problem = str(e) if isinstance(e, UserError) else _aws_problem(e)
        if problem is None:
            raise
        err.print("[red]error[/red]: ", end="")
        err.print(problem, markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
