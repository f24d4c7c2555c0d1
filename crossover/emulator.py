"""A local AWS emulator (moto's server) on loopback, for deploy rehearsals without an AWS account.

    python -m crossover.emulator --port 5000

Runs until SIGTERM. Before serving it seeds the public SSM parameters the templates resolve (AMI
ids); moto refuses put_parameter on /aws/... names over its API, so they are written straight into
its in-process backend. It also closes two gaps in moto's stack updates (patch_updates), creates the
Lambda aliases and alarms it has no CloudFormation support for (support_missing_types), names
the resource that failed in creation errors, as CloudFormation does (name_failed_resources), takes
weighted forwards in listeners (weighted_forwards), keeps a load balancer's deletion protection as
the template sets it and refuses to delete a protected one (deletion_protection), and runs creates,
updates and change sets as CloudFormation does: each resource's events in its order, outputs and
exports from change sets, and, with ``--fail BACKEND``, a move to that backend that never becomes
ready and rolls back (model_stack_operations).

With ``--state FILE`` it starts from the state a previous run saved there and saves its own on exit
(SIGTERM or SIGINT): rehearsals remember what they deployed. Saving moto's backends, rather than
replaying its request recording, keeps every physical id (ARNs, DNS names) a later rehearsal reads back
and costs one pickle (tens of milliseconds) instead of re-running every earlier deploy.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossover.backends import BACKEND_IDS, BACKENDS

ACCOUNT, REGION = "123456789012", "us-east-1"
LOCKS = (type(threading.Lock()), type(threading.RLock()))
FAKE_AMI = "ami-0123456789abcdef0"
# Every public parameter a crossover template can resolve at deploy time.
PUBLIC_PARAMETERS = (
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64",
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-arm64",
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id",
    "/aws/service/neuron/dlami/multi-framework/amazon-linux-2023/latest/image_id",
)


def seed() -> None:
    import datetime

    from moto.backends import get_backend
    from moto.ssm.models import Parameter

    ssm = get_backend("ssm")[ACCOUNT][REGION]
    for name in PUBLIC_PARAMETERS:
        versions = ssm._parameters[name]  # moto ships the Amazon Linux ones; add the rest
        if not versions:
            versions.append(Parameter(  # type: ignore[abstract]  # moto's own loaders build it the same way
                account_id=ACCOUNT, name=name, value=FAKE_AMI, parameter_type="String",
                                      description="seeded by crossover.emulator", allowed_pattern=None, keyid=None,
                                      last_modified_date=datetime.datetime.now(datetime.UTC), version=1,
                                      data_type="aws:ec2:image"))


def queues_keep_messages() -> None:
    """moto's SQS hands each new message straight to a Lambda function mapped to the queue, which needs Docker
    (absent here) and fails the send. The emulator runs no function: messages stay queued, for `crossover work`
    to process here."""
    from moto.sqs.models import Queue

    add = Queue.add_message

    def add_unmapped(self: Queue, message: Any) -> None:
        mappings, self.lambda_event_source_mappings = self.lambda_event_source_mappings, {}
        try:
            add(self, message)
        finally:
            self.lambda_event_source_mappings = mappings

    Queue.add_message = add_unmapped  # type: ignore[method-assign]


def name_failed_resources() -> None:
    """CloudFormation says which resource failed and why; moto raises the bare service error. Name the
    resource in the error the CLI prints."""
    from moto.cloudformation import parsing
    from moto.cloudformation.exceptions import ValidationError

    create = parsing.parse_and_create_resource

    def create_or_say_which(logical_id: str, resource_json: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return create(logical_id, resource_json, *args, **kwargs)
        except ValidationError:
            raise
        except Exception as e:
            raise ValidationError(message=f"{logical_id} ({resource_json.get('Type')}) failed: "
                                  f"{type(e).__name__}: {e}") from e

    parsing.parse_and_create_resource = create_or_say_which


def weighted_forwards() -> None:
    """moto's CloudFormation listeners know only a forward to one target group (``TargetGroupArn``); its API
    knows ``ForwardConfig`` too. Pass weighted forwards (a canary's split) through as the API takes them."""
    from moto.elbv2.models import ELBv2Backend

    convert = ELBv2Backend.convert_and_validate_properties

    def convert_weighted(self: ELBv2Backend, properties: dict[str, Any]) -> list[dict[str, Any]]:
        weighted = [a for a in properties["DefaultActions"] if a["Type"] == "forward" and "ForwardConfig" in a]
        if not weighted:
            return convert(self, properties)
        return [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": g["TargetGroupArn"], "Weight": int(g.get("Weight", 1))}
            for g in action["ForwardConfig"]["TargetGroups"]]}} for action in weighted]

    ELBv2Backend.convert_and_validate_properties = convert_weighted  # type: ignore[method-assign]


