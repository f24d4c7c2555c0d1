"""The files a backend runs: the model (ModelArtifact: where it lives in S3, and a read grant on exactly that
object), the serving code and the runtime bundle fleets install (file assets), and the public image GPU instances
boot from. ImageStack bakes the same bundle onto the same image, so it reads them from here (without loading the
fleets' Auto Scaling library)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetStaging, Aws, BundlingOptions, DockerImage, ILocalBundling, Names, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

import crossover.bundle

GPU_AMI = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"


@dataclass(frozen=True)
class S3Object:
    """One object in S3: what a reader is granted (never its bucket, which may hold much else)."""

    bucket_name: str
    object_key: str

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket_name}/{self.object_key}"

    @property
    def object_arn(self) -> str:
        return f"arn:{Aws.PARTITION}:s3:::{self.bucket_name}/{self.object_key}"


@dataclass(frozen=True)
class FileAsset(S3Object):
    """A local file or folder published to the bootstrap bucket (:func:`file_asset`)."""

    staged_path: str  # in the cloud assembly
    bundled: bool


def file_asset(scope: Construct, id: str, *, path: Path, exclude: Sequence[str] | None = None,
               asset_hash: str | None = None, bundling: BundlingOptions | None = None,
               deploy_time: bool = False) -> FileAsset:
    """``path`` staged into the cloud assembly and published as a file asset: what CDK's ``aws_s3_assets.Asset``
    does, less the ``IBucket`` it makes of the bootstrap bucket. Making one loads CDK's table of region facts
    (1.3 MB, ~80 ms of every synth), and crossover never grants on that bucket, which holds every asset of the
    account: readers get the one object (``object_arn``)."""
    staged = AssetStaging(scope, id, source_path=os.path.abspath(path), exclude=exclude, asset_hash=asset_hash,
                          bundling=bundling)
    stack = Stack.of(scope)
    staged_path = staged.relative_staged_path(stack)
    location = stack.synthesizer.add_file_asset(
        source_hash=staged.asset_hash, file_name=staged_path, packaging=staged.packaging,
        deploy_time=deploy_time or None, display_name=Names.stack_relative_construct_path(staged))
    return FileAsset(location.bucket_name, location.object_key, staged_path, bundled=bundling is not None)


def runtime_bundle(scope: Construct, lock: str) -> FileAsset:
    """The runtime bundle of ``lock`` as an asset (``Runtime``): its locked wheels for one platform and flavour,
    and the install.sh that installs them with no package index (crossover.bundle.wheels). Its hash is the
    bundle's digest, so neither a synth nor a deploy rereads the wheels to know it unchanged."""
    return file_asset(scope, "Runtime", path=crossover.bundle.LOCKS, asset_hash=crossover.bundle.runtime_digest(lock),
                      bundling=built_here(lambda output: crossover.bundle.link(crossover.bundle.wheels(lock), output)))


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
            bucket_name, object_key = s3_uri.removeprefix("s3://").split("/", 1)
            self.object = S3Object(bucket_name, object_key)
        elif local_path is not None:
            self.object = file_asset(self, "Asset", path=local_path)

    @property
    def s3_uri(self) -> str:
        return self.object.s3_uri

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        return iam.Grant.add_to_principal(grantee=grantee, actions=["s3:GetObject"],
                                          resource_arns=[self.object.object_arn])


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
