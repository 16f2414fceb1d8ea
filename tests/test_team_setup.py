"""README "Team setup", run exactly as written, on the machine's PostgreSQL.

PostgreSQL holds two databases (the govern ledger, MLflow's tracking store) and two roles (govern's writers with
INSERT and SELECT only, MLflow's server); a real `mlflow server` runs on PostgreSQL with proxied artifacts; two
clones act as two machines that train, promote and deploy at the same time; a push is verified by the server hook
into the same ledger; an auditor in a third clone, with a read-only role, asks the questions and gets one answer.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import commit_all, database_url, git, make_demo, postgres_admin, wait_for
from mlflow.tracking import MlflowClient

from govern.envelope import format_timestamp, utc_now
from govern.postgres_ledger import PostgresLedger, grant_statements

pytestmark = pytest.mark.slow
M = "breast-cancer-classifier"


@pytest.fixture
def team(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The recipe's databases and roles (names made unique: roles are cluster-wide), dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        "govern_db": f"govern_{suffix}",
        "mlflow_db": f"mlflow_{suffix}",
        "writer": f"govern_writer_{suffix}",
        "auditor": f"govern_auditor_{suffix}",
        "mlflow": f"mlflow_{suffix}",
    }
    admin = postgres_admin()
    admin.execute(f"CREATE ROLE {names['mlflow']} LOGIN")
    admin.execute(f"CREATE DATABASE {names['mlflow_db']} OWNER {names['mlflow']}")
    admin.execute(f"CREATE DATABASE {names['govern_db']}")
    try:
        yield names
    finally:
        for database in (names["govern_db"], names["mlflow_db"]):
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for role in (names["writer"], names["auditor"], names["mlflow"]):
            admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(team: dict[str, str], tmp_path: Path, isolated_env: dict[str, str]) -> Iterator[str]:
    """`mlflow server --backend-store-uri postgresql+psycopg://...` with artifacts proxied by the server."""
    port = free_port()
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    store = database_url(team["mlflow_db"], team["mlflow"]).replace("postgresql://", "postgresql+psycopg://")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", store,
        "--artifacts-destination", (folder / "artifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
    ]  # fmt: skip
    log = (folder / "server.log").open("ab")
    process = subprocess.Popen(command, env=isolated_env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (folder / "server.log").read_text()[-3000:]
                    raise RuntimeError(f"mlflow server did not start: {tail}") from None
                time.sleep(0.5)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def govern(cwd: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "govern", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and done.returncode != 0:
        raise AssertionError(f"govern {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def start(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "govern", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"{process.args} failed:\n{out}\n{err}"
    return out


def test_the_team_setup_recipe_two_machines_ci_and_an_auditor_agree(
    tmp_path: Path, team: dict[str, str], mlflow_server: str, isolated_env: dict[str, str], mlflow_store_template: Path
) -> None:
    owner_url = database_url(team["govern_db"])
    writer_url = database_url(team["govern_db"], team["writer"])
    auditor_url = database_url(team["govern_db"], team["auditor"])

    # The operator: govern's schema created as the database owner, the printed GRANTs run as printed (trust
    # authentication here, so without the passwords), the server hook installed with the writer's URL.
    origin = make_demo(tmp_path / "origin", mlflow_store_template, isolated_env)
    (origin / "mlflow.db").unlink()
    init = govern(origin, isolated_env, "init", "--ledger", owner_url)
    assert "GRANT INSERT ON govern.events TO govern_writer;" in init.stdout
    with psycopg.connect(owner_url, autocommit=True) as con:
        for statement in grant_statements(team["writer"], team["auditor"]):
            con.execute(statement.replace(" PASSWORD '...'", ""))
    bare = tmp_path / "server.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare), env=isolated_env)
    hook = govern(tmp_path, isolated_env, "hooks", "install-server", "--bare", str(bare), "--ledger", writer_url)
    assert writer_url in hook.stdout

    machines = {}
    for name in ("alice", "bob"):
        clone = tmp_path / name
        git(tmp_path, "clone", "-q", str(bare), str(clone), env=isolated_env)
        machines[name] = (clone, {**isolated_env, "GOVERN_CACHE_DIR": str(tmp_path / f"{name}-cache")})
    (alice, alice_env), (bob, bob_env) = machines["alice"], machines["bob"]

    # Alice points the project at the team's ledger and MLflow server (committed configuration, no password),
    # trains version 1 and pushes: the server hook verifies her commit into the same ledger.
    pyproject = alice / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text()
        .replace('ledger = "audit/ledger.duckdb"', f'ledger = "{writer_url}"')
        .replace('experiment = "govern-demo"', f'experiment = "govern-demo"\ntracking_uri = "{mlflow_server}"')
    )
    commit_all(alice, "govern: the team's ledger and MLflow server", env=alice_env)
    govern(alice, alice_env, "repro", "--commit")
    git(alice, "push", "-q", "origin", "main", env=alice_env)
    alice_commit = git(alice, "rev-parse", "HEAD")

    # At the same time: Bob trains version 2 while Alice promotes and deploys version 1.
    git(bob, "pull", "-q", "origin", "main", env=bob_env)
    params = bob / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0", "C: 0.5"))
    commit_all(bob, "C=0.5", env=bob_env)
    bob_training = start(bob, bob_env, "repro", "--commit")
    govern(alice, alice_env, "promote", M, "1", "--to", "staging", "--reason", "validation passed")
    govern(alice, alice_env, "promote", M, "1", "--to", "production", "--reason", "signed off")
    govern(alice, alice_env, "deploy", M, "1", "--app", "scoring", "--env", "production")
    finish(bob_training)
    git(bob, "push", "-q", "origin", "main", env=bob_env)
    bob_commit = git(bob, "rev-parse", "HEAD")

    ledger = PostgresLedger(owner_url, cache_dir=tmp_path / "check-cache")

    def verified() -> list:
        return ledger.read(types=["reproduction.verified", "reproduction.diverged"])

    judged = wait_for(
        lambda: len(verified()) >= 2 and verified(), "both pushed commits verified by the server hook", timeout=300
    )
    assert {e.git_commit for e in judged} == {alice_commit, bob_commit}
    assert all(e.type == "reproduction.verified" and e.payload["ci"]["system"] == "server-hook" for e in judged)
    trainings = ledger.read(types=["training.completed"])
    assert len(trainings) == 2
    assert ledger.verify().ok

    # MLflow on PostgreSQL holds both versions, registered through the server; the alias follows the ledger.
    client = MlflowClient(tracking_uri=mlflow_server)
    assert sorted(v.version for v in client.search_model_versions(f"name = '{M}'")) == ["1", "2"]
    assert client.get_model_version_by_alias(M, "production").version == "1"

    # The auditor: a third clone, the read-only role, a machine of its own.
    auditor = tmp_path / "auditor"
    git(tmp_path, "clone", "-q", str(bare), str(auditor), env=isolated_env)
    auditor_env = {**isolated_env, "GOVERN_LEDGER": auditor_url, "GOVERN_CACHE_DIR": str(tmp_path / "auditor-cache")}
    now = format_timestamp(utc_now())
    answers = {
        who: json.loads(
            govern(
                cwd, env, "audit", "production", "--app", "scoring", "--env", "production", "--at", now, "--json"
            ).stdout
        )
        for who, (cwd, env) in {**machines, "auditor": (auditor, auditor_env)}.items()
    }
    assert answers["alice"] == answers["bob"] == answers["auditor"]
    assert answers["auditor"]["version"] == "1" and answers["auditor"]["model"] == M
    report = govern(auditor, auditor_env, "audit", "report", M, "1", "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0
    html = (tmp_path / "report.html").read_text()
    assert trainings[0].git_commit in html
    verify = json.loads(govern(auditor, auditor_env, "audit", "verify", "--json").stdout)
    assert verify["ok"] is True and verify["count"] == len(ledger.read())
    refused = govern(auditor, auditor_env, "promote", M, "2", "--to", "staging", "--reason", "x", check=False)
    assert refused.returncode != 0 and "refused the write" in refused.stderr
    ledger.close()
