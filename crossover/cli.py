"""The `crossover` command: validate configs, price backends and find the crossovers, switch a
model's backend, measure a model, and serve it locally."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from crossover.config import ConfigError, Problem, find, load_all, model_files
from crossover.cost.catalog import Catalog
from crossover.cost.profile import PROFILES

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _validate(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] or model_files(Path(args.models))
    if not paths:
        err.print(f"no model configs found in {args.models}/")
        return 1
    missing = [p for p in paths if not p.is_file()]
    if missing:
        for path in missing:
            err.print(f"{path}: no such file", markup=False)
        return 1
    try:
        loaded = load_all(paths)
    except ConfigError as error:
        for problem in error.problems:
            err.print(str(problem), markup=False)
        err.print(f"[red]{len(error.problems)} problem(s); nothing was synthesized[/red]")
        return 1
    for item in loaded:
        c = item.config
        out.print(f"{item.path}: ok — {c.name} on {c.backend} ({c.service}), stack {c.stack_name}", markup=False)
        for warning in item.warnings:
            err.print(f"[yellow]warning[/yellow] {item.path}: ", end="")
            err.print(warning, markup=False)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from serving.errors import ModelLoadError
    from serving.model import Model
    from serving.server import InferenceServer
    from serving.spec import Spec

    try:
        (item,) = load_all([Path(args.config)])
    except ConfigError as error:
        for problem in error.problems:
            err.print(str(problem), markup=False)
        return 1
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


def _shared_by(config_path: Path, given: int | None = None) -> int:
    """How many model stacks share the network: ``given`` (--shared-by), else the configs beside this one
    (app.py deploys one stack per file in that folder, all on one NetworkStack)."""
    return given or max(1, len(model_files(config_path.parent)))


def _cost(args: argparse.Namespace) -> int:
    from crossover.cost import report

    try:
        (item,) = load_all([Path(args.config)])
        catalog, shown = _catalog(args.prices)
    except ConfigError as error:
        return _problems(error)
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
        best = result.recommended.backend if result.recommended else "none at this volume"
        out.print(f"recommended: {best} ({rule}; * in the table); the config's backend: {result.backend}",
                  markup=False)
    if args.plot:
        report.plot(result, Path(args.plot))
        err.print(f"plot written to {args.plot}", markup=False)
    selected = result.selected
    if selected.problem:
        err.print(f"{item.path}: backend {selected.backend} cannot be priced: {selected.problem}", markup=False)
        return 1
    return 0


def _switch(args: argparse.Namespace) -> int:
    from crossover.cost import model, report
    from crossover.switch import Move, abort, cold_start_warning, plan, promote, shares, switch

    try:
        item = find(args.name, Path(args.models))
    except ConfigError as error:
        return _problems(error)
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
    estimates = {e.backend: e for e in result.estimates}
    months = [(label, model.split_usd(estimates, shares(state), result.volume))
              for label, state in (("before", move.before), ("after", move.after))]
    monthly = "; ".join(f"{label} {_usd(usd)}" for label, usd in months)
    out.print(f"  monthly at {result.volume:,.0f} images ({result.prices}): {monthly}", markup=False)
    over = estimates[after.backend].over(result.volume)
    warnings = [*move.after.warnings, cold_start_warning(move),
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

    try:
        item = find(args.name, Path(args.models))
        url = endpoint(boto3.Session().client("cloudformation"), item.config.stack_name)
        result = smoke(url, item.config.name, photo(), timeout_s=args.timeout)
    except ConfigError as error:
        return _problems(error)
    except SmokeError as e:
        err.print(f"[red]smoke failed[/red]: {e}", markup=False)
        return 1
    best = result.top[0]
    out.print(f"{item.config.stack_name}: {result.endpoint}/predict answered in {result.latency_ms:.0f} ms; "
              f"top label {best['label']!r} ({best['score']:.3f}) of {len(result.top)}", markup=False)
    return 0


def _watch(args: argparse.Namespace) -> int:
    from crossover.cost.bench import photo
    from crossover.smoke import SmokeError, endpoint
    from crossover.watch import watch

    try:
        item = find(args.name, Path(args.models))
        if args.url:
            url = args.url
        else:
            import boto3

            url = endpoint(boto3.Session().client("cloudformation"), item.config.stack_name)
    except ConfigError as error:
        return _problems(error)
    except SmokeError as e:
        err.print(f"[red]error[/red]: {e}", markup=False)
        return 1
    out.print(f"watching {url}/predict: {args.rate:g} requests a second for {args.duration:g} s", markup=False)
    tally = watch(url, photo(), rate=args.rate, duration_s=args.duration, timeout_s=args.timeout,
                  report=lambda second, t: out.print(f"  {second:>4} s  {t.line()}", markup=False))
    out.print(f"tally: {tally.sent} sent; {tally.line()}; {tally.failed} not 200", markup=False)
    return 0 if tally.failed == 0 else 1


def _pipeline_stack(args: argparse.Namespace) -> tuple[Any, dict[str, str], str]:
    import boto3

    from crossover.pipeline_cli import outputs

    (item,) = load_all([Path(args.config)])
    session = boto3.Session()
    return session, outputs(session.client("cloudformation"), item.config.stack_name), item.config.stack_name


def _enqueue(args: argparse.Namespace) -> int:
    from crossover.pipeline_cli import enqueue
    from crossover.smoke import SmokeError

    uris = list(args.uris)
    try:
        if args.file:
            uris += [line.strip() for line in Path(args.file).read_text().splitlines() if line.strip()]
        if not uris:
            raise SmokeError("no images: give URIs or --file FILE (one s3:// or https:// URI a line)")
        session, found, stack = _pipeline_stack(args)
        sent = enqueue(session.client("sqs"), found["QueueUrl"], uris)
    except ConfigError as error:
        return _problems(error)
    except (SmokeError, OSError) as e:
        err.print(f"[red]error[/red]: {e}", markup=False)
        return 1
    out.print(f"{stack}: {sent} messages queued; `crossover results {args.config}` collects what comes back",
              markup=False)
    return 0


def _results(args: argparse.Namespace) -> int:
    from crossover.pipeline_cli import collect
    from crossover.smoke import SmokeError

    try:
        session, found, stack = _pipeline_stack(args)
        results, errors = collect(session.client("s3"), found["ResultsBucket"], Path(args.out))
    except ConfigError as error:
        return _problems(error)
    except SmokeError as e:
        err.print(f"[red]error[/red]: {e}", markup=False)
        return 1
    out.print(f"{stack}: {results} results and {errors} errors (dead-lettered messages) in {args.out}/",
              markup=False)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from crossover.config import load
    from crossover.convert import ConvertError, convert

    try:
        item = load(Path(args.config), converting=True)
        if item.config.model.mxnet is None:
            raise ConfigError([Problem(str(item.path), "model.mxnet", "expected {symbol: ..., params: ...} to "
                                       "convert from; this model has no MXNet source")])
        result = convert(item, err, tolerance=args.tolerance)
    except ConfigError as error:
        err.print(f"[red]not converted[/red]: {args.config} is unchanged")
        return _problems(error)
    except ConvertError as e:
        err.print(f"[red]not converted[/red]: {e}; {args.config} is unchanged", markup=False)
        return 1
    out.print(f"{args.config}: converted to {result.onnx}; MXNet and ONNX Runtime agree within "
              f"{result.max_difference:.3g} (outputs up to {result.scale:.3g}); format is now onnx", markup=False)
    return 0


def _usd(value: float | None) -> str:
    return "unknown (see crossover cost)" if value is None else f"${value:,.2f}"


def _bench(args: argparse.Namespace) -> int:
    from crossover.cost.bench import run
    from serving.errors import ModelLoadError
    from serving.spec import Spec

    try:
        (item,) = load_all([Path(args.config)])
    except ConfigError as error:
        return _problems(error)
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
    out.print(f"profile written to {path}; `crossover cost {args.config}` now uses it", markup=False)
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
            raise RefreshError("no AWS credentials: the Price List API needs them (any account can read it); "
                               "the bundled catalog is unchanged")
        written = refresh(session.client("pricing", region_name="us-east-1"), out_path)
    except RefreshError as e:
        err.print(f"[red]error[/red]: {e}")
        return 1
    out.print(f"wrote {written}; use it with crossover cost --prices {written}", markup=False)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="crossover", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check model configs (default: every file in models/)")
    validate.add_argument("paths", nargs="*", help="config files")
    validate.add_argument("--models", default="models", help="folder searched when no path is given")
    validate.set_defaults(run=_validate)
    serve = commands.add_parser("serve", help="run the instance HTTP server locally on a model's artifact")
    serve.add_argument("config", help="models/<name>.yaml")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    serve.add_argument("--artifact", type=Path, help="a local copy of an s3:// artifact")
    serve.set_defaults(run=_serve)
    cost = commands.add_parser("cost", help="monthly cost per backend, crossovers, recommendation")
    cost.add_argument("config", help="models/<name>.yaml")
    cost.add_argument("--prices", help="a price catalog (default: the bundled, dated one)")
    cost.add_argument("--volume", type=_positive, help="images per month (default: traffic.images_per_month)")
    cost.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cost.add_argument("--plot", metavar="FILE.png", help="draw cost against volume with the crossovers")
    cost.add_argument("--profiles", default=str(PROFILES), help="folder of `crossover bench` profiles")
    cost.add_argument("--shared-by", type=_whole, metavar="N",
                      help="model stacks sharing the network's NAT gateway (default: the configs in the config's "
                           "folder)")
    cost.set_defaults(run=_cost)
    switch = commands.add_parser("switch", help="move a model to another backend, at once or as a canary")
    switch.add_argument("name", help="the model's name (or its file name in models/)")
    switch.add_argument("backend", nargs="?", help="lambda | gpu | eia | inferentia | cpu")
    switch.add_argument("--canary", type=_percent, metavar="PERCENT",
                        help="keep the current backend and send it 100-PERCENT%% of requests until --promote/--abort")
    switch.add_argument("--promote", action="store_true", help="end a canary: the new backend takes every request")
    switch.add_argument("--abort", action="store_true", help="undo a canary: the old backend takes every request")
    switch.add_argument("--force", action="store_true", help="switch to a retired backend (eia) all the same")
    switch.add_argument("--models", default="models", help="folder of the model configs")
    switch.set_defaults(run=_switch)
    bench = commands.add_parser("bench", help="measure the model here and write profiles/<name>.json")
    bench.add_argument("config", help="models/<name>.yaml")
    bench.add_argument("--artifact", type=Path, help="a local copy of an s3:// artifact")
    bench.add_argument("--repeat", type=int, default=20)
    bench.add_argument("--profiles", default=str(PROFILES), help="where to write the profile")
    bench.set_defaults(run=_bench)
    smoke = commands.add_parser("smoke", help="send a real photo to a deployed model and check the answer")
    smoke.add_argument("name", help="the model's name")
    smoke.add_argument("--models", default="models", help="folder of the model configs")
    smoke.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    smoke.set_defaults(run=_smoke)
    watch = commands.add_parser("watch", help="send a photo at a steady rate and count every answer (run it during "
                                             "a deploy to prove a switch dropped nothing)")
    watch.add_argument("name", help="the model's name")
    watch.add_argument("--rate", type=_positive, default=5.0, help="requests a second (default 5)")
    watch.add_argument("--duration", type=_positive, default=60.0, help="seconds to send for (default 60)")
    watch.add_argument("--timeout", type=_positive, default=10.0, help="seconds a request may wait for its answer")
    watch.add_argument("--url", help="the endpoint (default: the deployed stack's Endpoint output)")
    watch.add_argument("--models", default="models", help="folder of the model configs")
    watch.set_defaults(run=_watch)
    enqueue = commands.add_parser("enqueue", help="send images to a deployed pipeline's queue")
    enqueue.add_argument("config", help="models/<name>.yaml (service: pipeline)")
    enqueue.add_argument("uris", nargs="*", help="s3:// or https:// images")
    enqueue.add_argument("--file", help="a file of URIs, one a line")
    enqueue.set_defaults(run=_enqueue)
    results = commands.add_parser("results", help="download a deployed pipeline's results and errors")
    results.add_argument("config", help="models/<name>.yaml (service: pipeline)")
    results.add_argument("--out", default="results", help="folder to write results/ and errors/ into")
    results.set_defaults(run=_results)
    convert = commands.add_parser("convert", help="convert a model's MXNet symbol + params to its ONNX artifact")
    convert.add_argument("config", help="models/<name>.yaml with format: mxnet")
    convert.add_argument("--tolerance", type=float, default=1e-4,
                         help="largest MXNet vs ONNX Runtime difference allowed, relative to the output scale")
    convert.set_defaults(run=_convert)
    prices = commands.add_parser("prices", help="the price catalog")
    prices_commands = prices.add_subparsers(dest="prices_command", required=True)
    refresh = prices_commands.add_parser("refresh", help="fetch current EC2 prices into a new dated catalog")
    refresh.add_argument("--out", help="where to write it (default: prices-<date>.yaml)")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
