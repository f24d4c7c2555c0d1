"""Regenerates docs/reliability.md: what was run against crossover, and what it found.

    python scripts/reliability.py [--fuzz-examples N]        (make reliability; make load first)

1. Synthesizes every example model on every backend and service, plus public endpoints; the cdk-nag
   packs run inside the synth, so any unacknowledged finding stops it.
2. cfn-lint and checkov over every template written.
3. The fuzz harness (tests/test_fuzz.py) with N examples per target, counting executions and crashes.
4. The hostile peers' attacks against the HTTP server on loopback (scripts/hostile.py): answers, CPU, memory.
5. The load test's figures, from build/reliability/load.json (bench/load.py, `make load`).
Every number on the page comes from this run or from that file; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import hostile  # noqa: E402

from crossover import compliance  # noqa: E402
from crossover.config import BACKENDS, load_all, yaml_mapping  # noqa: E402

PAGE = ROOT / "docs" / "reliability.md"
LOAD = ROOT / "build" / "reliability" / "load.json"
CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0b7d8c1e-1111-2222-3333-444455556666"


def variants(folder: Path) -> list[Path]:
    """Every example on every backend and service, and public endpoints (the examples' artifacts made absolute)."""
    yaml = YAML(typ="safe")
    written = []
    for example in sorted((ROOT / "models").glob("*.yaml")):
        base = yaml_mapping(example, str(example))
        base["model"]["artifact"] = str((example.parent / base["model"]["artifact"]).resolve()) if (
            not base["model"]["artifact"].startswith("s3://")) else base["model"]["artifact"]
        shapes: list[tuple[str, str, str | None]] = [(b, s, None) for b in BACKENDS for s in ("realtime", "pipeline")]
        shapes += [(b, "realtime", CERTIFICATE) for b in ("lambda", "gpu")] if base["name"] == "resnet152" else []
        for backend, service, certificate in shapes:
            config = {**base, "backend": backend, "service": service,
                      "name": f"{base['name']}-{backend}-{service}" + ("-public" if certificate else "")}
            if service == "pipeline":
                config["scaling"] = {**base.get("scaling", {}), "min": 0}
                config["inputs"] = {"s3": ["my-images"]}
            if certificate:
                config["endpoint"] = {"certificate_arn": certificate}
            path = folder / f"{config['name']}.yaml"
            with path.open("w") as out:
                yaml.dump(config, out)
            written.append(path)
    return written


def synthesize(outdir: Path) -> tuple[list[Path], float]:
    from crossover.app import build, new_app

    with tempfile.TemporaryDirectory() as models:
        configs = load_all(variants(Path(models)))
        started = time.perf_counter()
        app = new_app(outdir=str(outdir))
        # Construct paths in each resource's Metadata, as `cdk synth` writes them: the page names resources so.
        app.node.set_context("aws:cdk:enable-path-metadata", True)
        build(app, configs)
        app.synth()
        seconds = time.perf_counter() - started
    return sorted(outdir.glob("*.template.json")), seconds


def rule_counts() -> dict[str, int]:
    """Rules in each pack: the applyRule calls in the pack's source as shipped in the pinned cdk-nag."""
    import cdk_nag._jsii as jsii_package

    (bundle,) = Path(jsii_package.__file__).parent.glob("*.jsii.tgz")
    sources = {"AwsSolutions": "aws-solutions", "Serverless": "serverless", "NIST.800.53.R5": "nist-800-53-r5"}
    counts = {}
    with tarfile.open(bundle) as tar:
        for pack, name in sources.items():
            source = tar.extractfile(f"package/lib/packs/{name}.js")
            assert source is not None
            counts[pack] = source.read().decode().count("this.applyRule(")
    return counts


def cfn_lint(templates: list[Path]) -> Counter[str]:
    """Findings by rule id (E: errors, W: warnings, I: informational); parseable lines are
    ``file:line:col:line:col:RULE:message``."""
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "cfn-lint"), "--format", "parseable", *map(str, templates)],
                            capture_output=True, text=True)
    findings = Counter(line.split(":")[5] for line in result.stdout.splitlines() if line.count(":") >= 6)
    # Its exit code is a bitmask of what it found (2 errors, 4 warnings, 8 informational): anything else, or a
    # finding it reports without printing one, is cfn-lint failing, not the templates passing.
    if result.returncode & ~(2 | 4 | 8) or (result.returncode and not findings):
        raise SystemExit(f"cfn-lint failed (exit {result.returncode}): {result.stderr[-500:]}")
    return findings


def checkov(outdir: Path) -> dict[str, Any]:
    result = subprocess.run([str(ROOT / ".venv-checkov" / "bin" / "checkov"), "--directory", str(outdir),
                             "--framework", "cloudformation", "--output", "json", "--compact"],
                            capture_output=True, text=True)
    report = json.loads(result.stdout)
    return {"summary": report["summary"],
            "skipped": Counter(s["check_id"] for s in report["results"]["skipped_checks"]),
            "failed": [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]}


