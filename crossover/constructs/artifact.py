"""ModelArtifact: where the model file lives in S3, and a read grant on exactly that object."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct


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
