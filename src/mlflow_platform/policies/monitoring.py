"""Monitoring: what on-call looks at stays in every stack's plan: the CloudWatch dashboard, and
the artifact store's capacity alarms (the guide's weekly capacity check), by size and by objects."""

from __future__ import annotations

import json

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from ._helpers import S3_BUCKET, of_type

DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def _measures(alarm, metric: str) -> bool:
    """The alarm reads ``metric`` of AWS/S3, directly or inside its metric math."""
    props = alarm.props
    if props.get("namespace") == "AWS/S3" and props.get("metricName") == metric:
        return True
    return any(
        (q.get("metric") or {}).get("namespace") == "AWS/S3" and (q.get("metric") or {}).get("metricName") == metric
        for q in props.get("metricQueries") or []
    )


def _capacity_watched(args: StackValidationArgs, report: ReportViolation) -> None:
    if not of_type(args, S3_BUCKET):
        return
    alarms = of_type(args, ALARM)
    for metric in ("BucketSizeBytes", "NumberOfObjects"):
        if not any(_measures(a, metric) and a.props.get("alarmActions") for a in alarms):
            report(f"no alarm with actions watches the artifact bucket's {metric}")
    if not of_type(args, DASHBOARD):
        report("no CloudWatch dashboard: on-call has nothing to look at")
    for dashboard in of_type(args, DASHBOARD):
        _draws_every_alarm(dashboard, alarms, report)


def _draws_every_alarm(dashboard, alarms, report: ReportViolation) -> None:
    """By name: the body names each alarm by its ARN, ``arn:aws:cloudwatch:…:alarm:<name>``."""
    try:
        body = json.loads(dashboard.props.get("dashboardBody") or "")
    except (TypeError, ValueError):
        return  # unknown until the alarms exist (a preview): the offline plan checks it
    annotated = [
        a for w in body.get("widgets", []) for a in (w["properties"].get("annotations") or {}).get("alarms", [])
    ]
    drawn = {arn.rsplit(":", 1)[-1] for arn in annotated}
    missing = sorted(a.props.get("name") for a in alarms if a.props.get("name") not in drawn)
    if missing:
        report(f"dashboard {dashboard.props.get('dashboardName')} does not draw the alarms {missing}", dashboard.urn)


POLICIES = [
    StackValidationPolicy(
        name="monitoring-dashboard-and-capacity",
        description="Every stack has its CloudWatch dashboard, drawing every alarm, and alarms on the artifact "
        "bucket's size and object count.",
        validate=_capacity_watched,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Keep Monitoring's dashboard and _artifact_capacity alarms (monitoring.artifactStoreMaxGb, "
        "artifactStoreMaxObjects).",
    ),
]
