"""The operations guide's runbooks as tested functions; `mlflow-platform <command>` wraps each.

They talk to the tracking server only through its URI and credentials (MLFLOW_TRACKING_URI,
MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), the way CI and on-call do.
"""


class RunbookError(RuntimeError):
    """A runbook refused or failed; the message says what happened and what was left unchanged."""
