"""A served project for the server, web and remote-CLI tests: the project, its principals and tokens, HTTP calls.

`make_project` builds the project `govern serve` runs on in tests/test_server.py and the tests that reuse it; the
`project` and `server` fixtures (tests/conftest.py) are it, per test.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import REPO, as_server, commit_all, git, run_cli, token_for, trained_version, via_server, wait_for

ROLE_OF = {
    "sci": "scientist",
    "appr": "approver",
    "dep": "deployer",
    "ci": "verifier",
    "con": "consumer",
    "aud": "auditor",
    "adm": "admin",
}


def call(base: str, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            raw = answer.read()
            if "json" not in answer.headers.get("content-type", "json"):
                return answer.status, raw.decode(), dict(answer.headers)
            return answer.status, json.loads(raw or b"null"), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), dict(error.headers)


TRAINER = "Tess Trainer <tess@example.com>"


def send(base: str, path: str, token: str, body: bytes, kind: str, method: str = "POST") -> tuple[int, bytes, dict]:
    request = urllib.request.Request(base + path, data=body or None, method=method)
    request.add_header("Content-Type", kind)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def make_project(root: Path) -> Path:
    """A governed project whose `dev` environment needs no stage, with versions 1 to 3 of `churn` trained through
    the server by the principal tess, and a principal for every role (a consumer of `scoring` only). MLflow is
    unreachable: the aliases of promotions are mirrored later (in the background, the default)."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "govern.toml").write_text(
        '[deploy]\nenvironments = ["dev"]\nrequire_stage = {}\n'
        '[registry]\ngto_tags = false\n[mlflow]\ntracking_uri = "sqlite:////nonexistent/mlflow.db"\n'
        '[jobs]\npython = "bin/slow-python"\n'
        f'[server]\nsigning_key = "{root.parent / "keys" / "server.key"}"\n'  # whoever's HOME starts it
    )
    # Training jobs here stay running until cancelled (their interpreter only sleeps), so every role's cancel and
    # every read of a job can be tried; jobs that really train are in tests/test_server_jobs.py.
    (root / "bin").mkdir()
    (root / "bin" / "slow-python").write_text("#!/bin/sh\nexec sleep 120\n")
    (root / "bin" / "slow-python").chmod(0o755)
    (root / "audit" / "queries").mkdir(parents=True)
    shutil.copy(REPO / "audit" / "queries" / "promotions_of_model.sql", root / "audit" / "queries")
    commit_all(root, "start")
    verdict_commit(root)
    (root / "models").mkdir()
    with as_server(root):
        for version in ("1", "2", "3"):
            (root / "models" / f"churn-{version}.bin").write_text(f"weights of version {version}\n")
            trained_version(root / "audit" / "ledger.duckdb", "churn", version, via_server("tess"),
                            {"validation.f1": 0.9}, model_file=Path("models") / f"churn-{version}.bin")  # fmt: skip
    for name, role in ROLE_OF.items():
        apps = ["--app", "scoring"] if role == "consumer" else []
        assert run_cli("principals", "add", name, "--role", role, *apps, cwd=root).exit_code == 0
    assert run_cli("principals", "add", "spare", "--role", "auditor", cwd=root).exit_code == 0
    return root


VERDICT_BRANCH = "verdicts"
VERDICT_LOCK = """schema: '2.0'
stages:
  train:
    cmd: python train.py
    outs:
    - path: models/churn.bin
      hash: md5
      md5: eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee
      size: 10
"""


def verdict_commit(root: Path) -> None:
    """A commit (on a branch of its own, so that the worktree stays without DVC) whose dvc.lock says what VERDICT
    says: the server checks an uploaded verdict against the commit it names."""
    git(root, "checkout", "-q", "-b", VERDICT_BRANCH)
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text("")
    (root / "dvc.yaml").write_text("stages:\n  train:\n    cmd: python train.py\n    outs:\n    - models/churn.bin\n")
    (root / "dvc.lock").write_text(VERDICT_LOCK)
    commit_all(root, "the pipeline whose lock the verifier's verdict is about")
    git(root, "checkout", "-q", "main")


def verdict_for(project: Path, **changes: Any) -> dict[str, Any]:
    """VERDICT about the project's verdict commit: its id and the sha256 of its dvc.lock as `govern ci verify`
    computes it (the lock file's path, a newline, its bytes)."""
    import hashlib

    commit = git(project, "rev-parse", VERDICT_BRANCH)
    lock = hashlib.sha256(f"dvc.lock\n{VERDICT_LOCK}".encode()).hexdigest()
    return {**VERDICT, "commit": commit, "dvc_lock_sha256": lock, **changes}


def tokens_for(project: Path, *names: str) -> dict[str, str]:
    """A token for each principal named: in team mode (the server's key is in the ledger) an enrollment code the
    operator issues and the principal redeems (conftest.token_for)."""
    return {name: token_for(project, name) for name in names}


VERDICT = {
    "commit": "c" * 40,
    "match": "exact",
    "dvc_lock_sha256": "d" * 64,
    "outputs": [{"path": "models/churn.bin", "md5": "e" * 32, "match": "exact"}],
    "differing_outputs": [],
    "metrics": {"validation.f1": 0.9},
    "metric_deltas": {},
    "duration_s": 12.5,
    "ci": {"system": "test"},
    "environment": {"host": "runner-1"},
}


@contextmanager
def served(project: Path, isolated_env: dict[str, str]) -> Iterator[str]:
    """A real `govern serve` in `project` (aliases mirrored in the background), once it answers /health: its base
    URL. Stopped when the block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (project.parent / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "govern", "serve", "--port", str(port)],
        cwd=project,
        env={**isolated_env, "GOVERN_REGISTRY_MIRROR": "background"},
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError((project.parent / "server.log").read_text())
        try:
            return call(base, "GET", "/health")[0] == 200
        except OSError:
            return False

    try:
        wait_for(healthy, "govern serve to answer /health", timeout=60)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
