"""Training jobs: the controller reproduces and records the pipeline at a commit, as `govern repro` would.

A job is three kinds of fact: `job.requested` (who asked, which commit), `job.started` (which process took it,
per attempt) and `job.finished` (succeeded with its training, failed with why, or cancelled). Its state is
derived from them (`training_jobs`), so a job accepted before a server was killed is still queued, or still
"running" under a process that no longer exists, when the server comes back: it is taken again.

A job runs `python -m govern repro --facts-out FILE` in a scratch clone of the commit (as `ci verify` does),
with the project's configured interpreter (`[jobs] python`), confined as `govern.sandbox` says: a scrubbed
environment (no ledger address, no MLflow, no credentials), the configured unprivileged user, a bubblewrap
sandbox that shows it neither the ledger nor the server's HOME, no network; a private DVC cache that reads the
project's (read-only) as its remote. The commit's stage code so has no power over the ledger. The job reports its
facts in FILE; the server checks and records them (`govern.api.reported`) with the requesting principal as the
training's actor, so the four-eyes rule knows who trained what, and takes the model files into the project's DVC
cache for the outbox to register in MLflow.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from govern import access, attribution
from govern.adapters import git as git_adapter
from govern.api.context import Project
from govern.api.results import Job, Ran
from govern.envelope import PendingEvent, RecordedEvent, format_timestamp
from govern.errors import Forbidden, GovernError, InvalidInput, NotFound, StateConflict
from govern.events import TrainingJobFinished, TrainingJobRequested, TrainingJobStarted
from govern.readmodel import events as event_reads
from govern.readmodel import jobs as job_reads
from govern.readmodel.jobs import JobRow
from govern.readmodel.reader import Reader
from govern.redaction import redact, scrub

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_ID = re.compile(r"^[0-9a-f]{12}$")
STAGE_LINE = re.compile(r"^\[(?P<stage>[^\]]+)\] (?P<status>\S+)")
TARGET = re.compile(r"^[A-Za-z0-9_.:/@-]{1,200}$")
LOG_TAIL_LINES = 40


def request_training(project: Project, commit: str, targets: Sequence[str] = ()) -> Job:
    """Queue a training of `commit` (fetched from the project's remote when the repository lacks it)."""
    for target in targets:
        if not TARGET.match(target):
            raise InvalidInput(f"{target!r} is not a stage name of dvc.yaml")
    sha = fetch_commit(project.root, commit)
    _check_stages(project.root, sha, targets)
    fact = TrainingJobRequested(job_id=secrets.token_hex(6), commit=sha, targets=list(targets))
    event = project.ledger.append(
        [PendingEvent(fact, actor=project.actor, occurred_at=project.clock(), git_commit=sha)]
    )
    return job(project, event[0].payload["job_id"])


def jobs(project: Project, state: str | None = None, newest: int | None = None) -> list[JobRow]:
    """The jobs (in `state`), oldest first; with `newest`, only that many of the latest, newest first."""
    if state is not None and state not in STATES:
        raise InvalidInput(f"Unknown job state {state!r}: use one of {', '.join(STATES)}")
    if not project.ledger.exists():
        return []
    return job_reads.jobs(project.ledger, state, newest)


def count(project: Project) -> int:
    """How many jobs were ever requested."""
    if not project.ledger.exists():
        return 0
    return job_reads.count(project.ledger)


def job(project: Project, job_id: str) -> Job:
    """One job, with its progress read from its log."""
    ledger = project.ledger
    row = _row(ledger, job_id)
    lines = _log_lines(log_path(project, job_id))
    stages: dict[str, str] = {}
    for line in lines:
        found = STAGE_LINE.match(line)
        if found:
            stages[found.group("stage")] = found.group("status")
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    commit, note = _lock_of(ledger, row)
    return Job(row, commit, note, [{"stage": k, "status": v} for k, v in stages.items()], scrub(tail))


def _lock_of(reader: Reader, row: JobRow) -> tuple[str | None, str | None]:
    """The commit whose dvc.lock rebuilds the job's versions (on its branch, or found later), or why none yet."""
    if row.state != "succeeded" or not row.training_event_id:
        return None, None
    commit, note = job_reads.lock_of(reader, row.training_event_id, row.job_id)
    return commit, None if commit else note


def cancel(project: Project, job_id: str, requester_only: bool = False) -> RecordedEvent:
    """Cancel a queued or running job: recorded at once; a running one's process is stopped by its runner.
    `requester_only`: a scientist cancels its own jobs, no one else's."""

    def decide(reader: Reader) -> list[PendingEvent]:
        row = _row(reader, job_id)
        if requester_only and not access.same_person(project.actor, row.requested_by, {}):
            raise Forbidden(f"Job {job_id} was requested by {row.requested_by}: a scientist cancels its own jobs")
        if row.state not in ("queued", "running"):
            when = format_timestamp(row.finished_at) if row.finished_at else "?"
            raise StateConflict(f"Job {job_id} is {row.state} already (at {when}): there is nothing to cancel")
        fact = TrainingJobFinished(job_id=job_id, outcome="cancelled")
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock(), git_commit=row.commit)]

    return project.ledger.transact(decide)[0]


