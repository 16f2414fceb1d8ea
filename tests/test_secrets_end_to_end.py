"""A password in every configured URI, and secrets in the environment: none of them reaches an event, MLflow's
tags and params, the server's log, a report in any format, or `govern audit log` (issue 25, item 7).

Real parts: a PostgreSQL ledger reached with a password in GOVERN_LEDGER (the machine's PostgreSQL trusts
127.0.0.1, so any password connects), MLflow on PostgreSQL through `postgresql+psycopg://user:password@...` (the
issue's URI), then an MLflow that cannot be reached (its error recorded), a git remote and a DVC remote with
credentials, `govern repro`, `govern serve`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    TINY_STAGE,
    commit_all,
    database_url,
    free_port,
    git,
    postgres_admin,
    start_server,
    tiny_pipeline,
)
from support.server import call

from govern.storage.postgres_log import PostgresLedger

pytestmark = pytest.mark.slow

SECRETS = {
    "ledger": "Ledger-S3cret-44",
    "mlflow": "Track-S3cret-55",
    "mlflow_http": "Http-S3cret-66",
    "git": "Rem0te-S3cret-9",
    "dvc_url": "Dvc-S3cret-77",
    "dvc_password": "Dvc-Pa55-w0rd",
    "PGPASSWORD": "Pg-S3cret-11",
    "MLFLOW_TRACKING_PASSWORD": "Mlf-S3cret-22",
    "AWS_SECRET_ACCESS_KEY": "Aws/S3cret+33",
    "GOVERN_SESSION_SECRET": "Sess10n-S3cret-" + "x" * 20,
}


def with_password(url: str, password: str) -> str:
    return url.replace("postgres@", f"postgres:{password}@", 1)


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Two new databases (the ledger's, MLflow's), dropped at the end."""
    admin = postgres_admin()
    names = [f"govern_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(names[0]), database_url(names[1])
    finally:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_no_configured_secret_reaches_the_ledger_mlflow_the_log_or_a_report(
    tmp_path: Path, isolated_env: dict[str, str], databases: tuple[str, str]
) -> None:
    ledger_url, mlflow_db = databases
    project = tiny_pipeline(tmp_path / "project", TINY_STAGE, "n: 3\n", "--ledger", ledger_url)
    git(project, "remote", "add", "origin", f"https://ci-bot:{SECRETS['git']}@git.example.invalid/team/project.git")
    (project / ".dvc" / "config.local").write_text(
        f"['remote \"storage\"']\n    url = https://dvc-user:{SECRETS['dvc_url']}@dvc.example.invalid/store\n"
        f"    password = {SECRETS['dvc_password']}\n"
    )
    commit_all(project, "tiny pipeline")
    mlflow_uri = "postgresql+psycopg://postgres:" + SECRETS["mlflow"] + "@" + mlflow_db.split("@", 1)[1]
    env = {
        **isolated_env,
        "GOVERN_LEDGER": with_password(ledger_url, SECRETS["ledger"]),
        "MLFLOW_TRACKING_URI": mlflow_uri,
        **{name: SECRETS[name] for name in ("PGPASSWORD", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY")},
    }

    def govern(*args: str, **changes: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "govern", *args], cwd=project, env={**env, **changes},
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done

    outputs = [govern("repro", "--commit").stderr]  # mirrored into MLflow on PostgreSQL
    (project / "params.yaml").write_text("n: 4\n")
    commit_all(project, "n = 4")
    unreachable = f"http://mlflow:{SECRETS['mlflow_http']}@127.0.0.1:{free_port()}"
    outputs.append(govern("repro", "--commit", MLFLOW_TRACKING_URI=unreachable).stderr)  # recorded as pending

    ledger = PostgresLedger(env["GOVERN_LEDGER"], cache_dir=tmp_path / "read-model")
    events = ledger.read()
    ledger.close()
    first, second = [e for e in events if e.type == "training.completed"]
    assert first.payload["mlflow"]["status"] == "mirrored"
    assert first.payload["mlflow"]["tracking_uri"] == mlflow_uri.replace(f":{SECRETS['mlflow']}@", "@")
    assert first.payload["git"]["remote_url"] == "https://ci-bot@git.example.invalid/team/project.git"
    assert second.payload["mlflow"]["status"] == "pending"
    assert second.payload["mlflow"]["tracking_uri"] == unreachable.replace(f":{SECRETS['mlflow_http']}@", "@")
    assert "Could not mirror" in second.payload["mlflow"]["error"]
    recorded = [json.dumps(e.to_dict()) for e in events]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("project").experiment_id])
    assert runs and runs[0].data.tags["mlflow.source.git.repoURL"] == first.payload["git"]["remote_url"]
    mirrored = [json.dumps({"tags": r.data.tags, "params": r.data.params}) for r in runs]
    mirrored += [json.dumps(v.tags) for v in client.search_model_versions("name = 'tiny-model'")]

    govern("principals", "add", "aud", "--role", "auditor")
    issued = json.loads(govern("tokens", "create", "aud", "--json").stdout)
    if "code" in issued:  # team mode (the ledger is PostgreSQL): an enrollment code, redeemed by its holder
        issued = json.loads(govern("tokens", "redeem", issued["code"], "--json").stdout)
    token = issued["token"]
    log = tmp_path / "server.log"
    process, base = start_server(project, {**env, "GOVERN_SESSION_SECRET": SECRETS["GOVERN_SESSION_SECRET"]}, log)
    try:
        answers = []
        for kind in ("html", "md", "json"):
            status, body, _ = call(base, "GET", f"/api/v1/models/tiny-model/versions/1/report?format={kind}", token)
            assert status == 200, body
            answers.append(body if isinstance(body, str) else json.dumps(body))
        status, body, _ = call(base, "GET", "/api/v1/events", token)
        assert status == 200 and len(body) == len(events) + 4, "the trainings, the grant, the code, its token, the key"
        answers.append(json.dumps(body))
        status, _, _ = call(base, "GET", f"/api/v1/whoami?access_token={SECRETS['mlflow_http']}", token)
        assert status == 400, "a secret in a query string is logged redacted"
    finally:
        process.terminate()
        process.wait(timeout=30)
    served_log = log.read_text(errors="replace")
    assert "access_token=[redacted]" in served_log
    audit_log = govern("audit", "log", "--json").stdout

    places = {
        "events": "\n".join(recorded),
        "MLflow": "\n".join(mirrored),
        "command output": "\n".join(outputs),
        "reports and API answers": "\n".join(answers),
        "server log": served_log,
        "audit log": audit_log,
        "configuration": (project / "govern.toml").read_text(),
    }
    for place, text in places.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name}'s secret in the {place}"


def test_a_password_in_an_http_tracking_uri_is_not_printed_when_a_run_ends(
    tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    """Found by the insider review: MLflow prints "View run ... at: URL" when a run ends, the URL with the
    password of `http://user:password@host` in it, on the command's stderr and in the server's log."""
    import time
    import urllib.request

    project = tiny_pipeline(tmp_path / "project", TINY_STAGE, "n: 3\n")
    commit_all(project, "tiny pipeline")
    port = free_port()
    store = tmp_path / "mlflow-server"
    store.mkdir()
    log = (store / "server.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", (store / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=isolated_env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        uri = f"http://mlflow:{SECRETS['mlflow_http']}@127.0.0.1:{port}"
        done = subprocess.run(
            [sys.executable, "-m", "govern", "repro"], cwd=project, capture_output=True, text=True, timeout=600,
            env={**isolated_env, "MLFLOW_TRACKING_URI": uri},
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert done.returncode == 0, done.stderr
    assert "MLflow run " in done.stdout  # mirrored: the run ended, where MLflow would have printed its URL
    assert SECRETS["mlflow_http"] not in done.stdout + done.stderr
