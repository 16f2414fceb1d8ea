"""Training jobs: the jobs as `training_jobs` has them, how many, and the lock commit of a finished one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as


@dataclass(frozen=True, slots=True)
class JobRow:
    """A training job as its events left it: requested, maybe started (where, which attempt), maybe finished."""

    job_id: str
    state: str
    commit: str
    targets: list[str]
    requested_at: datetime
    requested_by: str
    started_at: datetime | None
    host: str | None
    pid: int | None
    attempts: int
    finished_at: datetime | None
    finished_by: str | None
    training_event_id: str | None
    error: str | None
    seq: int


JOBS_SQL = """
SELECT job_id, state, commit, targets, requested_at, requested_by, started_at, host, pid, attempts, finished_at,
       finished_by, training_event_id, error, seq
FROM training_jobs
WHERE ($state IS NULL OR state = $state) AND ($job IS NULL OR job_id = $job)
ORDER BY seq
"""

LOCK_OF_JOB_SQL = """
SELECT (SELECT payload->>'$.commit' FROM events WHERE type = 'training.locked' AND subject = 'training:' || $training
        ORDER BY seq LIMIT 1),
       (SELECT payload->>'$.lock_note' FROM events WHERE type = 'job.finished' AND subject = 'job:' || $job
        ORDER BY seq LIMIT 1)
"""


def jobs(reader: Reader, state: str | None = None, newest: int | None = None) -> list[JobRow]:
    """The jobs (in `state`), oldest first; with `newest`, only that many of the latest, newest first."""
    sql = JOBS_SQL if newest is None else f"SELECT * FROM ({JOBS_SQL}) ORDER BY seq DESC LIMIT {int(newest)}"
    return rows_as(reader, JobRow, sql, {"state": state, "job": None})


def job(reader: Reader, job_id: str) -> JobRow | None:
    """The job with this id, or None."""
    rows = rows_as(reader, JobRow, JOBS_SQL, {"state": None, "job": job_id})
    return rows[0] if rows else None


def count(reader: Reader) -> int:
    """How many jobs were ever requested."""
    return reader.query("SELECT count(*) FROM training_jobs")[1][0][0]


def lock_of(reader: Reader, training_event_id: str, job_id: str) -> tuple[str | None, str | None]:
    """(the first lock commit of the job's training, the note the job's end recorded about its lock)."""
    commit, note = reader.query(LOCK_OF_JOB_SQL, {"training": training_event_id, "job": job_id})[1][0]
    return commit, note
