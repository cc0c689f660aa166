"""mlflow-platform: a production MLflow tracking server and registry, locally and on AWS."""

__version__ = "0.1.0"
