"""`db report` (database/report.py) on the live platform's database: the statements MLflow sent
(pg_stat_statements, preloaded locally as in the RDS parameter group), the tables with their
dead rows, unused indexes, and growth between two reports; and `db tune`'s dry runs."""

from __future__ import annotations

import time

from mlflow.entities import Metric
from typer.testing import CliRunner

from mlflow_platform.cli import app
from mlflow_platform.database.connection import connect
from mlflow_platform.database.report import SCHEMA, database_report
from mlflow_platform.database.tuning import INDEXES

runner = CliRunner()


def test_the_report_shows_mlflows_statements_tables_and_growth(platform, mlflow_client) -> None:
    experiment = mlflow_client.create_experiment(f"/platform/tests/report-{time.time_ns()}")
    for _ in range(3):
        mlflow_client.search_runs([experiment], "params.report_marker = 'x'")
    with connect(platform.database_uri()) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")  # the first report of this database
        first = database_report(conn, limit=10_000)  # the session's migrations lead by total time
    assert first.statements_available is None, first.statements_available
    searches = [
        s
        for s in first.slowest_total
        if s.query.startswith("SELECT") and "FROM runs" in s.query and "params" in s.query
    ]
    assert any(s.calls >= 3 for s in searches), [s.query for s in first.slowest_total]
    assert first.previous is None and all(t.grown_bytes is None for t in first.tables)
    assert {"runs", "metrics", "params", "tags", "latest_metrics"} <= {t.table for t in first.tables}

    run = mlflow_client.create_run(experiment)
    for first_step in range(0, 20_000, 1000):
        batch = [Metric("loss", 0.1, 1_700_000_000_000 + s, s) for s in range(first_step, first_step + 1000)]
        mlflow_client.log_batch(run.info.run_id, metrics=batch)
    with connect(platform.database_uri()) as conn:
        second = database_report(conn)
    assert second.previous is not None
    metrics = next(t for t in second.tables if t.table == "metrics")
    assert metrics.grown_bytes and metrics.grown_bytes > 0


def test_the_cli_prints_the_report_and_tune_dry_runs_change_nothing(platform) -> None:
    uri = ["--backend-store-uri", platform.database_uri()]
    report = runner.invoke(app, ["db", "report", *uri, "--no-record"], terminal_width=200)
    assert report.exit_code == 0, report.output
    assert "slowest by total time" in report.output and "metrics" in report.output
    with connect(platform.database_uri()) as conn:
        before = conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'mlflow\\_platform\\_%'").fetchone()
    undo = runner.invoke(app, ["db", "tune", "--undo", "--dry-run", *uri], terminal_width=200)
    assert undo.exit_code == 0 and all(i.name in undo.output for i in INDEXES), undo.output
    tune = runner.invoke(app, ["db", "tune", "--dry-run", *uri], terminal_width=200)
    assert tune.exit_code == 0 and "nothing to do" in tune.output, tune.output  # the migration step tuned it
    with connect(platform.database_uri()) as conn:
        after = conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'mlflow\\_platform\\_%'").fetchone()
    assert before == after == (len(INDEXES),)


def test_an_unreachable_database_is_one_line_not_a_traceback() -> None:
    result = runner.invoke(
        app, ["db", "report", "--backend-store-uri", "postgresql+psycopg://nobody@127.0.0.1:1/mlflow"]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "db report:" in result.output
