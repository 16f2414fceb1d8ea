"""Training jobs: the controller reproduces and records the pipeline at a commit, as `govern repro` would.

A job is three kinds of fact: `job.requested` (who asked, which commit), `job.started` (which process took it,
per attempt) and `job.finished` (succeeded with its training, failed with why, or cancelled). Its state is
derived from them (`training_jobs`), so a job accepted before a server was killed is still queued, or still
"running" under a process that no longer exists, when the server comes back: it is taken again.

A job runs `python -m govern repro --json` in a scratch clone of the commit (as `ci verify` does), with the
project's configured interpreter (`[jobs] python`), the server's ledger and MLflow tracking store, DVC's cache
shared with the project, and the requesting principal as the training's actor, so the four-eyes rule knows who
trained what.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govern import access, queries
from govern.adapters import git as git_adapter
from govern.api.context import Project, open_project
from govern.errors import Forbidden, GovernError, InvalidInput, NotFound, StateConflict
from govern.events import (
    PendingEvent,
    RecordedEvent,
    TrainingJobFinished,
    TrainingJobRequested,
    TrainingJobStarted,
    format_timestamp,
    utc_now,
)
from govern.ledger import Reader
from govern.redaction import redact, scrub
from govern.storage import LedgerStore

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_ID = re.compile(r"^[0-9a-f]{12}$")
STAGE_LINE = re.compile(r"^\[(?P<stage>[^\]]+)\] (?P<status>\S+)")
TARGET = re.compile(r"^[A-Za-z0-9_.:/@-]{1,200}$")
LOG_TAIL_LINES = 40
JOBS_SQL = """
SELECT job_id, state, commit, targets, requested_at, requested_by, started_at, host, pid, attempts, finished_at,
       finished_by, training_event_id, error, seq
