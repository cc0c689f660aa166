"""Entry point for `pulumi up`: the program lives in the package (`mlflow_platform.infra`), so
tests and `mlflow-platform plan` import it the normal way."""

from pathlib import Path

from mlflow_platform.infra.program import main

outputs = main(project_root=Path(__file__).resolve().parent.parent)  # read by `mlflow-platform plan`
