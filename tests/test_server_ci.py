"""`govern ci verify --server URL`: a CI runner without a ledger records its verdict in the team's server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import commit_all, git, run_cli, tiny_pipeline, wait_for
from support.server import call

from govern import access
from govern.storage.duckdb_log import Ledger

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path, isolated_env: dict[str, str], mlflow_store_template: Path) -> Iterator[dict]:
    """A governed project with one recorded training, served by `govern serve`; a verifier principal's token."""
    project = tiny_pipeline(tmp_path / "project")
    shutil.copy2(mlflow_store_template, project / "mlflow.db")
    commit_all(project, "tiny pipeline")
    repro = subprocess.run([sys.executable, "-m", "govern", "repro", "--commit"], cwd=project, env=isolated_env,
                           capture_output=True, text=True)  # fmt: skip
    assert repro.returncode == 0, repro.stderr
    assert run_cli("principals", "add", "ci-bot", "--role", "verifier", cwd=project).exit_code == 0
    token = json.loads(run_cli("tokens", "create", "ci-bot", "--json", cwd=project).stdout)["token"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "govern", "serve", "--port", str(port)], cwd=project,
                               env=isolated_env, stderr=log)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        try:
            return call(base, "GET", "/health")[0] == 200
        except OSError:
            return False

    wait_for(healthy, "govern serve to answer /health", timeout=60)
    runner = tmp_path / "runner"
    git(tmp_path, "clone", "-q", str(project), str(runner))
    yield {"project": project, "runner": runner, "url": base, "token": token, "env": isolated_env}
    process.terminate()
    process.wait(timeout=30)


def verify_on_runner(served: dict, token: str) -> subprocess.CompletedProcess:
    env = {**served["env"], "GOVERN_TOKEN": token}
    command = [sys.executable, "-m", "govern", "ci", "verify", "--server", served["url"], "--json"]
    return subprocess.run(command, cwd=served["runner"], env=env, capture_output=True, text=True, timeout=600)


def test_a_runner_records_its_verdict_in_the_server_under_its_principal(served: dict) -> None:
    ledger = Ledger(served["project"] / "audit" / "ledger.duckdb")
    [training] = ledger.read(types=["training.completed"])

    result = verify_on_runner(served, served["token"])

    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "verified" and verdict["training_seq"] == training.seq
    [recorded] = ledger.read(types=["reproduction.verified"])
    assert recorded.seq == verdict["event_seq"] and recorded.payload["commit"] == git(
        served["runner"], "rev-parse", "HEAD"
    )
    assert recorded.actor == f"ci-bot (token {access.parse_bearer(served['token'])[0]})"
    assert recorded.payload["training_event_id"] == training.event_id, "the server links the training itself"
    assert not (served["runner"] / "audit" / "ledger.duckdb").exists(), "the runner keeps no ledger"
    assert ledger.verify().ok


def test_a_runner_with_a_bad_token_cannot_record_and_says_so(served: dict) -> None:
    ledger = Ledger(served["project"] / "audit" / "ledger.duckdb")
    before = ledger.head()
    token = served["token"][:-1] + ("A" if served["token"][-1] != "A" else "B")

    result = verify_on_runner(served, token)

    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: A valid bearer token is required: `govern tokens create NAME` issues one"
    )
    assert ledger.head() == before


def test_the_server_hook_posts_each_pushed_commit_to_the_server(served: dict, tmp_path: Path) -> None:
    bare = tmp_path / "team.git"
    git(tmp_path, "clone", "-q", "--bare", str(served["project"]), str(bare))
    git(served["project"], "remote", "add", "origin", str(bare))  # the server fetches what is pushed, to check it
    env = {**served["env"], "GOVERN_TOKEN": served["token"]}
    command = [
        sys.executable,
        "-m",
        "govern",
        "hooks",
        "install-server",
        "--bare",
        str(bare),
        "--server",
        served["url"],
    ]
    installed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    token_file = bare / "govern-hook" / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600 and served["url"] in installed.stdout
    (served["runner"] / "NOTES.md").write_text("a commit that leaves the pipeline as it is\n")
    pushed = commit_all(served["runner"], "notes")
    git(served["runner"], "push", "-q", str(bare), "HEAD:refs/heads/main", env=served["env"])

    ledger = Ledger(served["project"] / "audit" / "ledger.duckdb")
    [verdict] = wait_for(
        lambda: [e for e in ledger.read(types=["reproduction.verified"]) if e.git_commit == pushed],
        "the hook's verdict in the server's ledger",
        timeout=300,
    )
    assert verdict.actor == f"ci-bot (token {access.parse_bearer(served['token'])[0]})"
    assert verdict.payload["ci"]["system"] == "server-hook"


