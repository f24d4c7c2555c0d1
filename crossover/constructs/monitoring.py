"""Alarms and a dashboard per model, generated for whichever backend and service run it.

Every alarm notifies one encrypted SNS topic per model (subscribe to it, or give ``alarms.topic_arn``
to use an existing one). What is watched (R: the alarm also rolls a deployment back):

| signal | realtime | pipeline |
|---|---|---|
| p99 latency above ``traffic.p99_ms`` (R, but not during a canary) | load balancer target response time | — |
| server faults (500s, load balancer 5xx) above 1% (R) | load balancer, crossover_serving/ | — |
| unhealthy hosts, per fleet (R) | instance backends | — |
| the canary's p99, and its own server faults above 1% of its requests (R) | during a canary | — |
| Lambda errors (R) and throttles, through the ``live`` alias | lambda | lambda |
| more than 10% of messages failing (R) | — | both |
| oldest message older than ``pipeline.backlog_s``; any message in the dead-letter queue | — | both |
| model-load failures (R, the serving metric) | instance backends | instance backends |
| GPU utilisation above 90% for 5 minutes (crossover_serving/ samples nvidia-smi) | gpu | gpu |

During a canary only the backend being moved to is on trial: its own alarms roll back, the old
backend's only notify. Rollback alarms measure the release, not the traffic: a backlog or an old
dead letter says nothing about the code being deployed, so they notify but never roll back. Alarm names are fixed
(``<name>-<signal>``, ``name`` unique to the model in its account and region): the deploy tool finds the live
ones by name to pass CloudFormation as rollback triggers.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from crossover.constructs.front_door import RealtimeFrontDoor, RequestFrontDoor
from crossover.constructs.metrics import MINUTE, serving_metric
from crossover.constructs.pipeline_front_door import PipelineFrontDoor
from crossover.figures import Band

GPU_BUSY_PERCENT = 90
FAILED_MESSAGES_PERCENT = 10  # a bad release fails every message; hostile inputs are a few percent


class ModelMonitoring(Construct):
    """``name``: what the alarms and the dashboard are named after; ``topic``: where alarms go (None: a topic of
    the model's own, encrypted)."""

    def __init__(self, scope: Construct, id: str, *, model: str, name: str, topic: sns.ITopic | None = None) -> None:
        super().__init__(scope, id)
        self.model, self.name = model, name
        self.topic = topic or sns.Topic(self, "Topic", enforce_ssl=True, display_name=f"crossover {model} alarms",
                                        master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"))
        self._notify = actions.SnsAction(self.topic)  # one action object for every alarm: it only names the topic
        self.alarms: list[cloudwatch.Alarm] = []
        self.rollback_alarm_names: list[str] = []  # the release's judges: CloudFormation's rollback triggers
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard",
                                              dashboard_name=f"crossover-{name}")

    def alarm_name(self, id: str) -> str:
        return f"{self.name}-{id}"

    def _alarm(self, id: str, metric: cloudwatch.IMetric, threshold: float, what: str,
               periods: int = 3, rollback: bool = False, graph: bool = True,
               comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
               missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING
               ) -> cloudwatch.Alarm:
        name = self.alarm_name(id)
        alarm = cloudwatch.Alarm(self, id, metric=metric, threshold=threshold, evaluation_periods=5, alarm_name=name,
                                 datapoints_to_alarm=periods, alarm_description=f"{self.model}: {what}",
                                 comparison_operator=comparison, treat_missing_data=missing)
        alarm.add_alarm_action(self._notify)
        alarm.add_ok_action(self._notify)
        self.alarms.append(alarm)
        if rollback:
            self.rollback_alarm_names.append(name)
        if graph:
            self.dashboard.add_widgets(cloudwatch.GraphWidget(title=what, left=[metric], width=8,
                                                              left_annotations=[cloudwatch.HorizontalAnnotation(
                                                                  value=threshold, label="alarm")]))
        return alarm

    def watch_volume(self, count: cloudwatch.IMetric, edges: Band, hours_per_month: float) -> None:
        """The front door's daily count (requests or messages sent) projected to a month, against the band
        in which the backend is the one to run (crossover.cost.band): below or above it for 3 of 5 days,
        an alarm says which backend is cheaper and the command that moves there. Never a rollback alarm:
        volume says nothing about a release."""
        projected = cloudwatch.MathExpression(expression=f"FILL(count, 0) * {hours_per_month / 24:.6g}",
                                              period=Duration.days(1), using_metrics={"count": count},
                                              label="images a month, projected from each day")
        annotations = []
        # A day with no request has no datapoint at all (the load balancer and the queue publish none): it is
        # a volume of zero, below the band, never above it.
        for id, edge, advice, comparison, side, missing in (
                ("VolumeBelowBand", edges.low, edges.below, cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                 "below", cloudwatch.TreatMissingData.BREACHING),
                ("VolumeAboveBand", edges.high, edges.above, cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                 "above", cloudwatch.TreatMissingData.NOT_BREACHING)):
            if edge is None:
                continue
            threshold = round(edge)
            self._alarm(id, projected, threshold, f"projected monthly volume {side} {threshold:,} images, past "
                        f"which the current backend is not the one to run: {advice}", graph=False,
                        comparison=comparison, missing=missing)
            annotations.append(cloudwatch.HorizontalAnnotation(value=threshold, label=f"band edge ({side})"))
        self.dashboard.add_widgets(cloudwatch.GraphWidget(
            title="monthly volume, projected, and the backend's band", left=[projected], width=8,
            left_annotations=annotations))

    def watch_realtime(self, front_door: RequestFrontDoor, *, p99_ms: int,
                       rollback: bool = True) -> list[cloudwatch.Alarm]:
        """``rollback``: the load balancer's p99 judges the release (during a canary it is mostly the old
        backend's, so the canary's own p99 does instead). Its fault rate always does: only server faults count,
        none a client can cause, and during a canary it guards the update that creates the new backend at
        weight 0, before the canary's own alarms exist. Returns both: they judge a Lambda's traffic shifts."""
        if isinstance(front_door, RealtimeFrontDoor):
            latency = self._alarm("LatencyP99", front_door.metric_target_response_time(), p99_ms / 1000,
                                  f"p99 latency above the {p99_ms} ms target (seconds)", rollback=rollback)
            # Server faults only: the serving code's own 500s and what the load balancer answers for a target
            # that failed (502: it crashed or reset, 503: none healthy, 504: it hung). The 502/503/504 the
            # serving code sends on purpose (an origin the request named failed, overload, a missed deadline)
            # are the traffic's doing, and a client must not be able to roll a deployment back by sending them.
            errors = cloudwatch.MathExpression(
                expression="100 * (FILL(faults, 0) + FILL(elb5xx, 0)) / MAX([requests, 1])", period=MINUTE,
                label="faults %",
                using_metrics={"faults": serving_metric(self.model, "ServerFaults"),
                               "elb5xx": front_door.metric_faults(), "requests": front_door.metric_request_count()})
        else:
            # A team's load balancer counts its other services too, and its target groups' metrics would make the
            # Lambda's traffic shift wait on its own target group (which names the alias: a cycle): the serving
            # code's own figures judge, its p99 and its faults out of what it answered.
            latency = self._alarm("LatencyP99", serving_metric(self.model, "LatencyMs", statistic="p99"), p99_ms,
                                  f"p99 latency above the {p99_ms} ms target (milliseconds)", rollback=rollback)
            errors = cloudwatch.MathExpression(
                expression="100 * FILL(faults, 0) / MAX([FILL(answered, 0) + FILL(faults, 0), 1])", period=MINUTE,
                label="faults %", using_metrics={
                    "faults": serving_metric(self.model, "ServerFaults"),
                    "answered": serving_metric(self.model, "LatencyMs", statistic="SampleCount")})
        what = "500s and load balancer 5xx" if isinstance(front_door, RealtimeFrontDoor) else "500s"
        return [latency, self._alarm("ErrorRate", errors, 1, f"server faults ({what}) above 1% of requests",
                                     rollback=True)]

    def watch_targets(self, group: elbv2.ApplicationTargetGroup, backend: str, *,
                      rollback: bool = True) -> cloudwatch.Alarm:
        """A fleet's instances behind the load balancer (``backend``: its id, as a canary has two fleets)."""
        return self._alarm(f"{backend}UnhealthyHosts", group.metrics.unhealthy_host_count(period=MINUTE,
                                                                                  statistic="Maximum"), 0,
                    f"unhealthy {backend} instances behind the load balancer", periods=5, rollback=rollback)

    def watch_canary(self, group: elbv2.ApplicationTargetGroup, *, backend: str, p99_ms: int) -> None:
        """The canary's own judges, from its target group and its own backend alone (``backend``: its id, the
        ``Backend`` dimension crossover_serving/ publishes ServerFaults under): its p99, and its server faults
        out of its requests. Rollback alarms of the deploy that gives it its share.

        Its faults: the serving code's own 500s (ServerFaults), a fleet target that refused or reset the
        connection (TargetConnectionErrorCount: the load balancer answers 502). Never its target 5xx: the
        502/503/504 the serving code sends on purpose (an origin the request named failed, overload, a missed
        deadline) are the traffic's doing, and a client must not be able to roll the canary back by sending
        them. Nor LambdaUserError, which counts bodies over Lambda's 1 MB and throttling with the crashes: a
        function that crashes or times out is the LambdaErrors alarm of its live alias. A target that hangs
        (the load balancer's 504) is the canary's p99."""
        metrics = group.metrics
        self._alarm("CanaryLatencyP99", metrics.target_response_time(statistic="p99", period=MINUTE),
                    p99_ms / 1000, f"the canary's p99 latency above the {p99_ms} ms target (seconds)", rollback=True)
        errors = cloudwatch.MathExpression(
            expression="100 * (FILL(faults, 0) + FILL(connectionErrors, 0)) / MAX([requests, 1])", period=MINUTE,
            label="canary faults %", using_metrics={
                "faults": serving_metric(self.model, "ServerFaults", backend=backend),
                "connectionErrors": metrics.custom("TargetConnectionErrorCount", period=MINUTE, statistic="Sum"),
                "requests": metrics.custom("RequestCount", period=MINUTE, statistic="Sum")})
        self._alarm("CanaryErrorRate", errors, 1, f"the canary's ({backend}) server faults above 1% of its requests",
                    rollback=True)

    def watch_function(self, function: lambda_.IFunction, *, rollback: bool = True,
                       name: str = "Lambda") -> list[cloudwatch.Alarm]:
        """``function``: the alias that serves, so the alarms see what a traffic shift sends there; ``name``: its
        alarms' prefix (a backend's id: during a canary between two functions, each has its own). Returns its
        errors alarm: it judges the function's traffic shifts."""
        errors = self._alarm(f"{name}Errors", function.metric_errors(period=MINUTE), 0, f"{name} errors",
                             rollback=rollback)
        self._alarm(f"{name}Throttles", function.metric_throttles(period=MINUTE), 0, f"{name} throttles")
        return [errors]

    def watch_pipeline(self, front_door: PipelineFrontDoor, *, backlog_s: int) -> list[cloudwatch.Alarm]:
        """Returns the failed-messages alarm: it judges a Lambda's traffic shifts."""
        self._alarm("QueueAge", front_door.queue.metric_approximate_age_of_oldest_message(
            period=MINUTE, statistic="Maximum"), backlog_s, f"oldest message waiting over {backlog_s} s")
        self._alarm("DeadLetters", front_door.dead_letters.metric_approximate_number_of_messages_visible(
            period=MINUTE, statistic="Maximum"), 0, "messages in the dead-letter queue", periods=1)
        failed = cloudwatch.MathExpression(
            expression="100 * failures / MAX([failures + results, 1])", period=MINUTE, label="failed %",
            using_metrics={"failures": serving_metric(self.model, "PipelineFailures"),
                           "results": serving_metric(self.model, "PipelineResults")})
        return [self._alarm("FailedMessages", failed, FAILED_MESSAGES_PERCENT,
                            f"more than {FAILED_MESSAGES_PERCENT}% of messages failing", rollback=True)]

    def watch_gpus(self) -> None:
        """Saturated GPUs: the fleet is short of capacity (scaling at its maximum, or tracking too late)."""
        self._alarm("GpuUtilization", serving_metric(self.model, "GpuUtilization", statistic="Average"),
                    GPU_BUSY_PERCENT, f"GPU utilisation above {GPU_BUSY_PERCENT}% (average over the fleet)", periods=5)

    def watch_model_loads(self, *, rollback: bool = True) -> None:
        self._alarm("ModelLoadFailures", serving_metric(self.model, "ModelLoadFailures"), 0,
                    "instances that failed to load the model", periods=1, rollback=rollback)
