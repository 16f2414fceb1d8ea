"""Trainings and their locks: the trainings not locked yet, the versions their files are, the commits that lock
them, the snapshots of their data."""

from __future__ import annotations

from typing import Any

from govern.ledger import Reader
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