STAT = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid test cases")


def fuzz(examples: int) -> dict[str, Any]:
    env = {**os.environ, "HYPOTHESIS_PROFILE": "long", "FUZZ_EXAMPLES": str(examples)}
    started = time.perf_counter()
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "pytest"), "-q", "-p", "no:cacheprovider",
                             "tests/test_fuzz.py", "--hypothesis-show-statistics"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    targets: dict[str, tuple[int, int, int]] = {}
    current = None
    for line in result.stdout.splitlines():
        if line.startswith("tests/test_fuzz.py::"):
            current = line.split("::", 1)[1].rstrip(":")
        elif current and (match := STAT.search(line)):
            passing, failing, invalid = map(int, match.groups())
            prior = targets.get(current, (0, 0, 0))
            targets[current] = (prior[0] + passing, prior[1] + failing, prior[2] + invalid)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    return {"targets": targets, "seconds": seconds, "passed": result.returncode == 0, "summary": tail}


TOOLS = {"AwsSolutions-": "AwsSolutions", "Serverless-": "Serverless", compliance.NIST: "NIST.800.53.R5",
         "CloudFormation-Validate::": "CloudFormation validation", compliance.CFN_LINT: "cfn-lint",
         compliance.CHECKOV: "checkov"}


def tool_of(finding: str) -> str:
    return next(tool for prefix, tool in TOOLS.items() if finding.startswith(prefix))


def acknowledgements(templates: list[Path]) -> dict[tuple[str, str], str]:
    """(construct path inside its stack, finding) -> reason, for every acknowledgement in ``templates``: each
    construct writes its own into the resource's Metadata."""
    found: dict[tuple[str, str], str] = {}
    for path in templates:
        for logical, resource in json.loads(path.read_text())["Resources"].items():
            metadata = resource.get("Metadata", {})
            where = metadata["aws:cdk:path"].split("/", 1)[-1] if "aws:cdk:path" in metadata else logical
            for entry in metadata.get(compliance.METADATA_KEY, []):
                found.setdefault((where, entry["finding"]), entry["reason"])
    return dict(sorted(found.items()))


def page(*, templates: int, accepted: dict[tuple[str, str], str], synth_s: float, rules: dict[str, int],
         lint: Counter[str], scan: dict[str, Any], fuzzed: dict[str, Any], examples: int,
         attacked: dict[str, Any]) -> str:
    acks = Counter(tool_of(finding) for _, finding in accepted)
    lines = [
        "# Reliability figures",
        "",
        "Generated by `python scripts/reliability.py` (`make reliability`) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; do not edit by hand. The load figures come "
        "from `make load` (bench/load.py), run before it.",
        "",
        "## Static analysis of every template",
        "",
        f"{templates} templates: every example model on every backend (lambda, gpu, eia, inferentia, cpu) "
        f"and service (realtime, pipeline), public endpoints, the network and image stacks; synthesized in "
        f"{synth_s:.1f} s.",
        "",
        "| check | rules | result |",
        "|---|---|---|",
    ]
    for pack, count in rules.items():
        lines.append(f"| cdk-nag {pack} (runs in the synth) | {count} | 0 unacknowledged findings; "
                     f"{acks[pack]} acknowledgements |")
    errors = sum(n for rule, n in lint.items() if rule.startswith("E"))
    others = ", ".join(f"{rule} x{n}" for rule, n in sorted(lint.items()) if not rule.startswith("E")) or "none"
    lines.append(f"| cfn-lint | all | {errors} errors; other findings: {others}; "
                 f"{acks['cfn-lint']} acknowledgements |")
    lines.append(f"| CDK's CloudFormation validation (runs in the synth) | schema | 0 unacknowledged; "
                 f"{acks['CloudFormation validation']} acknowledgement(s) |")
    summary = scan["summary"]
    lines.append(f"| checkov {summary['checkov_version']} | "
                 f"{summary['passed'] + summary['failed'] + summary['skipped']} checks run "
                 f"| {summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped by "
                 f"{acks['checkov']} acknowledgements "
                 f"({', '.join(f'{k} x{v}' for k, v in sorted(scan['skipped'].items()))}) |")
    if any(rule == "W3005" for rule in lint):
        lines += ["", "W3005 is a DependsOn that CDK writes beside a reference that already implies it: harmless."]
    lines += ["", "Every acknowledgement names one resource and one finding, and is written into that "
              "resource's Metadata (`crossover:acknowledged`; `checkov.skip` and `cfn-lint` for those tools):", "",
              "| resource (path in the stack) | finding | reason |", "|---|---|---|"]
    lines += [f"| `{where}` | `{finding}` | {reason} |" for (where, finding), reason in accepted.items()]
    lines += ["", "## Fuzzing", "",
              f"`tests/test_fuzz.py` (hypothesis, seeded with real images), up to {examples} examples per "
              f"target, {fuzzed['seconds']:.0f} s; pytest said: {fuzzed['summary']}.", "",
              "| target | executions | crashes (failing examples) | discarded draws (hypothesis 'invalid') |",
              "|---|---|---|---|"]
    lines += [f"| `{name}` | {p} | {f} | {i} |" for name, (p, f, i) in fuzzed["targets"].items()]
    total = [sum(v[i] for v in fuzzed["targets"].values()) for i in range(3)]
    lines += [f"| **total** | {total[0]} | {total[1]} | {total[2]} |", "",
              "CI runs the same harness with 150 examples per target; this page's run: "
              f"`python scripts/reliability.py --fuzz-examples {examples}`.", ""]
    lines += hostile_section(attacked)
    lines += load_section()
    return "\n".join(lines) + "\n"


