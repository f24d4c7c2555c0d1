"""A switch is a move, not a cut: in every template a route to a backend waits for that backend to be ready.

CloudFormation changes a resource only after everything it depends on (DependsOn, Ref, GetAtt) is
complete, and deletes what a template dropped only after every change. So for a move from any backend
to any other it is enough that the new state's listener depends, directly or through others, on the
readiness of every backend it forwards to: a fleet's group, whose creation policy waits for its minimum
instances to signal (each signals once the load balancer finds it healthy), or Lambda's live alias.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from crossover.backends import KINDS
from crossover.config import BACKEND_IDS
from crossover.constructs.front_door import STAGING_PORT
from tests.conftest import BACKENDS, CANARY_PERCENT, ROOT, Synth, canary_of, resources_of, stack_of

PAIRS = list(itertools.permutations(BACKENDS, 2))
LISTENER = "AWS::ElasticLoadBalancingV2::Listener"


def _references(value: Any) -> set[str]:
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            return {value["Fn::GetAtt"][0]}
        return set().union(*map(_references, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_references, value)) if value else set()
    return set()


def waits_for(template: dict[str, Any], logical_id: str) -> set[str]:
    """Every resource ``logical_id`` is created or updated after: DependsOn and references, transitively."""
    resources = template["Resources"]
    seen: set[str] = set()
    todo = [logical_id]
    while todo:
        resource = resources[todo.pop()]
        depends = resource.get("DependsOn", [])
        named = {depends} if isinstance(depends, str) else set(depends)
        for found in named | _references(resource.get("Properties")):
            if found in resources and found not in seen:
                seen.add(found)
                todo.append(found)
    return seen


def public_listener(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, v) for k, v in template["Resources"].items()
                if v["Type"] == LISTENER and v["Properties"]["Port"] != STAGING_PORT]
    return found


def forwards(listener: dict[str, Any]) -> dict[str, int]:
    """Target group logical id -> weight, from the listener's default forward action."""
    (action,) = listener["Properties"]["DefaultActions"]
    if "TargetGroupArn" in action:
        return {action["TargetGroupArn"]["Ref"]: 100}
    return {g["TargetGroupArn"]["Ref"]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]}


def readiness(template: dict[str, Any], group: str) -> str:
    """The resource whose completion means the backend behind target group ``group`` can answer."""
    for key, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::AutoScaling::AutoScalingGroup" and {"Ref": group} in props["TargetGroupARNs"]:
            assert resource["CreationPolicy"]["ResourceSignal"]["Count"] == int(props["MinSize"]), key
            return key
    (target,) = template["Resources"][group]["Properties"]["Targets"]
    alias = target["Id"]["Ref"]
    assert template["Resources"][alias]["Type"] == "AWS::Lambda::Alias"
    return str(alias)


def states() -> list[tuple[str, str]]:
    """Every realtime state a move can end in or pass through: (stack, how it was reached)."""
    return ([(stack_of("resnet152", target), f"any -> {target}") for target in BACKENDS]
            + [(canary_of(source, target), f"canary {source} -> {target}") for source, target in PAIRS])


@pytest.mark.parametrize(("stack", "move"), states(), ids=[move for _, move in states()])
def test_no_route_reaches_a_backend_before_it_is_ready(synth: Synth, stack: str, move: str) -> None:
    template = synth.raw[stack]
    listener_id, listener = public_listener(template)
    after = waits_for(template, listener_id)
    for group in forwards(listener):
        assert readiness(template, group) in after, f"{move}: the listener does not wait for {group}'s backend"


