"""The security review's finding 1, as an attacker tried it: a commit whose training stage, run as a server job,
grants its author admin and issues a token under the real admin's name; an inference entry point that chains a
shell command or reads the server's secrets. A real `govern serve`, real jobs and predictions, real DuckDB and
PostgreSQL ledgers; the job runs confined (`govern.sandbox`), reports its facts, and the server records them."""

from __future__ import annotations

import csv
import io
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import commit_all, git, ok, start_server, tiny_pipeline, token_for, wait_for
from support.sandbox import JOB_USER, governed_project, require_sandbox, served_version
from support.server import call, send

from govern.api.context import open_project
from govern.storage import open_store

pytestmark = pytest.mark.slow

# The stage of the malicious commit: everything the security review did from `pipelines/model.py`, and what it saw
# written to its output (the "model", which the server takes into the DVC cache) and to its log (the job's record).
MALICE = r"""
import json, os, socket, subprocess, sys
targets = json.load(open("targets.json"))
seen = {"uid": os.getuid(), "env": dict(os.environ), "tried": {}}
said = seen["tried"]
for path in targets["read"]:
    try:
        seen.setdefault("contents", {})[path] = open(path, "rb").read(4096).decode("utf-8", "replace")
        said["read " + path] = "READ"
    except OSError as error:
        said["read " + path] = type(error).__name__
for path in targets["write"]:
    try:
        with open(path, "ab") as sink:
            sink.write(b"tampered")
        said["write " + path] = "WROTE"
    except OSError as error:
        said["write " + path] = type(error).__name__
try:
    socket.create_connection(("127.0.0.1", 5432), timeout=3).close()
    said["connect 127.0.0.1:5432"] = "CONNECTED"
except OSError as error:
    said["connect 127.0.0.1:5432"] = type(error).__name__
forged = {**os.environ, "GOVERN_CI_IDENTITY": "alice (token 00d199502a68)"}
attempts = {
    "principals add mallory --role admin": ["principals", "add", "mallory", "--role", "admin"],
    "tokens create mallory": ["tokens", "create", "mallory", "--expires", "never", "--json"],
}
for name, argv in attempts.items():
    for ledger in (None, targets["ledger"]):
        env = {**forged, **({"GOVERN_LEDGER": ledger} if ledger else {})}
        done = subprocess.run([sys.executable, "-m", "govern", *argv], env=env, capture_output=True, text=True)
        where = "the real ledger" if ledger else "its checkout's ledger"
        said[f"{name} on {where}"] = f"exit {done.returncode}: {(done.stdout + done.stderr).strip()[-400:]}"
for attempt, outcome in said.items():
    print(f"MALICE {attempt}: {outcome}", file=sys.stderr)
open("out.txt", "w").write(json.dumps(seen))
"""


def finished(base: str, token: str, job_id: str, what: str) -> dict[str, Any]:
    """The job once it has succeeded or failed, as the API shows it."""

    def done() -> dict[str, Any] | None:
        found = call(base, "GET", f"/api/v1/trainings/{job_id}", token)[1]
        return found if found["state"] in ("succeeded", "failed") else None

    return wait_for(done, what, timeout=600)


def leaked(env: dict[str, str]) -> list[str]:
    """The server's kind of variables in what user code saw (govern's own CLI, run by the job, turns MLflow's
    telemetry off for itself: that one is the job's)."""
    return [k for k in env if k.startswith(("GOVERN_", "PG", "MLFLOW_")) and k != "MLFLOW_DISABLE_TELEMETRY"]


@pytest.fixture(params=[("file", JOB_USER), ("postgresql", None)], ids=["file-run_as", "postgresql-bwrap"])
def malicious(request: pytest.FixtureRequest, tmp_path: Path, isolated_env: dict[str, str],
              mlflow_store_template: Path) -> Iterator[dict[str, Any]]:  # fmt: skip
    """A project (on a DuckDB file, or on PostgreSQL) served with its secrets where a server keeps them: a
    session secret and PGPASSWORD in the environment, ~/.pgpass and a signing key under HOME. A scientist's
    token; and a commit whose stage is MALICE."""
    backend, run_as = request.param
    require_sandbox(user=run_as is not None)
    project = tiny_pipeline(tmp_path / "project", "open('out.txt', 'w').write('fine')\n", "n: 1\n")
    settings = f'ledger = "{request.getfixturevalue("pg_database")}"\n' if backend == "postgresql" else ""
    (project / "govern.toml").write_text(settings + (f'[jobs]\nrun_as = "{run_as}"\n' if run_as else ""))
    shutil.copy2(mlflow_store_template, project / "mlflow.db")
    commit_all(project, "an honest pipeline")
    ok(project, "principals", "add", "sci", "--role", "scientist")
    token = token_for(project, "sci")
    home = Path(isolated_env["HOME"])
    secret_values = {
        "session": f"session-{secrets.token_hex(20)}",
        "pgpassword": f"pg-{secrets.token_hex(8)}",
        "pgpass": f"pgpass-{secrets.token_hex(8)}",
        "key": f"signing-key-{secrets.token_hex(8)}",
    }
    (home / ".pgpass").write_text(f"127.0.0.1:5432:*:postgres:{secret_values['pgpass']}\n")
    (home / ".pgpass").chmod(0o600)
    (home / ".config" / "govern").mkdir(parents=True)
    (home / ".config" / "govern" / "signing.key").write_text(secret_values["key"])
    ledger = open_project(project).ledger
    ledger_file = None if backend == "postgresql" else Path(ledger.location)
    targets = {
        "ledger": ledger.address,
        "read": [str(p) for p in (ledger_file, home / ".pgpass", home / ".config" / "govern" / "signing.key") if p],
        "write": [str(p) for p in (ledger_file, ledger_file.parent / "ledger.duckdb.wal") if p] if ledger_file else [],
    }
    (project / "targets.json").write_text(json.dumps(targets))
    (project / "make.py").write_text(MALICE)
    evil = commit_all(project, "evil: pipelines that grant their author admin")
    git(project, "checkout", "-q", "HEAD~1")  # the server's checkout is the honest commit; the evil one is pushed
    env = {**isolated_env, "GOVERN_SESSION_SECRET": secret_values["session"], "PGPASSWORD": secret_values["pgpassword"]}
    log = tmp_path / "server.log"
    process, base = start_server(project, env, log)
    yield {
        "project": project,
        "base": base,
        "token": token,
        "evil": evil,
        "secrets": secret_values,
        "targets": targets,
        "ledger_file": ledger_file,
        "log": log,
        "backend": backend,
        "run_as": run_as,
    }
    process.terminate()
    process.wait(timeout=30)


def test_a_malicious_training_commit_run_as_a_job_gains_nothing_and_reads_no_secret(malicious: dict) -> None:
    base, token, project = malicious["base"], malicious["token"], malicious["project"]
    ledger = open_project(project).ledger
    before = ledger.head()[0]
    before_bytes = malicious["ledger_file"].read_bytes() if malicious["ledger_file"] else None

    status, job, _ = call(base, "POST", "/api/v1/trainings", token, {"commit": malicious["evil"]})
    assert status == 202, job
    done = finished(base, token, job["job_id"], "the malicious job to finish")

    events = [e for e in open_store(open_project(project).config.ledger).read() if e.seq > before]
    types = [e.type for e in events]
    assert "access.granted" not in types and "token.issued" not in types, types
    own = {"job.requested", "job.started", "training.completed", "training.mirrored", "model.registered",
           "training.locked", "job.finished"}  # fmt: skip
    assert set(types) <= own, "nothing appended but the job's own facts"
    for locked in [e for e in events if e.type == "training.locked"]:  # the server committed the job's lock
        assert locked.actor.startswith("server:") and locked.payload["found_by"] == f"job {job['job_id']}"
    assert done["state"] == "succeeded", done["log_tail"]
    [training] = [e for e in events if e.type == "training.completed"]
    assert training.event_id == done["training_event_id"] and training.git_commit == malicious["evil"]
    assert training.actor.startswith("sci (token "), "recorded under the requester, by the server"
    assert open_store(open_project(project).config.ledger).verify().ok

    model = training.payload["models"][0]
    cached = project / ".dvc" / "cache" / "files" / "md5" / model["md5"][:2] / model["md5"][2:]
    seen = json.loads(cached.read_text())  # what the stage saw, from its output taken into the DVC cache
    shown = json.dumps(seen)
    for name, value in malicious["secrets"].items():
        assert value not in shown, f"the {name} secret reached the job"
    assert not leaked(seen["env"]), seen["env"]
    assert seen["env"]["HOME"] != str(Path(malicious["log"]).parent), "HOME is the job's scratch"
    tried = seen["tried"]
    for path in malicious["targets"]["read"]:
        assert tried[f"read {path}"] == "FileNotFoundError", tried  # not even there, in the sandbox
    for path in malicious["targets"]["write"]:
        assert tried[f"write {path}"] != "WROTE", tried
    assert tried["connect 127.0.0.1:5432"] != "CONNECTED", "no network: not the trust-auth PostgreSQL"
    if malicious["run_as"]:
        assert seen["uid"] == __import__("pwd").getpwnam(malicious["run_as"]).pw_uid
    if before_bytes is not None:
        assert malicious["ledger_file"].read_bytes()[: len(before_bytes)] == before_bytes, "append-only, untouched"
    log_tail = done["log_tail"]
    assert f"MALICE read {malicious['targets']['read'][0]}: FileNotFoundError" in log_tail, log_tail
    assert "MALICE connect 127.0.0.1:5432: " in log_tail and "CONNECTED" not in log_tail


