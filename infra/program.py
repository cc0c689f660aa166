"""The Pulumi program. Thin: read and validate the stack config, then build the components.

This first cut validates the stack with the shared config model and renders the tracking
server exactly as the Kubernetes Deployment will run it; the AWS and Kubernetes components
(network, RDS, S3, IAM, ALB/TLS, EKS workload, monitoring) build on it.
"""

from __future__ import annotations

import json

import pulumi
from pulumi.runtime.config import CONFIG, get_config, get_config_env, is_config_secret

from mlflow_platform.config import PROJECT, ConfigError, StackConfig, from_config_values
from mlflow_platform.server_spec import Endpoints, render_server


def load_config() -> StackConfig:
    """The stack's ``mlflow-platform:*`` values through the same model the local platform uses."""
    prefix = f"{PROJECT}:"
    values = {}
    secret_keys = set()
    # Every key the engine handed over (the CLI passes PULUMI_CONFIG; mocks set CONFIG), so a
    # misspelt key is reported instead of silently ignored.
    for key in sorted({*CONFIG.get(), *get_config_env()}):
        if not key.startswith(prefix):
            continue
        values[key] = _decode(get_config(key))
        if is_config_secret(key):
            secret_keys.add(key[len(prefix):])
    try:
        return from_config_values(values, source=f"stack {pulumi.get_stack()}", secret_keys=secret_keys)
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None


def _decode(raw):
    """Structured values arrive JSON-encoded."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def main() -> dict:
    stack = load_config()
    server = render_server(stack, Endpoints(db_host="<rds endpoint>", bucket=stack.artifacts.bucket or "<bucket>"))
    outputs = {
        "environment": stack.environment,
        "connectionBudget": stack.connection_budget,
        "maxConnections": stack.database.effective_max_connections,
        "serverCommand": list(server.argv),
    }
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs
