"""The pipeline front door: an input queue, its dead-letter queue and the results bucket.

Like the realtime front door, its construct ids never depend on the backend, so switching a pipeline
between Lambda and any instance backend keeps the queue URL and the bucket.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

RESULT_PREFIXES = ("results/*", "errors/*")


class PipelineFrontDoor(Construct):
    """Messages ``{"id", "image"}`` arrive on ``queue``; results land in ``results`` under results/.

    Both queues are encrypted with SQS-managed keys and refuse plain HTTP; a message moves to the
    dead-letter queue after ``max_receive_count`` deliveries and is kept there 14 days. The bucket is
    KMS-encrypted (the account's AWS-managed S3 key, so readers need no key grants), private,
    SSL-only and versioned, and expires objects after ``results_days``.
    """

    def __init__(self, scope: Construct, id: str, *, visibility_timeout_s: int, max_receive_count: int = 3,
                 results_days: int = 30) -> None:
        super().__init__(scope, id)
        self.max_receive_count = max_receive_count
        self.dead_letters = sqs.Queue(self, "DeadLetterQueue", encryption=sqs.QueueEncryption.SQS_MANAGED,
                                      enforce_ssl=True, retention_period=Duration.days(14))
        self.queue = sqs.Queue(
            self, "Queue", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            visibility_timeout=Duration.seconds(visibility_timeout_s), retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=max_receive_count))
        self.results = s3.Bucket(
            self, "Results", encryption=s3.BucketEncryption.KMS_MANAGED, enforce_ssl=True, versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(results_days),
                                              noncurrent_version_expiration=Duration.days(1))])

    def grant_write_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """s3:PutObject on results/* and errors/*, nothing else."""
        return iam.Grant.add_to_principal(grantee=grantee, actions=["s3:PutObject"], resource_arns=[
            self.results.arn_for_objects(prefix) for prefix in RESULT_PREFIXES])
