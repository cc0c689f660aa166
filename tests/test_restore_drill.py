"""The restore drill picks the right dumps: after `db upgrade --auth-database`, which writes
``<tracking>-<stamp>.dump`` and then ``<auth>-<stamp>.dump``, the drill restores the tracking dump
as the tracking database and the auth dump as the auth database (the reported bug: it restored
the newest file, the auth dump, as the tracking database and died with a traceback). Anything
wrong with the dumps is a reported problem or a one-line error; scratch databases never stay
behind unless kept. Against the session's local platform, through the command line."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlflow_platform.cli import app

pytestmark = pytest.mark.platform


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args), terminal_width=200)
    # An error is `fail()`'s exit (SystemExit); any other exception would be a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture(scope="module")
def source(platform) -> dict:
    """The platform's two databases, with a basic-auth user holding a grant (so the auth drill has
    users and grants to compare); the user is removed afterwards."""
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    with pytest.MonkeyPatch.context() as patch:
        for key, value in platform.client_env().items():
            patch.setenv(key, value)
        experiment = MlflowClient(platform.tracking_uri()).create_experiment(f"/drill/auth/{uuid.uuid4().hex[:8]}")
        auth = AuthServiceClient(platform.tracking_uri())
        user = f"drill-{uuid.uuid4().hex[:8]}"
        auth.create_user(user, "drill-password-123")
        auth.grant_user_permission(user, "experiment", experiment, "READ")
        d = platform.config.database
        yield {"uri": platform.database_uri(), "tracking": d.tracking_database, "auth": d.auth_database}
        auth.delete_user(user)


@pytest.fixture(scope="module")
def dumps(source: dict, tmp_path_factory) -> dict[str, Path]:
    """`db upgrade` (the new spelling) against the database: nothing to migrate, a dump of each anyway."""
    backup_dir = tmp_path_factory.mktemp("dumps")
    args = ["db", "upgrade", "--backend-store-uri", source["uri"], "--backup-dir", str(backup_dir)]
    args += ["--auth-database", source["auth"]]
    dry = _cli(*args, "--dry-run")
    assert dry.exit_code == 0 and "would" in dry.output and list(backup_dir.iterdir()) == [], dry.output
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    assert "nothing to migrate" in result.output and "backup taken anyway" in result.output
    (tracking,), (auth,) = backup_dir.glob(f"{source['tracking']}-*.dump"), backup_dir.glob(f"{source['auth']}-*.dump")
    return {"tracking": tracking, "auth": auth}


def _scratch_databases(uri: str) -> list[str]:
    from mlflow_platform.database.connection import connect

    with connect(uri) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'restore_drill_%'")]


def _place(directory: Path, *dumps: Path) -> Path:
    """Copies of ``dumps`` in ``directory``, each newer than the one before (the last is newest)."""
    directory.mkdir(exist_ok=True)
    now = time.time()
    for age, dump in enumerate(reversed(dumps)):
        copy = directory / dump.name
        shutil.copyfile(dump, copy)
        os.utime(copy, (now - age * 60, now - age * 60))
    return directory


def test_the_drill_restores_each_dump_into_its_own_database_when_the_auth_dump_is_newest(
    source: dict, tmp_path: Path
) -> None:
    """The reported sequence, in the old spellings runbooks still use."""
    uri, auth = source["uri"], source["auth"]
    upgraded = _cli("db-upgrade", "--backend-store-uri", uri, "--backup-dir", str(tmp_path), "--auth-database", auth)
    assert upgraded.exit_code == 0, upgraded.output
    (tracking_dump,), (auth_dump,) = tmp_path.glob(f"{source['tracking']}-*.dump"), tmp_path.glob(f"{auth}-*.dump")
    os.utime(auth_dump, (time.time() + 60, time.time() + 60))  # unmistakably the newest file
    drill = _cli("restore-drill", "--backend-store-uri", uri, "--backup-dir", str(tmp_path))
    assert drill.exit_code == 0, drill.output
    assert "restore drill passed" in drill.output
    assert tracking_dump.name in drill.output and auth_dump.name in drill.output
    assert "auth users" in drill.output and "auth experiment_permissions" in drill.output
    assert _scratch_databases(uri) == []


def test_the_auth_drill_compares_users_and_grants(source: dict, dumps: dict[str, Path], tmp_path: Path) -> None:
    from mlflow_platform.database.connection import connect
    from mlflow_platform.database.drill import restore_drill

    _place(tmp_path, dumps["tracking"], dumps["auth"])
    report = restore_drill(source["uri"], tmp_path, auth_database=source["auth"], require_auth=True)
    assert report.passed, report.problems
    assert report.auth.users[0] == report.auth.users[1] >= 2  # the admin and the drill's user
    assert {"experiment_permissions", "registered_model_permissions", "role_permissions"} <= set(report.auth.grants)
    assert all(before == after for before, after in report.auth.grants.values())
    assert report.auth.grants["role_permissions"][0] >= 1  # the drill user's grant (MLflow 3.17 keeps it there)
    with connect(source["uri"], source["auth"]) as conn:  # a change after the backup: the drill must see it
        conn.execute("UPDATE users SET is_admin = NOT is_admin WHERE username LIKE 'drill-%'")
    try:
        changed = restore_drill(source["uri"], tmp_path, auth_database=source["auth"])
    finally:
        with connect(source["uri"], source["auth"]) as conn:
            conn.execute("UPDATE users SET is_admin = NOT is_admin WHERE username LIKE 'drill-%'")
    assert any(p.startswith("auth users: drill-") for p in changed.problems), changed.problems


def test_a_dump_of_the_wrong_database_named_as_the_tracking_one_is_a_reported_problem(
    source: dict, dumps: dict[str, Path], tmp_path: Path
) -> None:
    impostor = tmp_path / f"{source['tracking']}-29990101T000000000000Z.dump"
    _place(tmp_path, dumps["auth"])
    shutil.copyfile(dumps["auth"], impostor)
    drill = _cli("db", "restore-drill", "--backend-store-uri", source["uri"], "--backup-dir", str(tmp_path))
    assert drill.exit_code == 1
    assert f"{impostor.name} is a dump of database {source['auth']}, not of {source['tracking']}" in drill.output
    assert f"restored  {impostor.name}" not in drill.output and "active runs" not in drill.output
    assert _scratch_databases(source["uri"]) == []


@pytest.mark.parametrize("content", ["nothing", "garbage"])
def test_an_empty_directory_or_an_unreadable_dump_is_a_one_line_error(
    source: dict, tmp_path: Path, content: str
) -> None:
    if content == "garbage":
        (tmp_path / f"{source['tracking']}-20990101T000000000000Z.dump").write_bytes(b"not a dump\n")
    drill = _cli("db", "restore-drill", "--backend-store-uri", source["uri"], "--backup-dir", str(tmp_path))
    assert drill.exit_code == 1
    expected = "not a readable pg_dump file" if content == "garbage" else f"no backup of {source['tracking']}"
    assert expected in drill.output, drill.output
    assert _scratch_databases(source["uri"]) == []


def test_a_missing_auth_dump_fails_only_when_the_auth_database_was_named(
    source: dict, dumps: dict[str, Path], tmp_path: Path
) -> None:
    _place(tmp_path, dumps["tracking"])
    args = ["db", "restore-drill", "--backend-store-uri", source["uri"], "--backup-dir", str(tmp_path)]
    implicit = _cli(*args)
    assert implicit.exit_code == 0 and "the auth database was not drilled" in implicit.output, implicit.output
    named = _cli(*args, "--auth-database", source["auth"])
    assert named.exit_code == 1 and f"no backup of {source['auth']}" in named.output, named.output


def test_keep_leaves_the_scratch_databases(source: dict, dumps: dict[str, Path], tmp_path: Path) -> None:
    from mlflow_platform.database.connection import connect

    _place(tmp_path, dumps["tracking"], dumps["auth"])
    args = ["db", "restore-drill", "--backend-store-uri", source["uri"], "--backup-dir", str(tmp_path), "--keep"]
    kept = _cli(*args)
    scratch = _scratch_databases(source["uri"])
    with connect(source["uri"]) as conn:
        for database in scratch:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    assert kept.exit_code == 0, kept.output
    assert len(scratch) == 2 and sum(name.endswith("_auth") for name in scratch) == 1


def test_a_dump_holding_a_superuser_extension_restores_as_the_owner(source: dict, dumps: dict, tmp_path: Path) -> None:
    """pg_stat_statements (which `db report` reads) is created by a superuser; a dump that holds it
    (one taken by hand, or before the backups excluded it) made the owner's pg_restore fail on
    CREATE EXTENSION. The platform's own dumps leave it out, and the restore skips it in any dump."""
    import subprocess

    from mlflow_platform.database.backup import SUPERUSER_EXTENSIONS
    from mlflow_platform.database.connection import tool, tool_args

    def extensions(dump: Path) -> list[str]:
        listing = subprocess.run([tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True).stdout
        return [line for line in listing.splitlines() if "EXTENSION" in line]

    assert extensions(dumps["tracking"]) == [] and extensions(dumps["auth"]) == []
    for name in (source["tracking"], source["auth"]):
        args, env = tool_args(source["uri"], name)
        target = tmp_path / f"{name}-20200101T000000000000Z.dump"
        command = [tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), *args]
        subprocess.run(command, env=env, check=True)
        assert any(SUPERUSER_EXTENSIONS[0] in line for line in extensions(target))
    drill = _cli("db", "restore-drill", "--backend-store-uri", source["uri"], "--backup-dir", str(tmp_path))
    assert drill.exit_code == 0, drill.output
    assert _scratch_databases(source["uri"]) == []


