"""The report's questions: one model version's training, registrations, promotions and the grants behind them,
its production windows (from deployment_index, see below), its inferences, and the ledger's head."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as_dicts

TRAINING_SQL = """
SELECT t.seq, t.event_id, t.occurred_at, t.actor, t.git_commit, t.payload, mv.seq AS registered_seq,
       mv.occurred_at AS registered_at, mv.actor AS registered_by, mv.payload AS registration
FROM (SELECT * FROM events WHERE type = 'model.registered' AND subject = $subject ORDER BY seq DESC LIMIT 1) AS mv
JOIN events AS t ON t.event_id = mv.payload->>'$.training_event_id'
"""

VERSIONS_SQL = """
SELECT mv.version, mv.seq, t.payload->'$.metrics' AS metrics
FROM model_versions AS mv LEFT JOIN events AS t ON t.event_id = mv.training_event_id
WHERE mv.model = $model
ORDER BY try_cast(mv.version AS INTEGER), mv.seq
"""

# A point lookup on events' unique index of event_id (a type filter here would make it a scan of every snapshot,
# 25 ms at a million events); the type is checked on the rows found.
SNAPSHOTS_SQL = """
SELECT event_id, seq, type, payload FROM events WHERE event_id = ANY($ids)
"""

# Each promotion with the request it decided, if any: who asked and why, and why the approver agreed (the four
# eyes of issue 26: the promotion's actor is the approver, the requester is on the request)
PROMOTIONS_SQL = """
SELECT p.seq, p.promoted_at, p.actor, p.approver, p.from_stage, p.to_stage, p.reason, p.forced, p.gto_tag,
       r.request_seq, r.requested_by, r.reason AS request_reason, r.decision_reason AS approval_reason
FROM promotions AS p
JOIN events AS e ON e.seq = p.seq
LEFT JOIN promotion_requests AS r ON r.request_seq = TRY_CAST(e.payload->>'$.request_seq' AS BIGINT)
WHERE p.model = $model AND p.version = $version ORDER BY p.seq
"""

# Who acted on each promotion, with how the server established it (the promotion's own `authn`)
ACTED_SQL = """
SELECT p.seq, p.promoted_at, p.actor, p.approver, e.authn
FROM promotions AS p JOIN events AS e ON e.seq = p.seq
WHERE p.model = $model AND p.version = $version ORDER BY p.seq
"""

# The grant of a role a principal held at an instant: who confirmed it, who proposed it, on what basis
GRANT_AT_SQL = """
SELECT grant_seq, granted_at, granted_by, granted_authn, basis, proposal_seq, proposed_at, proposed_by,
       proposed_authn, proposed_break_glass, reason
FROM role_grants
WHERE principal = $principal AND role = $role AND granted_at <= $at AND (ended_at IS NULL OR ended_at > $at)
ORDER BY grant_seq DESC LIMIT 1
"""

ISSUER_SQL = "SELECT issuer, issuer_authn, code_id FROM token_issuers WHERE token_id = $token_id"
ANY_GRANT_SQL = "SELECT 1 FROM events WHERE type = 'access.granted' LIMIT 1"

DEPRECATION_SQL = """
SELECT seq, deprecated_at, actor, reason FROM deprecations WHERE model = $model AND version = $version ORDER BY seq
"""

INFERENCE_SQL = """
SELECT coalesce(app, '(no app)') AS app, coalesce(env, '-') AS env,
       strftime(date_trunc('month', occurred_at), '%Y-%m') AS month,
       count(*) AS batches, sum(rows) AS rows, min(seq) AS first_seq, max(seq) AS last_seq