def deletion_protection() -> None:
    """moto ignores a CloudFormation load balancer's ``LoadBalancerAttributes`` and deletes a protected one;
    AWS refuses (OperationNotPermitted), which is why a teardown must turn the protection off first."""
    from moto.elbv2.exceptions import ELBClientError  # its module names the service its answer is for
    from moto.elbv2.models import ELBv2Backend, FakeLoadBalancer, elbv2_backends

    create = FakeLoadBalancer.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    delete = ELBv2Backend.delete_load_balancer

    def create_with_attributes(cls: type[FakeLoadBalancer], resource_name: str, cloudformation_json: Any,
                               account_id: str, region_name: str, **kwargs: Any) -> FakeLoadBalancer:
        balancer: FakeLoadBalancer = create(cls, resource_name, cloudformation_json, account_id, region_name,
                                            **kwargs)
        attributes = cloudformation_json["Properties"].get("LoadBalancerAttributes", [])
        elbv2_backends[account_id][region_name].modify_load_balancer_attributes(
            balancer.arn, {a["Key"]: str(a["Value"]).lower() for a in attributes})
        return balancer

    def delete_unless_protected(self: ELBv2Backend, arn: str) -> None:
        balancer = self.load_balancers.get(arn)
        if balancer is not None and balancer.attrs.get("deletion_protection.enabled") == "true":
            raise ELBClientError("OperationNotPermitted", f"Load balancer '{arn}' cannot be deleted because "
                                   "deletion protection is enabled")
        delete(self, arn)

    FakeLoadBalancer.create_from_cloudformation_json = classmethod(create_with_attributes)  # type: ignore[arg-type,assignment,method-assign]
    ELBv2Backend.delete_load_balancer = delete_unless_protected  # type: ignore[method-assign]


def patch_updates() -> None:
    """Three gaps in moto's stack updates. It does not keep SSM-typed parameters (CDK's BootstrapVersion)
    between create and update, then fails the update asking for their previous value: re-resolve them.
    A resource type it cannot update (a log group) is dropped, breaking every reference to it: keep the
    resource as it was created instead. A removed resource is not forgotten, nor may it be gone, and a
    listener rule is never deleted."""
    from moto.cloudformation import parsing
    from moto.cloudformation.models import CloudFormationBackend

    update_resource = parsing.parse_and_update_resource

    def update_or_keep(logical_id: str, resource_json: dict[str, Any], resources_map: Any, account_id: str,
                       region_name: str) -> Any:
        updated = update_resource(logical_id, resource_json, resources_map, account_id, region_name)
        return resources_map[logical_id] if updated is None else updated

    parsing.parse_and_update_resource = update_or_keep

    original = CloudFormationBackend._resolve_update_parameters

    def resolve(self: Any, instance: Any, incoming_params: list[dict[str, str]]) -> dict[str, str]:
        kept = [p for p in incoming_params
                if not p.get("UsePreviousValue") or p["ParameterKey"] in instance.parameters]
        return original(self, instance, kept)

    CloudFormationBackend._resolve_update_parameters = resolve  # type: ignore[method-assign]

    # A resource removed by an update stays in moto's map of created resources, so adding it back later
    # (a switch away from a backend and back) finds the deleted one and creates nothing: forget it. And
    # deleting a role deletes its inline policies with it; moto then fails to delete the policy resource
    # itself (NoSuchEntity), which fails the whole update: gone is what a delete asks for.
    delete = parsing.ResourceMap._delete_resource

    def delete_unless_gone(self: Any, parsed_resource: Any, resource_json: dict[str, Any]) -> None:
        try:
            delete(self, parsed_resource, resource_json)
        except Exception as e:
            if "NoSuchEntity" not in f"{type(e).__name__} {e}":
                raise
        for logical_id in [k for k, v in self._parsed_resources.items() if v is parsed_resource]:
            del self._parsed_resources[logical_id]

    parsing.ResourceMap._delete_resource = delete_unless_gone  # type: ignore[method-assign]

    # moto's CloudFormation never deletes a listener rule, so a backend added back later finds its
    # priority taken (PriorityInUse).
    from moto.elbv2.models import FakeListenerRule, elbv2_backends

    def delete_rule(self: FakeListenerRule, account_id: str, region_name: str) -> None:
        elbv2_backends[account_id][region_name].delete_rule(self.arn)

    FakeListenerRule.delete = delete_rule  # type: ignore[attr-defined]