@pytest.fixture(scope="module")
def same_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """resnet152 (one name, so one serving spec) on each backend, and during each canary: stacks of one app."""
    from crossover import compliance
    from crossover.app import new_app
    from crossover.config import load
    from crossover.stacks.model import ModelStack
    from crossover.stacks.network import NetworkStack
    from tests.conftest import variant

    folder = tmp_path_factory.mktemp("same-model")
    app = new_app(outdir=str(folder / "out"))
    network = NetworkStack(app, "NetworkStack")
    example = ROOT / "models" / "resnet152.yaml"
    configs = {f"Before-{b}": variant(example, folder, f"before-{b}", backend=b) for b in BACKENDS}
    configs |= {f"During-{a}-{b}": variant(example, folder, f"during-{a}-{b}", backend=b,
                                          canary=f"{{from: {a}, percent: {CANARY_PERCENT}}}") for a, b in PAIRS}
    for path in configs.values():  # the same model name in every stack
        path.write_text(path.read_text().replace(f"name: {path.stem}", "name: resnet152"))
    stacks = {id: ModelStack(app, id, config=load(path).resolved, network=network) for id, path in configs.items()}
    compliance.apply(app)
    assembly = app.synth()
    return {id: assembly.get_stack_by_name(stack.stack_name).template for id, stack in stacks.items()}


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_a_canary_splits_by_weight_and_keeps_the_old_backend_exactly(same_model: dict[str, dict[str, Any]],
                                                                     source: str, target: str) -> None:
    before, during = same_model[f"Before-{source}"], same_model[f"During-{source}-{target}"]
    weights = forwards(public_listener(during)[1])
    by_backend = {BACKEND_IDS[b]: w for b in (source, target) for g, w in weights.items()
                  if g.startswith(f"ModelFrontDoor{BACKEND_IDS[b]}Targets")}
    assert by_backend == {BACKEND_IDS[target]: CANARY_PERCENT, BACKEND_IDS[source]: 100 - CANARY_PERCENT}
    # Everything of the old backend is what it was before the switch: CloudFormation leaves it alone.
    old = backend_resources(before, source, f"Before-{source}")
    assert old and backend_resources(during, source, f"During-{source}-{target}") == old
    # AND so is its target group, which the listener forwarded everything to before
    (group,) = forwards(public_listener(before)[1])
    assert group in weights and during["Resources"][group] == before["Resources"][group]


def backend_resources(template: dict[str, Any], backend: str, stack: str) -> dict[str, Any]:
    """The backend's resources with the stack's own name taken out: the two states are stacks of one
    app, so their names differ where CDK writes them (tags, cfn-signal, and the id of an ingress rule,
    which embeds the peer's path and its hash)."""
    chosen = resources_of(template, backend)
    text = json.dumps(chosen).replace(stack, "STACK").replace(stack.replace("-", ""), "STACK")
    return {re.sub(r"[0-9A-F]{4,}", "", k) if "STACK" in k else k: v for k, v in json.loads(text).items()}


def test_the_staging_listener_is_reachable_by_no_client(synth: Synth) -> None:
    for stack in (stack_of("resnet152", "gpu"), "ModelStack-resnet152-gpu-public"):
        template = synth.raw[stack]
        ingress = [rule for r in template["Resources"].values() if r["Type"] == "AWS::EC2::SecurityGroup"
                   for rule in r["Properties"].get("SecurityGroupIngress", [])]
        assert ingress and all(rule["FromPort"] != STAGING_PORT for rule in ingress)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if KINDS[b].fleet])
def test_a_rolling_update_keeps_the_minimum_in_service(synth: Synth, backend: str) -> None:
    # A new instance type or image on the same group replaces one instance at a time, each new one
    # signalling only once the load balancer finds it healthy, without going below scaling.min (2).
    template = synth.raw[stack_of("resnet152", backend)]
    (group,) = [v for v in template["Resources"].values() if v["Type"] == "AWS::AutoScaling::AutoScalingGroup"]
    update = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert (update["MinInstancesInService"], update["MaxBatchSize"], update["WaitOnResourceSignals"]) == (2, 1, True)
    assert int(group["Properties"]["MaxSize"]) > update["MinInstancesInService"]  # room for the replacement
    script = "".join(p if isinstance(p, str) else "<token>" for p in json.loads(json.dumps(
        next(v for v in template["Resources"].values() if v["Type"] == "AWS::EC2::LaunchTemplate")
        ["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Join"][1])))
    assert "export CROSSOVER_TARGET_GROUP=<token>" in script


