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

from crossover.compliance import CHECKOV, NIST, acknowledge, logical_id, policy_of
from crossover.constructs.backend import Backend

RESULT_PREFIXES = ("results/*", "errors/*")
RESULTS_BUCKET = ("This bucket holds the pipeline's results, written only by its own consumer role; access "
                  "logs would record that role's writes, which CloudTrail already shows.")
SQS_SSE = ("Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled); checkov only counts a KMS key, "
           "which would make every producer of images need a key grant without protecting more.")
RESULT_KEYS = ("Result keys are named by message id, unknown in advance: the consumer may put objects "
               "under results/ and errors/ of its own bucket only.")


class PipelineFrontDoor(Construct):
    """Messages ``{"id", "image"}`` arrive on ``queue``; results land in ``results`` under results/.

    Both queues are encrypted with SQS-managed keys and refuse plain HTTP; a message moves to the
    dead-letter queue after ``max_receive_count`` deliveries and is kept there 14 days. The bucket is
    KMS-encrypted (the account's AWS-managed S3 key, so readers need no key grants), private,
    SSL-only and versioned, and expires objects after ``results_retention``.
    """

    def __init__(self, scope: Construct, id: str, *, visibility_timeout: Duration, max_receive_count: int = 3,
                 results_retention: Duration = Duration.days(30)) -> None:
        super().__init__(scope, id)
        self.max_receive_count = max_receive_count
        self.dead_letters = sqs.Queue(self, "DeadLetterQueue", encryption=sqs.QueueEncryption.SQS_MANAGED,
                                      enforce_ssl=True, retention_period=Duration.days(14))
        self.queue = sqs.Queue(
            self, "Queue", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            visibility_timeout=visibility_timeout, retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=max_receive_count))
        self.results = s3.Bucket(
            self, "Results", encryption=s3.BucketEncryption.KMS_MANAGED, enforce_ssl=True, versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(expiration=results_retention,
                                              noncurrent_version_expiration=Duration.days(1))])
        acknowledge(self.results, {
            **dict.fromkeys(("AwsSolutions-S1", NIST + "S3BucketLoggingEnabled", CHECKOV + "CKV_AWS_18"),
                            RESULTS_BUCKET),
            NIST + "S3BucketReplicationEnabled": "Results are derived from images the owner keeps and can be "
                                                 "recomputed from the queue's inputs; a cross-region replica doubles "
                                                 "storage for data that expires after pipeline.results_days."})
        for queue in (self.queue, self.dead_letters):
            acknowledge(queue, CHECKOV + "CKV_AWS_27", SQS_SSE)
        acknowledge(self.dead_letters, "Serverless-SQSRedrivePolicy", "This is the dead-letter queue: what lands "
                    "here is kept 14 days for inspection, with its error in errors/<id>.json; a queue behind it "
                    "would only move the same messages again.")

    def attach(self, backend: Backend) -> None:
        backend.consume(self)

    def grant_read_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """s3:GetObject on results/* and errors/* (the bucket's key is AWS-managed: no key grant needed)."""
        return iam.Grant.add_to_principal(grantee=grantee, actions=["s3:GetObject"], resource_arns=[
            self.results.arn_for_objects(prefix) for prefix in RESULT_PREFIXES])

    def grant_write_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """s3:PutObject on results/* and errors/*, nothing else."""
        grant = iam.Grant.add_to_principal(grantee=grantee, actions=["s3:PutObject"], resource_arns=[
            self.results.arn_for_objects(prefix) for prefix in RESULT_PREFIXES])
        for prefix in RESULT_PREFIXES:
            acknowledge(policy_of(grantee), f"AwsSolutions-IAM5[Resource::<{logical_id(self.results)}.Arn>/{prefix}]",
                        RESULT_KEYS)
        return grant