def lock_of(project: Path, commit: str) -> tuple[str, list[dict]]:
    """The sha256 of a commit's dvc.lock as `govern ci verify` computes it, and its outputs as a verdict lists them."""
    import hashlib

    import yaml

    text = subprocess.run(["git", "show", f"{commit}:dvc.lock"], cwd=project, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip
    outs = [out for stage in yaml.safe_load(text)["stages"].values() for out in stage.get("outs", [])]
    return hashlib.sha256(f"dvc.lock\n{text}".encode()).hexdigest(), [
        {"path": o["path"], "md5": o["md5"]} for o in outs
    ]


def test_a_verdict_is_recorded_only_about_a_commit_the_server_fetches_and_the_lock_it_has(served: dict) -> None:
    project, url, token = served["project"], served["url"], served["token"]
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    trained = git(project, "rev-parse", "HEAD")
    sha, outputs = lock_of(project, trained)
    with (project / "dvc.lock").open("a") as lock:
        lock.write("# a later lock of the same pipeline\n")
    later = commit_all(project, "a later lock")
    later_sha, _ = lock_of(project, later)
    assert later_sha != sha
    honest = {
        "commit": trained, "match": "exact", "dvc_lock_sha256": sha, "outputs": outputs, "differing_outputs": [],
        "metrics": {}, "metric_deltas": {}, "duration_s": 3.0, "ci": {"system": "test"}, "environment": {},
    }  # fmt: skip
    before = ledger.head()

    def upload(payload: dict, kind: str = "reproduction.verified", who: str = token) -> tuple[int, dict]:
        status, answer, _ = call(url, "POST", "/api/v1/reproductions", who, {"type": kind, "payload": payload})
        return status, answer

    refused = [
        ({**honest, "dvc_lock_sha256": "0" * 64}, f"dvc_lock_sha256 {'0' * 64} is not the sha256 of the dvc.lock "
         f"at commit {trained[:12]} ({sha})"),
        ({**honest, "dvc_lock_sha256": later_sha}, f"is not the sha256 of the dvc.lock at commit {trained[:12]}"),
        ({**honest, "commit": "f" * 40}, "is not a commit of the server's repository, nor of its remotes"),
        ({**honest, "outputs": [{**outputs[0], "md5": "0" * 32}]},
         f"{outputs[0]['path']} has md5 {'0' * 32}, the lock has {outputs[0]['md5']}, and is not listed as differing"),
        ({**honest, "outputs": outputs + [{"path": "models/extra.bin", "md5": "1" * 32}]},
         "models/extra.bin has md5 " + "1" * 32 + ", the lock has no such output"),
    ]  # fmt: skip
    for payload, words in refused:
        status, problem = upload(payload)
        assert status == 422 and words in problem["detail"], (status, problem, words)
        assert problem["type"] == "urn:govern:problem:unverifiable-verdict"
    diverged = {**honest, "match": "diverged", "dvc_lock_sha256": "0" * 64, "outputs": [], "failed_stage": "make"}
    status, problem = upload(diverged, "reproduction.diverged")
    assert status == 422 and "is not the sha256 of the dvc.lock" in problem["detail"], "a forged failure too"
    assert ledger.head() == before, "nothing recorded for a verdict the server could not confirm"

    status, answer = upload(honest)
    assert status == 201, answer
    [recorded] = ledger.read(types=["reproduction.verified"])
    assert recorded.payload["dvc_lock_sha256"] == sha and recorded.git_commit == trained
    [training] = ledger.read(types=["training.completed"])
    assert recorded.payload["training_event_id"] == training.event_id