def hostile_section(attacked: dict[str, Any]) -> list[str]:
    lines = ["## Hostile peers", "",
             "Each attack a hostile round found, replayed by `scripts/hostile.py` against `crossover_serving/`'s "
             f"HTTP server on loopback (efficientnet-lite0, a 400 MiB decode budget), {attacked['machine']} shared "
             f"with the attackers, {attacked['measured_at']}. CPU: what the server process spent on it; memory: "
             "the peak of its resident memory above what it held before. Server faults (tracebacks) over the "
             f"whole run: {attacked['faults']}. The same classes on Lambda and in the worker are proven by "
             "`tests/test_hostile.py`, with Lambda's fair share of an SQS batch and the worker's renewed "
             "visibility.", "",
             "| class | attack | answer | server CPU-s | peak memory |", "|---|---|---|---|---|"]
    lines += [f"| {r['class']} | {r['attack']} | {r['answer']} | {r['cpu_s']:.2f} | {r['peak_mib']:.1f} MiB |"
              for r in attacked["rows"]]
    return [*lines, ""]


def load_section() -> list[str]:
    lines = ["## Load", ""]
    if not LOAD.is_file():
        return [*lines, "No load figures yet: run `make load`, then regenerate this page.", ""]
    f = json.loads(LOAD.read_text())
    overload = f["overload"]
    return [*lines,
            f"`bench/load.py` (locust; open-loop random arrivals, one request a second per user on average) "
            f"against `crossover_serving/`'s HTTP "
            f"server on loopback, model {f['model']}, real photos, on {f['machine']} "
            f"(the load generator shares these CPUs), {f['measured_at']}.", "",
            "| figure | value |", "|---|---|",
            f"| sustainable requests/s at p99 <= {f['p99_target_ms']} ms | {f['sustainable_rps']:.1f} "
            f"(p99 {f['sustainable_p99_ms']:.0f} ms) |",
            f"| 2x that ({overload['offered_rps']:.0f} req/s offered) | "
            f"{', '.join(f'{status} x{n}' for status, n in sorted(overload['statuses'].items()))} "
            f"(200s p99 {overload['p99_ms']:.0f} ms); 5xx other than 503: {f['overload_5xx_other_than_503']}; "
            f"no answer at all: {sum(f['overload_connection_errors'].values())} |",
            f"| server memory (RSS) at capacity / at 2x | {f['rss_mib_at_capacity']:.0f} / "
            f"{f['rss_mib_at_overload']:.0f} MiB |",
            f"| recovery after the burst (first all-200 second within target) | {f['recovery_s']:.1f} s |", "",
            "The sustainable rate, per CPU, is the cpu backend's planned requests per instance "
            "(profiles/<model>.load.json: scaling target and `crossover cost`).", ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz-examples", type=int, default=2000, help="hypothesis examples per fuzz target")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as outdir:
        print("synthesizing every variant (cdk-nag runs inside)...", flush=True)
        templates, synth_s = synthesize(Path(outdir))
        print(f"{len(templates)} templates; cfn-lint and checkov...", flush=True)
        lint, scan = cfn_lint(templates), checkov(Path(outdir))
        accepted = acknowledgements(templates)  # read while the templates exist
    print(f"fuzzing, {args.fuzz_examples} examples per target...", flush=True)
    fuzzed = fuzz(args.fuzz_examples)
    print("replaying the hostile peers' attacks...", flush=True)
    attacked = hostile.run()
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(page(templates=len(templates), accepted=accepted, synth_s=synth_s, rules=rule_counts(),
                         lint=lint, scan=scan, fuzzed=fuzzed, examples=args.fuzz_examples, attacked=attacked))
    print(f"wrote {PAGE.relative_to(ROOT)}")
    problems = (sum(n for rule, n in lint.items() if rule.startswith("E")) + len(scan["failed"])
                + sum(v[1] for v in fuzzed["targets"].values()) + attacked["faults"])
    return 0 if problems == 0 and fuzzed["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
