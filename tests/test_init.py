"""`govern init`: idempotent set-up of any git repository."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import git, run_cli

pytestmark = pytest.mark.slow  # `govern init` runs DVC's own init


def test_init_writes_govern_toml_audit_gitignore_and_dvc(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    result = run_cli("init", cwd=tmp_path)
    assert result.exit_code == 0, result.output

    settings = tomllib.loads((tmp_path / "govern.toml").read_text())
    assert settings["ledger"] == "audit/ledger.duckdb"
    assert settings["mlflow"]["experiment"] == tmp_path.name
    assert (tmp_path / "audit" / "README.md").exists()
    ignored = (tmp_path / ".gitignore").read_text().splitlines()
    assert {
        "/audit/ledger.duckdb",
        "/audit/ledger.duckdb.wal",
        "/audit/ledger.duckdb.checkpoint-backup*",
        "/mlflow.db",
        "/mlartifacts/",
    } <= set(ignored)
    assert (tmp_path / ".dvc" / "config").exists()
    queries = sorted(p.name for p in (tmp_path / "audit" / "queries").glob("*.sql"))
    assert queries == ["inferences_per_month.sql", "model_lineage.sql", "production_at.sql", "promotions_of_model.sql"]


def test_init_says_to_commit_what_it_wrote_before_the_first_training(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    result = run_cli("init", cwd=tmp_path)
    assert (
        "Next: commit it, so that trainings point at a commit: "
        "git add govern.toml audit .gitignore .dvc .dvcignore && git commit -m 'govern init'"
    ) in result.output
    assert "/audit/mirror.log" in (tmp_path / ".gitignore").read_text().splitlines()
    git(tmp_path, "add", "govern.toml", "audit", ".gitignore", ".dvc", ".dvcignore")
    git(tmp_path, "commit", "-q", "-m", "govern init")
    assert git(tmp_path, "status", "--porcelain") == "", "the command given leaves nothing uncommitted"


def test_init_uses_pyproject_when_there_is_one(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "credit-risk"\n')
    assert run_cli("init", cwd=tmp_path).exit_code == 0
    pyproject = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "credit-risk"
    assert pyproject["tool"]["govern"]["ledger"] == "audit/ledger.duckdb"
    assert not (tmp_path / "govern.toml").exists()


def test_init_twice_changes_nothing(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    run_cli("init", cwd=tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and ".git/" not in p.as_posix()}
    again = run_cli("init", cwd=tmp_path)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and ".git/" not in p.as_posix()}
    assert again.exit_code == 0 and "already governed" in again.output
    assert after == before


def test_init_from_a_subdirectory_sets_up_the_repository_root(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "src").mkdir()
    assert run_cli("init", cwd=tmp_path / "src").exit_code == 0
    assert (tmp_path / "govern.toml").exists() and not (tmp_path / "src" / "govern.toml").exists()


def test_a_malformed_config_is_reported_with_the_file(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "govern.toml").write_text("ledger = [unclosed\n")
    result = run_cli("audit", "log", cwd=tmp_path)
    assert result.exit_code == 1
    assert "govern.toml is not valid TOML" in result.output and len(result.output.strip().splitlines()) == 1
