"""Serving a model: the registered file of a version, what it was trained on, and the inference records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as

MODEL_SQL = """
SELECT mv.path, mv.md5, mv.sha256, mv.mlflow_run_id, t.payload AS training_payload
FROM (SELECT * FROM model_versions WHERE model = ? AND version = ? ORDER BY seq DESC LIMIT 1) AS mv
LEFT JOIN events AS t ON t.event_id = mv.training_event_id
"""

# The batches of the window (and of the principal) first, their payloads parsed after: DuckDB would otherwise parse
# every inference payload of the window to test the app before looking at the actor.
INFERENCES_SQL = """
WITH batches AS MATERIALIZED (
    SELECT seq, occurred_at, actor, payload FROM events
    WHERE type = 'inference.recorded' AND seq > $after AND seq <= $upto
      AND ($principal IS NULL OR actor = $principal OR starts_with(actor, $principal || ' (token '))
)
SELECT seq, occurred_at, actor, payload->>'$.model' AS model, payload->>'$.version' AS version,
       payload->>'$.app' AS app, payload->>'$.env' AS env, (payload->>'$.rows')::BIGINT AS rows,
       payload->>'$.input_path' AS input, payload->>'$.input_sha256' AS input_sha256,
       payload->>'$.output_sha256' AS output_sha256, (payload->>'$.duration_s')::DOUBLE AS duration_s,
       coalesce((payload->>'$.allowed_deprecated')::BOOLEAN, false) AS allowed_deprecated
FROM batches
WHERE payload->>'$.app' = $app AND ($env IS NULL OR payload->>'$.env' = $env)
ORDER BY seq DESC LIMIT $limit
"""

TRAINED_ON_SQL = """
SELECT t.payload->'$.datasets' AS datasets
FROM registrations AS r JOIN events AS t ON t.seq = r.training_seq
WHERE r.model = $model AND r.version = $version
ORDER BY r.seq DESC LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class ModelFileRow:
    """Where a version's model file is (the workspace path, MLflow's run) and what its bytes must hash to."""

    path: str
    md5: str | None
    sha256: str | None
    mlflow_run_id: str | None
    training_payload: str | None  # its training's payload, JSON text (None: the training is not in the ledger)


def model_file(reader: Reader, model: str, version: str) -> ModelFileRow | None:
    """The version's latest registration's model file, or None (no such version)."""
    rows = rows_as(reader, ModelFileRow, MODEL_SQL, [model, version])
    return rows[0] if rows else None


@dataclass(frozen=True, slots=True)
class InferenceRow:
    """A batch of rows scored by a version (`inference.recorded`): who asked, for which app/env, the input and
    output by their digests."""

    seq: int
    occurred_at: datetime
    actor: str
    model: str | None
    version: str | None
    app: str | None
    env: str | None
    rows: int | None
    input: str | None
    input_sha256: str | None
    output_sha256: str | None
    duration_s: float | None
    allowed_deprecated: bool


def inferences(
    reader: Reader, app: str, env: str | None, principal: str | None, after: int, upto: int, limit: int
) -> list[InferenceRow]:
    """The newest `limit` inference records of `app` (in `env`, of `principal`) among seqs (after, upto], newest
    first."""
    return rows_as(
        reader,
        InferenceRow,
        INFERENCES_SQL,
        {"after": after, "upto": upto, "principal": principal, "app": app, "env": env, "limit": limit},
    )


def trained_on(reader: Reader, model: str, version: str) -> str | None:
    """The datasets (JSON text) of the training of the version's latest registration, or None (no such training,
    or none recorded)."""
    _, rows = reader.query(TRAINED_ON_SQL, {"model": model, "version": version})
    return rows[0][0] if rows else None