@pytest.mark.parametrize("malicious", [("file", JOB_USER)], ids=["file-run_as"], indirect=True)
def test_a_job_whose_report_was_tampered_with_or_that_links_into_the_ledger_is_refused(malicious: dict) -> None:
    """The stage cannot write the server's ledger, but it can rewrite its own report: the server refuses one that
    grants a role, and the job's record says so (the report's checks run on both ledgers in tests/test_reported.py)."""
    project, base, token = malicious["project"], malicious["base"], malicious["token"]
    git(project, "checkout", "-q", malicious["evil"])
    (project / "make.py").write_text(FORGER)
    forger = commit_all(project, "evil: rewrite the report after govern writes it")
    git(project, "checkout", "-q", "HEAD~2")
    before = open_project(project).ledger.head()[0]

    status, job, _ = call(base, "POST", "/api/v1/trainings", token, {"commit": forger})
    assert status == 202, job
    done = finished(base, token, job["job_id"], "the forging job to finish")

    types = [e.type for e in open_project(project).ledger.read() if e.seq > before]
    assert types == ["job.requested", "job.started", "job.finished"], (types, done["log_tail"])
    assert done["state"] == "failed"
    assert "The job's report was refused, nothing was recorded" in done["error"], done
    assert "'access.granted': a training reports only" in done["error"], done
    assert "job" in malicious["log"].read_text() and "refused" in malicious["log"].read_text(), "the server log"

    # A commit carrying .dvc/config.local as a link to the ledger: the server, pointing the checkout at its DVC
    # cache, never writes through it; the job fails and the ledger is as it was.
    git(project, "checkout", "-q", malicious["evil"])
    (project / ".dvc" / "config.local").symlink_to(malicious["ledger_file"])
    git(project, "add", "-f", ".dvc/config.local")
    linker = commit_all(project, "evil: a link into the ledger")
    git(project, "checkout", "-q", "HEAD~2")
    ledger_bytes = malicious["ledger_file"].read_bytes()
    status, job, _ = call(base, "POST", "/api/v1/trainings", token, {"commit": linker})
    done = finished(base, token, job["job_id"], "the linking job to finish")
    assert done["state"] == "failed" and ".dvc/config.local" in done["error"], done
    assert malicious["ledger_file"].read_bytes()[: len(ledger_bytes)] == ledger_bytes
    assert open_project(project).ledger.verify().ok


# A stage that leaves a process behind to rewrite the report once govern has written it (the job's own files are
# the job's to change): the server must refuse what it finds.
FORGER = r"""
import os, sys, time, json
if os.fork() == 0:
    os.setsid()
    quiet = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(quiet, stream)  # DVC waits for the stage's output to end: not for this process's
    report = None
    for _ in range(20000):
        for folder in ("../out",):
            path = os.path.join(folder, "facts.json")
            if os.path.exists(path):
                data = json.load(open(path))
                grant = {"event_id": "5f0c2a52-9b0f-4a43-9d1d-1c2b3a4d5e6f", "type": "access.granted",
                         "schema_version": 1, "occurred_at": "2026-01-01T00:00:00.000000Z",
                         "git_commit": data["events"][-1]["git_commit"],
                         "payload": {"principal": "mallory", "role": "admin", "apps": [], "reason": "evil"}}
                data["events"].insert(0, grant)
                open(path + ".x", "w").write(json.dumps(data))
                os.replace(path + ".x", path)
                os._exit(0)
        time.sleep(0.001)
    os._exit(0)
open("out.txt", "w").write("a model")
"""


