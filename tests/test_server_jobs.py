"""The controller runs the project's own code: predictions for a consumer's app (and training jobs)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import commit_all, git, ok, run_cli, start_server, tiny_pipeline, wait_for
from support.server import call, send

from govern import access
from govern.storage.duckdb_log import Ledger

pytestmark = pytest.mark.slow
M = "breast-cancer-classifier"


@pytest.fixture
def serving(reproduced_demo: Path, isolated_env: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    """Version 1 serves `scoring` in production; a consumer of scoring and one of triage, and an approver, with
    tokens."""
    ok(reproduced_demo, "promote", M, "1", "--to", "staging", "--reason", "candidate")
    ok(reproduced_demo, "promote", M, "1", "--to", "production", "--reason", "approved")
    ok(reproduced_demo, "deploy", M, "1", "--app", "scoring")
    tokens = {}
    for name, app in (("scoring-app", "scoring"), ("triage-app", "triage")):
        ok(reproduced_demo, "principals", "add", name, "--role", "consumer", "--app", app)
        tokens[name] = json.loads(ok(reproduced_demo, "tokens", "create", name, "--json"))["token"]
    ok(reproduced_demo, "principals", "add", "appr", "--role", "approver")
    tokens["appr"] = json.loads(ok(reproduced_demo, "tokens", "create", "appr", "--json"))["token"]
    process, base = start_server(reproduced_demo, isolated_env, tmp_path / "server.log")
    yield {"project": reproduced_demo, "base": base, "tokens": tokens, "log": tmp_path / "server.log"}
    process.terminate()
    process.wait(timeout=30)


def some_rows(project: Path, n: int) -> bytes:
    lines = (project / "data" / "raw" / "breast_cancer.csv").read_text().splitlines()
    return ("\n".join(lines[: n + 1]) + "\n").encode()


def test_a_consumer_gets_predictions_of_the_serving_version_recorded_under_its_name(serving: dict) -> None:
    base, token = serving["base"], serving["tokens"]["scoring-app"]
    ledger = Ledger(serving["project"] / "audit" / "ledger.duckdb")
    body = some_rows(serving["project"], 20)

    status, answer, headers = send(base, "/api/v1/apps/scoring/predict", token, body, "text/csv")

    assert status == 200 and headers["content-type"].startswith("text/csv"), answer
    assert headers["x-govern-model"] == M and headers["x-govern-version"] == "1"
    predictions = list(csv.DictReader(io.StringIO(answer.decode())))
    assert len(predictions) == 20
    [recorded] = ledger.read(types=["inference.recorded"])
    assert recorded.seq == int(headers["x-govern-event-seq"]) and recorded.payload["rows"] == 20
    assert recorded.actor == f"scoring-app (token {access.parse_bearer(token)[0]})"
    assert recorded.payload["app"] == "scoring" and recorded.payload["input_path"].startswith("upload (text/csv")

    rows = [dict(row) for row in csv.DictReader(io.StringIO(body.decode()))][:3]
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", token, json.dumps({"rows": rows}).encode(),
                             "application/json")  # fmt: skip
    answered = json.loads(answer)
    assert status == 200 and answered["version"] == "1" and len(answered["predictions"]) == 3
    assert answered["predictions"][0].keys() == predictions[0].keys()


def test_predictions_are_refused_for_other_apps_bad_rows_and_deprecated_versions(serving: dict) -> None:
    base, tokens, project = serving["base"], serving["tokens"], serving["project"]
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    body = some_rows(project, 5)
    before = ledger.head()
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["triage-app"], body, "text/csv")
    assert status == 403 and "a consumer sees its own apps only" in json.loads(answer)["detail"]
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["scoring-app"], b"a,b\n1,2\n", "text/csv")
    detail = json.loads(answer)["detail"]
    found = re.fullmatch(
        r"The model could not score these rows \(error id ([0-9a-f]{12})\): give this id to your administrator", detail
    )
    assert status == 422 and found, detail  # nothing the model said: its stderr may hold anything
    [logged] = [line for line in serving["log"].read_text().splitlines() if f"error id {found.group(1)}" in line]
    assert "predictions for scoring/production failed" in logged and "The inference command failed (exit" in logged
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["scoring-app"], b'{"rows": []}',
                             "application/json")  # fmt: skip
    assert status == 400 and "at least one row" in json.loads(answer)["detail"]
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["scoring-app"], body, "text/plain")
    assert status == 400 and "text/csv or application/json" in json.loads(answer)["detail"]
    assert ledger.head() == before, "nothing recorded for refused or failed predictions"

    # the server has signed in: team mode, where a deprecation counts from an authenticated approver only
    assert run_cli("deprecate", M, "1", "--reason", "leak found", "--force", cwd=project).exit_code == 1
    deprecation = {"reason": "leak found", "force": True}
    assert call(base, "POST", f"/api/v1/models/{M}/versions/1/deprecation", tokens["appr"], deprecation)[0] == 201
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["scoring-app"], body, "text/csv")
    assert status == 409 and "is deprecated" in json.loads(answer)["detail"]


SLOW_STAGE = "import time, yaml; p = yaml.safe_load(open('params.yaml')); time.sleep(p['sleep']); " \
    "open('out.txt', 'w').write('x' * p['n'])"  # fmt: skip


@pytest.fixture
def trainable(tmp_path: Path, isolated_env: dict[str, str], mlflow_store_template: Path) -> Iterator[dict]:
    """A tiny pipeline whose stage sleeps `sleep` seconds, served with one job at a time; a scientist's token."""
    project = tiny_pipeline(tmp_path / "project", SLOW_STAGE, "n: 3\nsleep: 0\n")
    (project / "govern.toml").write_text("[jobs]\nconcurrency = 1\n")
    shutil.copy2(mlflow_store_template, project / "mlflow.db")
    commit_all(project, "tiny pipeline")
    ok(project, "principals", "add", "sci", "--role", "scientist")
    token = json.loads(ok(project, "tokens", "create", "sci", "--json"))["token"]
    state = {"project": project, "token": token, "env": isolated_env, "log": tmp_path / "server.log"}
    state["process"], state["base"] = start_server(project, isolated_env, state["log"])
    yield state
    state["process"].kill()
    state["process"].wait(timeout=30)


