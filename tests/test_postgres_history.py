"""A real history (the demo trained three times, promoted, deployed) moved to PostgreSQL and back.

The same answers to every shipped query and the same report; tampering as a superuser, down to a re-hashed
chain and a truncated tail, named by `audit verify` and its anchors, as on the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from conftest import isolate, ok, run_cli

from govern.envelope import envelope_hash
from govern.storage.duckdb_log import Ledger
from govern.storage.postgres_log import PostgresLedger

pytestmark = pytest.mark.slow
M = "breast-cancer-classifier"


@pytest.fixture(scope="module")
def history_original(tmp_path_factory: pytest.TempPathFactory, three_versions_original: Path) -> Path:
    """Three versions, version 2 promoted to production and deployed, the ledger anchored: made once."""
    base = tmp_path_factory.mktemp("history")
    env = isolate(dict(os.environ), base / "home")
    project = base / "demo"
    shutil.copytree(three_versions_original, project, symlinks=True)
    for args in (
        ["promote", M, "2", "--to", "staging", "--reason", "better recall"],
        ["promote", M, "2", "--to", "production", "--reason", "signed off"],
        ["deploy", M, "2", "--app", "scoring", "--env", "production"],
        ["audit", "anchor"],
    ):
        subprocess.run([sys.executable, "-m", "govern", *args], cwd=project, env=env, check=True, capture_output=True)
    return project


@pytest.fixture
def history(history_original: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    project = tmp_path / "demo"
    shutil.copytree(history_original, project, symlinks=True)
    monkeypatch.setenv("GOVERN_CACHE_DIR", str(tmp_path / "read-models"))
    return project


def answers(project: Path, at: str) -> dict[str, str]:
    commands = {
        "production_at": ["audit", "run", "production_at", "--param", "app=scoring", "--param", "env=production",
                          "--param", f"at={at}", "--json"],
        "model_lineage": ["audit", "run", "model_lineage", "--param", f"model={M}", "--param", "version=2", "--json"],
        "promotions_of_model": ["audit", "run", "promotions_of_model", "--param", f"model={M}", "--json"],
        "inferences_per_month": ["audit", "run", "inferences_per_month", "--json"],
        "history": ["audit", "history", M, "--json"],
        "windows": ["audit", "windows", "--json"],
        "status": ["status", "--json"],
    }  # fmt: skip
    found = {}
    for name, command in commands.items():
        result = run_cli(*command, cwd=project)
        assert result.exit_code == 0, (name, result.output)
        found[name] = result.stdout
    return found


def report(project: Path, target: Path) -> dict:
    result = run_cli("audit", "report", M, "2", "--format", "json", "-o", str(target), cwd=project)
    assert result.exit_code == 0, result.output
    data = json.loads(target.read_text())
    del data["report"]["generated_at"], data["production"]["now"]  # when the report was made, not what it says
    return data


def test_a_real_history_copied_to_postgresql_and_back_gives_the_same_answers_and_report(
    history: Path, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_ledger = history / "audit" / "ledger.duckdb"
    at = json.loads(ok(history, "audit", "windows", "--json"))[0]["start"]
    on_file = answers(history, at)
    file_report = report(history, tmp_path / "file.json")

    ok(history, "audit", "copy", "--to", pg_database)
    monkeypatch.setenv("GOVERN_LEDGER", pg_database)
    on_postgres = answers(history, at)
    status_pg, status_file = json.loads(on_postgres.pop("status")), json.loads(on_file.pop("status"))
    assert status_pg["ledger"].pop("backend") == "postgresql" and status_file["ledger"].pop("backend") == "duckdb"
    assert status_pg["ledger"].pop("path") == pg_database
    status_file["ledger"].pop("path")
    assert status_pg == status_file
    assert on_postgres == on_file
    assert report(history, tmp_path / "pg.json") == file_report

    back = tmp_path / "back.duckdb"
    ok(history, "audit", "copy", "--to", str(back))
    assert [e.hash for e in Ledger(back).read()] == [e.hash for e in Ledger(file_ledger).read()]
    verified = run_cli("audit", "verify", cwd=history)
    assert verified.exit_code == 0 and "1 anchor(s) match" in verified.output, verified.output


def superuser(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("SET session_replication_role = replica")  # the append-only trigger off, as only a superuser can
        for statement in statements:
            con.execute(statement)


def rehash_from(url: str, seq: int) -> None:
    """Edit one event and re-hash every event after it, so that the chain verifies on its own."""
    ledger = PostgresLedger(url)
    rows = ledger.read()
    ledger.close()
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("SET session_replication_role = replica")
        prev = rows[seq - 2].hash if seq > 1 else "0" * 64
        for row in rows[seq - 1 :]:
            actor = "Mallory" if row.seq == seq else row.actor
            fields = {**row.__dict__, "actor": actor, "prev_hash": prev}
            fields.pop("hash")
            fields.pop("signature")
            digest = envelope_hash(**fields)
            con.execute(
                "UPDATE govern.events SET actor = %s, prev_hash = %s, hash = %s WHERE seq = %s",
                [actor, prev, digest, row.seq],
            )
            prev = digest
    fresh = PostgresLedger(url, cache_dir=Path(tempfile.mkdtemp(prefix="a-machine-that-never-read-it-")))
    assert fresh.verify().ok, "the re-hashed chain verifies on its own: only the anchors can tell"


@pytest.mark.parametrize(
    "tamper, named",
    [
        (lambda url: superuser(url, "UPDATE govern.events SET actor = 'Mallory' WHERE seq = 3"), "seq 3"),
        (lambda url: superuser(url, "DELETE FROM govern.events WHERE seq = 4"), "seq 4 is missing"),
        (lambda url: rehash_from(url, 3), "anchor"),
        (
            lambda url: superuser(
                url, "DELETE FROM govern.events WHERE seq >= (SELECT max(seq) - 1 FROM govern.events)"
            ),
            "anchor",
        ),
    ],
    ids=["edit", "delete", "re-hash the chain", "truncate the tail"],
)
def test_tampering_in_postgresql_is_named_by_verify_or_its_anchors(
    history: Path,
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
    tamper,
    named: str,  # noqa: ANN001
) -> None:
    ok(history, "audit", "copy", "--to", pg_database)
    monkeypatch.setenv("GOVERN_LEDGER", pg_database)
    assert run_cli("audit", "verify", cwd=history).exit_code == 0
    tamper(pg_database)
    monkeypatch.setenv("GOVERN_CACHE_DIR", str(history.parent / "a-fresh-machine"))
    result = run_cli("audit", "verify", cwd=history)
    assert result.exit_code == 1, result.output
    assert named in result.output, result.output
