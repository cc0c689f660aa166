"""Alarms on what users feel (p95 latency, 5xx, unhealthy targets) and what breaks the database
(storage, CPU, connections over the budget), to an SNS topic, plus a dashboard."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from ...config import MonitoringConfig
from ._common import output_policy, tags


class Monitoring(pulumi.ComponentResource):
    topic_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        config: MonitoringConfig,
        environment: str,
        *,
        region: pulumi.Input[str],
        account_id: pulumi.Input[str],
        alb_arn_suffix: pulumi.Input[str],
        target_group_arn_suffix: pulumi.Input[str],
        db_identifier: pulumi.Input[str],
        bucket_name: pulumi.Input[str],
        connection_budget: int,
        replica_identifier: pulumi.Input[str] | None = None,
        replica_lag_seconds: int | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        base = tags(environment, "monitoring")
        topic = aws.sns.Topic(
            f"{name}-alarms",
            name=f"mlflow-{environment}-alarms",
            kms_master_key_id=self._topic_key(name, environment, account_id, base).arn,
            tags=base,
            opts=child,
        )
        for i, email in enumerate(config.alarm_emails):
            aws.sns.TopicSubscription(
                f"{name}-email-{i}", topic=topic.arn, protocol="email", endpoint=email, opts=child
            )

        self._name, self._env, self._child = name, environment, child
        self._common = {"alarm_actions": [topic.arn], "ok_actions": [topic.arn], "tags": base}
        self._alarms: list[aws.cloudwatch.MetricAlarm] = []
        self._alb_alarms(config, alb_arn_suffix, target_group_arn_suffix)
        self._db_alarms(config, db_identifier, connection_budget)
        if replica_identifier is not None and replica_lag_seconds is not None:
            self._replica_lag(replica_identifier, replica_lag_seconds)
            self._replica_events(replica_identifier, topic, base)
        self._storage_runway(config, db_identifier)
        self._artifact_capacity(config, bucket_name)

        # The dashboard draws each alarm as CloudWatch evaluates it (metric widgets annotated with the
        # alarm: its metric or expression and its threshold), beside the ALB and RDS overview.
        alarm_arns = pulumi.Output.all(*[a.arn for a in self._alarms])
        body = pulumi.Output.all(region, alb_arn_suffix, target_group_arn_suffix, db_identifier, alarm_arns).apply(
            lambda a: json.dumps(
                _dashboard(*a[:4], connection_budget=connection_budget, slo=config.p95_latency_seconds, alarms=a[4])
            )
        )
        aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=f"mlflow-{environment}", dashboard_body=body, opts=child
        )
        self.topic_arn = topic.arn
        self.register_outputs({"topicArn": self.topic_arn})

    def _topic_key(self, name: str, environment: str, account_id: pulumi.Input[str], base: dict) -> aws.kms.Key:
        """A customer-managed key CloudWatch may use. Under the AWS-managed alias/aws/sns, whose
        policy cannot be changed, CloudWatch cannot publish and every alarm is silently dropped
        (SNS docs, "Encryption at rest": AWS service event sources need a customer managed key whose
        policy allows the service kms:Decrypt and kms:GenerateDataKey*)."""
        policy = output_policy(
            {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": pulumi.Output.concat("arn:aws:iam::", account_id, ":root")},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "CloudWatchAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
            },
            {
                "Sid": "RdsEventsPublish",  # the read replica's event subscription
                "Effect": "Allow",
                "Principal": {"Service": "events.rds.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
            },
        )
        return aws.kms.Key(
            f"{name}-topic-key",
            description=f"mlflow {environment} alarm topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=policy,
            tags=base,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _alarm(self, suffix: str, description: str, **kwargs) -> aws.cloudwatch.MetricAlarm:
        alarm = aws.cloudwatch.MetricAlarm(
            f"{self._name}-{suffix}",
            name=f"mlflow-{self._env}-{suffix}",
            alarm_description=description,
            **self._common,
            **kwargs,
            opts=self._child,
        )
        self._alarms.append(alarm)
        return alarm

    def _alb_alarms(
        self, config: MonitoringConfig, alb_arn_suffix: pulumi.Input[str], target_group_arn_suffix: pulumi.Input[str]
    ) -> None:
        alb = {"LoadBalancer": alb_arn_suffix, "TargetGroup": target_group_arn_suffix}
        alarm = self._alarm
        alarm(
            "p95-latency",
            f"ALB p95 target response time above {config.p95_latency_seconds}s (the SLO)",
            namespace="AWS/ApplicationELB",
            metric_name="TargetResponseTime",
            dimensions=alb,
            extended_statistic="p95",
            period=60,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            threshold=config.p95_latency_seconds,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
        )
        alarm(
            "5xx-rate",
            f"more than {config.error_rate_percent}% of requests answered 5xx",
            evaluation_periods=5,
            datapoints_to_alarm=3,
            threshold=config.error_rate_percent,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            metric_queries=[
                {
                    "id": "rate",
                    # CloudWatch metric math: IF(condition, trueValue, falseValue) works per data point;
                    # MAX([requests, 1]) mixed a scalar into a list of series, which the docs do not allow.
                    "expression": "IF(requests > 0, 100 * (FILL(t5xx, 0) + FILL(e5xx, 0)) / requests, 0)",
                    "label": "5xx %",
                    "return_data": True,
                },
                _metric("t5xx", "HTTPCode_Target_5XX_Count", alb),
                _metric("e5xx", "HTTPCode_ELB_5XX_Count", {"LoadBalancer": alb_arn_suffix}),
                _metric("requests", "RequestCount", alb),
            ],
        )
        alarm(
            "unhealthy-hosts",
            "a tracking server pod fails the ALB /health check",
            namespace="AWS/ApplicationELB",
            metric_name="UnHealthyHostCount",
            dimensions=alb,
            statistic="Maximum",
            period=60,
            evaluation_periods=3,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
        )

    def _storage_runway(self, config: MonitoringConfig, db_identifier: pulumi.Input[str]) -> None:
        """Traces live in PostgreSQL and are the fastest-growing rows: alarm on the days of free
        storage left at the last hours' rate (RATE is per second), before the floor is reached.
        Storage autoscaling raises free space, so this fires when autoscaling has hit its ceiling."""
        self._alarm(
            "db-storage-runway",
            f"RDS free storage runs out within {config.storage_runway_days} days at the current growth",
            evaluation_periods=6,
            datapoints_to_alarm=6,
            threshold=config.storage_runway_days,
            comparison_operator="LessThanThreshold",
            treat_missing_data="notBreaching",
            metric_queries=[
                {
                    "id": "days",
                    "expression": "IF(RATE(free) < 0, free / (0 - RATE(free)) / 86400, 3650)",
                    "label": "days of free storage left",
                    "return_data": True,
                },
                _free_storage(db_identifier),
            ],
        )

    def _artifact_capacity(self, config: MonitoringConfig, bucket: pulumi.Input[str]) -> None:
        """The guide's weekly artifact-store capacity check, as alarms: S3 publishes each bucket's
        size per storage class and its object count once a day (S3 CloudWatch daily storage metrics),
        so the period is a day and a missing day is not a breach."""
        daily = {"period": 86400, "evaluation_periods": 1, "treat_missing_data": "notBreaching"}
        size = [
            {"id": "total", "expression": "SUM(METRICS())", "label": "artifact store bytes", "return_data": True},
            *[_s3_size(f"s{i}", bucket, kind) for i, kind in enumerate(STORAGE_TYPES)],
        ]
        self._alarm(
            "artifact-store-size",
            f"artifact bucket above {config.artifact_store_max_gb} GB (monitoring.artifactStoreMaxGb)",
            threshold=config.artifact_store_max_gb * 1024**3,
            comparison_operator="GreaterThanThreshold",
            metric_queries=size,
            **daily,
        )
        self._alarm(
            "artifact-store-objects",
            f"artifact bucket above {config.artifact_store_max_objects:,} objects (monitoring.artifactStoreMaxObjects)",
            namespace="AWS/S3",
            metric_name="NumberOfObjects",
            dimensions={"BucketName": bucket, "StorageType": "AllStorageTypes"},
            statistic="Average",
            threshold=config.artifact_store_max_objects,
            comparison_operator="GreaterThanThreshold",
            **daily,
        )

    def _db_alarms(self, config: MonitoringConfig, db_identifier: pulumi.Input[str], connection_budget: int) -> None:
        db = {"DBInstanceIdentifier": db_identifier}
        alarm = self._alarm
        alarm(
            "db-free-storage",
            f"RDS free storage below {config.free_storage_gb} GB",
            namespace="AWS/RDS",
            metric_name="FreeStorageSpace",
            dimensions=db,
            statistic="Minimum",
            period=300,
            evaluation_periods=1,
            threshold=config.free_storage_gb * 1024**3,
            comparison_operator="LessThanThreshold",
        )
        alarm(
            "db-cpu",
            f"RDS CPU above {config.cpu_percent}%",
            namespace="AWS/RDS",
            metric_name="CPUUtilization",
            dimensions=db,
            statistic="Average",
            period=300,
            evaluation_periods=3,
            threshold=config.cpu_percent,
            comparison_operator="GreaterThanThreshold",
        )
        alarm(
            "db-connections",
            f"RDS connections above the server fleet's budget ({connection_budget})",
            namespace="AWS/RDS",
            metric_name="DatabaseConnections",
            dimensions=db,
            statistic="Maximum",
            period=60,
            evaluation_periods=3,
            threshold=connection_budget,
            comparison_operator="GreaterThanThreshold",
        )

    def _replica_lag(self, replica_identifier: pulumi.Input[str], seconds: int) -> None:
        """The replica behind for 15 minutes. For PostgreSQL, ReplicaLag is the age of the last
        transaction the replica replayed, so it also climbs while the primary commits nothing: each
        5-minute window's *minimum* is what the alarm reads (any commit in a window resets it), and
        missing data (the replica being created, rebooted, upgraded) is not a breach. A replica
        that fails or stops replicating is reported by its event subscription."""
        self._alarm(
            "db-replica-lag",
            f"RDS read replica more than {seconds}s behind the primary for 15 minutes",
            namespace="AWS/RDS",
            metric_name="ReplicaLag",
            dimensions={"DBInstanceIdentifier": replica_identifier},
            statistic="Minimum",
            period=300,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            threshold=seconds,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
        )

    def _replica_events(self, replica_identifier: pulumi.Input[str], topic: aws.sns.Topic, base: dict) -> None:
        """The replica's failure, availability and replication events to the alarm topic (RDS may
        publish to a topic of its own account by default: RDS User Guide, "Granting permissions to
        publish notifications to an Amazon SNS topic"; the topic's key admits it above)."""
        aws.rds.EventSubscription(
            f"{self._name}-replica-events",
            name=f"mlflow-{self._env}-replica-events",
            sns_topic=topic.arn,
            source_type="db-instance",
            source_ids=[replica_identifier],
            event_categories=["availability", "failure", "read replica"],
            tags=base,
            opts=self._child,
        )