FROM inferences WHERE model = $model AND version = $version
GROUP BY ALL ORDER BY month, app, env
"""

# A version can serve thousands of windows: the report shows a summary per app/env of all of them, the
# latest WINDOWS_SHOWN in full, and a timeline of the TIMELINE_SLOTS slots it served most recently.
WINDOWS_SHOWN = 100
TIMELINE_SLOTS = 12
TIMELINE_WINDOWS = 40

# These read deployment_index (a table sorted by slot key), never the production_windows view: the view pairs
# every deployment of every slot by a window function (0.1-0.2 s at a million events, per query). A version's
# own deployment events suffice, because govern records one slot's windows in order: a start, then the end that
# names it, before the next start (`deploy` records the replaced window's end first). So per slot, a version's
# starts and ends alternate, and its windows are summed without pairing them: closed time = the ends' instants
# minus the starts' instants, less the open start, if any (integer microseconds: exact). The view stays the
# definition; tests/test_report.py holds these queries to it on a history of replacements and retirements.
SLOT_SUMMARY_SQL = """
SELECT app, env, windows, first_start, CASE WHEN serving THEN NULL ELSE last_end END AS last_end, serving,
       (ends_us - starts_us + CASE WHEN serving THEN last_start_us ELSE 0 END) / 1e6 AS closed_s,
       last_start_seq, slot_key
FROM (
    SELECT app, env, count(*) FILTER (type = 'deployment.started') AS windows,
           min(occurred_at) FILTER (type = 'deployment.started') AS first_start,
           max(occurred_at) FILTER (type = 'deployment.ended') AS last_end,
           count(*) FILTER (type = 'deployment.started') > count(*) FILTER (type = 'deployment.ended') AS serving,
           sum(epoch_us(occurred_at)) FILTER (type = 'deployment.ended') AS ends_us,
           sum(epoch_us(occurred_at)) FILTER (type = 'deployment.started') AS starts_us,
           max(epoch_us(occurred_at)) FILTER (type = 'deployment.started') AS last_start_us,
           max(seq) FILTER (type = 'deployment.started') AS last_start_seq, any_value(slot_key) AS slot_key
    FROM deployment_index WHERE model = $model AND version = $version
    GROUP BY app, env
)
WHERE windows > 0
ORDER BY last_start_seq DESC
"""

# The latest starts of the version, then the version's events from the earliest of them on: each start's end
# is among those. Two queries, as DuckDB prunes the second by a constant and not by a subquery's answer.
LATEST_START_SQL = f"""
SELECT min(seq) AS since FROM (
    SELECT seq FROM deployment_index
    WHERE model = $model AND version = $version AND type = 'deployment.started'
    ORDER BY seq DESC LIMIT {WINDOWS_SHOWN}
)
"""

LATEST_WINDOWS_SQL = """
WITH latest AS (
    SELECT *, lead(type) OVER slot AS next_type, lead(occurred_at) OVER slot AS next_at,
           lead(seq) OVER slot AS next_seq, lead(actor) OVER slot AS next_actor, lead(reason) OVER slot AS next_reason
    FROM deployment_index
    WHERE model = $model AND version = $version AND seq >= $since
    WINDOW slot AS (PARTITION BY app, env ORDER BY seq)
)
SELECT app, env, occurred_at AS started_at, CASE WHEN closed THEN next_at END AS ended_at,
       CASE WHEN closed THEN epoch(next_at - occurred_at) END AS duration_s, actor AS deployed_by,
       CASE WHEN closed THEN next_actor END AS ended_by, CASE WHEN closed THEN next_reason END AS end_reason,
       seq AS start_seq, CASE WHEN closed THEN next_seq END AS end_seq
