"""The files a backend runs: the model (ModelArtifact: where it lives in S3, and a read grant on exactly that
object), the runtime bundle fleets install, and the public image GPU instances boot from. ImageStack bakes the
same bundle onto the same image, so it reads them from here (without loading the fleets' Auto Scaling library)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import Aws, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

import crossover.bundle

GPU_AMI = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"


def runtime_bundle(scope: Construct, lock: str) -> s3_assets.Asset:
    """The runtime bundle of ``lock`` as an asset (``Runtime``): its locked wheels for one platform and flavour,
    and the install.sh that installs them with no package index (crossover.bundle.wheels). Its hash is the
    bundle's digest, so neither a synth nor a deploy rereads the wheels to know it unchanged."""
    return s3_assets.Asset(scope, "Runtime", path=str(crossover.bundle.LOCKS),
                           asset_hash=crossover.bundle.runtime_digest(lock),
                           bundling=built_here(lambda output: crossover.bundle.link(crossover.bundle.wheels(lock),
                                                                                    output)))


class ModelArtifact(Construct):
    """An ``s3://bucket/key`` the user already has, or a local file published as a CDK file asset.

    Exactly one of ``s3_uri`` and ``local_path`` is given. Readers get ``s3:GetObject`` on the one
    object, never on the bucket (the asset bucket holds every other asset of the account too).
    """

    def __init__(self, scope: Construct, id: str, *, s3_uri: str | None = None,
                 local_path: Path | None = None) -> None:
        super().__init__(scope, id)
        if (s3_uri is None) == (local_path is None):
            raise ValueError("give exactly one of s3_uri and local_path")
        if s3_uri is not None:
            self.bucket_name, self.object_key = s3_uri.removeprefix("s3://").split("/", 1)
        else:
            asset = s3_assets.Asset(self, "Asset", path=str(local_path))
            self.bucket_name, self.object_key = asset.s3_bucket_name, asset.s3_object_key

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket_name}/{self.object_key}"

    @property
    def object_arn(self) -> str:
        return f"arn:{Aws.PARTITION}:s3:::{self.bucket_name}/{self.object_key}"

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        return iam.Grant.add_to_principal(grantee=grantee, actions=["s3:GetObject"],
                                          resource_arns=[self.object_arn])


@jsii.implements(ILocalBundling)
class _OnThisMachine:
    def __init__(self, build: Callable[[Path], None]) -> None:
        self.build = build

    def try_bundle(self, output_dir: str, _options: Any = None) -> bool:
        self.build(Path(output_dir))
        return True


def built_here(build: Callable[[Path], None]) -> BundlingOptions:
    """Bundling that ``build(output_dir)`` does on this machine (crossover.bundle: pip's cross-platform wheel
    downloads) instead of in a Docker image, which CDK asks for but never starts."""
    return BundlingOptions(image=DockerImage.from_registry("unused-local-bundling"),
                           local=_OnThisMachine(build))  # type: ignore[arg-type]