FROM training_jobs
WHERE ($state IS NULL OR state = $state) AND ($job IS NULL OR job_id = $job)
ORDER BY seq
"""


@dataclass(frozen=True)
class Job:
    """A job as recorded, with what its log says so far (stages reached, the last lines)."""

    row: dict[str, Any]
    stages: list[dict[str, str]]
    log_tail: str

    @property
    def finished(self) -> bool:
        return self.row["state"] in ("succeeded", "failed", "cancelled")

    def to_dict(self) -> dict[str, Any]:
        return {**self.row, "stages": self.stages, "log_tail": self.log_tail}


def request_training(
    commit: str, targets: Sequence[str] = (), start: Path | None = None, actor: str | None = None
) -> Job:
    """Queue a training of `commit` (fetched from the project's remote when the repository lacks it)."""
    project = open_project(start, actor)
    for target in targets:
        if not TARGET.match(target):
            raise InvalidInput(f"{target!r} is not a stage name of dvc.yaml")
    sha = fetch_commit(project.root, commit)
    _check_stages(project.root, sha, targets)
    fact = TrainingJobRequested(job_id=secrets.token_hex(6), commit=sha, targets=list(targets))
    event = project.ledger.append([PendingEvent(fact, actor=project.actor, occurred_at=utc_now(), git_commit=sha)])
    return job(project.ledger, event[0].payload["job_id"])


def jobs(ledger: LedgerStore, state: str | None = None, newest: int | None = None) -> list[dict[str, Any]]:
    """The jobs (in `state`), oldest first; with `newest`, only that many of the latest, newest first."""
    if state is not None and state not in STATES:
        raise InvalidInput(f"Unknown job state {state!r}: use one of {', '.join(STATES)}")
    if not ledger.exists():
        return []
    sql = JOBS_SQL if newest is None else f"SELECT * FROM ({JOBS_SQL}) ORDER BY seq DESC LIMIT {int(newest)}"
    return queries.rows_as_dicts(ledger, sql, {"state": state, "job": None})


def count(ledger: LedgerStore) -> int:
    """How many jobs were ever requested."""
    if not ledger.exists():
        return 0
    return ledger.query("SELECT count(*) FROM training_jobs")[1][0][0]


def job(ledger: LedgerStore, job_id: str) -> Job:
    """One job, with its progress read from its log."""
    row = _row(ledger, job_id)
    lines = _log_lines(log_path(ledger, job_id))
    stages: dict[str, str] = {}
    for line in lines:
        found = STAGE_LINE.match(line)
        if found:
            stages[found.group("stage")] = found.group("status")
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return Job(row, [{"stage": k, "status": v} for k, v in stages.items()], scrub(tail))


def cancel(
    job_id: str, start: Path | None = None, actor: str | None = None, requester_only: bool = False
) -> RecordedEvent:
    """Cancel a queued or running job: recorded at once; a running one's process is stopped by its runner.
    `requester_only`: a scientist cancels its own jobs, no one else's."""
    project = open_project(start, actor)

    def decide(reader: Reader) -> list[PendingEvent]:
        row = _row(reader, job_id)
        if requester_only and not access.same_person(project.actor, row["requested_by"], {}):
            raise Forbidden(f"Job {job_id} was requested by {row['requested_by']}: a scientist cancels its own jobs")
        if row["state"] not in ("queued", "running"):
            when = format_timestamp(row["finished_at"]) if row["finished_at"] else "?"
            raise StateConflict(f"Job {job_id} is {row['state']} already (at {when}): there is nothing to cancel")
        fact = TrainingJobFinished(job_id=job_id, outcome="cancelled")
        return [PendingEvent(fact, actor=project.actor, occurred_at=utc_now(), git_commit=row["commit"])]

    return project.ledger.transact(decide)[0]


def claimable(ledger: LedgerStore, host: str) -> list[str]:
    """Jobs this process may take, oldest first: queued ones, and those started here by a process now gone."""
    if not ledger.exists():
        return []
    rows = queries.rows_as_dicts(ledger, JOBS_SQL, {"state": None, "job": None})
    return [r["job_id"] for r in rows if _takeable(r, host)]


def claim(project: Project, job_id: str) -> RecordedEvent | None:
    """Record that this process starts the job; None when another took it first (or it was cancelled)."""
    host, pid = socket.gethostname(), os.getpid()
    taken: list[RecordedEvent] = []

    def decide(reader: Reader) -> list[PendingEvent]:
        row = _row(reader, job_id)
        if not _takeable(row, host):
            return []
        fact = TrainingJobStarted(job_id=job_id, host=host, pid=pid, attempt=row["attempts"] + 1)
        return [PendingEvent(fact, actor=project.actor, occurred_at=utc_now(), git_commit=row["commit"])]

    taken.extend(project.ledger.transact(decide))
    return taken[0] if taken else None


def finish(project: Project, job_id: str, outcome: str, training: str | None, error: str | None, tail: str) -> None:
    """Record how the job ended, unless it was cancelled meanwhile (that fact stands)."""

    def decide(reader: Reader) -> list[PendingEvent]:
        row = _row(reader, job_id)
        if row["state"] != "running":
            return []
        fact = TrainingJobFinished(
            job_id=job_id, outcome=outcome, training_event_id=training, error=error, log_tail=tail[-4000:]
        )
        return [PendingEvent(fact, actor=project.actor, occurred_at=utc_now(), git_commit=row["commit"])]

    project.ledger.transact(decide)


def run(
    project: Project, job_id: str, python: str, cancelled: Callable[[], bool]
) -> tuple[str, str | None, str | None]:
    """Run the job's training in a scratch clone; (outcome, training event id, error). Polls `cancelled`."""
    row = _row(project.ledger, job_id)
    log = log_path(project.ledger, job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="govern-job-") as scratch, log.open("a", encoding="utf-8") as sink:
        checkout = Path(scratch) / "checkout"
        sink.write(f"govern: job {job_id}: checking out {row['commit'][:12]} into a scratch clone\n")
        sink.flush()
        git_adapter.checkout_copy(project.root, checkout, row["commit"])
        if (project.root / ".dvc").is_dir() and (checkout / ".dvc").is_dir():
            from govern.adapters import dvc as dvc_adapter

            dvc_adapter.use_cache_dir(checkout, dvc_adapter.cache_dir(project.root))
        env = {
            **os.environ,
            "GOVERN_LEDGER": project.ledger.address,
            "MLFLOW_TRACKING_URI": project.config.tracking_uri,
            "GOVERN_CI_IDENTITY": row["requested_by"],
        }
        command = [python, "-P", "-m", "govern", "repro", "--json", *row["targets"]]
        process = subprocess.Popen(  # noqa: S603 - the project's interpreter running govern itself
            command,
            cwd=checkout,
            env=env,
            stdout=subprocess.PIPE,
            stderr=sink,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, which is async-signal-safe
        )
        while process.poll() is None:
            if cancelled():
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                sink.write("govern: cancelled\n")
                return "cancelled", None, None
            time.sleep(0.5)
        stdout = process.stdout.read().decode("utf-8", errors="replace") if process.stdout else ""
    if process.returncode != 0:
        lines = _log_lines(log)
        error = next((line for line in reversed(lines) if line.startswith("Error:")), None)
        return "failed", None, error or f"govern repro exited {process.returncode}"
    return "succeeded", _training_of(project, stdout), None


def _training_of(project: Project, stdout: str) -> str | None:
    """The training a `repro --json` recorded, or the one it found up to date."""
    try:
        answer = json.loads(stdout)
    except ValueError:
        return None
    recorded = [e["event_id"] for e in answer.get("events", []) if e.get("type") == "training.completed"]
    if recorded:
        return recorded[0]
    seq = answer.get("training_seq")
    found = project.ledger.read(seqs=[seq]) if isinstance(seq, int) else []
    return found[0].event_id if found else None


def _die_with_parent() -> None:
    """Linux: the job's `govern repro` is killed when the server process dies (kill -9 included), so an
    orphan never records a training that the restarted server runs again. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def log_path(ledger: LedgerStore, job_id: str) -> Path:
    return ledger.state_dir / "jobs" / f"{job_id}.log"


def _takeable(row: dict[str, Any], host: str) -> bool:
    if row["state"] == "queued":
        return True
    return row["state"] == "running" and row["host"] == host and not _alive(row["pid"])


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _row(reader: Reader, job_id: str) -> dict[str, Any]:
    if not JOB_ID.match(job_id or ""):
        raise InvalidInput(f"{job_id!r} is not a job id: 12 hexadecimal characters, as the job's answer gives")
    rows = queries.rows_as_dicts(reader, JOBS_SQL, {"state": None, "job": job_id})
    if not rows:
        raise NotFound(f"No job {job_id}: GET /api/v1/trainings lists them")
    return rows[0]


def _log_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _check_stages(root: Path, sha: str, targets: Sequence[str]) -> None:
    """Stage names (not paths) must be stages of dvc.yaml at the commit to train; `name@key` names a foreach item."""
    names = [t for t in targets if not any(mark in t for mark in ("/", ":", ".yaml", ".yml"))]
    if not names:
        return
    from govern.adapters.dvc import stage_names_at

    declared = stage_names_at(root, sha)
    if declared is None:
        raise InvalidInput(f"Commit {sha[:12]} has no readable dvc.yaml: nothing to train there")
    unknown = [t for t in names if t.split("@", 1)[0] not in declared]
    if unknown:
        raise InvalidInput(
            f"Unknown stage(s) {', '.join(unknown)} at {sha[:12]}: its pipeline's stages are {', '.join(declared)}"
        )


def fetch_commit(root: Path, commit: str) -> str:
    """The full sha of `commit`, fetched from the project's remotes first when the repository lacks it (a training
    asked for, a verdict uploaded)."""
    if not re.match(r"^[0-9A-Za-z._/@^~-]{1,200}$", commit or "") or commit.startswith("-"):
        raise InvalidInput(f"{commit!r} is not a commit: give a sha, branch or tag")
    try:
        return git_adapter.resolve(root, commit)
    except InvalidInput:
        pass
    fetched = subprocess.run(["git", "fetch", "--all", "--quiet"], cwd=root, capture_output=True, text=True)
    try:
        return git_adapter.resolve(root, commit)
    except InvalidInput:
        said = fetched.stderr.strip().splitlines()
        why = f" (git fetch: {redact(said[-1])})" if fetched.returncode and said else ""  # it may quote a remote URL
        raise NotFound(
            f"{commit!r} is not a commit of the server's repository, nor of its remotes{why}: push it first"
        ) from None


def interpreter(project: Project) -> str:
    """The Python that runs the project's jobs: `[jobs] python` (relative to the root), else this one."""
    configured = project.config.jobs_python
    if not configured:
        return sys.executable
    path = Path(configured)
    path = path if path.is_absolute() else project.root / path
    if not path.exists():
        raise GovernError(f"`jobs.python` names {configured}, which does not exist: fix it in {project.config.source}")
    return str(path)