FROM (SELECT *, next_type = 'deployment.ended' AS closed FROM latest)
WHERE type = 'deployment.started'
ORDER BY app, env, start_seq
"""

# The 12 slots' own rows only, by key (an integer, from the summary) and by name (a key alone could collide).
TIMELINE_SQL = f"""
SELECT app, env, model, version, started_at, ended_at, start_seq FROM (
    SELECT *, row_number() OVER (PARTITION BY app, env ORDER BY start_seq DESC) AS recency FROM (
        SELECT app, env, model, version, type, occurred_at AS started_at, seq AS start_seq,
               CASE WHEN lead(type) OVER slot = 'deployment.ended' THEN lead(occurred_at) OVER slot END AS ended_at
        FROM deployment_index
        WHERE slot_key IN (SELECT unnest($keys)) AND (app, env) IN (SELECT unnest($apps), unnest($envs))
        WINDOW slot AS (PARTITION BY app, env ORDER BY seq)
    )
    WHERE type = 'deployment.started'
)
WHERE recency <= {TIMELINE_WINDOWS}
ORDER BY app, env, start_seq
"""


ATTRIBUTION_SQL = "SELECT seq, actor, authn FROM events WHERE seq IN (SELECT unnest($seqs))"

HEAD_SQL = "SELECT count(*), (SELECT hash FROM events WHERE seq = (SELECT max(seq) FROM events)) FROM events"


def version_metrics(reader: Reader, model: str) -> list[dict[str, Any]]:
    """The model's versions in order, each with its training's metrics (JSON text)."""
    return rows_as_dicts(reader, VERSIONS_SQL, {"model": model})


def newest_version_metrics(reader: Reader, model: str, newest: int) -> list[dict[str, Any]]:
    """`version_metrics` of the model's `newest` newest versions, newest first."""
    sql = f"SELECT * FROM ({VERSIONS_SQL}) ORDER BY try_cast(version AS INTEGER) DESC, seq DESC LIMIT $newest"
    return rows_as_dicts(reader, sql, {"model": model, "newest": newest})


def training_of_version(reader: Reader, model: str, version: str) -> dict[str, Any]:
    """The version's latest registration with the training it names (payloads as JSON text)."""
    return rows_as_dicts(reader, TRAINING_SQL, {"subject": f"model:{model}@{version}"})[0]


def attributions(reader: Reader, seqs: list[int]) -> list[dict[str, Any]]:
    """Each event's seq, actor and authn."""
    return rows_as_dicts(reader, ATTRIBUTION_SQL, {"seqs": seqs})


def snapshots(reader: Reader, ids: list[str]) -> list[dict[str, Any]]:
    """The events with these ids (any type: the caller checks it)."""
    return rows_as_dicts(reader, SNAPSHOTS_SQL, {"ids": ids})


def promotions(reader: Reader, model: str, version: str) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, PROMOTIONS_SQL, {"model": model, "version": version})


def deprecations(reader: Reader, model: str, version: str) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, DEPRECATION_SQL, {"model": model, "version": version})


def acted(reader: Reader, model: str, version: str) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, ACTED_SQL, {"model": model, "version": version})


def any_grant(reader: Reader) -> bool:
    """Was any role ever granted?"""
    return bool(reader.query(ANY_GRANT_SQL)[1])


def token_issuer(reader: Reader, token_id: str | None) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, ISSUER_SQL, {"token_id": token_id})


def grant_at(reader: Reader, principal: str, role: str, at: datetime) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, GRANT_AT_SQL, {"principal": principal, "role": role, "at": at})


def slot_summary(reader: Reader, model: str, version: str) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, SLOT_SUMMARY_SQL, {"model": model, "version": version})


def latest_start(reader: Reader, model: str, version: str) -> int | None:
    _, [(since,)] = reader.query(LATEST_START_SQL, {"model": model, "version": version})
    return since


def latest_windows(reader: Reader, model: str, version: str, since: int) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, LATEST_WINDOWS_SQL, {"model": model, "version": version, "since": since})


def timeline(reader: Reader, lanes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest windows of each lane (a `slot_summary` row) of any model."""
    return rows_as_dicts(
        reader,
        TIMELINE_SQL,
        {"keys": [s["slot_key"] for s in lanes], "apps": [s["app"] for s in lanes], "envs": [s["env"] for s in lanes]},
    )


def inference_by_month(reader: Reader, model: str, version: str) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, INFERENCE_SQL, {"model": model, "version": version})


def head(reader: Reader) -> tuple[int, str | None]:
    """The number of events and the head's hash."""
    # Two lookups DuckDB answers from the table's statistics and one row (max_by(hash, seq) reads every hash).
    _, [(count, head_hash)] = reader.query(HEAD_SQL)
    return count, head_hash
