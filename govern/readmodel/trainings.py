"""Trainings and their locks: the trainings not locked yet, the versions their files are, the commits that lock
them, the snapshots of their data."""

from __future__ import annotations

from dataclasses import dataclass

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as


@dataclass(frozen=True, slots=True)
class UnlockedTraining:
    """A training that reported a lock and models, not locked yet: its lock's sha256, its models (JSON text)."""

    event_id: str
    lock: str
    models: str


@dataclass(frozen=True, slots=True)
class TrainingLock:
    """What a training says about its lock: the lock's sha256, its models (JSON text), the commit it ran at."""

    lock: str | None
    models: str | None
    git_commit: str | None


@dataclass(frozen=True, slots=True)
class DatasetSnapshot:
    """A `dataset.snapshotted`: which file (path, md5) and when it was extracted."""

    path: str
    md5: str | None
    event_id: str
    extracted_at: str | None


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A snapshot's event id with the file it names."""

    event_id: str
    path: str
    md5: str | None


@dataclass(frozen=True, slots=True)
class FileRegistration:
    """A registration of a model file (by sha256), with the commit it was registered at."""

    model: str
    version: str
    sha256: str | None
    git_commit: str | None


@dataclass(frozen=True, slots=True)
class TrainingOfLock:
    """The training behind a lock (`same_lock`), else the newest at the commit: its environment (JSON text)."""

    seq: int
    event_id: str
    environment: str | None
    same_lock: bool | None


@dataclass(frozen=True, slots=True)
class RegisteredFile:
    """A version's model file as registered: where MLflow holds it (run, tracking URI) and its sha256."""

    model: str
    version: str
    sha256: str | None
    mlflow_run_id: str | None
    tracking_uri: str | None


UNLOCKED_SQL = """
SELECT t.event_id, t.payload->>'$.dvc_lock_sha256' AS lock, t.payload->'$.models' AS models
FROM events AS t
WHERE t.type = 'training.completed' AND t.payload->>'$.dvc_lock_sha256' IS NOT NULL
  AND json_array_length(t.payload->'$.models') > 0
  AND t.event_id NOT IN (SELECT payload->>'$.training_event_id' FROM events WHERE type = 'training.locked')
ORDER BY t.seq DESC LIMIT 500
"""

VERSIONS_OF_FILES_SQL = """
SELECT model, arg_min(version, seq) AS version FROM model_versions
WHERE model || '@' || sha256 IN (SELECT unnest($keys)) GROUP BY model ORDER BY model
"""

TRAINING_SQL = """
SELECT payload->>'$.dvc_lock_sha256' AS lock, payload->'$.models' AS models, git_commit FROM events
WHERE type = 'training.completed' AND event_id = $id
"""
LOCKED_SQL = "SELECT payload->>'$.commit' FROM events WHERE type = 'training.locked' AND subject = $subject"


def unlocked(reader: Reader) -> list[UnlockedTraining]:
    """The newest trainings (500 at most) that reported a lock and models and are not locked yet."""
    return rows_as(reader, UnlockedTraining, UNLOCKED_SQL)


def locked_ids(reader: Reader) -> set[str]:
    """The event ids of the trainings a `training.locked` names."""
    _, rows = reader.query("SELECT payload->>'$.training_event_id' FROM events WHERE type = 'training.locked'")
    return {r[0] for r in rows}


def versions_of_files(reader: Reader, keys: list[str]) -> list[tuple[str, str]]:
    """(model, its first version) of each `model@sha256` key registered."""
    return reader.query(VERSIONS_OF_FILES_SQL, {"keys": keys})[1]


def lock_of_training(reader: Reader, training_event_id: str) -> TrainingLock | None:
    """What the training says about its lock, or None for no such training."""
    rows = rows_as(reader, TrainingLock, TRAINING_SQL, {"id": training_event_id})
    return rows[0] if rows else None


def lock_commits_of(reader: Reader, training_event_id: str) -> list[str]:
    """The commits recorded as locking the training."""
    return [commit for (commit,) in reader.query(LOCKED_SQL, {"subject": f"training:{training_event_id}"})[1]]


FIND_TRAINING_BY_LOCK = """
SELECT seq FROM events
WHERE type = 'training.completed' AND payload->>'$.dvc_lock_sha256' = ?
ORDER BY seq DESC LIMIT 1
"""

FIND_SNAPSHOTS = """
SELECT payload->>'$.path' AS path, payload->>'$.md5' AS md5, event_id, payload->>'$.extracted_at' AS extracted_at
FROM events
WHERE type = 'dataset.snapshotted' AND payload->>'$.path' IN (SELECT unnest(?))
ORDER BY seq
"""

REGISTRATIONS_OF_FILES = """
SELECT model, version, sha256, git_commit FROM model_versions
WHERE model IN (SELECT unnest($models)) AND sha256 IN (SELECT unnest($digests))
ORDER BY seq
"""

