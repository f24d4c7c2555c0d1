"""The four instance backends: each an InstanceFleet with its own image, runtime and extras.

| backend    | image (default: AWS public SSM parameter, resolved at deploy)          | runtime          |
|------------|---------------------------------------------------------------|------------------|
| gpu        | Deep Learning Base OSS NVIDIA driver GPU AMI (AL2023)          | onnxruntime-gpu  |
| eia        | Amazon Linux 2023 + an Elastic Inference accelerator (retired) | onnxruntime      |
| inferentia | Neuron multi-framework DLAMI (AL2023), Neuron runtime          | torch-neuronx    |
| cpu        | Amazon Linux 2023 (arm64 for Graviton types)                  | onnxruntime      |
"""

from __future__ import annotations

from typing import Any, ClassVar

from aws_cdk import Aws
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct

from crossover.compliance import CFN_LINT, EI_RETIRED, acknowledge, policy_of
from crossover.config import GRAVITON_FAMILIES, ModelConfig
from crossover.constructs.artifact import GPU_AMI
from crossover.constructs.backend import l1
from crossover.constructs.fleet import FleetImage, InstanceFleet

NEURON_AMI = "/aws/service/neuron/dlami/multi-framework/amazon-linux-2023/latest/image_id"
EI_SERVICE = "elastic-inference.runtime"


class GpuFleet(InstanceFleet):
    """GPU instances on the Deep Learning AMI (or ``machine_image``); ONNX Runtime with CUDA, one batch at a time
    per GPU."""

    KIND: ClassVar[str] = "gpu"

    def __init__(self, scope: Construct, id: str, *, machine_image: ec2.IMachineImage | None = None,
                 **kwargs: Any) -> None:
        super().__init__(scope, id, image=FleetImage(
            machine_image or ec2.MachineImage.from_ssm_parameter(GPU_AMI), runtime="onnxruntime-gpu"), **kwargs)


class CpuFleet(InstanceFleet):
    """CPU instances on Amazon Linux 2023 (or ``machine_image``); Graviton types (c6g, c7g, m7g) get the arm64
    image."""

    KIND: ClassVar[str] = "cpu"

    def __init__(self, scope: Construct, id: str, *, instance_type: ec2.InstanceType,
                 machine_image: ec2.IMachineImage | None = None, **kwargs: Any) -> None:
        arm = instance_type.to_string().split(".")[0] in GRAVITON_FAMILIES
        default = ec2.MachineImage.latest_amazon_linux2023(
            cpu_type=ec2.AmazonLinuxCpuType.ARM_64 if arm else ec2.AmazonLinuxCpuType.X86_64)
        super().__init__(scope, id, instance_type=instance_type, image=FleetImage(machine_image or default), **kwargs)


class InferentiaFleet(InstanceFleet):
    """Inferentia instances on the Neuron DLAMI (driver, runtime and torch-neuronx preinstalled).

    With ``neuron=True`` the artifact is a Neuron-compiled TorchScript module served from the DLAMI's
    PyTorch environment on the NeuronCores; otherwise the ONNX model runs on the host CPUs.
    """

    KIND: ClassVar[str] = "inferentia"

    def __init__(self, scope: Construct, id: str, *, neuron: bool = False,
                 machine_image: ec2.IMachineImage | None = None, **kwargs: Any) -> None:
        super().__init__(scope, id, image=FleetImage(
            machine_image or ec2.MachineImage.from_ssm_parameter(NEURON_AMI),
            runtime="neuron" if neuron else "onnxruntime"), **kwargs)

    @classmethod
    def _options(cls, config: ModelConfig) -> dict[str, Any]:
        return {**super()._options(config), "neuron": config.inferentia.neuron_artifact is not None}


class EiaFleet(InstanceFleet):
    """C5 instances with an Elastic Inference accelerator, as EI was deployed before AWS retired it.

    Adds what EI needed: the accelerator in the launch template, the interface endpoint
    ``com.amazonaws.<region>.elastic-inference.runtime`` with private DNS behind a security group that
    admits 443 from the fleet, and ``elastic-inference:Connect`` on accelerators in this account and
    region (the service offers no narrower resource).
    """

    KIND: ClassVar[str] = "eia"

    def __init__(self, scope: Construct, id: str, *, accelerator: str = "eia1.medium",
                 machine_image: ec2.IMachineImage | None = None, **kwargs: Any) -> None:
        connect = iam.PolicyStatement(actions=["elastic-inference:Connect"], resources=[
            f"arn:{Aws.PARTITION}:elastic-inference:{Aws.REGION}:{Aws.ACCOUNT_ID}:elastic-inference-accelerator/*"])
        image = FleetImage(machine_image or ec2.MachineImage.latest_amazon_linux2023(), extra_policies=[connect])
        super().__init__(scope, id, image=image, **kwargs)
        self._attach_accelerator(accelerator)
        endpoint_sg = ec2.SecurityGroup(self, "AcceleratorEndpointSecurityGroup", vpc=self.vpc,
                                        allow_all_outbound=False, disable_inline_rules=True,
                                        description="Elastic Inference endpoint: 443 from the fleet")
        endpoint_sg.add_ingress_rule(self.security_group, ec2.Port.tcp(443), "Fleet to Elastic Inference")
        self.accelerator_endpoint = ec2.InterfaceVpcEndpoint(
            self, "AcceleratorEndpoint", vpc=self.vpc, private_dns_enabled=True, security_groups=[endpoint_sg],
            open=False,  # only the fleet (above), not the whole VPC
            service=ec2.InterfaceVpcEndpointAwsService(EI_SERVICE), subnets=self.subnets)
        acknowledge(policy_of(self.role), {
            CFN_LINT + "W3037": EI_RETIRED + "cfn-lint's IAM catalogue no longer knows the elastic-inference action "
                                             "prefix.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:elastic-inference:<AWS::Region>:<AWS::AccountId>:"
            "elastic-inference-accelerator/*]": EI_RETIRED + "elastic-inference:Connect names no single accelerator: "
                                                             "it is scoped to this account and region."})

    @classmethod
    def _options(cls, config: ModelConfig) -> dict[str, Any]:
        return {**super()._options(config), "accelerator": config.eia.accelerator}

    def _attach_accelerator(self, accelerator: str) -> None:
        # The LaunchTemplate L2 has no Elastic Inference option (its "fields not yet implemented") and the L1's
        # typed data is set whole: an override adds the one property, visible in the template to cdk-nag and
        # cfn-lint.
        cfn = l1(self.launch_template, ec2.CfnLaunchTemplate)
        cfn.add_property_override("LaunchTemplateData.ElasticInferenceAccelerators",
                                  [{"Type": accelerator, "Count": 1}])
        acknowledge(cfn, {
            "CloudFormation-Validate::F3002": EI_RETIRED + "Current CloudFormation schemas no longer list "
                                                           "ElasticInferenceAccelerators.",
            CFN_LINT + "E3002": EI_RETIRED + "cfn-lint's schema no longer lists ElasticInferenceAccelerators."})
