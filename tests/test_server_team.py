"""The controller on the team's setup: the ledger on PostgreSQL (the writer role) and MLflow's tracking store on
PostgreSQL behind a real `mlflow server`. The lifecycle over HTTP, each step by the principal whose job it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import (
    TINY_STAGE,
    commit_all,
    database_url,
    git,
    run_cli,
    start_server,
    tiny_pipeline,
    token_for,
    wait_for,
)
from support.server import call
from support.tracking import mlflow_client

from govern.storage.postgres_log import PostgresLedger, grant_statements

pytestmark = pytest.mark.slow


@pytest.fixture
def served(
    tmp_path: Path,
    team: dict[str, str],  # noqa: F811 - the fixture imported above
    mlflow_server: str,  # noqa: F811
    isolated_env: dict[str, str],
) -> Iterator[dict]:
    owner_url = database_url(team["govern_db"])
    writer_url = database_url(team["govern_db"], team["writer"])
    project = tiny_pipeline(tmp_path / "project", TINY_STAGE, "n: 3\n", "--ledger", owner_url)
    with psycopg.connect(owner_url, autocommit=True) as con:
        for statement in grant_statements(team["writer"], team["auditor"]):
            con.execute(statement.replace(" PASSWORD '...'", ""))
    (project / "govern.toml").write_text(f'ledger = "{writer_url}"\n[mlflow]\ntracking_uri = "{mlflow_server}"\n')
    commit_all(project, "tiny pipeline on the team's ledger and MLflow")
    roles = {"sci": "scientist", "appr": "approver", "dep": "deployer", "aud": "auditor"}
    tokens = {}
    for name, role in roles.items():
        assert run_cli("principals", "add", name, "--role", role, cwd=project).exit_code == 0
        tokens[name] = token_for(project, name)  # team mode: an enrollment code, redeemed
    process, base = start_server(project, isolated_env, tmp_path / "server.log")
    yield {"project": project, "base": base, "tokens": tokens, "owner_url": owner_url, "mlflow": mlflow_server}
    process.terminate()
    process.wait(timeout=30)


def test_the_lifecycle_over_http_on_postgresql_with_mlflow_on_postgresql(served: dict, tmp_path: Path) -> None:
    base, tokens = served["base"], served["tokens"]
    commit = git(served["project"], "rev-parse", "HEAD")
    status, job, _ = call(base, "POST", "/api/v1/trainings", tokens["sci"], {"commit": commit})
    assert status == 202, job
    trained = wait_for(
        lambda: (
            (found := call(base, "GET", f"/api/v1/trainings/{job['job_id']}", tokens["aud"])[1])["state"]
            in ("succeeded", "failed")
            and found
        ),
        "the training job to finish",
        timeout=300,
    )
    assert trained["state"] == "succeeded", trained["log_tail"]

    ask = {"model": "tiny-model", "version": "1", "to_stage": "staging", "reason": "first candidate"}
    status, requested, _ = call(base, "POST", "/api/v1/promotion-requests", tokens["sci"], ask)
    assert status == 201, requested
    status, problem, _ = call(base, "POST", f"/api/v1/promotion-requests/{requested['request']}/approval",
                              tokens["sci"], {"reason": "mine"})  # fmt: skip
    assert status == 403
    status, approved, _ = call(base, "POST", f"/api/v1/promotion-requests/{requested['request']}/approval",
                               tokens["appr"], {"reason": "evidence reviewed"})  # fmt: skip
    assert status == 201, approved
    deployment = {"model": "tiny-model", "version": "1", "app": "scoring", "env": "staging"}
    assert call(base, "POST", "/api/v1/deployments", tokens["dep"], deployment)[0] == 201
    status, serving, _ = call(base, "GET", "/api/v1/apps/scoring/production?env=staging", tokens["aud"])
    assert status == 200 and serving["version"] == "1" and serving["deployed_by"].startswith("dep (token ")

    ledger = PostgresLedger(served["owner_url"], cache_dir=tmp_path / "check-cache")
    [training] = ledger.read(types=["training.completed"])
    [promotion] = ledger.read(types=["model.promoted"])
    assert training.actor.startswith("sci (token ") and promotion.actor.startswith("appr (token ")
    assert ledger.verify().ok
    client = mlflow_client(served["mlflow"])
    wait_for(lambda: client.get_model_version_by_alias("tiny-model", "staging").version == "1", "the MLflow alias")