def commit_params(project: Path, n: int, sleep: float) -> str:
    (project / "params.yaml").write_text(f"n: {n}\nsleep: {sleep}\n")
    return commit_all(project, f"n={n}")


def get(base: str, path: str, token: str) -> Any:
    request = urllib.request.Request(base + path)
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def post(base: str, path: str, token: str, body: Any, method: str = "POST") -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    status, answer, _ = send(base, path, token, data, "application/json", method)
    return status, json.loads(answer)


def test_a_scientist_starts_a_training_at_a_commit_and_watches_it_finish(trainable: dict) -> None:
    base, token, project = trainable["base"], trainable["token"], trainable["project"]
    commit = commit_params(project, 5, 0)

    status, job = post(base, "/api/v1/trainings", token, {"commit": commit})

    assert status == 202 and job["state"] in ("queued", "running") and job["commit"] == commit
    request = urllib.request.Request(f"{base}/api/v1/trainings/{job['job_id']}/progress")
    request.add_header("Authorization", f"Bearer {token}")
    events = []
    with urllib.request.urlopen(request, timeout=300) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            if line.startswith("data: ") and events[-1] == "finished":
                final = json.loads(line.removeprefix("data: "))
                break
    assert events[-1] == "finished" and "progress" in events
    assert final["state"] == "succeeded", final["log_tail"]
    assert final["stages"] == [{"stage": "make", "status": "ran"}], final["log_tail"]
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    [training] = [t for t in ledger.read(types=["training.completed"]) if t.git_commit == commit]
    assert training.event_id == final["training_event_id"]
    assert training.actor == f"sci (token {access.parse_bearer(token)[0]})", "the requester trained it"
    assert ledger.verify().ok


