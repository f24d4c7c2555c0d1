"""ImageStack-<backend>: an EC2 Image Builder pipeline that bakes the serving runtime into an AMI.

The recipe starts from the backend's default image (the same public SSM parameter its fleet uses),
applies the component documents in crossover/ami/components/, and runs weekly so drivers and packages stay
current. The runtime component installs the runtime bundle this stack publishes, the same asset (same lock,
same wheels, same install.sh) that the backend's fleet names. Set the resulting AMI as ``<backend>.ami_id`` to
boot instances without first-boot installs.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_imagebuilder as imagebuilder
from constructs import Construct

from crossover import bundle
from crossover.compliance import INLINE, NIST, acknowledge, policy_of
from crossover.constructs.artifact import GPU_AMI, runtime_bundle

COMPONENTS = Path(str(files("crossover") / "ami" / "components"))
# backend -> (parent image SSM parameter, the lock its fleet installs, build instance type)
IMAGES = {
    "gpu": (GPU_AMI, bundle.instance_lock("onnxruntime-gpu", "x86_64"), "g4dn.xlarge"),
    "cpu": ("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
            bundle.instance_lock("onnxruntime", "x86_64"), "c7i.large"),
}


def component_files() -> list[Path]:
    return sorted(COMPONENTS.glob("*.yaml"))


class ImageStack(Stack):
    def __init__(self, scope: Construct, id: str, *, backend: str, vpc: ec2.IVpc, version: str = "1.0.0",
                 **kwargs: Any) -> None:
        super().__init__(scope, id, description=f"crossover image pipeline for the {backend} backend", **kwargs)
        parent_parameter, lock, build_type = IMAGES[backend]
        runtime = runtime_bundle(self, lock)
        components = [imagebuilder.CfnComponent(
            self, path.stem, name=f"{path.stem}-{backend}", platform="Linux", version=version, data=path.read_text())
            for path in component_files()]
        parent = ec2.MachineImage.from_ssm_parameter(parent_parameter).get_image(self).image_id
        recipe = imagebuilder.CfnImageRecipe(
            self, "Recipe", name=f"crossover-{backend}", version=version, parent_image=parent,
            components=[imagebuilder.CfnImageRecipe.ComponentConfigurationProperty(
                component_arn=c.attr_arn,
                parameters=[imagebuilder.CfnImageRecipe.ComponentParameterProperty(
                    name="RuntimeBundle", value=[runtime.s3_uri])]
                if c.name.startswith("crossover-serving-runtime") else None) for c in components],
            block_device_mappings=[imagebuilder.CfnImageRecipe.InstanceBlockDeviceMappingProperty(
                device_name="/dev/xvda", ebs=imagebuilder.CfnImageRecipe.EbsInstanceBlockDeviceSpecificationProperty(
                    encrypted=True, volume_type="gp3", volume_size=100 if backend == "gpu" else 30,
                    delete_on_termination=True))])
        role = iam.Role(self, "BuildRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"), managed_policies=[
            iam.ManagedPolicy.from_aws_managed_policy_name("EC2InstanceProfileForImageBuilder"),
            iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")])
        for policy, why in (("EC2InstanceProfileForImageBuilder", "EC2 Image Builder requires this AWS-maintained "
                             "policy on its build instances; it follows the service's own needs as they change."),
                            ("AmazonSSMManagedInstanceCore", "Image Builder drives its build instances through Systems "
                             "Manager, which needs this AWS-maintained policy; build instances take no inbound "
                             "connection.")):
            acknowledge(role, f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]", why)
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[runtime.object_arn]))
        acknowledge(policy_of(role), NIST + "IAMNoInlinePolicy", INLINE)
        profile = iam.CfnInstanceProfile(self, "BuildProfile", roles=[role.role_name])
        security_group = ec2.SecurityGroup(self, "BuildSecurityGroup", vpc=vpc,
                                           description="Image builds: outbound only, no inbound")
        infrastructure = imagebuilder.CfnInfrastructureConfiguration(
            self, "Infrastructure", name=f"crossover-{backend}", instance_profile_name=profile.ref,
            instance_types=[build_type], subnet_id=vpc.private_subnets[0].subnet_id,
            security_group_ids=[security_group.security_group_id], terminate_instance_on_failure=True,
            instance_metadata_options=imagebuilder.CfnInfrastructureConfiguration.InstanceMetadataOptionsProperty(
                http_tokens="required", http_put_response_hop_limit=1))
        imagebuilder.CfnImagePipeline(
            self, "Pipeline", name=f"crossover-{backend}", image_recipe_arn=recipe.attr_arn,
            infrastructure_configuration_arn=infrastructure.attr_arn,
            image_tests_configuration=imagebuilder.CfnImagePipeline.ImageTestsConfigurationProperty(
                image_tests_enabled=True, timeout_minutes=60),
            schedule=imagebuilder.CfnImagePipeline.ScheduleProperty(
                schedule_expression="cron(0 4 ? * mon *)",
                pipeline_execution_start_condition="EXPRESSION_MATCH_AND_DEPENDENCY_UPDATES_AVAILABLE"))