def claimable(project: Project, host: str) -> list[str]:
    """Jobs this process may take, oldest first: queued ones, and those started here by a process now gone."""
    if not project.ledger.exists():
        return []
    rows = job_reads.jobs(project.ledger)
    return [r.job_id for r in rows if _takeable(r, host)]


def claim(project: Project, job_id: str) -> RecordedEvent | None:
    """Record that this process starts the job; None when another took it first (or it was cancelled)."""
    host, pid = socket.gethostname(), os.getpid()
    taken: list[RecordedEvent] = []

    def decide(reader: Reader) -> list[PendingEvent]:
        row = _row(reader, job_id)
        if not _takeable(row, host):
            return []
        fact = TrainingJobStarted(job_id=job_id, host=host, pid=pid, attempt=row.attempts + 1)
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock(), git_commit=row.commit)]

    taken.extend(project.ledger.transact(decide))
    return taken[0] if taken else None


def finish(project: Project, job_id: str, ran: Ran, tail: str) -> None:
    """Record how the job ended, unless it was cancelled meanwhile (that fact stands)."""

    def decide(reader: Reader) -> list[PendingEvent]:
        row = _row(reader, job_id)
        if row.state != "running":
            return []
        fact = TrainingJobFinished(
            job_id=job_id,
            outcome=ran.outcome,
            training_event_id=ran.training,
            error=ran.error,
            log_tail=tail[-4000:],
            lock_commit=ran.lock_commit,
            lock_note=ran.lock_note,
        )
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock(), git_commit=row.commit)]

    project.ledger.transact(decide)


FACTS = "facts.json"


