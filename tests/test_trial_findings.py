"""What a new user's trial of the server found (issue 14's last trial), each kept as a reproduction."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import commit_all, run_cli
from support.projects import ledger_at, project_at

from govern.api import jobs as jobs_api
from govern.errors import InvalidInput
from govern.remote import Server


def test_a_govern_url_ending_in_api_v1_is_refused_with_the_root_to_use() -> None:
    environ = {"GOVERN_URL": "http://127.0.0.1:18750/api/v1/", "GOVERN_TOKEN": "gvn_x"}
    with pytest.raises(InvalidInput, match=r"without /api/v1: use http://127\.0\.0\.1:18750$"):
        Server.from_environment(environ=environ)


def test_a_token_without_a_url_says_the_command_runs_locally(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import govern.cli.common

    monkeypatch.setenv("GOVERN_TOKEN", "gvn_000000000000_" + "x" * 43)
    monkeypatch.setattr(govern.cli.common, "_WARNED_TOKEN_ALONE", False)
    result = run_cli("status", cwd=project)
    assert result.exit_code == 0
    assert "GOVERN_TOKEN is set but GOVERN_URL is not: working on the local ledger" in result.stderr


def test_a_training_of_a_misspelt_stage_is_refused_when_asked_and_records_nothing(project: Path) -> None:
    (project / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: echo p\n  train:\n    cmd: echo t\n")
    commit_all(project, "a pipeline")
    before = ledger_at(project).head()
    with pytest.raises(InvalidInput, match=r"Unknown stage\(s\) trian at [0-9a-f]{12}: .* prepare, train$"):
        jobs_api.request_training(project_at(project, "sci"), "HEAD", ["trian"])
    assert ledger_at(project).head() == before
    job = jobs_api.request_training(project_at(project, "sci"), "HEAD", ["train", "dvc.yaml:prepare"])
    assert job.row.targets == ["train", "dvc.yaml:prepare"], "stage names and paths are both accepted"


@pytest.mark.slow
def test_repro_commit_json_prints_the_json_alone_on_stdout(tmp_path: Path) -> None:
    """Found by a new user: `govern repro --commit --json > out.json` ended with a line "committed dvc.lock as
    ..." after the JSON object, so out.json did not parse. The line goes to stderr with --json."""
    import json

    from conftest import tiny_pipeline

    project = tiny_pipeline(tmp_path / "project")
    commit_all(project, "tiny pipeline")
    result = run_cli("repro", "--commit", "--json", cwd=project)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["committed"] and f"committed dvc.lock as {answer['committed'][:12]}" in result.stderr
