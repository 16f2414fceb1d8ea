"""Promotion requests and their decisions: the requests, the approver's queue, one request's evidence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as


@dataclass(frozen=True, slots=True)
class PromotionRequestRow:
    """A promotion request and its decision, if any (`evidence` and the `_authn` fields as JSON text)."""

    request_seq: int
    state: str
    model: str
    version: str
    to_stage: str
    requested_at: datetime
    requested_by: str
    reason: str | None
    evidence: str | None
    decided_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    decision_seq: int | None
    forced: bool
    requested_authn: str | None
    decided_authn: str | None


@dataclass(frozen=True, slots=True)
class QueuedRequestRow:
    """A pending request in the approver's queue, with its version's training commit and trainer and the version
    holding the stage now."""

    request_seq: int
    model: str
    version: str
    to_stage: str
    requested_at: datetime
    requested_by: str
    reason: str | None
    evidence: str | None
    git_commit: str | None
    holder: str | None
    requested_authn: str | None
    trained_by: str | None
    trained_authn: str | None


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A decided request: approved or rejected, when, by whom and why."""

    request_seq: int
    state: str
    model: str
    version: str
    to_stage: str
    requested_by: str
    decided_at: datetime
    decided_by: str
    decision_reason: str | None
    decision_seq: int
    requested_authn: str | None
    decided_authn: str | None


@dataclass(frozen=True, slots=True)
class VersionTrainingRow:
    """The training event of a version (`payload` as JSON text)."""

    version: str
    seq: int
    occurred_at: datetime
    actor: str
    git_commit: str | None
    payload: str


REQUESTS_SQL = """
SELECT request_seq, state, model, version, to_stage, requested_at, requested_by, reason, evidence,
       decided_at, decided_by, decision_reason, decision_seq, forced, requested_authn, decided_authn
FROM promotion_requests
WHERE ($state IS NULL OR state = $state) AND ($model IS NULL OR model = $model)
  AND ($seq IS NULL OR request_seq = $seq)
ORDER BY request_seq
"""


# The view materialised first: filtered on its computed state, DuckDB plans the view's join three times slower.
QUEUE_SQL = """
WITH requests AS MATERIALIZED (SELECT * FROM promotion_requests),
req AS (
    SELECT request_seq, model, version, to_stage, requested_at, requested_by, reason, evidence, requested_authn
    FROM requests WHERE state = 'pending' ORDER BY request_seq LIMIT $limit
),
reg AS (
    SELECT model, version, arg_max(training_commit, seq) AS git_commit, arg_max(training_seq, seq) AS training_seq
    FROM registrations WHERE (model, version) IN (SELECT model, version FROM req) GROUP BY ALL
)
SELECT req.request_seq, req.model, req.version, req.to_stage, req.requested_at, req.requested_by, req.reason,
       req.evidence, reg.git_commit, h.version AS holder, req.requested_authn, t.actor AS trained_by,
       t.authn AS trained_authn
FROM req
LEFT JOIN reg ON reg.model = req.model AND reg.version = req.version
LEFT JOIN events AS t ON t.seq = reg.training_seq
LEFT JOIN stage_assignments AS h ON h.model = req.model AND h.stage = req.to_stage
ORDER BY req.request_seq
"""

# Requests less decisions (each request is decided at most once, in the deciding transaction): a scan of the
# event types, without the view's join of payloads.
PENDING_COUNT_SQL = """
SELECT count(*) FILTER (WHERE type = 'model.promotion_requested')
       - count(*) FILTER (WHERE type <> 'model.promotion_requested')
FROM events WHERE type IN ('model.promotion_requested', 'model.promotion_approved', 'model.promotion_rejected')
"""

DECIDED_SQL = """
SELECT request_seq, state, model, version, to_stage, requested_by, decided_at, decided_by, decision_reason,
       decision_seq, requested_authn, decided_authn
FROM promotion_requests WHERE state <> 'pending' ORDER BY decision_seq DESC LIMIT $limit
"""

# The version that held the stage before `before` (a decision's seq; or now): the latest promotion to it of a
# version not deprecated by then, as `stage_assignments` says for now.
HOLDER_SQL = """
SELECT arg_max(p.version, p.seq) FROM promotions AS p
WHERE p.model = $model AND p.to_stage = $stage AND p.seq < $before
  AND NOT EXISTS (SELECT 1 FROM deprecations AS d
                  WHERE d.model = p.model AND d.version = p.version AND d.seq < $before)
"""