SPY = r"""
import csv, json, os, socket, subprocess, sys
targets = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))
seen = {"env": dict(os.environ), "uid": os.getuid(), "tried": {}}
for path in targets["read"]:
    try:
        seen["tried"]["read " + path] = open(path, "rb").read(200).decode("utf-8", "replace")
    except OSError as error:
        seen["tried"]["read " + path] = type(error).__name__
try:  # through a link the commit carries to the server's HOME
    seen["tried"]["link"] = open(os.path.join(os.path.dirname(__file__), "home", ".pgpass")).read()
except OSError as error:
    seen["tried"]["link"] = type(error).__name__
try:
    with open(targets["ledger"], "ab") as sink:
        sink.write(b"tampered")
    seen["tried"]["write ledger"] = "WROTE"
except OSError as error:
    seen["tried"]["write ledger"] = type(error).__name__
try:
    socket.create_connection(("127.0.0.1", 5432), timeout=3).close()
    seen["tried"]["connect"] = "CONNECTED"
except OSError as error:
    seen["tried"]["connect"] = type(error).__name__
env = {**os.environ, "GOVERN_CI_IDENTITY": "alice (token 00d199502a68)", "GOVERN_LEDGER": targets["ledger"]}
done = subprocess.run([sys.executable, "-m", "govern", "principals", "add", "mallory", "--role", "admin"],
                      env=env, capture_output=True, text=True)
seen["tried"]["grant"] = done.returncode
rows = list(csv.DictReader(open(sys.argv[1])))
with open(sys.argv[2], "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["row", "seen"])
    for i, _ in enumerate(rows):
        writer.writerow([i, json.dumps(seen)])
"""


@pytest.fixture(params=[None, JOB_USER], ids=["bwrap", "bwrap-run_as"])
def inference(request: pytest.FixtureRequest, tmp_path: Path, isolated_env: dict[str, str]) -> Iterator[dict]:
    """Two apps served by versions whose entry points a scientist wrote: `chained` chains a shell command after
    scoring, `spying` is a committed Python script that tries what MALICE tried. A consumer of both."""
    require_sandbox(user=request.param is not None)
    jobs = f'[jobs]\nrun_as = "{request.param}"\n' if request.param else ""
    project = governed_project(tmp_path / "project", f'[deploy]\nenvironments = ["dev"]\nrequire_stage = {{}}\n{jobs}')
    home = Path(isolated_env["HOME"])
    pgpass = f"pgpass-{secrets.token_hex(8)}"
    (home / ".pgpass").write_text(f"*:*:*:*:{pgpass}\n")
    ledger_file = project / "audit" / "ledger.duckdb"
    marker = tmp_path / "the-chained-command-ran"
    served_version(project, "python -c \"import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])\" {input} {output}"
                   f"; python -m govern principals add mallory --role admin; touch {marker}", "chained")  # fmt: skip
    served_version(project, "python bin/spy.py {input} {output}", "spying")
    (project / "bin").mkdir()
    (project / "bin" / "spy.py").write_text(SPY)
    (project / "bin" / "home").symlink_to(home)
    (project / "bin" / "targets.json").write_text(
        json.dumps({"ledger": str(ledger_file), "read": [str(ledger_file), str(home / ".pgpass")]})
    )
    git(project, "add", "bin")
    git(project, "commit", "-q", "-m", "the entry points")
    for model, app in (("chained", "scoring"), ("spying", "triage")):
        ok(project, "deploy", model, "1", "--app", app, "--env", "dev")
    ok(project, "principals", "add", "con", "--role", "consumer", "--app", "scoring", "--app", "triage")
    token = token_for(project, "con")
    session = f"session-{secrets.token_hex(20)}"
    env = {**isolated_env, "GOVERN_SESSION_SECRET": session, "PGPASSWORD": "pg-password-x"}
    process, base = start_server(project, env, tmp_path / "server.log")
    yield {
        "project": project,
        "base": base,
        "token": token,
        "marker": marker,
        "ledger_file": ledger_file,
        "secrets": [pgpass, session, "pg-password-x"],
        "pgpass": home / ".pgpass",
        "run_as": request.param,
    }
    process.terminate()
    process.wait(timeout=30)


