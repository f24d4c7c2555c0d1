"""The `crossover` command: validate configs, serve a model locally."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from crossover.config import ConfigError, load_all, model_files

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
    from serving.server import InferenceServer, serve
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
    server = InferenceServer((args.host, args.port), spec)
    out.print(f"serving {spec.name} on http://{args.host}:{server.server_address[1]} "
              "(POST /predict, GET /health, GET /ready); Ctrl-C stops", markup=False)
    serve(server)
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
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
