"""Synth cost: crossover's app and the team example app against a bare CDK app built the same way, and per model.

Prints figures; it is not a test. Each case runs its app in a fresh process (as `cdk synth` does) REPEAT times, the
cases interleaved, into a warm output folder (Lambda bundles already there, as in day-to-day use) with Python's
bytecode cache warm (the first round writes it, as any run does where PYTHONDONTWRITEBYTECODE is not set) and reports
the median. The bare app runs with CDK's defaults, its built-in CloudFormation validation included (an engine that costs
~1.4 s to load); crossover's app turns that off (cfn-lint checks every template in `make test`), so the bare app is
also timed without it (the floor). Both crossover's app and the team example are built with the project's cdk.json
context and apply the cdk-nag packs on every synth, so the bare app built the same way (one empty stack, that
context, the packs, CDK's validation off) is what they are measured against. The same bare app with one resource in
it shows what the packs cost once they check anything: on the first resource their rules load every CDK service
module they test for. Crossover's app.py and the team example turn Python's cyclic garbage collector off and freeze
the heap before exit (it would run ~370 collections while the CDK's bindings, ~130,000 objects, load, and walk them
all again at exit); the bare app is timed with those two lines too, and the ratios against the reference are also
shown against it. Targets: crossover's app <= 1.6x the bare app; crossover's app and the team example (its own VPC
and load balancer, two models) <= 3x the bare app built the same way; <= 0.25 s per extra model stack.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEAT = int(os.environ.get("REPEAT", "3"))
BARE = "from aws_cdk import App, Stack\napp = App()\nStack(app, 'Empty')\napp.synth()\n"
# Built the way crossover's app and the team example are: cdk.json's context, CDK's validation off, the packs.
SAME_WAY = """import gc, json, os
if os.environ.get("CROSSOVER_BENCH_GC"):
    gc.disable()
from aws_cdk import App, CfnWaitConditionHandle, Stack
from crossover.compliance import apply
app = App(context=json.load(open("cdk.json"))["context"], builtin_cloud_formation_validation=False)
stack = Stack(app, "Empty")
if os.environ.get("ONE_RESOURCE"):
    CfnWaitConditionHandle(stack, "Handle")
apply(app)
app.synth()
if os.environ.get("CROSSOVER_BENCH_GC"):
    gc.freeze()
"""


def timed(cases: dict[str, tuple[list[str], dict[str, str], Path]]) -> dict[str, float]:
    """Each case's median time, its runs interleaved with the others' (round by round), so a stretch of a slower
    machine weighs on every case alike and the ratios hold; the first round warms caches and output folders."""
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(REPEAT + 1):
        for name, (args, env, cwd) in cases.items():
            started = time.perf_counter()
            subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)
            runs[name].append(time.perf_counter() - started)
    return {name: statistics.median(times[1:]) for name, times in runs.items()}


def copies(folder: Path, n: int) -> Path:
    folder.mkdir()
    text = (ROOT / "models" / "resnet152.yaml").read_text()
    for i in range(n):
        (folder / f"m{i}.yaml").write_text(text.replace("name: resnet152", f"name: copy{i}"))
    return folder


def main() -> None:
    env = {**os.environ, "PATH": f"{ROOT / 'node_modules' / '.bin'}:{os.environ['PATH']}"}
    # make exports PYTHONDONTWRITEBYTECODE for the tests; without bytecode every case would recompile the
    # checkout's modules on each run (crossover's: ~30 ms; pip compiled the installed packages' already).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        bare_py, same_py = Path(tmp) / "bare.py", Path(tmp) / "same.py"
        bare_py.write_text(BARE)
        same_py.write_text(SAME_WAY)
        team_app = ROOT / "examples" / "existing_vpc"
        cases = {  # name: (command, environment, folder)
            "bare": ([sys.executable, str(bare_py)], {}, ROOT),
            "floor": ([sys.executable, str(bare_py)], {"CDK_VALIDATION": "false"}, ROOT),
            "same": ([sys.executable, str(same_py)], {}, ROOT),
            "same_gc": ([sys.executable, str(same_py)], {"CROSSOVER_BENCH_GC": "1"}, ROOT),
            "same1": ([sys.executable, str(same_py)], {"ONE_RESOURCE": "1"}, ROOT),
            "examples": ([sys.executable, "app.py"], {}, ROOT),
            "team": ([sys.executable, "app.py"], {"CDK_VALIDATION": "false"}, team_app),
            "one": ([sys.executable, "app.py"], {"CROSSOVER_MODELS": str(copies(Path(tmp) / "m1", 1))}, ROOT),
            "twenty": ([sys.executable, "app.py"], {"CROSSOVER_MODELS": str(copies(Path(tmp) / "m20", 20))}, ROOT),
        }
        t = timed({name: (args, {**env, **extra, "CDK_OUTDIR": str(Path(tmp) / name)}, cwd)
                   for name, (args, extra, cwd) in cases.items()})
    bare, floor, same, same_gc, same1 = t["bare"], t["floor"], t["same"], t["same_gc"], t["same1"]
    examples, team, one, twenty = t["examples"], t["team"], t["one"], t["twenty"]
    n_examples = len(list((ROOT / "models").glob("*.yaml")))
    per_stack = (twenty - one) / 19
    print(f"median of {REPEAT} interleaved runs, fresh process each (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus)")
    print(f"bare CDK app, one empty stack (CDK defaults)     : {bare:6.2f} s")
    print(f"bare CDK app, without CDK's template validation  : {floor:6.2f} s  (the floor)")
    print(f"bare CDK app built the same way (context, packs) : {same:6.2f} s  (the reference)")
    print(f"the same with app.py's GC settings               : {same_gc:6.2f} s")
    print(f"the same with one resource (the packs' first)    : {same1:6.2f} s")
    verdict = "OK" if examples / bare <= 1.6 else "MISSED"
    print(f"crossover's app ({n_examples} models, network, images)      : {examples:6.2f} s = "
          f"{examples / bare:.2f}x bare (target <= 1.6x) {verdict}; {examples / same:.1f}x the reference "
          f"(target <= 3x) {'OK' if examples / same <= 3 else 'MISSED'}; {examples / same_gc:.1f}x the reference with "
          f"the same GC settings; {examples / floor:.1f}x the floor")
    print(f"examples/existing_vpc, CDK_VALIDATION=false     : {team:6.2f} s = {team / same:.1f}x the reference "
          f"(target <= 3x) {'OK' if team / same <= 3 else 'MISSED'}; {team / same_gc:.1f}x with the same GC settings; "
          f"{team / floor:.1f}x the floor; "
          f"{team / bare:.2f}x bare")
    print(f"1 model copy                                     : {one:6.2f} s")
    print(f"20 model copies                                  : {twenty:6.2f} s")
    print(f"marginal cost per model stack                    : {per_stack:6.3f} s  (target <= 0.25 s) "
          f"{'OK' if per_stack <= 0.25 else 'MISSED'}")


if __name__ == "__main__":
    main()