def support_missing_types() -> None:
    """Resource types crossover's stacks have and moto's CloudFormation lacks: AWS::Lambda::Alias
    (the ``live`` alias CodeDeploy moves; with a version's Version attribute),
    AWS::CloudWatch::Alarm (the deploy looks rollback alarms up by name; with the target group
    attribute their dimensions name), each created through moto's own service backend, and
    AWS::Lambda::CapacityProvider, which moto has not at all (Lambda Managed Instances): kept in moto's Lambda
    backend, answered by the Lambda API's GetCapacityProvider, and named by its functions' configuration.
    Must run before moto first reads its resource types (it caches them)."""
    from moto.awslambda.models import LambdaFunction, LambdaVersion, lambda_backends
    from moto.awslambda.responses import LambdaResponse
    from moto.awslambda.urls import url_paths
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.core.common_models import CloudFormationModel
    from moto.elbv2.models import FakeTargetGroup

    class Physical:
        """What both need beside moto's base: Ref answers the physical id (an alarm's name, an alias's ARN)."""

        def __init__(self, physical_id: str) -> None:
            self.physical_id = physical_id

        @property
        def physical_resource_id(self) -> str:
            return self.physical_id

    # Direct subclasses of CloudFormationModel (moto registers only those), each naming a module: moto
    # files models by its second part, and run as -m the module is __main__.
    class Alarm(Physical, CloudFormationModel):
        __module__ = "crossover.emulator"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::CloudWatch::Alarm"

        @classmethod
        def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict[str, Any],
                                            account_id: str, region_name: str, **kwargs: Any) -> Alarm:
            props = cloudformation_json["Properties"]
            name = props.get("AlarmName", resource_name)
            # Enough to be listed, looked up by name and read back; the emulator never evaluates an alarm.
            cloudwatch_backends[account_id][region_name].put_metric_alarm(
                name=name, namespace=props.get("Namespace", ""), metric_name=props.get("MetricName", ""),
                comparison_operator=props["ComparisonOperator"], evaluation_periods=props["EvaluationPeriods"],
                period=props.get("Period", 60), threshold=props["Threshold"], statistic=props.get("Statistic", ""),
                description=props.get("AlarmDescription", ""), dimensions=props.get("Dimensions", []),
                alarm_actions=props.get("AlarmActions", []), datapoints_to_alarm=props.get("DatapointsToAlarm"),
                metric_data_queries=[_query(m) for m in props["Metrics"]] if "Metrics" in props else None)
            return cls(name)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource: Alarm, new_resource_name: str,
                                            cloudformation_json: dict[str, Any], account_id: str,
                                            region_name: str) -> Alarm:
            updated = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id,
                                                          region_name)  # put_metric_alarm overwrites by name
            if updated.physical_id != original_resource.physical_id:
                cloudwatch_backends[account_id][region_name].delete_alarms([original_resource.physical_id])
            return updated

        @classmethod
        def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict[str, Any],
                                            account_id: str, region_name: str) -> None:
            name = cloudformation_json["Properties"].get("AlarmName", resource_name)
            cloudwatch_backends[account_id][region_name].delete_alarms([name])

    class Alias(Physical, CloudFormationModel):
        __module__ = "crossover.emulator"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::Lambda::Alias"

        @classmethod
        def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict[str, Any],
                                            account_id: str, region_name: str, **kwargs: Any) -> Alias:
            props = cloudformation_json["Properties"]
            alias = lambda_backends[account_id][region_name].create_alias(
                name=props["Name"], function_name=props["FunctionName"],
                function_version=str(props.get("FunctionVersion")), description=props.get("Description", ""),
                routing_config="")
            return cls(alias.arn)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource: Alias, new_resource_name: str,
                                            cloudformation_json: dict[str, Any], account_id: str,
                                            region_name: str) -> Alias:
            props = cloudformation_json["Properties"]
            lambda_backends[account_id][region_name].update_alias(
                name=props["Name"], function_name=props["FunctionName"],
                function_version=str(props.get("FunctionVersion")), description=props.get("Description"),
                routing_config="")
            return original_resource

    class CapacityProvider(Physical, CloudFormationModel):
        """Held in ``capacity_providers`` of moto's Lambda backend (saved with it), by name, as the API returns it."""

        __module__ = "crossover.emulator"

        def __init__(self, name: str, arn: str) -> None:
            super().__init__(name)
            self.arn = arn

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::Lambda::CapacityProvider"

        def get_cfn_attribute(self, attribute: str) -> str:
            if attribute != "Arn":
                raise NotImplementedError(attribute)
            return self.arn

        @classmethod
        def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict[str, Any],
                                            account_id: str, region_name: str, **kwargs: Any) -> CapacityProvider:
            props = cloudformation_json["Properties"]
            name = props.get("CapacityProviderName", resource_name)
            arn = f"arn:aws:lambda:{region_name}:{account_id}:capacity-provider:{name}"
            _capacity_providers(lambda_backends[account_id][region_name])[name] = {
                "CapacityProviderArn": arn, "State": "Active", "VpcConfig": props["VpcConfig"],
                "PermissionsConfig": props["PermissionsConfig"],
                **{key: props[key] for key in ("InstanceRequirements", "CapacityProviderScalingConfig", "KmsKeyArn")
                   if key in props}}
            return cls(name, arn)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource: CapacityProvider, new_resource_name: str,
                                            cloudformation_json: dict[str, Any], account_id: str,
                                            region_name: str) -> CapacityProvider:
            cls.delete_from_cloudformation_json(original_resource.physical_id, {"Properties": {}}, account_id,
                                                region_name)  # its settings are create-only: a new one replaces it
            return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id,
                                                       region_name)

        @classmethod
        def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict[str, Any],
                                            account_id: str, region_name: str) -> None:
            name = cloudformation_json["Properties"].get("CapacityProviderName", resource_name)
            _capacity_providers(lambda_backends[account_id][region_name]).pop(name, None)

    def get_capacity_provider(self: LambdaResponse) -> tuple[int, dict[str, str], str]:
        name = self.path.rstrip("/").rsplit("/", 1)[-1]
        found = _capacity_providers(lambda_backends[self.current_account][self.region]).get(name)
        if found is None:
            return 404, {"x-amzn-ErrorType": "ResourceNotFoundException"}, json.dumps(
                {"Type": "User", "Message": f"Capacity provider not found: {name}"})
        return 200, {}, json.dumps({"CapacityProvider": found})

    create_function = LambdaFunction.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    configuration = LambdaFunction.get_configuration

    def create_with_capacity(cls: type[LambdaFunction], /, resource_name: str, cloudformation_json: dict[str, Any],
                             account_id: str, region_name: str, **kwargs: Any) -> LambdaFunction:
        function: LambdaFunction = create_function(cls, resource_name, cloudformation_json, account_id, region_name,
                                                   **kwargs)
        function.capacity_provider_config = cloudformation_json["Properties"].get("CapacityProviderConfig")  # type: ignore[attr-defined]
        return function

    def configuration_with_capacity(self: LambdaFunction, on_create: bool = False) -> dict[str, Any]:
        found = configuration(self, on_create)
        given = getattr(self, "capacity_provider_config", None)
        return {**found, "CapacityProviderConfig": given} if given else found

    LambdaFunction.create_from_cloudformation_json = classmethod(create_with_capacity)  # type: ignore[assignment]
    LambdaFunction.get_configuration = configuration_with_capacity  # type: ignore[method-assign]
    LambdaResponse.get_capacity_provider = get_capacity_provider  # type: ignore[attr-defined]
    url_paths[r"{0}/(?P<api_version>[^/]+)/capacity-providers/(?P<name>[\w_-]+)$"] = LambdaResponse.dispatch

    def version_attribute(self: LambdaVersion, attribute: str) -> str:
        if attribute != "Version":
            raise NotImplementedError(attribute)
        return str(self.version)

    def target_group_attribute(self: FakeTargetGroup, attribute: str) -> str:
        if attribute != "TargetGroupFullName":  # what the alarms' dimensions use
            raise NotImplementedError(attribute)
        return str(self.arn.rsplit(":", 1)[-1])  # targetgroup/<name>/<id>

    LambdaVersion.get_cfn_attribute = version_attribute  # type: ignore[attr-defined]
    FakeTargetGroup.get_cfn_attribute = target_group_attribute  # type: ignore[attr-defined]
    # Module-level names, so a saved state (``save``) refers to these classes rather than copying them.
    for model in (Alarm, Alias, CapacityProvider):
        model.__qualname__ = model.__name__
        globals()[model.__name__] = model


