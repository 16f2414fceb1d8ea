"""What only the PostgreSQL backend has: database-enforced append-only, roles, the read model, `init --ledger`.

The behaviour both backends share is in test_ledger_contract.py.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import commit_all, database_url, git, postgres_admin, run_cli, snapshot_event

from govern.errors import LedgerCorrupt, LedgerError
from govern.storage import copy
from govern.storage.duckdb_log import Ledger
from govern.storage.postgres_log import PostgresLedger


@pytest.fixture
def pg(pg_ledger_database: str, tmp_path: Path) -> Iterator[PostgresLedger]:
    ledger = PostgresLedger(pg_ledger_database, lock_timeout=10, cache_dir=tmp_path / "machine-a")
    ledger.append([snapshot_event(i) for i in range(1, 6)])
    yield ledger
    ledger.close()


@pytest.fixture
def roles(pg_database: str) -> Iterator[dict[str, str]]:
    """A writer and an auditor made by running exactly the GRANTs `govern init --ledger` prints."""
    suffix = uuid.uuid4().hex[:8]
    writer, auditor = f"govern_writer_{suffix}", f"govern_auditor_{suffix}"
    created = PostgresLedger(pg_database)
    statements = created.create(writer, auditor)
    created.close()
    assert any(statement.startswith("GRANT CONNECT ON DATABASE") for statement in statements)
    with psycopg.connect(pg_database, autocommit=True) as con:
        for statement in statements:  # exactly what `govern init --ledger` prints, CONNECT included
            con.execute(statement.replace("PASSWORD '...'", "PASSWORD 'pw'"))
    database = pg_database.rsplit("/", 1)[1]
    try:
        yield {"writer": database_url(database, f"{writer}:pw"), "auditor": database_url(database, f"{auditor}:pw")}
    finally:  # roles are cluster-wide and outlive a database: drop the database first, then them
        admin = postgres_admin()
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in (writer, auditor):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


@pytest.mark.parametrize(
    "statement",
    ["UPDATE govern.events SET actor = 'x' WHERE seq = 2", "DELETE FROM govern.events", "TRUNCATE govern.events"],
)
def test_the_database_refuses_to_change_or_remove_events_even_for_a_superuser(
    pg: PostgresLedger, pg_ledger_database: str, statement: str
) -> None:
    with psycopg.connect(pg_ledger_database, autocommit=True) as con, pytest.raises(psycopg.Error, match="append-only"):
        con.execute(statement)
    assert pg.verify().ok and pg.head()[0] == 5


def test_unique_constraints_make_a_fork_impossible_for_a_writer_that_skips_the_lock(
    pg: PostgresLedger, pg_ledger_database: str
) -> None:
    """A buggy writer inserting a second event after seq 4 (a fork of the chain) is refused by the database."""
    with psycopg.connect(pg_ledger_database, autocommit=True) as con:
        [row] = con.execute("SELECT * FROM govern.events WHERE seq = 5").fetchall()
        forked = list(row)
        forked[1] = str(uuid.uuid4())
        forked[11] = "f" * 64
        with pytest.raises(psycopg.errors.UniqueViolation, match="prev_hash|seq"):
            forked[0] = 6  # a new seq, but linked to seq 4 like seq 5 is
            con.execute(f"INSERT INTO govern.events VALUES ({', '.join(['%s'] * len(forked))})", forked)
    assert pg.verify().ok


def test_a_role_with_insert_and_select_only_writes_without_warning_and_a_superuser_is_warned(
    roles: dict[str, str], pg_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    writer = PostgresLedger(roles["writer"], cache_dir=tmp_path / "w")
    writer.append([snapshot_event(1)])
    assert not [r for r in caplog.records if "rewrite history" in r.getMessage()]
    with pytest.raises(LedgerError, match="refused the write"):
        writer.transact(lambda reader: _update_through(writer))
    writer.close()
    auditor = PostgresLedger(roles["auditor"], cache_dir=tmp_path / "a")
    assert [e.seq for e in auditor.read()] == [1] and auditor.verify().ok
    with pytest.raises(LedgerError, match="refused the write"):
        auditor.append([snapshot_event(2)])
    auditor.close()
    owner = PostgresLedger(pg_database, cache_dir=tmp_path / "o")
    owner.append([snapshot_event(2)])
    warned = [r.getMessage() for r in caplog.records if "rewrite history" in r.getMessage()]
    assert warned and "superuser" in warned[0]
    owner.close()


def _update_through(ledger: PostgresLedger) -> list:
    ledger._connection().execute("UPDATE govern.events SET actor = 'x'")
    return []


def test_a_history_rewritten_after_this_machine_read_it_is_refused_and_named_by_verify(
    pg: PostgresLedger, pg_ledger_database: str
) -> None:
    assert len(pg.read()) == 5  # this machine's read model now holds seq 1-5
    with psycopg.connect(pg_ledger_database, autocommit=True) as con:
        con.execute("SET session_replication_role = replica")
        con.execute("DELETE FROM govern.events WHERE seq = 5")
    fresh = PostgresLedger(pg.url, cache_dir=pg._cache_dir)
    with pytest.raises(LedgerCorrupt, match="no longer holds event seq 5"):
        fresh.read()
    result = fresh.verify()
    assert not result.ok and "this machine read a different history" in result.problem
    fresh.close()


def test_a_second_machine_pulls_the_whole_ledger_and_then_only_the_tail(pg: PostgresLedger, tmp_path: Path) -> None:
    other = PostgresLedger(pg.url, cache_dir=tmp_path / "machine-b")
    assert [e.hash for e in other.read()] == [e.hash for e in pg.read()]
    pg.append([snapshot_event(6)])
    assert [e.seq for e in other.read(limit=1)] == [6]
    assert Ledger(next((tmp_path / "machine-b").glob("*.duckdb"))).head() == pg.head()
    other.close()


def test_a_role_that_may_not_create_the_schema_is_told_to_run_init_as_the_owner(
    roles: dict[str, str], pg_database: str, tmp_path: Path
) -> None:
    admin = postgres_admin()
    fresh = f"govern_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{fresh}"')
    admin.execute(f'REVOKE CREATE ON DATABASE "{fresh}" FROM PUBLIC')
    writer = roles["writer"].rsplit("/", 1)[0] + f"/{fresh}"
    try:
        ledger = PostgresLedger(writer, cache_dir=tmp_path / "c")
        with pytest.raises(LedgerError, match=r"may not create govern's schema .* run `govern init --ledger URL`"):
            ledger.append([snapshot_event(1)])
        ledger.close()
    finally:
        admin.execute(f'DROP DATABASE "{fresh}" WITH (FORCE)')
        admin.close()


def committed_project(tmp_path: Path) -> Path:
    """A git repository with one commit, not yet governed."""
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q")
    (project / "README.md").write_text("demo\n")
    commit_all(project, "start")
    return project


@pytest.mark.slow  # `govern init` runs DVC's own init
def test_init_with_a_ledger_url_creates_the_schema_prints_the_grants_and_keeps_the_password_out(
    tmp_path: Path, pg_database: str
) -> None:
    project = committed_project(tmp_path)
    url = pg_database.replace("postgres@", "postgres:s3cret@", 1)
    result = run_cli("init", "--ledger", url, cwd=project)
    assert result.exit_code == 0, result.output
    assert "GRANT INSERT ON govern.events TO govern_writer;" in result.output
    assert "s3cret" not in result.output
    assert f'GRANT CONNECT ON DATABASE "{pg_database.rsplit("/", 1)[1]}" TO govern_writer, govern_auditor;' in (
        result.output
    )
    config = (project / "govern.toml").read_text()
    assert f'ledger = "{pg_database.replace("postgres@", "govern_writer@")}"' in config and "s3cret" not in config
    assert PostgresLedger(pg_database).exists()
    again = run_cli("init", "--ledger", url, cwd=project)
    assert again.exit_code == 0 and "already governed" in again.output


@pytest.mark.slow  # `govern init` runs DVC's own init
def test_init_names_the_roles_it_is_given_and_refuses_names_postgresql_would_not_take(
    tmp_path: Path, pg_database: str
) -> None:
    project = committed_project(tmp_path)
    for roles, problem in (
        (["--writer-role", "Team-Writer"], "--writer-role 'Team-Writer' is not a PostgreSQL role name"),
        (["--writer-role", "same", "--auditor-role", "same"], "auditors need a role that cannot write"),
    ):
        refused = run_cli("init", "--ledger", pg_database, *roles, cwd=project)
        assert refused.exit_code != 0 and problem in refused.output, refused.output
        assert not (project / "govern.toml").exists() and not PostgresLedger(pg_database).exists()
    no_ledger = run_cli("init", "--writer-role", "w", cwd=project)
    assert no_ledger.exit_code != 0 and "add --ledger URL" in no_ledger.output

    result = run_cli("init", "--ledger", pg_database, "--writer-role", "ml_w", "--auditor-role", "ml_a", cwd=project)
    assert result.exit_code == 0, result.output
    assert "GRANT INSERT ON govern.events TO ml_w;" in result.output and "TO ml_w, ml_a;" in result.output
    assert "govern_writer" not in result.output
    assert f'ledger = "{pg_database.replace("postgres@", "ml_w@")}"' in (project / "govern.toml").read_text()


def test_audit_copy_refuses_the_same_database_under_another_url_and_prints_grants_where_it_created_the_schema(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = Ledger(tmp_path / "ledger.duckdb")
    file.append([snapshot_event(i) for i in range(1, 4)])
    monkeypatch.setenv("GOVERN_LEDGER", str(file.path))
    copied = run_cli("audit", "copy", "--to", pg_database, cwd=tmp_path)
    assert copied.exit_code == 0, copied.output
    assert "govern's schema was created there." in copied.output
    assert "GRANT INSERT ON govern.events TO govern_writer;" in copied.output
    again = run_cli("audit", "copy", "--to", pg_database, cwd=tmp_path)
    assert f"nothing to copy: {pg_database} already holds all 3 events; the copy verifies" in again.output
    assert "GRANT" not in again.output

    monkeypatch.setenv("GOVERN_LEDGER", pg_database)
    other_spelling = pg_database.replace("@127.0.0.1:", "@localhost:", 1)
    assert other_spelling != pg_database
    itself = run_cli("audit", "copy", "--to", other_spelling, cwd=tmp_path)
    assert itself.exit_code != 0
    assert "is the ledger being copied (the same database under another URL)" in itself.output
    assert PostgresLedger(pg_database).head()[0] == 3


def test_audit_copy_moves_a_file_ledger_to_postgresql_and_every_read_command_answers_the_same(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from govern.envelope import PendingEvent, format_timestamp, utc_now
    from govern.events import DeploymentStarted

    file = Ledger(tmp_path / "ledger.duckdb")
    file.append([snapshot_event(i) for i in range(1, 4)])
    file.append(
        [
            PendingEvent(DeploymentStarted(model="m", version="1", app="web", env="production"), "Zoë", utc_now()),
        ]
    )
    monkeypatch.setenv("GOVERN_LEDGER", str(file.path))
    copied = run_cli("audit", "copy", "--to", pg_database, cwd=tmp_path)
    assert copied.exit_code == 0, copied.output
    assert f"copied 4 events to {pg_database}; the copy verifies" in copied.output
    commands = [
        ["audit", "log"],
        ["audit", "log", "--json"],
        ["audit", "production", "--app", "web", "--env", "production", "--at", format_timestamp(utc_now())],
        ["audit", "windows", "--app", "web"],
        ["audit", "sql", "SELECT type, count(*) FROM events GROUP BY type ORDER BY type"],
        ["audit", "verify", "--json"],
    ]
    answers = {}
    for location in (str(file.path), pg_database):
        monkeypatch.setenv("GOVERN_LEDGER", location)
        answers[location] = [run_cli(*command, cwd=tmp_path) for command in commands]
    for command, on_file, on_pg in zip(commands, answers[str(file.path)], answers[pg_database], strict=True):
        assert on_file.exit_code == on_pg.exit_code == 0, (command, on_file.output, on_pg.output)
        assert on_pg.stdout == on_file.stdout, command
    back = tmp_path / "back.duckdb"
    monkeypatch.setenv("GOVERN_LEDGER", pg_database)
    assert run_cli("audit", "copy", "--to", str(back), cwd=tmp_path).exit_code == 0
    assert Ledger(back).read() == file.read()
    assert copy(file, PostgresLedger(pg_database)).count == 4


def test_a_single_event_hashed_inside_postgresql_has_the_hash_python_computes(pg: PostgresLedger) -> None:
    """One-event appends hash in PostgreSQL's SQL (one round trip); the envelope must be byte for byte Python's."""
    from dataclasses import replace

    from govern.storage.postgres_log import _with_hash

    for i, source in enumerate(['é "q" \\ \t\n\u0001 \u2028 😀', "plain", "\u007f\u0080 nul-free"], start=6):
        [recorded] = pg.append([snapshot_event(i, source=source)])
        assert recorded.hash == _with_hash(replace(recorded, hash="")).hash
    assert [e.seq for e in pg.read()][-3:] == [6, 7, 8]
    assert pg.verify().ok


def test_a_writer_waits_for_the_chains_lock_at_most_lock_timeout_and_appends_nothing(
    pg: PostgresLedger, pg_ledger_database: str, tmp_path: Path
) -> None:
    from govern.errors import LedgerLocked
    from govern.storage.postgres_log import LOCK_KEY

    impatient = PostgresLedger(pg_ledger_database, lock_timeout=0.5, cache_dir=tmp_path / "other")
    with psycopg.connect(pg_ledger_database) as holder:  # another machine's writer, in the middle of its transaction
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        with pytest.raises(LedgerLocked, match="held by another govern writer; gave up after 0.5 s"):
            impatient.append([snapshot_event(99)])
    assert pg.head()[0] == 5
    impatient.append([snapshot_event(99)])
    assert pg.head()[0] == 6
    impatient.close()


def test_the_server_hook_checks_its_postgresql_ledger_when_installed_not_after_the_first_push(
    tmp_path: Path, pg_database: str
) -> None:
    bare = tmp_path / "server.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    refusals = {
        pg_database.replace("postgres@", "postgres:pw@"): "--ledger carries a password, which the hook file",
        pg_database.replace("postgresql://", "postgresq://"): "is not a ledger location",
        pg_database: "has no govern schema yet: run `govern init --ledger URL` there first",
        pg_database.replace(":5432/", ":1/"): "Cannot reach the PostgreSQL ledger",
    }
    for url, message in refusals.items():
        result = run_cli("hooks", "install-server", "--bare", str(bare), "--ledger", url)
        assert result.exit_code != 0 and message in result.output, (url, result.output)
        assert "pw@" not in result.output
        assert not (bare / "hooks" / "post-receive").exists()
    PostgresLedger(pg_database).create()
    installed = run_cli("hooks", "install-server", "--bare", str(bare), "--ledger", pg_database)
    assert installed.exit_code == 0 and pg_database in (bare / "hooks" / "post-receive").read_text()


def test_a_role_without_grants_is_told_an_operator_grants_them(
    pg: PostgresLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = postgres_admin()
    role = f"govern_nobody_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        url = pg.url.replace("postgres@", f"{role}@")
        monkeypatch.setenv("GOVERN_LEDGER", url)
        monkeypatch.setenv("GOVERN_CACHE_DIR", str(tmp_path / "nobody"))
        for command in (["audit", "log"], ["status"]):
            result = run_cli(*command, cwd=tmp_path)
            assert result.exit_code == 1, result.output
            assert "lacks privileges on govern's schema" in result.output and "Traceback" not in result.output
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{pg.url.rsplit("/", 1)[1]}" WITH (FORCE)')
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def test_a_cache_dir_that_is_a_file_is_named(
    pg: PostgresLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("GOVERN_CACHE_DIR", str(blocker))
    monkeypatch.setenv("GOVERN_LEDGER", pg.url)
    result = run_cli("audit", "log", cwd=tmp_path)
    assert result.exit_code != 0 and f"GOVERN_CACHE_DIR {blocker} is a file" in result.output