def test_a_database_another_role_holds_open_is_one_clear_error(platform, source: dict) -> None:
    """DROP ... WITH (FORCE) as the owner may not end another role's session (nor an autovacuum
    worker, which is how it was found: `db restore` right after gc at 100k runs died with a
    traceback). Plain DROP then stops autovacuum itself; a session it cannot end is named."""
    from mlflow_platform.database.backup import drop_database
    from mlflow_platform.database.connection import connect
    from mlflow_platform.errors import RunbookError

    name = f"drop_{uuid.uuid4().hex[:8]}"
    with connect(source["uri"]) as owner:
        owner.execute(f'CREATE DATABASE "{name}"')
        superuser = platform._postgres(platform.state.ports).connect(name)
        try:
            with pytest.raises(RunbookError, match=f"database {name} was not dropped: sessions of another role"):
                drop_database(owner, name)
        finally:
            superuser.close()
        drop_database(owner, name)  # nobody else connected: dropped
        assert owner.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


def test_a_restore_to_an_unreachable_server_is_one_line(dumps: dict[str, Path]) -> None:
    result = _cli(
        "db",
        "restore",
        "--backup",
        str(dumps["tracking"]),
        "--backend-store-uri",
        "postgresql+psycopg://x@127.0.0.1:1/x",
    )
    assert result.exit_code == 1 and "db restore: cannot reach the database" in result.output, result.output


