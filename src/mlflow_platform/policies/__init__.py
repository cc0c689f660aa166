"""mlflow-platform's policy rules, importable without starting the analyzer (see ../__main__.py)."""

from . import kubernetes, load_balancer, mlflow, monitoring, network_iam, rds, s3

PACK_NAME = "mlflow-platform"

POLICIES = [
    *s3.POLICIES,
    *rds.POLICIES,
    *load_balancer.POLICIES,
    *network_iam.POLICIES,
    *kubernetes.POLICIES,
    *mlflow.POLICIES,
    *monitoring.POLICIES,
]