def test_an_instance_signals_only_once_the_load_balancer_finds_it_healthy(tmp_path: Any) -> None:
    """bootstrap.sh's readiness check, run with stand-ins for curl and the AWS CLI."""
    import subprocess

    text = (ROOT / "crossover" / "ami" / "bootstrap.sh").read_text()
    functions = "\n".join(re.search(rf"^{name}\(\) {{\n.*?^}}$", text, re.S | re.M).group(0)  # type: ignore[union-attr]
                          for name in ("instance_id", "serving"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text("#!/bin/sh\necho i-0123456789abcdef0\n")
    (bin_dir / "aws").write_text('#!/bin/sh\necho "$*" >> "$CALLS"\ncat "$STATE"\n')
    for tool in ("curl", "aws"):
        (bin_dir / tool).chmod(0o755)
    state = tmp_path / "state"

    def serving(health: str, target_group: str = "arn:aws:elasticloadbalancing:tg") -> bool:
        state.write_text(health + "\n")
        script = f'{functions}\nCROSSOVER_PORT=8080\nCROSSOVER_TARGET_GROUP="{target_group}"\nserving'
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE": str(state), "CALLS": str(tmp_path / "calls")}
        return subprocess.run(["bash", "-c", script], env=env).returncode == 0

    assert not serving("initial") and not serving("unhealthy") and serving("healthy")
    assert "--targets Id=i-0123456789abcdef0,Port=8080" in (tmp_path / "calls").read_text()
    assert serving("initial", target_group="")  # a pipeline worker has no load balancer to wait for


def test_the_emulators_events_follow_cloudformations_order() -> None:
    """crossover.emulator.timeline: what the rehearsal reads stack events from (moto records none)."""
    from crossover.emulator import timeline

    old = {"Listener": {"Type": "AWS::ElasticLoadBalancingV2::Listener", "Properties": {"Target": {"Ref": "OldTg"}}},
           "OldTg": {"Type": "AWS::ElasticLoadBalancingV2::TargetGroup"}}
    group = {"Type": "AWS::AutoScaling::AutoScalingGroup", "CreationPolicy": {"ResourceSignal": {"Count": 2}},
             "Properties": {"TargetGroupARNs": [{"Ref": "NewTg"}]}}
    new = {"Listener": {"Type": "AWS::ElasticLoadBalancingV2::Listener", "Properties": {"Target": {"Ref": "NewTg"}}},
           "NewTg": {"Type": "AWS::ElasticLoadBalancingV2::TargetGroup"}, "Group": group}

    def order(template: dict[str, Any]) -> list[tuple[str, str]]:
        return [(logical_id, status) for _, logical_id, _, status in timeline(old, template)]

    # Without a dependency the listener moves as soon as the new target group exists, long before the group
    # waiting for its instances completes; with one, only after it. The old group goes last either way.
    cut = order(new)
    assert cut.index(("Listener", "UPDATE_COMPLETE")) < cut.index(("Group", "CREATE_COMPLETE"))
    move = order({**new, "Listener": {**new["Listener"], "DependsOn": ["Group"]}})
    assert move.index(("Group", "CREATE_COMPLETE")) < move.index(("Listener", "UPDATE_IN_PROGRESS"))
    assert move[-2:] == [("OldTg", "DELETE_IN_PROGRESS"), ("OldTg", "DELETE_COMPLETE")]
    # A version on Lambda Managed Instances takes minutes (its environments start); one of plain Lambda does not
    managed = {"Type": "AWS::Lambda::Version", "Properties": {"FunctionScalingConfig": {"MinExecutionEnvironments": 3}}}
    slow = [t for t, logical_id, _, status in timeline({}, {"Version": managed, "Other": {"Type": "AWS::SNS::Topic"}})
            if status == "CREATE_COMPLETE"]
    quick = [t for t, logical_id, _, status in timeline({}, {"Version": {"Type": "AWS::Lambda::Version"}})
             if status == "CREATE_COMPLETE"]
    assert max(slow) >= 180 > max(quick)
