"""README "Team setup", run exactly as written, on the machine's PostgreSQL.

PostgreSQL holds two databases (the govern ledger, MLflow's tracking store) and the roles: govern's writer (INSERT
and SELECT only) belongs to `govern serve` alone, the auditor role reads; a real `mlflow server` runs on PostgreSQL
with proxied artifacts. People and CI hold tokens: scientists train on their machines and the server records their
trainings under their tokens, an approver and a CD system act through it at the same time, the server hook posts
its verdicts with a verifier's token, every event they cause is signed by the server; the operator's break-glass
write with the writer role is recorded as self-asserted; an auditor, with the read-only role or a token, gets the
same answers and a chain whose every attestation holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg
import pytest
from conftest import commit_all, database_url, free_port, git, make_demo, wait_for
from support.tracking import mlflow_client

from govern.envelope import format_timestamp, utc_now
from govern.storage.postgres_log import PostgresLedger, grant_statements

pytestmark = pytest.mark.slow
M = "breast-cancer-classifier"


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


def test_the_team_setup_recipe_people_and_ci_hold_tokens_the_server_holds_the_writer_role(
    tmp_path: Path, team: dict[str, str], mlflow_server: str, isolated_env: dict[str, str], mlflow_store_template: Path
) -> None:
    owner_url = database_url(team["govern_db"])
    writer_url = database_url(team["govern_db"], team["writer"])
    auditor_url = database_url(team["govern_db"], team["auditor"])
    port = free_port()
    server_url = f"http://127.0.0.1:{port}"

    # 1-2. The operator: govern's schema created as the database owner, the printed GRANTs run as printed (trust
    # authentication here, so without the passwords).
    origin = make_demo(tmp_path / "origin", mlflow_store_template, isolated_env)
    (origin / "mlflow.db").unlink()
    init = govern(origin, isolated_env, "init", "--ledger", owner_url)
    assert "GRANT INSERT ON govern.events TO govern_writer;" in init.stdout
    with psycopg.connect(owner_url, autocommit=True) as con:
        for statement in grant_statements(team["writer"], team["auditor"]):
            con.execute(statement.replace(" PASSWORD '...'", ""))

    # 4. The project names the team's ledger (the server's writer role), MLflow server and govern server.
    pyproject = origin / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text()
        .replace('ledger = "audit/ledger.duckdb"', f'ledger = "{writer_url}"')
        .replace('experiment = "govern-demo"', f'experiment = "govern-demo"\ntracking_uri = "{mlflow_server}"')
        + f'\n[tool.govern.server]\nurl = "{server_url}"\n'
    )
    commit_all(origin, "govern: the team's ledger, MLflow server and govern server", env=isolated_env)
    bare = tmp_path / "server.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare), env=isolated_env)
    git(origin, "remote", "add", "origin", str(bare), env=isolated_env)

    # 5. The server host: its signing key, pinned in a reviewed commit; the approver and the first admin granted
    # before any admin exists (the bootstrap); enrollment codes for them.
    key = govern(origin, isolated_env, "serve", "--init-key")
    fingerprint = key.stdout.split()[2]
    pyproject.write_text(pyproject.read_text() + f'trusted_keys = ["{fingerprint}"]\n')
    commit_all(origin, "govern: pin the server's signing key", env=isolated_env)
    git(origin, "push", "-q", "origin", "main", env=isolated_env)
    govern(origin, isolated_env, "principals", "add", "pat", "--role", "approver", "--reason", "risk committee")
    govern(origin, isolated_env, "principals", "add", "alice", "--role", "admin", "--reason", "platform owner")
    codes = {
        name: json.loads(govern(origin, isolated_env, "tokens", "create", name, "--json").stdout)["code"]
        for name in ("alice", "pat")
    }
    server_log = (tmp_path / "server.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "govern", "serve", "--port", str(port)], cwd=origin, env=isolated_env,
        stdout=server_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for(lambda: _answers(f"{server_url}/health"), "govern serve to answer", timeout=120)
    try:
        remote = {**isolated_env, "GOVERN_URL": server_url}
        tokens = {
            name: json.loads(govern(tmp_path, remote, "tokens", "redeem", code, "--json").stdout)["token"]
            for name, code in codes.items()
        }

        # 6. Alice, the admin, through the server: scientists, the CD system, the CI runner, an auditor; each
        # gets an enrollment code and redeems it for a token of their own.
        as_alice = {**remote, "GOVERN_TOKEN": tokens["alice"]}
        for name, role in (("bob", "scientist"), ("carol", "scientist"), ("cd", "deployer"), ("ci", "verifier"),
                           ("ann", "auditor")):  # fmt: skip
            govern(tmp_path, as_alice, "principals", "add", name, "--role", role)
            code = json.loads(govern(tmp_path, as_alice, "tokens", "create", name, "--json").stdout)["code"]
            tokens[name] = json.loads(govern(tmp_path, remote, "tokens", "redeem", code, "--json").stdout)["token"]

        # 7. CI through the server hook, which posts its verdicts with the verifier's token.
        hook = govern(tmp_path, {**isolated_env, "GOVERN_TOKEN": tokens["ci"]}, "hooks", "install-server",
                      "--bare", str(bare), "--server", server_url)  # fmt: skip
        assert server_url in hook.stdout

        # 8. People hold tokens, not database roles: GOVERN_TOKEN in a clone of the project is all they set.
        machines = {}
        for name in ("bob", "carol", "pat", "cd"):
            clone = tmp_path / name
            git(tmp_path, "clone", "-q", str(bare), str(clone), env=isolated_env)
            machines[name] = (clone, {**isolated_env, "GOVERN_TOKEN": tokens[name]})
        (bob, bob_env), (carol, carol_env) = machines["bob"], machines["carol"]

        # Bob trains version 1 on his machine; the server records it under his token, and he pushes the lock.
        govern(bob, bob_env, "repro", "--commit")
        git(bob, "push", "-q", "origin", "main", env=bob_env)

        # At the same time: Carol trains version 2 while the approver and the CD system ship version 1.
        git(carol, "pull", "-q", "origin", "main", env=carol_env)
        params = carol / "params.yaml"
        params.write_text(params.read_text().replace("C: 1.0", "C: 0.5"))
        commit_all(carol, "C=0.5", env=carol_env)
        git(carol, "push", "-q", "origin", "main", env=carol_env)
        carol_training = start(carol, carol_env, "repro", "--commit")
        pat, pat_env = machines["pat"]
        govern(pat, pat_env, "promote", M, "1", "--to", "staging", "--reason", "validation passed")
        refused = govern(pat, pat_env, "promote", M, "1", "--to", "production", "--reason", "x", check=False)
        assert refused.returncode == 1 and "need an approved request" in refused.stderr
        asked = govern(bob, bob_env, "request-promotion", M, "1", "--to", "production", "--reason", "signed off")
        number = asked.stdout.split()[4]
        own = govern(bob, bob_env, "approve", number, "--reason", "mine", check=False)
        assert own.returncode != 0, "a scientist approves nothing, least of all their own"
        govern(pat, pat_env, "approve", number, "--reason", "evidence reviewed")
        cd, cd_env = machines["cd"]
        govern(cd, cd_env, "deploy", M, "1", "--app", "scoring", "--env", "production")
        finish(carol_training)
        git(carol, "pull", "-q", "--rebase", "origin", "main", env=carol_env)
        git(carol, "push", "-q", "origin", "main", env=carol_env)

        ledger = PostgresLedger(owner_url, cache_dir=tmp_path / "check-cache")

        def verified() -> list:
            return ledger.read(types=["reproduction.verified", "reproduction.diverged"])

        carol_commit = git(carol, "rev-parse", "HEAD")
        judged = wait_for(
            lambda: carol_commit in {e.git_commit for e in verified()} and verified(),
            "carol's pushed lock verified by the server hook",
            timeout=300,
        )
        assert [e.type for e in judged if e.git_commit == carol_commit] == ["reproduction.verified"]
        assert all(e.actor.startswith("ci (token ") and json.loads(e.authn)["by"] == "server" for e in judged)
        trainings = ledger.read(types=["training.completed"])
        assert sorted(t.actor.split()[0] for t in trainings) == ["bob", "carol"]
        for event in ledger.read(types=["training.completed", "model.promoted", "model.promotion_approved",
                                        "deployment.started"]):  # fmt: skip
            assert json.loads(event.authn)["by"] == "server" and event.signature, event.type

        # MLflow on PostgreSQL holds both versions, registered by the server; the alias follows the ledger.
        client = mlflow_client(mlflow_server)
        assert sorted(v.version for v in client.search_model_versions(f"name = '{M}'")) == ["1", "2"]
        wait_for(lambda: client.get_model_version_by_alias(M, "production").version == "1", "the alias", timeout=60)

        # The operator's break-glass write with the writer role is recorded, and shown, as self-asserted.
        govern(origin, isolated_env, "deploy", M, "1", "--app", "triage", "--env", "production")
        [glass] = ledger.read(types=["deployment.started"])[-1:]
        assert json.loads(glass.authn) == {"by": "self", "via": "git config"}

        # The auditor: a clone of their own, the read-only database role (or their token, through the server).
        auditor = tmp_path / "auditor"
        git(tmp_path, "clone", "-q", str(bare), str(auditor), env=isolated_env)
        auditor_env = {
            **isolated_env, "GOVERN_LEDGER": auditor_url, "GOVERN_CACHE_DIR": str(tmp_path / "auditor-cache"),
        }  # fmt: skip
        now = format_timestamp(utc_now())
        question = ("audit", "production", "--app", "scoring", "--env", "production", "--at", now, "--json")
        answers = {
            "bob": json.loads(govern(bob, bob_env, *question).stdout),
            "ann": json.loads(govern(auditor, {**isolated_env, "GOVERN_TOKEN": tokens["ann"]}, *question).stdout),
            "auditor role": json.loads(govern(auditor, auditor_env, *question).stdout),
        }
        assert answers["bob"] == answers["ann"] == answers["auditor role"]
        assert answers["auditor role"]["version"] == "1" and answers["auditor role"]["model"] == M
        report = govern(auditor, auditor_env, "audit", "report", M, "1", "-o", str(tmp_path / "report.html"))
        assert report.returncode == 0
        html = (tmp_path / "report.html").read_text()
        assert "bob (authenticated, token" in html and "pat (authenticated, token" in html
        verify = json.loads(govern(auditor, auditor_env, "audit", "verify", "--json").stdout)
        assert verify["ok"] is True and verify["count"] == len(ledger.read())
        assert verify["attestations"]["problem_count"] == 0 and verify["attestations"]["authenticated"] >= 10
        assert [k["fingerprint"] for k in verify["attestations"]["keys"]] == [fingerprint]
        write = govern(auditor, auditor_env, "deploy", M, "1", "--app", "x", "--env", "production", check=False)
        assert write.returncode != 0 and "refused the write" in write.stderr
        ledger.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        server_log.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text(), (tmp_path / "server.log").read_text()[-5000:]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False
