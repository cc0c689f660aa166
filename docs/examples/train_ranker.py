"""The worked promotion example's training job (docs/runbooks.md): logs a run with the required
tags and a validation metric, registers the model and points @challenger at the new version.

Usage: python docs/examples/train_ranker.py <val_ndcg_at_10>
"""

import sys

import mlflow
import numpy as np
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

score = float(sys.argv[1])
mlflow.set_experiment("/search/ranking/ltr")
tags = {"team": "search", "owner": "ana", "git.commit": "4f2c9e1", "data.version": "2026-11-20"}
with mlflow.start_run(tags=tags):
    X = np.random.default_rng(0).random((50, 3))
    y = (X[:, 0] > 0.5).astype(int)
    model = LogisticRegression().fit(X, y)
    mlflow.log_metric("val_ndcg_at_10", score)
    info = mlflow.sklearn.log_model(
        model, name="model", signature=infer_signature(X, y), registered_model_name="search-ranker"
    )
    mlflow.MlflowClient().set_registered_model_alias("search-ranker", "challenger", info.registered_model_version)
    print("registered version", info.registered_model_version, "as @challenger")