TRAINING_OF_VERSIONS_SQL = """
SELECT r.version, t.seq, t.occurred_at, t.actor, t.git_commit, t.payload
FROM (SELECT version, arg_max(training_seq, seq) AS training_seq FROM registrations
      WHERE model = $model AND version IN (SELECT unnest($versions)) GROUP BY version) AS r
JOIN events AS t ON t.seq = r.training_seq
"""

# One request and its decision, as `promotion_requests` has them, read by the request's seq: the view would parse
# every decision's payload before the seq could narrow it (5x slower on a million events).
REQUEST_SQL = """
SELECT r.seq AS request_seq,
       CASE d.type WHEN 'model.promotion_approved' THEN 'approved'
                   WHEN 'model.promotion_rejected' THEN 'rejected' ELSE 'pending' END AS state,
       r.payload->>'$.model' AS model, r.payload->>'$.version' AS version, r.payload->>'$.to_stage' AS to_stage,
       r.occurred_at AS requested_at, r.actor AS requested_by, r.payload->>'$.reason' AS reason,
       r.payload->'$.evidence' AS evidence, d.occurred_at AS decided_at, d.actor AS decided_by,
       d.payload->>'$.reason' AS decision_reason, d.seq AS decision_seq,
       coalesce((r.payload->>'$.forced')::BOOLEAN, false) AS forced, r.authn AS requested_authn,
       d.authn AS decided_authn
FROM (SELECT * FROM events WHERE seq = $seq AND type = 'model.promotion_requested') AS r
LEFT JOIN (SELECT * FROM events
           WHERE type IN ('model.promotion_approved', 'model.promotion_rejected') AND seq > $seq
             AND (payload->>'$.request_seq')::BIGINT = $seq) AS d ON true
"""

PROMOTION_OF_REQUEST_SQL = """
SELECT seq FROM promotions WHERE model = $model AND version = $version AND to_stage = $stage AND seq > $after
ORDER BY seq LIMIT 1
"""


def requests(reader: Reader, state: str | None, model: str | None, seq: int | None = None) -> list[PromotionRequestRow]:
    """Promotion requests (of a state, of a model, or one by its seq), oldest first, as `promotion_requests` has
    them (`evidence` as JSON text)."""
    return rows_as(reader, PromotionRequestRow, REQUESTS_SQL, {"state": state, "model": model, "seq": seq})


def queue(reader: Reader, limit: int) -> list[QueuedRequestRow]:
    """The oldest `limit` pending requests, each with its version's training commit and trainer, and the version
    holding the stage now."""
    return rows_as(reader, QueuedRequestRow, QUEUE_SQL, {"limit": limit})


def pending_count(reader: Reader) -> int:
    _, [(total,)] = reader.query(PENDING_COUNT_SQL)
    return total


def decided(reader: Reader, limit: int) -> list[DecisionRow]:
    """The latest `limit` decisions, newest first."""
    return rows_as(reader, DecisionRow, DECIDED_SQL, {"limit": limit})


def holder_before(reader: Reader, model: str, stage: str, before: int) -> str | None:
    """The version that held the stage before seq `before`."""
    _, [(holder,)] = reader.query(HOLDER_SQL, {"model": model, "stage": stage, "before": before})
    return holder


def trainings_of_versions(reader: Reader, model: str, versions: list[str]) -> list[VersionTrainingRow]:
    """Each version's training."""
    return rows_as(reader, VersionTrainingRow, TRAINING_OF_VERSIONS_SQL, {"model": model, "versions": versions})


def request(reader: Reader, seq: int) -> PromotionRequestRow | None:
    """One request and its decision (None: no request has this seq)."""
    rows = rows_as(reader, PromotionRequestRow, REQUEST_SQL, {"seq": seq})
    return rows[0] if rows else None


def promotion_of_request(reader: Reader, model: str, version: str, stage: str, after: int) -> int | None:
    """The seq of the first promotion of the version to the stage after seq `after`."""
    _, found = reader.query(
        PROMOTION_OF_REQUEST_SQL, {"model": model, "version": version, "stage": stage, "after": after}
    )
    return found[0][0] if found else None
