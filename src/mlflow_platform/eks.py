"""How this project reaches an EKS cluster's API: a kubeconfig that authenticates with
`aws eks get-token`, so no static credential is ever written (the Pulumi provider and preflight)."""

from __future__ import annotations


def kubeconfig(name: str, endpoint: str, ca_data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "eks",
        "clusters": [{"name": "eks", "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": "eks", "context": {"cluster": "eks", "user": "eks"}}],
        "users": [
            {
                "name": "eks",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "aws",
                        "args": ["eks", "get-token", "--cluster-name", name, "--output", "json"],
                    }
                },
            }
        ],
    }
