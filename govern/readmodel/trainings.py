"""Trainings and their locks: the trainings not locked yet, the versions their files are, the commits that lock
them, the snapshots of their data."""

from __future__ import annotations

from typing import Any

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as_dicts

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
SELECT payload->>'$.dvc_lock_sha256', payload->'$.models', git_commit FROM events
WHERE type = 'training.completed' AND event_id = $id
"""
LOCKED_SQL = "SELECT payload->>'$.commit' FROM events WHERE type = 'training.locked' AND subject = $subject"


def unlocked(reader: Reader) -> list[dict[str, Any]]:
    """The newest trainings (500 at most) that reported a lock and models and are not locked yet: event_id, lock
    (its sha256), models (JSON text)."""
    return rows_as_dicts(reader, UNLOCKED_SQL)


def locked_ids(reader: Reader) -> set[str]:
    """The event ids of the trainings a `training.locked` names."""
    _, rows = reader.query("SELECT payload->>'$.training_event_id' FROM events WHERE type = 'training.locked'")
    return {r[0] for r in rows}


def versions_of_files(reader: Reader, keys: list[str]) -> list[tuple[str, str]]:
    """(model, its first version) of each `model@sha256` key registered."""
    return reader.query(VERSIONS_OF_FILES_SQL, {"keys": keys})[1]


def lock_of_training(reader: Reader, training_event_id: str) -> list[tuple]:
    """The training's (lock sha256, models as JSON text, git commit): none or one row."""
    return reader.query(TRAINING_SQL, {"id": training_event_id})[1]


def lock_commits_of(reader: Reader, training_event_id: str) -> list[tuple]:
    """The commits recorded as locking the training, as `(commit,)` rows."""
    return reader.query(LOCKED_SQL, {"subject": f"training:{training_event_id}"})[1]


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


def by_lock(reader: Reader, lock_sha256: str) -> list[tuple]:
    """The newest training that reported this lock digest, as `(seq,)` (none or one row)."""
    _, rows = reader.query(FIND_TRAINING_BY_LOCK, [lock_sha256])
    return rows


def lock_count(reader: Reader, training_event_id: str) -> int:
    """How many `training.locked` name the training."""
    _, rows = reader.query(
        "SELECT count(*) FROM events WHERE type = 'training.locked' AND payload->>'$.training_event_id' = ?",
        [training_event_id],
    )
    return rows[0][0]


def snapshots_of_paths(reader: Reader, paths: list[str]) -> list[tuple]:
    """Every snapshot of these paths, oldest first: (path, md5, event_id, extracted_at)."""
    _, rows = reader.query(FIND_SNAPSHOTS, [paths])
    return rows


def registrations_of_files(reader: Reader, models: list[str], digests: list[str]) -> list[tuple]:
    """Registrations of these models with these files, oldest first: (model, version, sha256, git_commit)."""
    _, rows = reader.query(REGISTRATIONS_OF_FILES, {"models": models, "digests": digests})
    return rows


def recorded_versions(reader: Reader, models: list[str]) -> list[tuple]:
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


def existing_ids(reader: Reader, ids: list[str]) -> list[tuple]:
    """Those of these event ids the ledger holds, as `(event_id,)` rows."""
    _, rows = reader.query(EXISTING_IDS, {"ids": ids})
    return rows


def snapshots_by_id(reader: Reader, ids: list[str]) -> list[tuple]:
    """The snapshots with these event ids: (event_id, path, md5)."""
    _, rows = reader.query(SNAPSHOTS_OF, {"ids": ids})
    return rows


def training_of_lock(reader: Reader, lock_sha256: str | None) -> list[tuple]:
    """The newest training that reported this lock digest, as `(event_id,)` (none or one row)."""
    _, rows = reader.query(TRAINING_BY_LOCK, {"lock": lock_sha256})
    return rows


def known_snapshots(reader: Reader) -> list[tuple]:
    """Every dataset snapshot, oldest first: (path, md5, event_id, extracted_at)."""
    _, rows = reader.query(KNOWN_SNAPSHOTS)
    return rows


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


def training_of_lock_or_commit(reader: Reader, lock_sha256: str, commit: str) -> dict[str, Any] | None:
    """The training that wrote this lock, else the newest at this commit: seq, event_id, environment (JSON text),
    same_lock."""
    rows = rows_as_dicts(reader, TRAINING_OF_LOCK, {"lock": lock_sha256, "commit": commit})
    return rows[0] if rows else None


def registration_of_file(reader: Reader, path: str, md5: str) -> dict[str, Any] | None:
    """The newest registration of a model file at this path with this md5: model, version, sha256, mlflow_run_id,
    tracking_uri."""
    rows = rows_as_dicts(reader, REGISTRATION_OF_FILE, {"path": path, "md5": md5})
    return rows[0] if rows else None
