"""`govern repro` through a server (issue 25): the pipeline runs on the scientist's machine, the server records its
facts under the token's principal, so who trained is authenticated for the four-eyes rule.

The server's project and a scientist's clone share a bare repository, as a team's machines do; the server has its
own ledger, MLflow store and DVC cache, the clone none of them (it has no ledger credentials at all).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import commit_all, git, ok, start_server
from support.server import call

from govern import attestations
from govern.storage.duckdb_log import Ledger

pytestmark = pytest.mark.slow
M = "breast-cancer-classifier"


@pytest.fixture
def team(reproduced_demo: Path, isolated_env: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    server_project = reproduced_demo
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(server_project), str(bare))
    git(server_project, "remote", "add", "origin", str(bare))  # the server fetches what people push
    tokens = {}
    for name, role in (("sci", "scientist"), ("appr", "approver")):
        ok(server_project, "principals", "add", name, "--role", role)
        tokens[name] = json.loads(ok(server_project, "tokens", "create", name, "--json"))["token"]
    process, base = start_server(server_project, isolated_env, tmp_path / "server.log")
    laptop = tmp_path / "laptop"
    git(tmp_path, "clone", "-q", str(bare), str(laptop))
    env = {**isolated_env, "GOVERN_URL": base, "GOVERN_TOKEN": tokens["sci"]}
    yield {"server": server_project, "base": base, "tokens": tokens, "laptop": laptop, "env": env, "log": tmp_path}
    process.terminate()
    process.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def govern(where: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "govern", *args], cwd=where, env=env, capture_output=True, text=True, timeout=600
    )


def test_a_training_on_a_laptop_is_recorded_by_the_server_under_the_scientists_token(team: dict) -> None:
    laptop, env = team["laptop"], team["env"]
    params = laptop / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0", "C: 0.5"))
    commit = commit_all(laptop, "C=0.5")
    unpushed = govern(laptop, env, "repro")
    assert unpushed.returncode == 1 and "push it first" in unpushed.stderr, unpushed.stderr
    ledger = Ledger(team["server"] / "audit" / "ledger.duckdb")
    assert not [e for e in ledger.read(types=["training.completed"]) if e.git_commit == commit]

    git(laptop, "push", "-q", "origin", "main")
    done = govern(laptop, env, "repro", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == "recorded" and answer["training_seq"] is not None
    [training] = [e for e in ledger.read(types=["training.completed"]) if e.git_commit == commit]
    token_id = team["tokens"]["sci"].split("_")[1]
    assert training.actor == f"sci (token {token_id})"
    assert json.loads(training.authn)["by"] == "server" and training.signature
    assert training.actor_shown == f"sci (authenticated, token {token_id})"
    [registered] = [e for e in ledger.read(types=["model.registered"]) if e.git_commit == commit]
    assert registered.payload["training_event_id"] == training.event_id, "the server mirrored it into MLflow"
    report = attestations.check(ledger.query_stored)
    assert report.ok and report.authenticated >= 2, report.problems
    assert not (laptop / "audit" / "ledger.duckdb").exists(), "the laptop holds no ledger"

    again = govern(laptop, env, "repro")
    assert again.returncode == 0 and "Nothing changed" in again.stdout, again.stdout + again.stderr

    # the trainer is authenticated: another approver may approve, the scientist never could
    version = registered.payload["version"]
    ask = {"model": M, "version": version, "to_stage": "staging", "reason": "C=0.5 is better"}
    status, requested, _ = call(team["base"], "POST", "/api/v1/promotion-requests", team["tokens"]["sci"], ask)
    assert status == 201, requested
    number = requested["request"]
    status, approved, _ = call(team["base"], "POST", f"/api/v1/promotion-requests/{number}/approval",
                               team["tokens"]["appr"], {"reason": "reviewed"})  # fmt: skip
    assert status == 201, approved


def test_an_upload_whose_model_file_is_not_what_the_report_says_records_nothing(team: dict, tmp_path: Path) -> None:
    laptop = team["laptop"]
    ledger = Ledger(team["server"] / "audit" / "ledger.duckdb")
    before = ledger.head()
    from govern.api import repro as repro_api
    from govern.remote import Server

    report = tmp_path / "report.json"
    known = tmp_path / "known.json"
    known.write_text('{"snapshots": []}')
    params = laptop / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0", "C: 0.25"))
    commit_all(laptop, "C=0.25")
    git(laptop, "push", "-q", "origin", "main")
    repro_api.report_facts(repro_api.reporting(laptop), [], report, known, pull=False)
    (laptop / "models" / "model.pkl").chmod(0o644)
    (laptop / "models" / "model.pkl").write_bytes(b"not the model that was trained")
    server = Server(team["base"], team["tokens"]["sci"])
    from govern.errors import InvalidInput

    with pytest.raises(InvalidInput, match="does not match the md5 and sha256"):
        server.upload(
            "/trainings/reported", {"report": report.read_text()}, {"models/model.pkl": laptop / "models/model.pkl"}
        )
    with pytest.raises(InvalidInput, match="not a model file the training names"):
        server.upload(
            "/trainings/reported", {"report": report.read_text()}, {"../../etc/passwd": laptop / "params.yaml"}
        )
    assert ledger.head() == before
    status, problem, _ = call(team["base"], "GET", "/api/v1/trainings/known-snapshots", team["tokens"]["appr"])
    assert status == 403, problem