def test_a_restore_that_fails_halfway_leaves_the_live_database_as_it_was(source: dict, tmp_path: Path) -> None:
    """A dump whose data is cut short (a full disk, a copy interrupted) still lists fine, so it
    passes the check that comes first; its pg_restore fails midway. The live database was dropped
    before that, and lost; now the dump is restored beside it and swapped in only when complete."""
    from mlflow_platform.database.backup import backup_to_file, restore_database, side_name
    from mlflow_platform.database.connection import connect, with_database
    from mlflow_platform.errors import RunbookError

    name = f"live_{uuid.uuid4().hex[:8]}"
    with connect(source["uri"]) as owner:
        owner.execute(f'CREATE DATABASE "{name}"')
    live = with_database(source["uri"], name)
    try:
        with connect(live) as conn:
            conn.execute("CREATE TABLE kept AS SELECT i, md5(i::text) AS h FROM generate_series(1, 200000) AS i")
        dump = backup_to_file(live, tmp_path)
        cut = tmp_path / "cut" / dump.name
        cut.parent.mkdir()
        cut.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
        with connect(live) as conn:
            conn.execute("DELETE FROM kept WHERE i > 100")  # the live state, which must survive
        with pytest.raises(RunbookError, match=f"failed, {name} is unchanged"):
            restore_database(source["uri"], cut)
        with connect(live) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (100,)
        with connect(source["uri"]) as owner:
            found = owner.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (side_name(name, "restoring"),)
            ).fetchone()
            assert found is None, "the half-restored copy was left behind"
        assert restore_database(source["uri"], dump) == name  # the whole dump replaces it
        with connect(live) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (200000,)
    finally:
        with connect(source["uri"]) as owner:
            for database in (name, side_name(name, "restoring")):
                owner.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_restore_names_its_side_database_within_postgres_limit() -> None:
    from mlflow_platform.database.backup import side_name

    assert side_name("mlflow", "restoring") == "mlflow_restoring"
    long = "é" * 40  # 80 bytes: PostgreSQL would cut it at 63, mid-character
    assert len(side_name(long, "restoring").encode()) <= 63 and side_name(long, "restoring").endswith("_restoring")