RECORDED_VERSIONS = """
SELECT model, max(TRY_CAST(version AS BIGINT)) FROM model_versions
WHERE model IN (SELECT unnest($models)) GROUP BY model
"""


def by_lock(reader: Reader, lock_sha256: str) -> int | None:
    """The seq of the newest training that reported this lock digest, or None."""
    _, rows = reader.query(FIND_TRAINING_BY_LOCK, [lock_sha256])
    return rows[0][0] if rows else None


def lock_count(reader: Reader, training_event_id: str) -> int:
    """How many `training.locked` name the training."""
    _, rows = reader.query(
        "SELECT count(*) FROM events WHERE type = 'training.locked' AND payload->>'$.training_event_id' = ?",
        [training_event_id],
    )
    return rows[0][0]


def snapshots_of_paths(reader: Reader, paths: list[str]) -> list[DatasetSnapshot]:
    """Every snapshot of these paths, oldest first."""
    return rows_as(reader, DatasetSnapshot, FIND_SNAPSHOTS, [paths])


def registrations_of_files(reader: Reader, models: list[str], digests: list[str]) -> list[FileRegistration]:
    """Registrations of these models with these files, oldest first."""
    return rows_as(reader, FileRegistration, REGISTRATIONS_OF_FILES, {"models": models, "digests": digests})


def recorded_versions(reader: Reader, models: list[str]) -> list[tuple[str, int | None]]:
    """(model, its highest numeric version) for each of these models registered."""
    _, rows = reader.query(RECORDED_VERSIONS, {"models": models})
    return rows


EXISTING_IDS = "SELECT event_id FROM events WHERE event_id IN (SELECT unnest($ids))"
SNAPSHOTS_OF = """
SELECT event_id, payload->>'$.path' AS path, payload->>'$.md5' AS md5 FROM events
WHERE type = 'dataset.snapshotted' AND event_id IN (SELECT unnest($ids))
"""
TRAINING_BY_LOCK = """
SELECT event_id FROM events
WHERE type = 'training.completed' AND payload->>'$.dvc_lock_sha256' = $lock
ORDER BY seq DESC LIMIT 1
"""
KNOWN_SNAPSHOTS = """
SELECT payload->>'$.path' AS path, payload->>'$.md5' AS md5, event_id, payload->>'$.extracted_at' AS extracted_at
FROM events WHERE type = 'dataset.snapshotted' ORDER BY seq
"""


def existing_ids(reader: Reader, ids: list[str]) -> list[str]:
    """Those of these event ids the ledger holds."""
    _, rows = reader.query(EXISTING_IDS, {"ids": ids})
    return [event_id for (event_id,) in rows]


def snapshots_by_id(reader: Reader, ids: list[str]) -> list[SnapshotFile]:
    """The snapshots with these event ids."""
    return rows_as(reader, SnapshotFile, SNAPSHOTS_OF, {"ids": ids})


def training_of_lock(reader: Reader, lock_sha256: str | None) -> str | None:
    """The event id of the newest training that reported this lock digest, or None."""
    _, rows = reader.query(TRAINING_BY_LOCK, {"lock": lock_sha256})
    return rows[0][0] if rows else None


def known_snapshots(reader: Reader) -> list[DatasetSnapshot]:
    """Every dataset snapshot, oldest first."""
    return rows_as(reader, DatasetSnapshot, KNOWN_SNAPSHOTS)


TRAINING_OF_LOCK = """
SELECT seq, event_id, payload->'$.environment' AS environment,
       payload->>'$.dvc_lock_sha256' = $lock AS same_lock
FROM events
WHERE type = 'training.completed' AND (payload->>'$.dvc_lock_sha256' = $lock OR git_commit = $commit)
ORDER BY same_lock DESC, seq DESC LIMIT 1
"""

REGISTRATION_OF_FILE = """
SELECT mv.model, mv.version, mv.sha256, mv.mlflow_run_id, e.payload->>'$.tracking_uri' AS tracking_uri
FROM model_versions AS mv JOIN events AS e ON e.seq = mv.seq
WHERE mv.path = $path AND mv.md5 = $md5
ORDER BY mv.seq DESC LIMIT 1
"""


def training_of_lock_or_commit(reader: Reader, lock_sha256: str, commit: str) -> TrainingOfLock | None:
    """The training that wrote this lock, else the newest at this commit."""
    rows = rows_as(reader, TrainingOfLock, TRAINING_OF_LOCK, {"lock": lock_sha256, "commit": commit})
    return rows[0] if rows else None


def registration_of_file(reader: Reader, path: str, md5: str) -> RegisteredFile | None:
    """The newest registration of a model file at this path with this md5."""
    rows = rows_as(reader, RegisteredFile, REGISTRATION_OF_FILE, {"path": path, "md5": md5})
    return rows[0] if rows else None