def _capacity_providers(backend: Any) -> dict[str, dict[str, Any]]:
    if not hasattr(backend, "capacity_providers"):
        backend.capacity_providers = {}
    providers: dict[str, dict[str, Any]] = backend.capacity_providers
    return providers


# How long a resource takes in CloudFormation, in the emulator's event timeline (seconds): a group whose
# creation policy or rolling update waits for instances to signal, an alias allocating provisioned
# concurrency, and a version on Lambda Managed Instances starting its execution environments (it is active only
# once they run) take minutes; everything else is quick.
SLOW = {"AWS::AutoScaling::AutoScalingGroup": 600.0, "AWS::Lambda::Alias": 120.0, "AWS::Lambda::Version": 180.0}


def _query(metric: dict[str, Any]) -> Any:
    """A metric-math alarm's query (``Metrics`` in its template) as moto's API handler builds it."""
    from moto.cloudwatch.models import Dimension, Metric, MetricDataQuery, MetricStat

    stat = metric.get("MetricStat")
    # moto types these as str, and its own API handler passes None for an absent key as here.
    return MetricDataQuery(query_id=metric["Id"], label=metric.get("Label"),  # type: ignore[arg-type]
                           period=metric.get("Period"), return_data=metric.get("ReturnData"),  # type: ignore[arg-type]
                           expression=metric.get("Expression"),
                           metric_stat=None if stat is None else MetricStat(
                               metric=Metric(metric_name=stat["Metric"]["MetricName"],
                                             namespace=stat["Metric"]["Namespace"],
                                             dimensions=[Dimension(d["Name"], d["Value"])
                                                         for d in stat["Metric"].get("Dimensions", [])]),
                               period=stat["Period"], stat=stat["Stat"], unit=stat.get("Unit")))