def _free_storage(db_identifier: pulumi.Input[str]) -> dict:
    return {
        "id": "free",
        "metric": {
            "namespace": "AWS/RDS",
            "metric_name": "FreeStorageSpace",
            "dimensions": {"DBInstanceIdentifier": db_identifier},
            "period": 3600,
            "stat": "Minimum",
        },
    }


#: The storage classes the artifact bucket's lifecycle moves objects through (artifact_store.py).
STORAGE_TYPES = ("StandardStorage", "StandardIAStorage", "GlacierStorage")


def _s3_size(id_: str, bucket: pulumi.Input[str], storage_type: str) -> dict:
    return {
        "id": id_,
        "metric": {
            "namespace": "AWS/S3",
            "metric_name": "BucketSizeBytes",
            "dimensions": {"BucketName": bucket, "StorageType": storage_type},
            "period": 86400,
            "stat": "Average",
        },
    }


def _metric(id_: str, metric: str, dimensions: dict) -> dict:
    return {
        "id": id_,
        "metric": {
            "namespace": "AWS/ApplicationELB",
            "metric_name": metric,
            "dimensions": dimensions,
            "period": 60,
            "stat": "Sum",
        },
    }


def _alarm_widgets(region: str, alarms: list[str]) -> list[dict]:
    """One status widget for every alarm, then each alarm's own graph (CloudWatch dashboard body
    structure: a metric widget whose annotations name one alarm draws that alarm's metric and threshold)."""
    status = {
        "type": "alarm",
        "x": 0,
        "y": 12,
        "width": 24,
        "height": 3,
        "properties": {"title": "Alarms", "alarms": alarms},
    }
    graphs = [
        {
            "type": "metric",
            "x": 12 * (i % 2),
            "y": 15 + 6 * (i // 2),
            "width": 12,
            "height": 6,
            "properties": {
                "title": arn.rsplit(":", 1)[-1],
                "region": region,
                "annotations": {"alarms": [arn]},
                "view": "timeSeries",
            },
        }
        for i, arn in enumerate(alarms)
    ]
    return [status, *graphs]


def _dashboard(
    region: str, alb: str, tg: str, db: str, *, connection_budget: int, slo: float, alarms: list[str]
) -> dict:
    def widget(title: str, metrics: list, y: int, x: int, annotation: float | None = None) -> dict:
        props = {"title": title, "region": region, "metrics": metrics, "view": "timeSeries", "period": 60}
        if annotation is not None:
            props["annotations"] = {"horizontal": [{"value": annotation, "label": "limit"}]}
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": props}

    return {
        "widgets": [
            widget(
                "Latency p50/p95/p99 (s)",
                [
                    ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", alb, "TargetGroup", tg, {"stat": s}]
                    for s in ("p50", "p95", "p99")
                ],
                0,
                0,
                slo,
            ),
            widget(
                "Requests and 5xx",
                [
                    ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", alb, {"stat": "Sum"}],
                    ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "LoadBalancer", alb, {"stat": "Sum"}],
                ],
                0,
                12,
            ),
            widget(
                "Database connections",
                [["AWS/RDS", "DatabaseConnections", "DBInstanceIdentifier", db]],
                6,
                0,
                connection_budget,
            ),
            widget(
                "Database CPU and free storage",
                [
                    ["AWS/RDS", "CPUUtilization", "DBInstanceIdentifier", db],
                    ["AWS/RDS", "FreeStorageSpace", "DBInstanceIdentifier", db, {"yAxis": "right"}],
                ],
                6,
                12,
            ),
            *_alarm_widgets(region, list(alarms)),
        ]
    }
