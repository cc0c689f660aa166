"""Registry: log, register, tag, promote challenger -> champion, load by alias and predict."""

import contextlib

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from .target import Target


class AddN(PythonModel):
    """A model small enough to log in milliseconds, real enough to load and predict."""

    def __init__(self, n: float):
        self.n = n

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return model_input["x"] + self.n


def _log_and_register(client: MlflowClient, experiment_id: str, name: str, n: float) -> str:
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metric("val_ndcg_at_10", 0.8 + n / 100)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=AddN(n),
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
            input_example=pd.DataFrame({"x": [1.0]}),
        )
    # MLflow 3 keeps the model as a LoggedModel (models:/m-...), not under the run's artifacts.
    version = mlflow.register_model(info.model_uri, name)
    client.set_model_version_tag(name, version.version, "training_commit", "0" * 40)
    client.set_model_version_tag(name, version.version, "validation_ndcg", str(0.8 + n / 100))
    assert version.run_id == run.info.run_id
    return version.version


@pytest.fixture(scope="module")
def model_name(target: Target, client: MlflowClient, pytestconfig):
    name = f"smoke-ranker-{target.session_id}"
    yield name
    if not pytestconfig.getoption("keep_data"):
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(name)


def test_register_promote_and_load_by_alias(client: MlflowClient, experiment_id: str, model_name: str) -> None:
    v1 = _log_and_register(client, experiment_id, model_name, 1.0)
    client.set_registered_model_alias(model_name, "champion", v1)

    v2 = _log_and_register(client, experiment_id, model_name, 2.0)
    assert int(v2) == int(v1) + 1
    client.set_registered_model_alias(model_name, "challenger", v2)

    # Promotion: the old champion keeps a name to roll back to.
    old = client.get_model_version_by_alias(model_name, "champion")
    client.set_registered_model_alias(model_name, "previous-champion", old.version)
    client.set_registered_model_alias(model_name, "champion", v2)
    client.delete_registered_model_alias(model_name, "challenger")

    model = client.get_registered_model(model_name)
    assert model.aliases == {"champion": v2, "previous-champion": v1}
    tags = client.get_model_version(model_name, v2).tags
    assert tags["training_commit"] == "0" * 40

    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    prediction = loaded.predict(pd.DataFrame({"x": [1.0, 10.0]}))
    assert list(prediction) == [3.0, 12.0]
    rollback = mlflow.pyfunc.load_model(f"models:/{model_name}@previous-champion")
    assert list(rollback.predict(pd.DataFrame({"x": [1.0]}))) == [2.0]