def references(value: Any) -> set[str]:
    """The logical ids a template value refers to (Ref, GetAtt, Sub)."""
    if isinstance(value, dict):
        found = {value["Ref"]} if "Ref" in value else {value["Fn::GetAtt"][0]} if "Fn::GetAtt" in value else set()
        if isinstance(value.get("Fn::Sub"), str):
            found |= set(re.findall(r"\$\{([A-Za-z0-9]+)(?:\.[^}]*)?\}", value["Fn::Sub"]))
        return found.union(*map(references, value.values()))
    if isinstance(value, list):
        return set().union(*map(references, value))
    return set()


def _dependencies(resources: dict[str, Any], logical_id: str) -> set[str]:
    resource = resources[logical_id]
    depends = resource.get("DependsOn", [])
    named = {depends} if isinstance(depends, str) else set(depends)
    return {d for d in named | references(resource.get("Properties")) if d in resources and d != logical_id}


def _duration(resource: dict[str, Any], action: str) -> float:
    waits = {"Add": "CreationPolicy" in resource, "Modify": "UpdatePolicy" in resource}.get(action, False)
    if resource["Type"] == "AWS::Lambda::Alias":
        waits = "ProvisionedConcurrencyConfig" in resource.get("Properties", {})
    if resource["Type"] == "AWS::Lambda::Version":
        waits = "FunctionScalingConfig" in resource.get("Properties", {})
    return SLOW.get(resource["Type"], 1.0) if waits else 1.0


def _attributes_read(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["Fn::GetAtt"][0]} if "Fn::GetAtt" in value else set()
        return found.union(*map(_attributes_read, value.values()))
    if isinstance(value, list):
        return set().union(*map(_attributes_read, value))
    return set()


def changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The resources a change from ``old`` to ``new`` creates and updates. An update also reaches whatever reads an
    attribute (Fn::GetAtt) of an updated resource, as in CloudFormation: a launch template's new version
    (LatestVersionNumber) updates, so rolls, its Auto Scaling group."""
    added = [k for k in new if k not in old]
    modified = [k for k in new if k in old and new[k] != old[k]]
    while more := [k for k in new if k in old and k not in modified
                   and _attributes_read(new[k].get("Properties")) & set(modified)]:
        modified += more
    return added, modified


def timeline(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[float, str, str, str]]:
    """The resource events of changing a stack's resources from ``old`` to ``new`` as CloudFormation orders
    them: each created or updated resource starts once everything it depends on (DependsOn, Ref, GetAtt,
    Sub) is complete, in parallel otherwise; what ``new`` dropped is deleted after every create and update,
    dependents first. Returns (second, logical id, type, status), in order."""
    added, modified = changes(old, new)
    ends: dict[str, float] = {}

    def end(logical_id: str) -> float:
        if logical_id not in ends:
            ends[logical_id] = 0.0  # guards against a cycle, which CloudFormation would refuse
            deps = [end(d) for d in _dependencies(new, logical_id) if d in added or d in modified]
            action = "Add" if logical_id in added else "Modify"
            ends[logical_id] = max(deps, default=0.0) + _duration(new[logical_id], action)
        return ends[logical_id]

    events = []
    for logical_id in added + modified:
        verb = "CREATE" if logical_id in added else "UPDATE"
        events += [(end(logical_id) - _duration(new[logical_id], "Add" if verb == "CREATE" else "Modify"),
                    logical_id, new[logical_id]["Type"], f"{verb}_IN_PROGRESS"),
                   (end(logical_id), logical_id, new[logical_id]["Type"], f"{verb}_COMPLETE")]
    cleanup = max(ends.values(), default=0.0)
    removed = [k for k in old if k not in new]
    depth: dict[str, int] = {}

    def dependents(logical_id: str) -> int:  # how many removed resources must go before this one
        if logical_id not in depth:
            depth[logical_id] = 0
            depth[logical_id] = max((dependents(k) + 1 for k in removed if logical_id in _dependencies(old, k)),
                                    default=0)
        return depth[logical_id]

    for logical_id in removed:
        start = cleanup + dependents(logical_id)
        events += [(start, logical_id, old[logical_id]["Type"], "DELETE_IN_PROGRESS"),
                   (start + 0.5, logical_id, old[logical_id]["Type"], "DELETE_COMPLETE")]
    # At one instant, completions come first: what starts then was waiting for them.
    return sorted(events, key=lambda e: (e[0], not e[3].endswith("COMPLETE")))


def never_ready(old: dict[str, Any], new: dict[str, Any], backend: str | None) -> list[str]:
    """What a rehearsed failed move never completes: the resources of ``backend`` (by their construct path) that
    wait for it to be ready in this change: a group created under a creation policy or updated under a rolling
    update (its instances never signal), or its Lambda alias (it never completes)."""
    if backend is None:
        return []
    added, modified = changes(old, new)
    stuck = []
    for logical_id, resource in new.items():
        action = "Add" if logical_id in added else "Modify" if logical_id in modified else None
        path = resource.get("Metadata", {}).get("aws:cdk:path", "").split("/")
        if action is None or BACKEND_IDS[backend] not in path:
            continue
        if resource["Type"] == "AWS::Lambda::Alias" or (
                resource["Type"] == "AWS::AutoScaling::AutoScalingGroup" and _duration(resource, action) > 1.0):
            stuck.append(logical_id)
    return stuck


Event = tuple[str, str, str, str | None]  # logical id, resource type, status, reason


def failed_timeline(old: dict[str, Any], new: dict[str, Any], stuck: list[str]) -> list[Event]:
    """The resource events of a change that fails because ``stuck`` never complete: everything ``timeline``
    starts before the first of them times out, that one failing, what was still in progress cancelled; then
    the rollback: updated resources back to ``old`` first, created ones deleted last (CloudFormation's order)."""
    events = timeline(old, new)
    failed_at, first = min((t, logical_id) for t, logical_id, _, status in events
                           if logical_id in stuck and status.endswith("COMPLETE"))
    happened = [(t, logical_id, kind, status) for t, logical_id, kind, status in events
                if t < failed_at and not status.startswith("DELETE")]
    started = [logical_id for _, logical_id, _, status in happened if status.endswith("IN_PROGRESS")]
    done = {logical_id for _, logical_id, _, status in happened if status.endswith("COMPLETE")}
    verb = {logical_id: "CREATE" if logical_id not in old else "UPDATE" for logical_id in started + stuck}
    out: list[Event] = [(logical_id, kind, status, None) for _, logical_id, kind, status in happened]
    for logical_id in [x for x in started if x not in done]:
        reason = _never_ready_reason(new[logical_id]) if logical_id == first else "Resource creation cancelled"
        out.append((logical_id, new[logical_id]["Type"], f"{verb[logical_id]}_FAILED", reason))
    for logical_id in reversed([x for x in started if verb[x] == "UPDATE"]):
        out += [(logical_id, new[logical_id]["Type"], "UPDATE_IN_PROGRESS", None),
                (logical_id, new[logical_id]["Type"], "UPDATE_COMPLETE", None)]
    for logical_id in reversed([x for x in started if verb[x] == "CREATE"]):
        out += [(logical_id, new[logical_id]["Type"], "DELETE_IN_PROGRESS", None),
                (logical_id, new[logical_id]["Type"], "DELETE_COMPLETE", None)]
    return out


def _never_ready_reason(resource: dict[str, Any]) -> str:
    """CloudFormation's words for a resource that timed out waiting for readiness (the rehearsal's --fail)."""
    if resource["Type"] == "AWS::Lambda::Alias":
        return "The alias's new version never became ready (rehearsed with --fail: it never completes)"
    signal = resource.get("CreationPolicy", resource.get("UpdatePolicy", {})).get("ResourceSignal", {})
    return (f"Failed to receive {signal.get('Count', 1)} resource signal(s) within the specified duration "
            f"(rehearsed with --fail: the {signal.get('Timeout', 'PT5M')} timeout is modelled, not waited for)")


def model_stack_operations(fail: str | None) -> None:
    """moto records only the stack's own events and updates in its own order (deletions first); its change sets
    apply resources but never outputs or exports, and nothing ever fails to become ready. Route creates, updates
    and executed change sets through one path that records each resource's events as CloudFormation would order
    them (``timeline``), so a rehearsal can check from describe_stack_events what waited for what; that keeps
    outputs and exports as CloudFormation does; and that, with ``fail``, never lets that backend become ready:
    the change fails and rolls back, leaving the stack as it was."""
    import datetime

    from moto.cloudformation.models import CloudFormationBackend
    from moto.cloudformation.models import Event as FakeEvent
    from moto.cloudformation.models import Stack as FakeStack

    def append(stack: FakeStack, events: list[Event], *,
               stack_status: Sequence[tuple[str, str | None]] = ()) -> None:
        # A millisecond apart: readers sort events by their (millisecond) timestamps.
        base = max([e.timestamp for e in stack.events], default=datetime.datetime.now(datetime.UTC).replace(
            tzinfo=None))
        for i, (logical_id, kind, status, reason) in enumerate(
                events + [(stack.name, "AWS::CloudFormation::Stack", s, r) for s, r in stack_status], start=1):
            event = FakeEvent(stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id,
                              physical_resource_id=stack.stack_id if kind == "AWS::CloudFormation::Stack" else "",
                              resource_type=kind, resource_status=status, resource_status_reason=reason,
                              resource_properties=None)
            event.timestamp = base + datetime.timedelta(milliseconds=i)
            stack.events.append(event)

    def resources(template: dict[str, Any]) -> dict[str, Any]:
        return dict(template.get("Resources", {}))

    def recorded(stack: FakeStack, old: dict[str, Any], apply: Any) -> None:
        apply()
        # The stack's own COMPLETE event, which moto has just added, comes after its resources' events.
        done = stack.events.pop() if stack.events and stack.events[-1].resource_status.endswith("_COMPLETE") else None
        append(stack, [(logical_id, kind, status, None)
                       for _, logical_id, kind, status in timeline(old, resources(stack.template_dict))],
               stack_status=[(done.resource_status, None)] if done is not None else [])

    def failed(stack: FakeStack, old: dict[str, Any], new: dict[str, Any], stuck: list[str], creating: bool) -> None:
        prefix = "" if creating else "UPDATE_"
        reason = f"The following resource(s) failed to {'create' if creating else 'update'}: [{', '.join(stuck)}]."
        append(stack, failed_timeline(old, new, stuck), stack_status=[
            (f"{prefix}ROLLBACK_IN_PROGRESS", reason), (f"{prefix}ROLLBACK_COMPLETE", None)])
        stack.status = f"{prefix}ROLLBACK_COMPLETE"

    create, update = FakeStack.create_resources, FakeStack.update

    def create_and_record(self: FakeStack) -> None:
        stuck = never_ready({}, resources(self.template_dict), fail)
        if stuck:
            failed(self, {}, resources(self.template_dict), stuck, creating=True)
        else:
            recorded(self, {}, lambda: create(self))

    def update_and_record(self: FakeStack, template: str, *args: Any, **kwargs: Any) -> None:
        old, new = resources(self.template_dict), resources(self.parse_template(template))
        stuck = never_ready(old, new, fail)
        if stuck:  # the stack stays as it was: its template, resources and outputs
            self._add_stack_event("UPDATE_IN_PROGRESS", resource_status_reason="User Initiated")
            failed(self, old, new, stuck, creating=False)
        else:
            recorded(self, old, lambda: update(self, template, *args, **kwargs))

    FakeStack.create_resources = create_and_record  # type: ignore[method-assign]
    FakeStack.update = update_and_record  # type: ignore[method-assign]

    def execute_change_set(self: CloudFormationBackend, change_set_name: str, stack_name: str | None = None) -> None:
        change_set = _change_set(self, change_set_name, stack_name)
        stack = self.stacks[change_set.stack_id]
        before = [export.name for export in stack.exports]
        if change_set.change_set_type == "CREATE":  # as create_stack does, with the change set's template
            stack.template, stack.parameters = change_set.template, change_set.parameters
            stack._parse_template()
            stack.description = stack.template_dict.get("Description")
            stack.cross_stack_resources = self.exports
            stack.resource_map = stack._create_resource_map()
            stack.output_map = stack._create_output_map()
            self._validate_export_uniqueness(stack)
            stack._add_stack_event("CREATE_IN_PROGRESS", resource_status_reason="User Initiated")
            stack.create_resources()
        else:
            # An SSM-typed parameter (CDK's BootstrapVersion) reaches a change set as its previous *value*, which
            # moto would look up as a parameter name: leave it out, so it is resolved from its default again.
            declared = change_set.template_dict.get("Parameters", {})
            parameters = {k: v for k, v in change_set.parameters.items()
                          if not declared.get(k, {}).get("Type", "").startswith("AWS::SSM::Parameter::Value")}
            stack.resource_map.input_parameters = parameters  # update() keeps the old ones when given none
            stack.update(change_set.template, change_set.role_arn, parameters=parameters)
        change_set.execution_status = "EXECUTE_COMPLETE"
        if stack.status.endswith("ROLLBACK_COMPLETE"):
            return
        for name in before:
            self.exports.pop(name, None)
        for export in stack.exports:
            self.exports[export.name] = export

    CloudFormationBackend.execute_change_set = execute_change_set  # type: ignore[method-assign]
    scope_change_sets()


def _change_set(backend: Any, name: str, stack_name: str | None) -> Any:
    """A change set by ARN, or by name within its stack (every CDK deploy names its own cdk-deploy-change-set)."""
    from moto.cloudformation.exceptions import CloudFormationError

    if name in backend.change_sets:
        return backend.change_sets[name]
    found = [c for c in backend.change_sets.values() if c.change_set_name == name
             and stack_name in (None, c.stack_name, c.stack_id)]
    if not found:
        missing = CloudFormationError(f"ChangeSet [{name}] does not exist")
        missing.code = "ChangeSetNotFound"  # CloudFormation's own code, which the CDK CLI looks for
        raise missing
    return found[-1]


def scope_change_sets() -> None:
    """moto finds a change set by its name alone, across stacks, and fails to delete one that is not there: the
    CDK's second stack (cdk-deploy-change-set in each) then reads and runs the first stack's. Look change sets
    up within the request's stack, as CloudFormation does."""
    from moto.cloudformation.responses import CloudFormationResponse
    from moto.core.responses import ActionResult, EmptyResult

    def describe(self: CloudFormationResponse) -> ActionResult:
        return ActionResult(_change_set(self.cloudformation_backend, self._get_param("ChangeSetName"),
                                        self._get_param("StackName")))

    def delete(self: CloudFormationResponse) -> EmptyResult:
        # Deleting one that is not there succeeds: the CDK CLI clears its old change set from every stack it
        # skips as unchanged.
        backend, name = self.cloudformation_backend, self._get_param("ChangeSetName")
        for change_set in [c for c in backend.change_sets.values()
                           if name in (c.change_set_id, c.change_set_name)
                           and self._get_param("StackName") in (None, c.stack_name, c.stack_id)]:
            del backend.change_sets[change_set.change_set_id]
        return EmptyResult()

    CloudFormationResponse.describe_change_set = describe  # type: ignore[method-assign]
    CloudFormationResponse.delete_change_set = delete  # type: ignore[method-assign]


def save(path: Path) -> None:
    """Every backend that holds state, pickled together (so what they share stays shared), replacing ``path``
    atomically. dill, not pickle: moto's backends hold lambdas; what neither pickles, or restores usably (locks
    come back fresh), is reduced to what rebuilds it (``_reduce``)."""
    import dill
    from moto.core.base_backend import BackendDict

    class Pickler(dill.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            return _reduce(obj)

    state = [(backends.backend, account, region, backend) for backends in BackendDict._instances  # type: ignore[misc]
             for account, region, backend in backends.iter_backends()]
    for _, _, _, backend in state:
        for bucket in getattr(backend, "buckets", {}).values():
            if bucket.name.startswith("cdk-") and "-assets-" in bucket.name:
                # The CDK's published assets (a GPU runtime bundle is 300 MB): what was created from them holds
                # its own copy, and the CLI asks only whether an asset is there. Keep the keys, not the bytes.
                for key in bucket.keys.values():
                    key.value = b""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as out:
            Pickler(out).dump(state)
    except BaseException:
        partial.unlink()
        raise
    partial.replace(path)


def _reduce(obj: Any) -> Any:
    import weakref

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from moto.ssm.models import ParameterDict

    if isinstance(obj, threading.Condition):  # SQS's message lock: saved when nothing holds it, so a fresh one
        return threading.Condition, ()
    if isinstance(obj, LOCKS):
        return threading.RLock if isinstance(obj, LOCKS[1]) else threading.Lock, ()
    if isinstance(obj, weakref.WeakValueDictionary):
        # Lambda's index of functions by ARN: its values are held by the backend's storage, saved beside it.
        return weakref.WeakValueDictionary, (dict(obj),)
    if isinstance(obj, ParameterDict):
        # SSM's parameters: a defaultdict whose __init__ takes other arguments than the one pickle passes.
        return _parameters, (dict(obj), vars(obj))
    if isinstance(obj, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):  # KMS keys' key material
        return _private_key, (obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()),)
    return NotImplemented


def _private_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, None)