def test_a_malicious_entry_point_through_predict_is_refused_or_harmless(inference: dict) -> None:
    base, token, project = inference["base"], inference["token"], inference["project"]
    ledger = open_project(project).ledger
    before = ledger.head()
    rows = b"a,b\n1,2\n3,4\n"

    status, answer, _ = send(base, "/api/v1/apps/scoring/predict?env=dev", token, rows, "text/csv")
    assert status == 422, answer
    assert not inference["marker"].exists(), "the chained command never ran"
    assert ledger.head() == before, "nothing written"

    status, answer, _ = send(base, "/api/v1/apps/triage/predict?env=dev", token, rows, "text/csv")
    assert status == 200, answer
    scored = list(csv.DictReader(io.StringIO(answer.decode())))
    seen = json.loads(scored[0]["seen"])
    shown = json.dumps(seen)
    for value in inference["secrets"]:
        assert value not in shown, "a secret reached the entry point"
    assert not leaked(seen["env"]), seen["env"]
    ledger_file, pgpass = str(inference["ledger_file"]), str(inference["pgpass"])
    assert seen["tried"][f"read {ledger_file}"] == "FileNotFoundError"
    assert seen["tried"][f"read {pgpass}"] == "FileNotFoundError"
    assert seen["tried"]["link"] == "FileNotFoundError", "a committed link leads nowhere outside the code"
    assert seen["tried"]["write ledger"] != "WROTE" and seen["tried"]["connect"] != "CONNECTED"
    if inference["run_as"]:
        assert seen["uid"] == __import__("pwd").getpwnam(inference["run_as"]).pw_uid
    events = [e for e in open_project(project).ledger.read() if e.seq > before[0]]
    assert [e.type for e in events] == ["inference.recorded"], "one batch recorded, no grant"
    assert open_project(project).ledger.verify().ok


def test_a_server_whose_job_user_does_not_exist_refuses_to_start_jobs_and_says_why(
    tmp_path: Path, isolated_env: dict[str, str], mlflow_store_template: Path
) -> None:
    project = tiny_pipeline(tmp_path / "project")
    (project / "govern.toml").write_text('[jobs]\nrun_as = "no-such-job-user"\n')
    shutil.copy2(mlflow_store_template, project / "mlflow.db")
    commit = commit_all(project, "a pipeline")
    ok(project, "principals", "add", "sci", "--role", "scientist")
    token = token_for(project, "sci")
    log = tmp_path / "server.log"
    process, base = start_server(project, isolated_env, log)
    try:
        status, job, _ = call(base, "POST", "/api/v1/trainings", token, {"commit": commit})
        assert status == 202, job
        done = finished(base, token, job["job_id"], "the job to be refused")
    finally:
        process.terminate()
        process.wait(timeout=30)
    reason = "`jobs.run_as` names no-such-job-user, which is not a user of this host"
    assert done["error"].startswith("The job was not started: ") and reason in done["error"], done
    assert "training_event_id" in done and done["training_event_id"] is None
    assert reason in log.read_text(), "the server log says it too"
    assert "training.completed" not in {e.type for e in open_project(project).ledger.read()}


def test_a_failing_stage_is_recorded_by_the_server_as_the_requesters_training_failed(
    tmp_path: Path, isolated_env: dict[str, str], mlflow_store_template: Path
) -> None:
    require_sandbox()
    project = tiny_pipeline(tmp_path / "project", "import sys; sys.exit('the data is not there')\n")
    shutil.copy2(mlflow_store_template, project / "mlflow.db")
    commit = commit_all(project, "a pipeline that fails")
    ok(project, "principals", "add", "sci", "--role", "scientist")
    token = token_for(project, "sci")
    process, base = start_server(project, isolated_env, tmp_path / "server.log")
    try:
        status, job, _ = call(base, "POST", "/api/v1/trainings", token, {"commit": commit})
        assert status == 202, job
        done = finished(base, token, job["job_id"], "the failing job to finish")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert done["state"] == "failed" and "Stage 'make' failed" in done["error"], done
    [failed] = [e for e in open_project(project).ledger.read() if e.type == "training.failed"]
    assert failed.actor.startswith("sci (token ") and failed.git_commit == commit
    assert "the data is not there" in failed.payload["output_tail"]
