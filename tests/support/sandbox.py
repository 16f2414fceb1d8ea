"""What the sandbox tests share: the job user and bubblewrap they need, and a served version with any entry point."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
from pathlib import Path

import pytest
from conftest import commit_all, git

JOB_USER = "govern-job"


def require_sandbox(user: bool = False) -> None:
    """Skip loudly where bubblewrap (or the job user) is missing; fail where CI said they must be there."""
    missing = []
    if shutil.which("bwrap") is None:
        missing.append("bubblewrap (apt-get install bubblewrap)")
    if user:
        try:
            pwd.getpwnam(JOB_USER)
        except KeyError:
            missing.append(f"the OS user {JOB_USER} (useradd --system --no-create-home {JOB_USER})")
        if os.geteuid() != 0:
            missing.append(f"root, to run jobs as {JOB_USER}")
    if not missing:
        return
    message = f"THE JOB SANDBOX WAS NOT CHECKED: missing {'; '.join(missing)}; .ci/run provides them"
    if os.environ.get("REQUIRE_SANDBOX") == "1":
        pytest.fail(message)
    pytest.skip(message)


def governed_project(root: Path, settings: str = "") -> Path:
    """A git repository governed with a DuckDB ledger and an unreachable MLflow, committed."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "govern.toml").write_text(f'[mlflow]\ntracking_uri = "sqlite:////nonexistent/mlflow.db"\n{settings}')
    commit_all(root, "governed")
    return root


def served_version(
    project: Path, infer: str, model: str = "churn", version: str = "1", ledger: Path | None = None
) -> Path:
    """Version `version` of `model`: the file models/<model>-<version>.bin, trained (as facts, no DVC) with
    `infer` as its inference command template. Returns the model file."""
    from govern.envelope import PendingEvent, utc_now
    from govern.events import ModelRegistered, TrainingCompleted
    from govern.storage.duckdb_log import Ledger

    model_file = project / "models" / f"{model}-{version}.bin"
    model_file.parent.mkdir(exist_ok=True)
    model_file.write_text(f"weights of {model} {version}\n")
    path = str(model_file.relative_to(project))
    sha256 = hashlib.sha256(model_file.read_bytes()).hexdigest()
    training = TrainingCompleted(
        git={"commit": "c0ffee", "branch": "main", "dirty_paths": []},
        dvc_lock_sha256="0" * 64,
        targets=[],
        stages=[],
        params={},
        metrics={},
        outputs=[],
        datasets=[],
        models=[{"name": model, "path": path, "sha256": sha256, "meta": {"infer": infer}}],
        environment={},
        duration_s=1.0,
        run_cache_hit=False,
    )
    store = Ledger(ledger or project / "audit" / "ledger.duckdb")
    trainer = "Tess Trainer <tess@example.com>"
    [trained] = store.append([PendingEvent(training, actor=trainer, occurred_at=utc_now(), git_commit="c0ffee")])
    registered = ModelRegistered(model, version, path, None, sha256, trained.event_id, "run", "sqlite:///x", "m:/1")
    store.append([PendingEvent(registered, actor=trainer, occurred_at=utc_now(), git_commit="c0ffee")])
    return model_file