def test_a_job_queued_when_the_server_is_killed_runs_after_restart_and_a_cancelled_one_never(
    trainable: dict,
) -> None:
    base, token, project = trainable["base"], trainable["token"], trainable["project"]
    first_commit = commit_params(project, 6, 4)
    first = post(base, "/api/v1/trainings", token, {"commit": first_commit})[1]["job_id"]
    second = post(base, "/api/v1/trainings", token, {"commit": commit_params(project, 7, 0)})[1]["job_id"]
    third = post(base, "/api/v1/trainings", token, {"commit": commit_params(project, 8, 0)})[1]["job_id"]
    assert post(base, f"/api/v1/trainings/{third}", token, None, method="DELETE")[0] == 200
    wait_for(lambda: get(base, f"/api/v1/trainings/{first}", token)["state"] == "running", "the first job to run")
    assert get(base, f"/api/v1/trainings/{second}", token)["state"] == "queued", "one job at a time"

    trainable["process"].kill()  # SIGKILL: no shutdown, the first job's record says running
    trainable["process"].wait(timeout=30)
    trainable["process"], base = start_server(project, trainable["env"], trainable["log"])

    done = wait_for(
        lambda: all(get(base, f"/api/v1/trainings/{j}", token)["state"] == "succeeded" for j in (first, second)),
        "both jobs to succeed after the restart",
        timeout=300,
    )
    assert done
    jobs = {j["job_id"]: j for j in get(base, "/api/v1/trainings", token)}
    assert jobs[first]["attempts"] == 2, "taken again after the restart"
    trainings = Ledger(project / "audit" / "ledger.duckdb").read(types=["training.completed"])
    assert [t.event_id for t in trainings if t.git_commit == first_commit] == [jobs[first]["training_event_id"]], (
        "the killed server's training process died with it: one training, not an orphan's and the retry's"
    )
    assert jobs[second]["attempts"] == 1
    assert jobs[third]["state"] == "cancelled" and jobs[third]["attempts"] == 0
    status, problem = post(base, f"/api/v1/trainings/{third}", token, None, method="DELETE")
    assert status == 409 and "is cancelled already" in problem["detail"]


SCORED_STAGE = (
    "import json, yaml; p = yaml.safe_load(open('params.yaml')); open('out.txt', 'w').write('x' * p['n']); "
    "json.dump({'n': p['n']}, open('score.json', 'w'))"
)
SCORED_DVC_YAML = """
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [n, sleep]
    outs: [out.txt]
    metrics:
      - score.json:
          cache: false
artifacts:
  tiny-model:
    path: out.txt
    type: model
"""