def _parameters(versions: dict[str, Any], attributes: dict[str, Any]) -> Any:
    from moto.ssm.models import ParameterDict

    mapping = ParameterDict(attributes["account_id"], attributes["region_name"])
    mapping.update(versions)
    vars(mapping).update(attributes)
    return mapping


def restore(path: Path) -> None:
    """Put what ``save`` wrote back into moto's backends, before the server answers anything."""
    import importlib

    import dill
    from moto.core.base_backend import BackendDict

    for cls, account, region, backend in dill.loads(path.read_bytes()):
        module = importlib.import_module(cls.__module__)
        (backends,) = [v for v in vars(module).values() if isinstance(v, BackendDict) and v.backend is cls]
        backends[account][region] = backend


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossover.emulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, help="start from this saved state, if it exists; save to it on exit")
    parser.add_argument("--fail", choices=BACKENDS, help="this backend never becomes ready: moves to it roll back")
    args = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    patch_updates()
    support_missing_types()
    name_failed_resources()
    weighted_forwards()
    deletion_protection()
    model_stack_operations(args.fail)
    queues_keep_messages()
    if args.state is not None and args.state.exists():
        restore(args.state)
    server.start()
    seed()
    print(f"emulator listening on http://localhost:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    if args.state is not None:
        save(args.state)
    return 0


if __name__ == "__main__":
    # Run as crossover.emulator, not __main__: a saved state names the classes defined here by that module.
    from crossover.emulator import main as run

    sys.exit(run())
