"""Prometheus alert rules for clusters that alert from Prometheus: the guide's thresholds (p95 over
500 ms, the 5xx share), refused-login bursts, worker saturation, restarts and a target down. They
are rendered as a ``PrometheusRule`` next to the ServiceMonitor, and as a rule file that
``promtool test rules`` runs in the suite (``observability/alerts.yaml``).

The server's pool of PostgreSQL connections is not exported (MLflow publishes no SQLAlchemy pool
metrics), so pool exhaustion is left to the RDS ``DatabaseConnections`` alarm in CloudWatch."""

from __future__ import annotations

from typing import Any

from .config import StackConfig

RUNBOOK = "https://github.com/{repository}/blob/main/docs/observability.md#{anchor}"
#: Requests whose duration says nothing about the server's health: artifact transfers scale with
#: their size, OTLP batches with theirs.
SLOW_BY_NATURE = "artifacts|otlp|unmatched"
#: Refused logins per minute, over five minutes, that look like guessing or a broken client.
AUTH_FAILURES_PER_MINUTE = 30
SATURATION = 0.9
RESTARTS_IN_30_MINUTES = 2


def _rule(name: str, expr: str, duration: str, severity: str, summary: str, repo: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity, "service": "mlflow"},
        "annotations": {"summary": summary, "runbook_url": RUNBOOK.format(repository=repo, anchor=name.lower())},
    }


def _expressions(config: StackConfig) -> dict[str, str]:
    scope = f'namespace="{config.namespace}"'
    duration = f'mlflow_platform_request_duration_seconds_bucket{{{scope}, group!~"{SLOW_BY_NATURE}"}}'
    refused = f'mlflow_platform_auth_failures_total{{{scope}, reason="unauthenticated"}}'
    restarts = f'kube_pod_container_status_restarts_total{{{scope}, container="mlflow"}}'
    return {
        "MLflowSlowRequests": f"histogram_quantile(0.95, sum by (group, le) (rate({duration}[5m])))"
        f" > {config.monitoring.p95_latency_seconds}",
        "MLflowServerErrors": f'sum(rate(mlflow_platform_requests_total{{{scope}, status=~"5.."}}[5m]))'
        f" / sum(rate(mlflow_platform_requests_total{{{scope}}}[5m])) > {config.monitoring.error_rate_percent / 100}",
        "MLflowLoginFailureBurst": f"sum(rate({refused}[5m])) * 60 > {AUTH_FAILURES_PER_MINUTE}",
        "MLflowWorkersSaturated": f"sum(mlflow_platform_requests_in_flight{{{scope}}})"
        f" / sum(mlflow_platform_worker_threads{{{scope}}}) > {SATURATION}",
        "MLflowPodRestarting": f"increase({restarts}[30m]) > {RESTARTS_IN_30_MINUTES}",
        "MLflowTargetDown": f'up{{{scope}, service="mlflow"}} == 0',
    }


def rules(config: StackConfig) -> dict[str, Any]:
    """The rule file (Prometheus's ``groups`` format), thresholds from the stack."""
    repo = config.github.repository or "example-org/mlflow-platform"
    m = config.monitoring
    expr = _expressions(config)
    alerts = [
        ("MLflowSlowRequests", "10m", "warning",
         "p95 of {{ $labels.group }} requests above " + f"{m.p95_latency_seconds * 1000:.0f} ms"),
        ("MLflowServerErrors", "5m", "critical", f"more than {m.error_rate_percent:g}% of requests answer 5xx"),
        ("MLflowLoginFailureBurst", "5m", "warning", f"more than {AUTH_FAILURES_PER_MINUTE} refused logins a minute"),
        ("MLflowWorkersSaturated", "10m", "warning", f"more than {SATURATION:.0%} of the server's threads busy"),
        ("MLflowPodRestarting", "0m", "warning",
         "{{ $labels.pod }} restarted more than " + f"{RESTARTS_IN_30_MINUTES} times in 30 minutes"),
        ("MLflowTargetDown", "5m", "critical", "Prometheus cannot scrape {{ $labels.pod }}"),
    ]  # fmt: skip
    return {
        "groups": [
            {
                "name": "mlflow-platform",
                "rules": [_rule(name, expr[name], wait, severity, text, repo) for name, wait, severity, text in alerts],
            }
        ]
    }


RULE_FILE = "observability/alerts.yaml"
HEADER = (
    "# Generated from stacks/Pulumi.prod.yaml by `python -m mlflow_platform.alerting --write`;\n"
    "# the PrometheusRule beside the ServiceMonitor holds the same rules.\n"
)


def rule_file(config: StackConfig) -> str:
    import yaml

    return HEADER + yaml.safe_dump(rules(config), sort_keys=False, width=200)


if __name__ == "__main__":  # pragma: no cover
    import sys
    from pathlib import Path

    from .config import load_stack_file

    text = rule_file(load_stack_file(Path("stacks/Pulumi.prod.yaml")).config)
    if "--write" in sys.argv:
        Path(RULE_FILE).write_text(text)
        print(f"wrote {RULE_FILE}")
    else:
        print(text, end="")