def run(project: Project, job_id: str, python: str, cancelled: Callable[[], bool]) -> Ran:
    """Run the job's training in a scratch clone, confined (`govern.sandbox`), record the facts it reported
    (`govern.api.reported`), then commit its dvc.lock (`locks.commit_for_job`). Polls `cancelled`."""
    from govern import sandbox
    from govern.api import reported

    row = _row(project.ledger, job_id)
    log = log_path(project, job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    policy = sandbox.Policy.server(project.config)
    with tempfile.TemporaryDirectory(prefix="govern-job-") as folder, log.open("a", encoding="utf-8") as sink:
        scratch = Path(folder)
        cache = _project_cache(project.root)
        try:
            sandbox.check(policy, ledger=project.ledger, python=python, readonly=[cache] if cache else [])
        except sandbox.SandboxUnavailable as refused:
            sink.write(f"govern: job {job_id}: not started: {refused}\n")
            return Ran("failed", error=f"The job was not started: {refused}")
        checkout = scratch / "checkout"
        sink.write(f"govern: job {job_id}: checking out {row.commit[:12]} into a scratch clone\n")
        sink.flush()
        git_adapter.checkout_copy(project.root, checkout, row.commit)
        if (checkout / ".dvc").is_dir():
            from govern.adapters import dvc as dvc_adapter

            dvc_adapter.use_cache_dir(checkout, scratch / "dvc-cache", remote=cache)
        known = scratch / "known-snapshots.json"
        known.write_text(json.dumps(reported.known_snapshots(project)), encoding="utf-8")
        (scratch / "out").mkdir()
        facts = scratch / "out" / FACTS
        command = [python, "-P", "-m", "govern", "repro", "--facts-out", str(facts), "--known-snapshots", str(known)]
        launch = sandbox.prepare(
            [*command, *row.targets],
            policy=policy,
            scratch=scratch,
            cwd=checkout,
            readonly=[*([cache] if cache else []), *_alternates(checkout)],
            hidden=sandbox.ledger_hidden(project.ledger),
            interpreters=_interpreters(python),
            extra_env={"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(scratch / "dvc-site")},
        )
        process = subprocess.Popen(  # noqa: S603 - the project's interpreter running govern itself, confined
            launch.argv,
            cwd=checkout,
            env=launch.env,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, which is async-signal-safe
            **launch.kwargs,
        )
        while process.poll() is None:
            if cancelled():
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                sink.write("govern: cancelled\n")
                return Ran("cancelled")
            time.sleep(0.5)
        try:
            report = reported.read_report(scratch / "out", FACTS)
            outcome = None
            if report is not None and (process.returncode == 0 or _failed_training(report)):
                outcome = reported.record_reported_training(
                    project, report, trainer(project, row), row.commit, workspace=checkout
                )
        except reported.ReportRefused as refused:
            sink.write(f"govern: job {job_id}: its report was refused, nothing was recorded: {refused}\n")
            return Ran("failed", error=f"The job's report was refused, nothing was recorded: {refused}")
        for warning in outcome.warnings if outcome else []:
            sink.write(f"govern: {warning}\n")
        lock_commit = lock_note = None
        if process.returncode == 0 and outcome is not None and outcome.training_event_id and outcome.status != "failed":
            from govern.api import locks

            lock_commit, lock_note = locks.commit_for_job(
                project, job_id, outcome.training_event_id, checkout, row.requested_by
            )
            if lock_commit:
                sink.write(f"govern: job {job_id}: its dvc.lock is committed as {lock_commit[:12]}\n")
            else:
                sink.write(f"govern: job {job_id}: its versions are not locked: {lock_note}\n")
    if process.returncode != 0 or outcome is None or outcome.status == "failed":
        lines = _log_lines(log)
        error = next((line for line in reversed(lines) if line.startswith("Error:")), None)
        return Ran("failed", error=error or f"govern repro exited {process.returncode} without reporting a training")
    return Ran("succeeded", outcome.training_event_id, None, lock_commit, lock_note)


def trainer(project: Project, row: JobRow) -> attribution.Actor:
    """Who a job's training is recorded under: its requester, authenticated by the server when the request was (the
    server vouches, with its signature, for work a principal asked it for with a token), else as asserted."""
    from govern import attestations

    requested_by, principal = row.requested_by, attribution.principal_of(row.requested_by)
    found = event_reads.authn_of(project.ledger, row.seq)
    authn = attribution.Authn.from_json(found) if found else None
    attested = authn is not None and authn.authenticated and principal is not None
    if attested and attestations.check_events(project.ledger, [row.seq], project.config.trusted_keys)[row.seq]:
        attested = False
    if not attested:
        return attribution.self_asserted(requested_by, f"job {row.job_id}")
    return attribution.on_behalf(principal, requested_by, f"job {row.job_id} ({authn.via})")


def _failed_training(report: dict[str, Any]) -> bool:
    """A job that exited with an error may still have reported its `training.failed`; nothing else counts."""
    events = report.get("events")
    return (
        isinstance(events, list)
        and bool(events)
        and all(isinstance(e, dict) and e.get("type") == "training.failed" for e in events)
    )


def _project_cache(root: Path) -> Path | None:
    """The project's DVC cache, which a job reads (never writes) through its private cache's remote."""
    if not (root / ".dvc").is_dir():
        return None
    from govern.adapters import dvc as dvc_adapter

    cache = dvc_adapter.cache_root(root)
    return cache if cache.is_dir() else None


def _alternates(checkout: Path) -> list[Path]:
    """The object folders a shared clone borrows (the project's .git/objects): a job reads them, nothing else of
    the project's .git (its config may hold a remote's credentials)."""
    listed = checkout / ".git" / "objects" / "info" / "alternates"
    try:
        lines = listed.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [Path(line) for line in lines if line.startswith("/") and Path(line).is_dir()]


def _interpreters(python: str) -> list[str]:
    """The job's Python, and those its stages find on PATH (`python`, `python3`): the sandbox shows them."""
    found = [shutil.which(name) for name in ("python", "python3")]
    return list(dict.fromkeys([python, *[f for f in found if f]]))


def _die_with_parent() -> None:
    """Linux: the job's `govern repro` is killed when the server process dies (kill -9 included), so an
    orphan never records a training that the restarted server runs again. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def log_path(project: Project, job_id: str) -> Path:
    return project.ledger.state_dir / "jobs" / f"{job_id}.log"


def _takeable(row: JobRow, host: str) -> bool:
    if row.state == "queued":
        return True
    return row.state == "running" and row.host == host and not _alive(row.pid)


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


def _row(reader: Reader, job_id: str) -> JobRow:
    if not JOB_ID.match(job_id or ""):
        raise InvalidInput(f"{job_id!r} is not a job id: 12 hexadecimal characters, as the job's answer gives")
    row = job_reads.job(reader, job_id)
    if row is None:
        raise NotFound(f"No job {job_id}: GET /api/v1/trainings lists them")
    return row


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


def resolve_commit(root: Path, commit: str) -> str:
    """The full sha of `commit`, fetched from the project's remotes first when the server's repository lacks it:
    what a training, a job or a verdict names must be a commit an auditor can check out."""
    return fetch_commit(root, commit)


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
