"""A local AWS emulator (moto's server) on loopback, for deploy rehearsals without an AWS account.

    python -m crossover.emulator --port 5000

Runs until SIGTERM. Before serving it seeds the public SSM parameters the templates resolve (AMI
ids); moto refuses put_parameter on /aws/... names over its API, so they are written straight into
its in-process backend. It also closes two gaps in moto's stack updates (patch_updates), creates the
Lambda aliases and alarms it has no CloudFormation support for (support_missing_types) and names
the resource that failed in creation errors, as CloudFormation does (name_failed_resources).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

ACCOUNT, REGION = "123456789012", "us-east-1"
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


def patch_updates() -> None:
    """Two gaps in moto's stack updates. It does not keep SSM-typed parameters (CDK's BootstrapVersion)
    between create and update, then fails the update asking for their previous value: re-resolve them.
    And a resource type it cannot update (a log group) is dropped, breaking every reference to it:
    keep the resource as it was created instead."""
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


def support_missing_types() -> None:
    """Two resource types every model stack has and moto's CloudFormation lacks: AWS::Lambda::Alias
    (the ``live`` alias CodeDeploy moves; with a version's Version attribute) and
    AWS::CloudWatch::Alarm (the deploy looks rollback alarms up by name; with the target group
    attribute their dimensions name). Each is created through moto's own service backend. Must run
    before moto first reads its resource types (it caches them)."""
    from moto.awslambda.models import LambdaVersion, lambda_backends
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
            # Enough to be listed and looked up by name; the emulator never evaluates an alarm.
            cloudwatch_backends[account_id][region_name].put_metric_alarm(
                name=name, namespace=props.get("Namespace", ""), metric_name=props.get("MetricName", ""),
                comparison_operator=props["ComparisonOperator"], evaluation_periods=props["EvaluationPeriods"],
                period=props.get("Period", 60), threshold=props["Threshold"], statistic=props.get("Statistic", ""),
                description=props.get("AlarmDescription", ""), dimensions=props.get("Dimensions", []),
                alarm_actions=props.get("AlarmActions", []))
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
    assert {Alarm, Alias} <= set(CloudFormationModel.__subclasses__())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossover.emulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    patch_updates()
    support_missing_types()
    name_failed_resources()
    server.start()
    seed()
    print(f"emulator listening on http://localhost:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