def test_a_job_commits_its_lock_on_a_branch_of_the_remote_and_a_refused_push_leaves_it_not_locked(
    trainable: dict, tmp_path: Path
) -> None:
    base, token, project = trainable["base"], trainable["token"], trainable["project"]
    (project / "make.py").write_text(SCORED_STAGE)
    (project / "dvc.yaml").write_text(SCORED_DVC_YAML)
    (project / "score.json").write_text('{"n": 0}')  # tracked by git: the lock commit carries the job's
    bare = tmp_path / "team.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(project, "remote", "add", "origin", str(bare))
    commit = commit_params(project, 5, 0)
    git(project, "push", "-q", "-u", "origin", "main")

    job = post(base, "/api/v1/trainings", token, {"commit": commit})[1]["job_id"]
    done = wait_for(lambda: _finished(base, token, job), "the job to finish", timeout=300)

    assert done["state"] == "succeeded", done["log_tail"]
    lock = done["lock_commit"]
    assert lock and done["lock_note"] is None, (done["lock_note"], done["log_tail"])
    assert git(bare, "rev-parse", f"refs/heads/govern/trainings/{job}") == lock, "pushed where the checkout tracks"
    assert git(bare, "rev-parse", f"{lock}^") == commit, "the lock commit follows the training's commit"
    assert sorted(git(bare, "diff", "--name-only", commit, lock).split()) == ["dvc.lock", "score.json"]
    assert json.loads(git(bare, "show", f"{lock}:score.json")) == {"n": 5}
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    [locked] = ledger.read(types=["training.locked"])
    assert locked.payload["commit"] == lock and locked.payload["found_by"] == f"job {job}"
    assert locked.payload["training_event_id"] == done["training_event_id"]
    assert locked.actor.startswith("server:"), "the server's own work, not the requester's"
    [version] = ledger.read(types=["model.registered"])
    lock_text = git(bare, "show", f"{lock}:dvc.lock")
    assert f"md5: {version.payload['md5']}" in lock_text, "the lock at the commit names the registered file"
    rebuilt = tmp_path / "auditor"
    git(tmp_path, "clone", "-q", str(bare), str(rebuilt))
    git(rebuilt, "checkout", "-q", lock)
    git(rebuilt, "config", "core.hooksPath", "/dev/null")
    dvc = subprocess.run(
        [sys.executable, "-m", "dvc", "cache", "dir", str(project / ".dvc" / "cache")], cwd=rebuilt,
        capture_output=True, text=True, env=trainable["env"],
    )  # fmt: skip
    assert dvc.returncode == 0, dvc.stderr
    dvc = subprocess.run([sys.executable, "-m", "dvc", "checkout"], cwd=rebuilt, capture_output=True, text=True,
                         env=trainable["env"])  # fmt: skip
    assert dvc.returncode == 0, dvc.stderr
    rebuilt_bytes = (rebuilt / "out.txt").read_bytes()
    assert hashlib.sha256(rebuilt_bytes).hexdigest() == version.payload["sha256"], "the lock commit rebuilds it"

    (bare / "hooks" / "pre-receive").write_text("#!/bin/sh\necho 'pushes are frozen this week' >&2\nexit 1\n")
    (bare / "hooks" / "pre-receive").chmod(0o755)
    second = commit_params(project, 9, 0)
    job = post(base, "/api/v1/trainings", token, {"commit": second})[1]["job_id"]
    done = wait_for(lambda: _finished(base, token, job), "the second job to finish", timeout=300)

    assert done["state"] == "succeeded" and done["lock_commit"] is None, done
    assert "was refused" in done["lock_note"] and "pushes are frozen this week" in done["lock_note"], done
    assert f"stays on branch govern/trainings/{job}" in done["lock_note"]
    assert len(ledger.read(types=["training.locked"])) == 1, "a refused push locks nothing"
    [finished] = [e for e in ledger.read(types=["job.finished"]) if e.payload["job_id"] == job]
    assert finished.payload["lock_note"] == done["lock_note"] and finished.payload["lock_commit"] is None


def _finished(base: str, token: str, job: str) -> dict | None:
    found = get(base, f"/api/v1/trainings/{job}", token)
    return found if found["state"] in ("succeeded", "failed", "cancelled") else None


def test_a_job_on_dvc_add_data_takes_it_from_the_projects_cache_and_locks_its_version(
    tmp_path: Path, isolated_env: dict[str, str], mlflow_store_template: Path
) -> None:
    """A new user's own project: the job failed with "Stage 'train' depends on data/applicants.csv, which does
    not exist": its scratch clone had the data only in the project's cache, pulled after that check."""
    project = tmp_path / "own"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    ok(project, "init")
    (project / "data").mkdir()
    (project / "data" / "applicants.csv").write_text("age,income\n31,40\n45,52\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/applicants.csv"], cwd=project, check=True)
    (project / "count.py").write_text("rows = open('data/applicants.csv').read().splitlines()[1:]\n"
                                      "open('model.txt', 'w').write(str(len(rows)))\n")  # fmt: skip
    (project / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: python count.py\n    deps: [count.py, data/applicants.csv]\n"
        "    outs: [model.txt]\nartifacts:\n  counter:\n    path: model.txt\n    type: model\n"
    )
    shutil.copy2(mlflow_store_template, project / "mlflow.db")
    commit = commit_all(project, "data and a stage")
    ok(project, "principals", "add", "sci", "--role", "scientist")
    token = json.loads(ok(project, "tokens", "create", "sci", "--json"))["token"]
    process, base = start_server(project, isolated_env, tmp_path / "server.log")
    try:
        job = post(base, "/api/v1/trainings", token, {"commit": commit})[1]["job_id"]
        done = wait_for(lambda: _finished(base, token, job), "the job to finish", timeout=300)
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert done["state"] == "succeeded", (done["error"], done["log_tail"])
    assert done["lock_commit"], done["lock_note"]
    assert git(project, "show", f"{done['lock_commit']}:dvc.lock").count("md5:") >= 2
