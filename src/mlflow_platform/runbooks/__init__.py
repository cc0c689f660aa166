"""The operations guide's runbooks as tested functions; `mlflow-platform <command>` wraps each.

They talk to the tracking server only through its URI and credentials (MLFLOW_TRACKING_URI,
MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), the way CI and on-call do. Their error,
``RunbookError``, lives in ``mlflow_platform.errors``; the database runbooks (backups, restores,
the restore drill) live in ``mlflow_platform.database``.
"""
