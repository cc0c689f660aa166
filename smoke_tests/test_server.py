"""The server answers, and only to those who authenticate."""

from .target import Target


def test_health_endpoint_answers(target: Target) -> None:
    response = target.http(auth=False).get(target.url("/health"), timeout=10)
    assert response.status_code == 200, response.text


def test_api_refuses_unauthenticated_requests(target: Target) -> None:
    response = target.http(auth=False).get(
        target.url("/api/2.0/mlflow/experiments/search"), params={"max_results": 1}, timeout=10
    )
    assert response.status_code == 401, f"expected 401 without credentials, got {response.status_code}"


def test_api_accepts_the_given_credentials(target: Target) -> None:
    response = target.http().get(
        target.url("/api/2.0/mlflow/experiments/search"), params={"max_results": 1}, timeout=10
    )
    assert response.status_code == 200, response.text


def test_wrong_password_is_refused(target: Target) -> None:
    session = target.http(auth=False)
    session.auth = (target.username, target.password + "-wrong")
    response = session.get(target.url("/api/2.0/mlflow/experiments/search"), params={"max_results": 1}, timeout=10)
    assert response.status_code == 401
