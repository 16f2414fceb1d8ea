"""The command line: fast start, clean errors, JSON on stdout, documented commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import duckdb
import pytest
from conftest import REPO, run_cli
from support.cli import modules_after

from govern.cli import cli
from govern.envelope import PendingEvent, utc_now
from govern.events import DatasetSnapshotted
from govern.storage.duckdb_log import Ledger


def heavy(modules: set[str]) -> set[str]:
    return {name for name in modules if name.split(".")[0] in ("mlflow", "dvc", "sklearn", "pandas", "git", "psycopg")}


@pytest.fixture
def small_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.duckdb"
    Ledger(path).append(
        [
            PendingEvent(
                DatasetSnapshotted(
                    path=f"data/{i}.csv",
                    md5=None,
                    sha256=None,
                    size=None,
                    source="s",
                    extracted_at="2026-01-01T00:00:00.000000Z",
                    extracted_at_basis="stage-run",
                ),
                actor="someone",
                occurred_at=utc_now(),
            )
            for i in range(3)
        ]
    )
    return path


def test_help_does_not_import_mlflow_or_dvc(isolated_env: dict[str, str], tmp_path: Path) -> None:
    modules, done = modules_after(["--help"], isolated_env, tmp_path)
    assert done.returncode == 0 and "Usage: govern" in done.stdout
    assert heavy(modules) == set()


@pytest.mark.parametrize("args", [["audit", "log"], ["audit", "verify"], ["audit", "log", "--json", "-n", "1"]])
def test_audit_commands_do_not_import_mlflow_or_dvc(
    args: list[str], small_ledger: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**isolated_env, "GOVERN_LEDGER": str(small_ledger)}
    modules, done = modules_after(args, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert heavy(modules) == set()


def test_python_dash_m_runs_the_same_cli(isolated_env: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "govern", "--version"], env=isolated_env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "govern, version 0.1.0"


def test_audit_log_prints_events_oldest_first(small_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERN_LEDGER", str(small_ledger))
    result = run_cli("audit", "log")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert "dataset:data/2.csv" in lines[-1]


def test_audit_log_json_is_an_array_of_snake_case_objects(small_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERN_LEDGER", str(small_ledger))
    result = run_cli("audit", "log", "--json", "-n", "2", "--type", "dataset.snapshotted")
    events = json.loads(result.output)
    assert [e["seq"] for e in events] == [2, 3]
    assert all(re.fullmatch(r"[a-z_]+", key) for e in events for key in e)
    assert events[0]["occurred_at"].endswith("Z") and events[0]["payload"]["path"] == "data/1.csv"


def test_audit_log_refuses_a_naive_time(small_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERN_LEDGER", str(small_ledger))
    result = run_cli("audit", "log", "--since", "2026-01-01T00:00:00")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: --since: '2026-01-01T00:00:00' has no time zone; add Z for UTC or an offset such as +01:00"
    )


def test_audit_log_since_filters_by_occurrence(small_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, timedelta, timezone

    from govern.storage.duckdb_log import Ledger

    monkeypatch.setenv("GOVERN_LEDGER", str(small_ledger))
    [last] = Ledger(small_ledger).read(limit=1)
    after = (last.occurred_at.replace(tzinfo=UTC) + timedelta(microseconds=1)).astimezone(timezone(timedelta(hours=2)))
    assert json.loads(run_cli("audit", "log", "--json", "--since", after.isoformat()).output) == []
    assert len(json.loads(run_cli("audit", "log", "--json", "--since", "2000-01-01T00:00:00Z").output)) == 3


def test_audit_verify_ok_then_names_the_tampered_seq(small_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERN_LEDGER", str(small_ledger))
    monkeypatch.chdir(small_ledger.parent)  # not this checkout, whose anchor tags (after `audit anchor`) are others'
    ok = run_cli("audit", "verify")
    assert ok.exit_code == 0 and ok.output.startswith("OK: 3 events, head hash ")

    con = duckdb.connect(str(small_ledger))
    con.execute("UPDATE stored_events SET payload = replace(payload, 'data/1.csv', 'data/x.csv') WHERE seq = 2")
    con.close()

    failed = run_cli("audit", "verify")
    assert failed.exit_code == 1
    assert "seq 2" in failed.output
    as_json = json.loads(run_cli("audit", "verify", "--json").output)
    assert as_json["ok"] is False and as_json["bad_seq"] == 2


def test_audit_on_a_project_without_a_ledger_says_what_to_do(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = run_cli("audit", "log", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith("Error: No ledger at ") and "run `govern repro`" in result.output


def test_output_cut_short_by_a_closed_pipe_ends_quietly(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    from conftest import snapshot_event

    from govern.storage.duckdb_log import Ledger

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    Ledger(tmp_path / "audit" / "ledger.duckdb").append([snapshot_event(i) for i in range(3000)])
    for command in ("audit log", "status"):
        done = subprocess.run(
            ["bash", "-c", f"{sys.executable} -m govern {command} | head -1; echo \"exit ${{PIPESTATUS[0]}}\""],
            cwd=tmp_path, env=isolated_env, capture_output=True, text=True,
        )  # fmt: skip
        assert done.stderr == "", done.stderr
        assert done.stdout.splitlines()[-1] in ("exit 0", "exit 141"), done.stdout


def test_audit_log_says_what_it_found_nothing_of(tmp_path: Path) -> None:
    from conftest import snapshot_event

    from govern.storage.duckdb_log import Ledger

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    Ledger(tmp_path / "audit" / "ledger.duckdb").append([snapshot_event(1)])
    since = run_cli("audit", "log", "--since", "2026-01-01T00:00:00Z", "--type", "deployment.started", cwd=tmp_path)
    assert since.exit_code == 0 and "No events of type deployment.started since 2026-01-01T00:00:00Z." in since.output
    future = run_cli("audit", "log", "--since", "3026-11-28T13:00:00Z", cwd=tmp_path)
    assert future.exit_code != 0 and "--since 3026-11-28T13:00:00.000000Z is in the future" in future.output


@pytest.mark.parametrize("args", [["repro"], ["init"], ["audit", "log"]])
def test_outside_a_git_repository_the_error_is_one_line(args: list[str], tmp_path: Path) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.exit_code == 1
    assert (
        result.output
        == f"Error: {tmp_path} is not inside a git repository: run `git init` first, or cd into your project\n"
    )


def test_the_traceback_flag_is_documented_in_help() -> None:
    from click.testing import CliRunner

    assert "--traceback" in CliRunner().invoke(cli, ["--help"]).output


def test_traceback_flag_shows_the_traceback(tmp_path: Path) -> None:
    from govern.errors import NotAGitRepository

    previous = Path.cwd()
    try:
        import os

        os.chdir(tmp_path)
        with pytest.raises(NotAGitRepository):
            from click.testing import CliRunner

            CliRunner().invoke(cli, ["--traceback", "repro"], catch_exceptions=False)
    finally:
        os.chdir(previous)


def all_commands(group: click.Group, prefix: str = "govern") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if command.hidden:  # internal entry points of git hooks
            continue
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, f"{prefix} {name}"))
    return found


@pytest.mark.parametrize("name, command", all_commands(cli))
def test_every_command_has_help_and_is_documented_in_the_readme(name: str, command: click.Command) -> None:
    assert command.help and len(command.help.strip()) > 20
    assert f"`{name}" in (REPO / "README.md").read_text(encoding="utf-8")