def test_a_restore_whose_copy_cannot_take_the_name_puts_the_live_database_back(
    platform, source: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename needs its database free of sessions and has no FORCE. Found by review: a session of
    another role on the restored copy made the final rename fail after the live database had been
    dropped, leaving none. Now the live one is only moved aside, and moved back; the error says
    where each copy is. (The session is opened right after pg_restore, before the swap.)"""
    from mlflow_platform.database import backup
    from mlflow_platform.database.connection import connect, with_database
    from mlflow_platform.errors import RunbookError

    name = f"swap_{uuid.uuid4().hex[:8]}"
    side, aside = backup.side_name(name, "restoring"), backup.side_name(name, "replaced")
    with connect(source["uri"]) as owner:
        owner.execute(f'CREATE DATABASE "{name}"')
    live = with_database(source["uri"], name)
    held = []
    restore = backup.pg_restore

    def restore_then_hold(uri: str, database: str, dump: Path):
        result = restore(uri, database, dump)
        held.append(platform._postgres(platform.state.ports).connect(database))  # another role, on the copy
        return result

    try:
        with connect(live) as conn:
            conn.execute("CREATE TABLE kept AS SELECT 1 AS i")
        dump = backup.backup_to_file(live, tmp_path)
        with connect(live) as conn:
            conn.execute("INSERT INTO kept VALUES (2)")
        with monkeypatch.context() as patch:
            patch.setattr(backup, "pg_restore", restore_then_hold)
            with pytest.raises(RunbookError, match=f"{name} was moved back; the restored copy is in {side}"):
                backup.restore_database(source["uri"], dump)
        assert held, "the copy was never held"
        with connect(live) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (2,)
        for session in held:
            session.close()
        assert backup.restore_database(source["uri"], dump) == name
        with connect(live) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)
    finally:
        for session in held:
            session.close()
        with connect(source["uri"]) as owner:
            for database in (name, side, aside):
                owner.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_database_a_failed_restore_moved_aside_is_never_dropped(source: dict, tmp_path: Path) -> None:
    """If even moving the live database back failed, the error says its data is in
    ``<db>_replaced``; the next restore must not drop it as leftovers."""
    from mlflow_platform.database.backup import backup_to_file, restore_database, side_name
    from mlflow_platform.database.connection import connect, with_database
    from mlflow_platform.errors import RunbookError

    name = f"aside_{uuid.uuid4().hex[:8]}"
    aside = side_name(name, "replaced")
    with connect(source["uri"]) as owner:
        owner.execute(f'CREATE DATABASE "{name}"')
        owner.execute(f'CREATE DATABASE "{aside}"')
    try:
        dump = backup_to_file(with_database(source["uri"], name), tmp_path)
        with pytest.raises(RunbookError, match=f"database {aside} exists .* {name} is unchanged"):
            restore_database(source["uri"], dump)
        with connect(source["uri"]) as owner:
            assert owner.execute("SELECT 1 FROM pg_database WHERE datname = %s", (aside,)).fetchone()
    finally:
        with connect(source["uri"]) as owner:
            for database in (name, aside, side_name(name, "restoring")):
                owner.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
