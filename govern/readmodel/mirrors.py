"""What is still to be mirrored: trainings MLflow has not recorded yet, models whose MLflow aliases lag the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as

PENDING_TRAININGS_SQL = """
SELECT t.event_id, t.payload, t.git_commit, t.actor, t.occurred_at
FROM events AS t
WHERE t.type = 'training.completed'
  AND t.payload->>'$.mlflow.status' = 'pending'
  AND NOT EXISTS (
      SELECT 1 FROM events AS m
      WHERE m.type = 'training.mirrored' AND m.payload->>'$.training_event_id' = t.event_id
  )
ORDER BY t.seq
"""

PENDING_REGISTRY_SQL = """
WITH changes AS (
    SELECT payload->>'$.model' AS model, max(seq) AS through_seq, count(*) AS events
    FROM events WHERE type IN ('model.promoted', 'model.deprecated') GROUP BY 1
),
mirrored AS (
    SELECT payload->>'$.model' AS model, max((payload->>'$.through_seq')::BIGINT) AS through_seq
    FROM events WHERE type = 'registry.mirrored' GROUP BY 1
)
SELECT c.model, c.through_seq, coalesce(m.through_seq, 0) AS mirrored_through
FROM changes AS c LEFT JOIN mirrored AS m USING (model)
WHERE c.through_seq > coalesce(m.through_seq, 0)
ORDER BY c.model
"""

LOCKED_SINCE_SQL = """
SELECT v->>'$.version' AS version, arg_min(commit, seq) AS commit
FROM (SELECT seq, payload->>'$.commit' AS commit, unnest(from_json(payload->'$.versions', '["JSON"]')) AS v
      FROM events WHERE type = 'training.locked' AND seq > $since)
WHERE v->>'$.model' = $model
GROUP BY 1 ORDER BY 1
"""

DEPRECATED_SINCE_SQL = """
SELECT DISTINCT version FROM deprecations WHERE model = $model AND seq > $since ORDER BY version
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """A model whose MLflow aliases do not yet reflect the ledger's promotions and deprecations."""

    model: str
    through_seq: int
    mirrored_through: int


@dataclass(frozen=True, slots=True)
class PendingTraining:
    """A `training.completed` MLflow has not recorded yet: what its mirror needs (the payload as JSON text)."""

    event_id: str
    payload: str
    git_commit: str | None
    actor: str
    occurred_at: datetime


def pending_trainings(reader: Reader) -> list[PendingTraining]:
    """Trainings whose MLflow mirror is pending, oldest first."""
    return rows_as(reader, PendingTraining, PENDING_TRAININGS_SQL)


def pending_registry(reader: Reader) -> list[Pending]:
    """The models whose MLflow aliases lag the ledger, by name."""
    return rows_as(reader, Pending, PENDING_REGISTRY_SQL)


def deprecated_since(reader: Reader, model: str, since: int) -> list[str]:
    """The model's versions deprecated after seq `since`."""
    _, rows = reader.query(DEPRECATED_SINCE_SQL, {"model": model, "since": since})
    return [version for (version,) in rows]


def locked_since(reader: Reader, model: str, since: int) -> dict[str, str]:
    """The model's versions locked after seq `since`, each with its (first) lock commit."""
    _, rows = reader.query(LOCKED_SINCE_SQL, {"model": model, "since": since})
    return dict(rows)
