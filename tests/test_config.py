"""Configuration precedence: environment, govern.toml, [tool.govern], defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from govern import config
from govern.errors import ConfigError


def test_defaults_put_the_ledger_in_audit_and_mlflow_in_a_root_sqlite_store(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, {})
    assert cfg.ledger == tmp_path / "audit" / "ledger.duckdb"
    assert cfg.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cfg.experiment == tmp_path.name and cfg.source == "defaults"


def test_pyproject_tool_govern_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.govern]\nledger = "gov/l.duckdb"\n[tool.govern.mlflow]\nexperiment = "credit"\n'
    )
    cfg = config.load(tmp_path, {})
    assert cfg.ledger == tmp_path / "gov" / "l.duckdb" and cfg.experiment == "credit"
    assert cfg.source == "pyproject.toml [tool.govern]"


def test_govern_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.govern]\nledger = "a.duckdb"\n')
    (tmp_path / "govern.toml").write_text('ledger = "b.duckdb"\n')
    assert config.load(tmp_path, {}).ledger == tmp_path / "b.duckdb"


def test_environment_wins_over_files(tmp_path: Path) -> None:
    (tmp_path / "govern.toml").write_text('ledger = "b.duckdb"\n[mlflow]\ntracking_uri = "sqlite:///elsewhere.db"\n')
    env = {"GOVERN_LEDGER": "/shared/ledger.duckdb", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    cfg = config.load(tmp_path, env)
    assert cfg.ledger == Path("/shared/ledger.duckdb")
    assert cfg.tracking_uri == "http://127.0.0.1:5000"


def test_a_wrongly_typed_setting_is_named(tmp_path: Path) -> None:
    (tmp_path / "govern.toml").write_text("ledger = 3\n")
    with pytest.raises(ConfigError, match="`ledger` must be a non-empty string, got 3"):
        config.load(tmp_path, {})


def test_the_root_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert config.find_root(tmp_path / "a" / "b") == tmp_path.resolve()


def test_a_lock_timeout_must_be_seconds(tmp_path: Path) -> None:
    (tmp_path / "govern.toml").write_text('lock_timeout = "soon"\n')
    with pytest.raises(ConfigError, match="`lock_timeout` must be a number of seconds"):
        config.load(tmp_path, {})


@pytest.mark.parametrize("value", ["s3://bucket/ledger.duckdb", "https://example.invalid/ledger"])
def test_a_ledger_url_other_than_postgresql_is_refused_by_name_not_taken_for_a_folder(
    tmp_path: Path, value: str
) -> None:
    message = r"://\.\.\. is not a ledger location: give a file path, or a postgresql:// URL"
    with pytest.raises(ConfigError, match=message):
        config.load(tmp_path, {"GOVERN_LEDGER": value})
    with pytest.raises(ConfigError, match=message):
        config.configured_ledger(tmp_path, {"GOVERN_LEDGER": value})
    (tmp_path / "govern.toml").write_text(f'ledger = "{value}"\n')
    with pytest.raises(ConfigError, match=message):
        config.load(tmp_path, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["govern.toml"], "no folder named after the scheme"


@pytest.mark.parametrize(
    "value", ["postgresql://govern@127.0.0.1/govern", "postgres+psycopg://127.0.0.1:5432/govern", "POSTGRESQL://h/db"]
)
def test_a_postgresql_url_is_the_ledger_as_given_not_a_path_under_the_root(tmp_path: Path, value: str) -> None:
    assert config.load(tmp_path, {"GOVERN_LEDGER": value}).ledger == value
    assert config.configured_ledger(tmp_path, {"GOVERN_LEDGER": value}) == value
    (tmp_path / "govern.toml").write_text(f'ledger = "{value}"\n')
    assert config.load(tmp_path, {}).ledger == value


@pytest.mark.parametrize("value", ["bad..name/{job}", "-x/{job}", "a//{job}", "a/.hidden/{job}", "x.lock/{job}", "a b"])
def test_a_lock_branch_git_would_refuse_is_a_configuration_error_at_load(tmp_path: Path, value: str) -> None:
    (tmp_path / "govern.toml").write_text(f'[jobs]\nlock_branch = "{value}"\n')
    with pytest.raises(ConfigError, match=r"`jobs.lock_branch` is a branch name \(\{job\} stands for the job's id\)"):
        config.load(tmp_path, {})


def test_a_lock_branch_may_be_renamed_or_turned_off(tmp_path: Path) -> None:
    assert config.load(tmp_path, {}).jobs_lock_branch == "govern/trainings/{job}"
    (tmp_path / "govern.toml").write_text('[jobs]\nlock_branch = "ml/results-{job}"\n')
    assert config.load(tmp_path, {}).jobs_lock_branch == "ml/results-{job}"
    (tmp_path / "govern.toml").write_text('[jobs]\nlock_branch = ""\n')
    assert config.load(tmp_path, {}).jobs_lock_branch == ""
