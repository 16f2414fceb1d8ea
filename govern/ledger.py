"""The append-only, hash-chained event ledger in a DuckDB file.

This module is the only importer of duckdb. It appends events (one
transaction per call), reads them back, verifies the chain in one SQL query
and runs read-only queries for the audit side. There is no UPDATE or DELETE
of events anywhere in govern: state is derived from events by views.

Storage sits behind the small `Ledger` interface (append, read, head,
verify, query) so that a shared ledger for teams can replace the file
without touching the event model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import duckdb

from govern import redaction
from govern.checkpoints import checkpoint_behind_backup, restore_interrupted_checkpoint, wal_path, wal_size
from govern.envelope import (
    GENESIS_HASH,
    PendingEvent,
    RecordedEvent,
    chain_hash,
    format_timestamp,
    to_utc,
    utc_now,
)
from govern.errors import (
    AttestationRefused,
    EventConflict,
    LedgerCorrupt,
    LedgerError,
    LedgerLocked,
    LedgerMissing,
    LedgerSchemaTooNew,
    QueryError,
    QueryLimitExceeded,
)

if TYPE_CHECKING:
    from govern.config import AuditLimits
    from govern.signing import Signer

COLUMNS = (
    "seq",
    "event_id",
    "type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "actor",
    "subject",
    "git_commit",
    "payload",
    "prev_hash",
    "hash",
    "authn",
    "signature",
)

# The SQL twin of events.chain_hash: prev_hash, then the same members in the same order, with DuckDB's
# to_json producing the same string escapes as Python's json. One concat() builds each row's text in one
# allocation (chained || makes an intermediate string per member: twice as slow on a large ledger).
HASHED_TEXT_SQL = """
    concat(
        prev_hash,
        '{"actor":', to_json(actor),
        CASE WHEN authn IS NULL THEN '' ELSE concat(',"authn":', authn) END,
        ',"event_id":', to_json(event_id),
        ',"git_commit":', coalesce(to_json(git_commit)::VARCHAR, 'null'),
        ',"occurred_at":"', strftime(occurred_at, '%Y-%m-%dT%H:%M:%S.%fZ'),
        '","payload":', payload,
        ',"prev_hash":', to_json(prev_hash),
        ',"recorded_at":"', strftime(recorded_at, '%Y-%m-%dT%H:%M:%S.%fZ'),
        '","schema_version":', schema_version::VARCHAR,
        ',"seq":', seq::VARCHAR,
        ',"subject":', to_json(subject),
        ',"type":', to_json(type),
        '}'
    )
"""

DIGEST_SQL = f"sha256({HASHED_TEXT_SQL})"


def chain_checks(digest_sql: str, table: str) -> tuple[str, str]:
    """The two verification queries, for a backend whose SQL computes a row's hex digest as `digest_sql`.

    The healthy case in one pass per check: a gap shows as count <> max(seq), a broken link in the join of each
    event with the one before it, an altered event as a recomputed hash that differs. Only when one of them fails
    does the second query run to name the first bad event. Both are plain SQL that DuckDB and PostgreSQL share.
    """
    quick = f"""
    SELECT
        (SELECT count(*) FROM {table}),
        (SELECT coalesce(min(seq), 1) FROM {table}),
        (SELECT coalesce(max(seq), 0) FROM {table}),
        (SELECT hash FROM {table} ORDER BY seq DESC LIMIT 1),
        (SELECT count(*) FROM {table} AS e LEFT JOIN {table} AS b ON b.seq = e.seq - 1
            WHERE e.prev_hash IS DISTINCT FROM coalesce(b.hash, CASE WHEN e.seq = 1 THEN '{GENESIS_HASH}' END)),
        (SELECT count(*) FROM {table} WHERE {digest_sql} <> hash)
    """
    full = f"""
    WITH chain AS (
        SELECT
            seq,
            hash,
            prev_hash,
            row_number() OVER (ORDER BY seq) AS position,
            lag(seq) OVER (ORDER BY seq) AS previous_seq,
            lag(hash, 1, '{GENESIS_HASH}') OVER (ORDER BY seq) AS expected_prev,
            {digest_sql} AS computed
        FROM {table}
    ),
    problems AS (
        SELECT
            seq,
            position,
            previous_seq,
            CASE
                WHEN seq <> position THEN 'gap'
                WHEN prev_hash <> expected_prev THEN 'link'
                WHEN computed <> hash THEN 'hash'
            END AS problem
        FROM chain
    )
    SELECT
        (SELECT count(*) FROM {table}),
        (SELECT hash FROM {table} ORDER BY seq DESC LIMIT 1),
        first_bad.seq, first_bad.position, first_bad.previous_seq, first_bad.problem
    FROM (SELECT 1) AS one
    LEFT JOIN (
        SELECT * FROM problems WHERE problem IS NOT NULL ORDER BY seq LIMIT 1
    ) AS first_bad ON true
    """
    return quick, full


QUICK_VERIFY_SQL, VERIFY_SQL = chain_checks(DIGEST_SQL, "stored_events")


CITED_SQL = f"""
WITH wanted AS (SELECT DISTINCT unnest($seqs)::BIGINT AS seq),
cited AS (
    SELECT seq, prev_hash, hash, {DIGEST_SQL} AS computed
    FROM stored_events WHERE seq IN (SELECT seq FROM wanted)
),
before AS (SELECT seq, hash FROM stored_events WHERE seq IN (SELECT seq - 1 FROM wanted))
SELECT
    w.seq,
    CASE
        WHEN c.seq IS NULL THEN 'missing'
        WHEN c.computed <> c.hash THEN 'hash'
        WHEN c.prev_hash IS DISTINCT FROM coalesce(b.hash, CASE WHEN w.seq = 1 THEN '{GENESIS_HASH}' END) THEN 'link'
    END AS problem
FROM wanted AS w
LEFT JOIN cited AS c ON c.seq = w.seq
LEFT JOIN before AS b ON b.seq = w.seq - 1
ORDER BY w.seq
"""


def check_events(reader: Reader, seqs: Sequence[int]) -> list[str]:
    """Recompute the hash of each of these events and its link to the one before: what a report cites.

    Cheap at any ledger size (point lookups by seq); the whole chain is `Ledger.verify`'s job.
    """
    if not seqs:
        return []
    _, rows = reader.query(CITED_SQL, {"seqs": sorted(set(seqs))})
    reasons = {
        "missing": "is not in the ledger (events were removed)",
        "hash": "stored hash does not match its content (event altered)",
        "link": "prev_hash does not match the hash of the event before it (row deleted, inserted or reordered)",
    }
    return [f"seq {seq}: {reasons[problem]}" for seq, problem in rows if problem]


# ---------------------------------------------------------------- migrations
# An ordered list of small functions; the applied ones are recorded in
# `govern_migrations` and the rest run, in order, when the ledger is opened.

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_create_events(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE events (
            seq BIGINT PRIMARY KEY,
            event_id VARCHAR NOT NULL UNIQUE,
            type VARCHAR NOT NULL,
            schema_version INTEGER NOT NULL,
            occurred_at TIMESTAMP NOT NULL,
            recorded_at TIMESTAMP NOT NULL,
            actor VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            git_commit VARCHAR,
            payload VARCHAR NOT NULL,
            prev_hash VARCHAR NOT NULL,
            hash VARCHAR NOT NULL
        )
        """
    )


@migration
def m002_read_views(con: duckdb.DuckDBPyConnection) -> None:
    """Projections for the audit side: state derived from events, never stored."""
    con.execute(
        """
        CREATE VIEW trainings AS
        SELECT
            seq,
            event_id,
            occurred_at,
            actor,
            git_commit,
            payload->>'$.git.branch' AS branch,
            (payload->>'$.git.dirty')::BOOLEAN AS dirty,
            payload->>'$.dvc_lock_sha256' AS dvc_lock_sha256,
            (payload->>'$.duration_s')::DOUBLE AS duration_s,
            (payload->>'$.run_cache_hit')::BOOLEAN AS run_cache_hit,
            payload->>'$.mlflow.run_id' AS mlflow_run_id,
            payload->'$.params' AS params,
            payload->'$.metrics' AS metrics
        FROM events
        WHERE type = 'training.completed'
        """
    )
    con.execute(
        """
        CREATE VIEW model_versions AS
        SELECT
            seq,
            event_id,
            occurred_at AS registered_at,
            actor,
            git_commit,
            payload->>'$.model' AS model,
            payload->>'$.version' AS version,
            payload->>'$.path' AS path,
            payload->>'$.md5' AS md5,
            payload->>'$.sha256' AS sha256,
            payload->>'$.training_event_id' AS training_event_id,
            payload->>'$.mlflow_run_id' AS mlflow_run_id
        FROM events
        WHERE type = 'model.registered'
        """
    )
    con.execute(
        """
        CREATE VIEW datasets AS
        SELECT
            seq,
            event_id,
            payload->>'$.path' AS path,
            payload->>'$.md5' AS md5,
            payload->>'$.sha256' AS sha256,
            (payload->>'$.size')::BIGINT AS size,
            (payload->>'$.rows')::BIGINT AS rows,
            payload->>'$.source' AS source,
            (payload->>'$.extracted_at')::TIMESTAMP AS extracted_at,
            payload->>'$.extracted_at_basis' AS extracted_at_basis,
            git_commit
        FROM events
        WHERE type = 'dataset.snapshotted'
        """
    )


# Projections: tables derived from events at append time, for point queries that must not parse
# JSON over the whole ledger. Insert-only like events, filled in the same transaction, rebuilt by
# their migration, and compared with the events they derive from by `verify`.
DEPLOYMENT_PROJECTION = """
SELECT
    seq,
    event_id,
    type,
    occurred_at,
    actor,
    payload->>'$.app' AS app,
    payload->>'$.env' AS env,
    payload->>'$.model' AS model,
    payload->>'$.version' AS version,
    payload->>'$.reason' AS reason,
    md5_number_upper(concat(payload->>'$.app', chr(31), payload->>'$.env')) AS slot_key
FROM events
WHERE type IN ('deployment.started', 'deployment.ended')
"""

# The key deployment_index is sorted by (with seq): one app/env's events sit together, so DuckDB's
# min/max statistics let a lookup read one row group of the table. md5, not DuckDB's hash(), because
# stored keys must match query-time keys across DuckDB versions. Queries still filter app and env too:
# the key only makes them fast, never decides the answer.
SLOT_KEY_SQL = "md5_number_upper(concat($app, chr(31), $env))"
REGISTRATION_PROJECTION = """
SELECT
    r.seq,
    r.event_id,
    r.occurred_at,
    r.actor,
    r.payload->>'$.model' AS model,
    r.payload->>'$.version' AS version,
    r.payload->>'$.training_event_id' AS training_event_id,
    t.seq AS training_seq,
    t.git_commit AS training_commit
FROM events AS r
LEFT JOIN events AS t ON t.event_id = r.payload->>'$.training_event_id'
WHERE r.type = 'model.registered'
"""


@dataclass(frozen=True)
class Projection:
    """A table derived from events of these types, filled when such events are appended.

    With `sorted_by`, the table is kept in that order: appends land unsorted at the end, and once
    COMPACT_ROWS of them have piled up the table is rewritten sorted, in the appending transaction.
    Only the physical order changes; the rows are the same (verify compares them with the events).
    """

    select: str
    types: tuple[str, ...]
    sorted_by: str | None = None


PROJECTIONS = {
    "deployment_index": Projection(
        DEPLOYMENT_PROJECTION, ("deployment.started", "deployment.ended"), sorted_by="slot_key, seq"
    ),
    "registrations": Projection(REGISTRATION_PROJECTION, ("model.registered",)),
}
COMPACT_ROWS = 100_000


@migration
def m003_lifecycle_views(con: duckdb.DuckDBPyConnection) -> None:
    """Promotions, stages, deployments, production windows, inferences, grid selections."""
    con.execute(
        """
        CREATE VIEW promotions AS
        SELECT
            seq,
            event_id,
            occurred_at AS promoted_at,
            actor,
            payload->>'$.model' AS model,
            payload->>'$.version' AS version,
            payload->>'$.from_stage' AS from_stage,
            payload->>'$.to_stage' AS to_stage,
            payload->>'$.approver' AS approver,
            payload->>'$.reason' AS reason,
            (payload->>'$.forced')::BOOLEAN AS forced,
            payload->>'$.gto_tag' AS gto_tag
        FROM events
        WHERE type = 'model.promoted'
        """
    )
    con.execute(
        """
        CREATE VIEW deprecations AS
        SELECT
            seq,
            event_id,
            occurred_at AS deprecated_at,
            actor,
            payload->>'$.model' AS model,
            payload->>'$.version' AS version,
            payload->>'$.reason' AS reason
        FROM events
        WHERE type = 'model.deprecated'
        """
    )
    con.execute(
        """
        CREATE VIEW stage_assignments AS
        -- Who holds each stage now: the latest promotion to it of a version that is not deprecated.
        -- The same rule as MLflow aliases (one version per alias) and GTO's `gto show`.
        SELECT
            p.model,
            p.to_stage AS stage,
            arg_max(p.version, p.seq) AS version,
            arg_max(p.promoted_at, p.seq) AS since,
            max(p.seq) AS seq
        FROM promotions AS p
        WHERE NOT EXISTS (SELECT 1 FROM deprecations AS d WHERE d.model = p.model AND d.version = p.version)
        GROUP BY p.model, p.to_stage
        """
    )
    con.execute(f"CREATE VIEW deployment_events AS {DEPLOYMENT_PROJECTION}")
    con.execute(
        """
        CREATE VIEW production_windows AS
        WITH ordered AS (
            SELECT
                *,
                lead(type) OVER slot AS next_type,
                lead(occurred_at) OVER slot AS next_at,
                lead(seq) OVER slot AS next_seq,
                lead(reason) OVER slot AS next_reason,
                lead(actor) OVER slot AS next_actor
            FROM deployment_events
            WINDOW slot AS (PARTITION BY app, env ORDER BY seq)
        )
        SELECT
            app,
            env,
            model,
            version,
            occurred_at AS started_at,
            CASE WHEN next_type = 'deployment.ended' THEN next_at END AS ended_at,
            CASE WHEN next_type = 'deployment.ended' THEN next_at END - occurred_at AS duration,
            seq AS start_seq,
            CASE WHEN next_type = 'deployment.ended' THEN next_seq END AS end_seq,
            actor AS deployed_by,
            CASE WHEN next_type = 'deployment.ended' THEN next_actor END AS ended_by,
            CASE WHEN next_type = 'deployment.ended' THEN next_reason END AS end_reason,
            event_id AS start_event_id
        FROM ordered
        WHERE type = 'deployment.started'
        """
    )
    con.execute(
        """
        CREATE VIEW inferences AS
        SELECT
            seq,
            event_id,
            occurred_at,
            actor,
            payload->>'$.model' AS model,
            payload->>'$.version' AS version,
            payload->>'$.app' AS app,
            payload->>'$.env' AS env,
            payload->>'$.input_sha256' AS input_sha256,
            payload->>'$.output_sha256' AS output_sha256,
            (payload->>'$.rows')::BIGINT AS rows
        FROM events
        WHERE type = 'inference.recorded'
        """
    )
    con.execute(
        """
        CREATE VIEW experiments AS
        SELECT
            seq,
            event_id,
            occurred_at AS selected_at,
            actor,
            payload->>'$.grid_id' AS grid_id,
            payload->>'$.metric' AS metric,
            payload->>'$.direction' AS direction,
            payload->>'$.winner_event_id' AS winner_event_id,
            (payload->>'$.winner_value')::DOUBLE AS winner_value,
            json_array_length(payload->'$.candidates') AS candidates
        FROM events
        WHERE type = 'experiment.selected'
        """
    )


@migration
def m004_deployment_index(con: duckdb.DuckDBPyConnection) -> None:
    """The deployment events as plain columns: production questions become an index lookup."""
    con.execute(f"CREATE TABLE deployment_index AS {DEPLOYMENT_PROJECTION} ORDER BY seq")
    con.execute("CREATE INDEX deployment_index_slot ON deployment_index (app, env)")
    con.execute("CREATE OR REPLACE VIEW deployment_events AS SELECT * FROM deployment_index")


@migration
def m005_registrations(con: duckdb.DuckDBPyConnection) -> None:
    """Model versions with their training's seq and commit: point queries join a small table, not the ledger."""
    con.execute(f"CREATE TABLE registrations AS {REGISTRATION_PROJECTION} ORDER BY r.seq")


@migration
def m006_slot_sorted_deployments(con: duckdb.DuckDBPyConnection) -> None:
    """deployment_index sorted by app/env key (its ART index was never chosen by DuckDB's planner: dropped)."""
    con.execute("DROP INDEX IF EXISTS deployment_index_slot")
    con.execute("DROP TABLE deployment_index")
    con.execute(f"CREATE TABLE deployment_index AS {DEPLOYMENT_PROJECTION} ORDER BY slot_key, seq")
    con.execute(
        "CREATE TABLE govern_compactions (table_name VARCHAR NOT NULL, up_to_seq BIGINT NOT NULL, "
        "compacted_at TIMESTAMP NOT NULL)"
    )
    con.execute(
        "INSERT INTO govern_compactions SELECT 'deployment_index', coalesce(max(seq), 0), ? FROM deployment_index",
        [to_utc(utc_now()).replace(tzinfo=None)],
    )


# The columns of `events` as every reader sees them: the stored envelope with the payload (and its version)
# brought to the current schema of its type where an older govern wrote it. `stored_events` keeps the bytes
# that were hashed; only verification, the chain's own bookkeeping and `Ledger.read` look there.
CURRENT_EVENTS_VIEW = """
CREATE VIEW events AS
SELECT
    s.seq, s.event_id, s.type, coalesce(u.schema_version, s.schema_version) AS schema_version, s.occurred_at,
    s.recorded_at, s.actor, s.subject, s.git_commit, coalesce(u.payload, s.payload) AS payload, s.prev_hash,
    s.hash{extra}
FROM stored_events AS s
LEFT JOIN upcasts AS u ON u.seq = s.seq
"""


@migration
def m007_current_schema_events(con: duckdb.DuckDBPyConnection) -> None:
    """Every read path sees current-schema payloads: views, projections, reports, the shipped queries, auditors'
    SQL all say `events`, which becomes a view over the stored bytes (`stored_events`) and their upcasts."""
    con.execute("ALTER TABLE events RENAME TO stored_events")
    con.execute(
        "CREATE TABLE upcasts (seq BIGINT PRIMARY KEY, schema_version INTEGER NOT NULL, payload VARCHAR NOT NULL)"
    )
    con.execute(CURRENT_EVENTS_VIEW.format(extra=""))
    upcast_stored(con, since_seq=1)
    for table, projection in PROJECTIONS.items():  # rebuilt from the current-schema view, in the same order
        order = projection.sorted_by or "seq"
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM ({projection.select}) ORDER BY {order}")


@migration
def m008_access(con: duckdb.DuckDBPyConnection) -> None:
    """Principals' roles as windows, and tokens: "who could approve at T" is a point query, like production."""
    con.execute(
        """
        CREATE VIEW role_grants AS
        WITH changes AS (
            SELECT seq, type, occurred_at, actor, payload->>'$.principal' AS principal, payload->>'$.role' AS role,
                   payload->'$.apps' AS apps, payload->>'$.reason' AS reason
            FROM events WHERE type IN ('access.granted', 'access.revoked')
        ),
        windows AS (
            SELECT *,
                   lead(occurred_at) OVER w AS ended_at,
                   lead(seq) OVER w AS end_seq,
                   lead(actor) OVER w AS ended_by,
                   lead(type) OVER w AS end_type
            FROM changes WINDOW w AS (PARTITION BY principal, role ORDER BY seq)
        )
        SELECT seq AS grant_seq, principal, role, from_json(coalesce(apps, '[]'), '["VARCHAR"]') AS apps,
               occurred_at AS granted_at, actor AS granted_by, reason,
               ended_at, end_seq, ended_by,
               CASE end_type WHEN 'access.revoked' THEN 'revoked' WHEN 'access.granted' THEN 'granted again' END
                   AS ended_how
        FROM windows WHERE type = 'access.granted'
        """
    )
    con.execute(
        """
        CREATE VIEW access_tokens AS
        SELECT i.seq, i.token_id, i.principal, i.secret_sha256, i.issued_at, i.issued_by, i.expires_at,
               i.description, r.revoked_at, r.revoked_by, r.reason AS revocation_reason
        FROM (
            SELECT seq, payload->>'$.token_id' AS token_id, payload->>'$.principal' AS principal,
                   payload->>'$.secret_sha256' AS secret_sha256, occurred_at AS issued_at, actor AS issued_by,
                   strptime(payload->>'$.expires_at', '%Y-%m-%dT%H:%M:%S.%fZ') AS expires_at,
                   payload->>'$.description' AS description
            FROM events WHERE type = 'token.issued'
        ) AS i
        LEFT JOIN (
            SELECT payload->>'$.token_id' AS token_id, min(occurred_at) AS revoked_at,
                   arg_min(actor, seq) AS revoked_by, arg_min(payload->>'$.reason', seq) AS reason
            FROM events WHERE type = 'token.revoked' GROUP BY ALL
        ) AS r ON r.token_id = i.token_id
        """
    )


PROMOTION_REQUESTS_VIEW = """
CREATE VIEW promotion_requests AS
SELECT r.seq AS request_seq, r.occurred_at AS requested_at, r.actor AS requested_by,
       r.payload->>'$.model' AS model, r.payload->>'$.version' AS version,
       r.payload->>'$.to_stage' AS to_stage, r.payload->>'$.reason' AS reason,
       r.payload->'$.evidence' AS evidence,
       CASE d.type WHEN 'model.promotion_approved' THEN 'approved'
                   WHEN 'model.promotion_rejected' THEN 'rejected' ELSE 'pending' END AS state,
       d.seq AS decision_seq, d.occurred_at AS decided_at, d.actor AS decided_by,
       d.payload->>'$.reason' AS decision_reason, d.payload->'$.gates' AS gates{extra}
FROM events AS r
LEFT JOIN events AS d
    ON d.type IN ('model.promotion_approved', 'model.promotion_rejected')
   AND (d.payload->>'$.request_seq')::BIGINT = r.seq
WHERE r.type = 'model.promotion_requested'
"""


@migration
def m009_promotion_requests(con: duckdb.DuckDBPyConnection) -> None:
    """Promotion requests with their decision (pending until one is recorded), and the git identities linked to
    principals: the approval queue and the four-eyes rule are queries."""
    con.execute(PROMOTION_REQUESTS_VIEW.format(extra=""))
    con.execute(
        """
        CREATE VIEW principal_identities AS
        SELECT seq, occurred_at AS linked_at, actor AS linked_by, payload->>'$.principal' AS principal,
               payload->>'$.identity' AS identity, payload->>'$.reason' AS reason
        FROM events WHERE type = 'access.identity_linked'
        """
    )


@migration
def m010_training_jobs(con: duckdb.DuckDBPyConnection) -> None:
    """Training jobs the controller runs: requested, started (per attempt) and finished, as one row each."""
    con.execute(
        """
        CREATE VIEW training_jobs AS
        WITH requested AS (
            SELECT seq, occurred_at, actor, payload->>'$.job_id' AS job_id, payload->>'$.commit' AS commit,
                   from_json(coalesce(payload->'$.targets', '[]'), '["VARCHAR"]') AS targets
            FROM events WHERE type = 'job.requested'
        ),
        started AS (
            SELECT payload->>'$.job_id' AS job_id, max(occurred_at) AS started_at,
                   arg_max(payload->>'$.host', seq) AS host, arg_max((payload->>'$.pid')::BIGINT, seq) AS pid,
                   max((payload->>'$.attempt')::INTEGER) AS attempts
            FROM events WHERE type = 'job.started' GROUP BY 1
        ),
        finished AS (
            SELECT payload->>'$.job_id' AS job_id, arg_min(occurred_at, seq) AS finished_at,
                   arg_min(actor, seq) AS finished_by, arg_min(payload->>'$.outcome', seq) AS outcome,
                   arg_min(payload->>'$.training_event_id', seq) AS training_event_id,
                   arg_min(payload->>'$.error', seq) AS error
            FROM events WHERE type = 'job.finished' GROUP BY 1
        )
        SELECT r.seq, r.job_id, r.commit, r.targets, r.occurred_at AS requested_at, r.actor AS requested_by,
               s.started_at, s.host, s.pid, coalesce(s.attempts, 0) AS attempts,
               f.finished_at, f.finished_by, f.training_event_id, f.error,
               coalesce(f.outcome, CASE WHEN s.job_id IS NULL THEN 'queued' ELSE 'running' END) AS state
        FROM requested AS r
        LEFT JOIN started AS s USING (job_id)
        LEFT JOIN finished AS f USING (job_id)
        """
    )


@migration
def m011_attestations(con: duckdb.DuckDBPyConnection) -> None:
    """How each actor was established (`authn`, hashed) and the server's signature over the event's hash: who
    acted is evidence only when an auditor can tell an authenticated principal from a self-asserted name."""
    con.execute("ALTER TABLE stored_events ADD COLUMN authn VARCHAR")
    con.execute("ALTER TABLE stored_events ADD COLUMN signature VARCHAR")
    con.execute(
        CURRENT_EVENTS_VIEW.replace("CREATE VIEW", "CREATE OR REPLACE VIEW").format(
            extra=", s.authn, s.signature, s.authn->>'$.by' AS authn_by"
        )
    )


@migration
def m012_forced_promotion_requests(con: duckdb.DuckDBPyConnection) -> None:
    """A request may ask for a forced promotion (an admin's, in team mode): the queue and the approval see it."""
    con.execute(
        PROMOTION_REQUESTS_VIEW.replace("CREATE VIEW", "CREATE OR REPLACE VIEW").format(
            extra=", coalesce((r.payload->>'$.forced')::BOOLEAN, false) AS forced, r.authn AS requested_authn, "
            "d.authn AS decided_authn"
        )
    )


ROLE_GRANTS_VIEW = """
CREATE OR REPLACE VIEW role_grants AS
WITH changes AS (
    SELECT seq, type, occurred_at, actor, authn, payload->>'$.principal' AS principal, payload->>'$.role' AS role,
           payload->'$.apps' AS apps, payload->>'$.reason' AS reason,
           (payload->>'$.proposal_seq')::BIGINT AS proposal_seq, payload->>'$.basis' AS basis
    FROM events WHERE type IN ('access.granted', 'access.revoked')
),
windows AS (
    SELECT *,
           lead(occurred_at) OVER w AS ended_at,
           lead(seq) OVER w AS end_seq,
           lead(actor) OVER w AS ended_by,
           lead(type) OVER w AS end_type
    FROM changes WINDOW w AS (PARTITION BY principal, role ORDER BY seq)
)
SELECT w.seq AS grant_seq, w.principal, w.role, from_json(coalesce(w.apps, '[]'), '["VARCHAR"]') AS apps,
       w.occurred_at AS granted_at, w.actor AS granted_by, w.reason,
       w.ended_at, w.end_seq, w.ended_by,
       CASE w.end_type WHEN 'access.revoked' THEN 'revoked' WHEN 'access.granted' THEN 'granted again' END
           AS ended_how,
       w.authn AS granted_authn, nullif(w.basis, '') AS basis, w.proposal_seq, p.occurred_at AS proposed_at,
       p.actor AS proposed_by, p.authn AS proposed_authn,
       coalesce((p.payload->>'$.break_glass')::BOOLEAN, false) AS proposed_break_glass
FROM windows AS w
LEFT JOIN events AS p ON p.seq = w.proposal_seq AND p.type = 'access.grant_proposed'
WHERE w.type = 'access.granted'
"""

TOKEN_PATTERN_SQL = "'^([a-z0-9][a-z0-9._-]{0,62}) [(]token ([0-9a-f]{12})[)]$'"


@migration
def m013_admin_duties(con: duckdb.DuckDBPyConnection) -> None:
    """Separation of duties for admins: a privileged grant with its proposal (who proposed, who confirmed, on what
    basis), the proposals and their outcome, enrollment codes and whether they were used, and the person who
    handed each token to its principal (`token_issuers`: the admin who issued the code it was exchanged for,
    followed through the tokens a principal made for itself), which the four-eyes rule compares."""
    con.execute(ROLE_GRANTS_VIEW)
    con.execute(
        """
        CREATE VIEW grant_proposals AS
        SELECT p.seq AS proposal_seq, p.occurred_at AS proposed_at, p.actor AS proposed_by, p.authn AS proposed_authn,
               p.payload->>'$.principal' AS principal, p.payload->>'$.role' AS role,
               from_json(coalesce(p.payload->'$.apps', '[]'), '["VARCHAR"]') AS apps, p.payload->>'$.reason' AS reason,
               coalesce((p.payload->>'$.break_glass')::BOOLEAN, false) AS break_glass,
               CASE d.type WHEN 'access.granted' THEN 'confirmed' WHEN 'access.grant_declined' THEN 'declined'
                           WHEN 'access.grant_withdrawn' THEN 'withdrawn' ELSE 'pending' END AS state,
               d.seq AS decided_seq, d.occurred_at AS decided_at, d.actor AS decided_by, d.authn AS decided_authn,
               d.reason AS decision_reason
        FROM events AS p
        LEFT JOIN (
            SELECT (payload->>'$.proposal_seq')::BIGINT AS proposal_seq, min(seq) AS seq, arg_min(type, seq) AS type,
                   arg_min(occurred_at, seq) AS occurred_at, arg_min(actor, seq) AS actor,
                   arg_min(authn, seq) AS authn, arg_min(payload->>'$.reason', seq) AS reason
            FROM events
            WHERE type IN ('access.granted', 'access.grant_declined', 'access.grant_withdrawn')
              AND payload->>'$.proposal_seq' IS NOT NULL
            GROUP BY 1
        ) AS d ON d.proposal_seq = p.seq
        WHERE p.type = 'access.grant_proposed'
        """
    )
    revocations = """
        SELECT payload->>'$.token_id' AS token_id, min(occurred_at) AS revoked_at,
               arg_min(actor, seq) AS revoked_by, arg_min(payload->>'$.reason', seq) AS reason
        FROM events WHERE type = 'token.revoked' GROUP BY ALL
    """
    stamp = "'%Y-%m-%dT%H:%M:%S.%fZ'"
    con.execute(
        f"""
        CREATE OR REPLACE VIEW access_tokens AS
        SELECT i.seq, i.token_id, i.principal, i.secret_sha256, i.issued_at, i.issued_by, i.expires_at,
               i.description, r.revoked_at, r.revoked_by, r.reason AS revocation_reason, i.code_id, i.issued_authn
        FROM (
            SELECT seq, payload->>'$.token_id' AS token_id, payload->>'$.principal' AS principal,
                   payload->>'$.secret_sha256' AS secret_sha256, occurred_at AS issued_at, actor AS issued_by,
                   strptime(payload->>'$.expires_at', {stamp}) AS expires_at,
                   payload->>'$.description' AS description, payload->>'$.code_id' AS code_id, authn AS issued_authn
            FROM events WHERE type = 'token.issued'
        ) AS i
        LEFT JOIN ({revocations}) AS r ON r.token_id = i.token_id
        """
    )
    con.execute(
        f"""
        CREATE VIEW enrollment_codes AS
        SELECT c.seq, c.payload->>'$.code_id' AS code_id, c.payload->>'$.principal' AS principal,
               c.payload->>'$.secret_sha256' AS secret_sha256, c.occurred_at AS issued_at, c.actor AS issued_by,
               c.authn AS issued_authn, strptime(c.payload->>'$.expires_at', {stamp}) AS expires_at,
               strptime(c.payload->>'$.token_expires_at', {stamp}) AS token_expires_at,
               c.payload->>'$.description' AS description,
               t.seq AS redeemed_seq, t.occurred_at AS redeemed_at, t.actor AS redeemed_by, t.token_id,
               r.revoked_at, r.revoked_by, r.reason AS revocation_reason
        FROM events AS c
        LEFT JOIN (
            SELECT payload->>'$.code_id' AS code_id, min(seq) AS seq, arg_min(occurred_at, seq) AS occurred_at,
                   arg_min(actor, seq) AS actor, arg_min(payload->>'$.token_id', seq) AS token_id
            FROM events WHERE type = 'token.issued' AND payload->>'$.code_id' IS NOT NULL GROUP BY 1
        ) AS t ON t.code_id = c.payload->>'$.code_id'
        LEFT JOIN ({revocations}) AS r ON r.token_id = c.payload->>'$.code_id'
        WHERE c.type = 'token.code_issued'
        """
    )
    con.execute(
        f"""
        CREATE VIEW token_issuers AS
        WITH RECURSIVE direct AS (
            SELECT t.token_id, t.principal, t.code_id,
                   coalesce(c.issued_by, t.issued_by) AS handed_by,
                   coalesce(c.issued_authn, t.issued_authn) AS handed_authn,
                   CASE WHEN c.code_id IS NULL
                         AND regexp_extract(t.issued_by, {TOKEN_PATTERN_SQL}, 1) = t.principal
                        THEN regexp_extract(t.issued_by, {TOKEN_PATTERN_SQL}, 2) END AS made_with
            FROM access_tokens AS t LEFT JOIN enrollment_codes AS c ON c.code_id = t.code_id
        ),
        chain AS (
            SELECT token_id, handed_by, handed_authn, made_with, 0 AS depth FROM direct
            UNION ALL
            SELECT chain.token_id, d.handed_by, d.handed_authn, d.made_with, chain.depth + 1
            FROM chain JOIN direct AS d ON d.token_id = chain.made_with
            WHERE chain.depth < 64
        )
        SELECT d.token_id, d.principal, d.code_id, d.handed_by AS issued_by,
               arg_max(chain.handed_by, chain.depth) AS issuer,
               arg_max(chain.handed_authn, chain.depth) AS issuer_authn, max(chain.depth) AS made_by_itself
        FROM direct AS d JOIN chain USING (token_id)
        GROUP BY ALL
        """
    )


# The upcasters `upcasts` was last filled for. A new schema version of a fact (a new key in events.UPCASTERS)
# comes with a migration that empties `upcasts` and calls upcast_stored(con, 1), and adds its key here;
# tests/test_schema_evolution.py fails until both exist.
UPCASTS_FILLED_FOR = frozenset({("reproduction.verified", 1), ("reproduction.diverged", 1)})


def needs_upcast(rows: Sequence[tuple]) -> bool:
    """Does any of these rows (COLUMNS order) carry a payload older than its type's current schema?"""
    from govern.events import UPCASTERS

    return any((row[2], row[3]) in UPCASTERS for row in rows)


def upcast_stored(con: duckdb.DuckDBPyConnection, since_seq: int) -> None:
    """Fill `upcasts` for the stored events from `since_seq` on whose payload is older than their type's schema."""
    from govern.envelope import canonical_json
    from govern.events import FACT_TYPES, UPCASTERS, upcast

    keys = sorted(f"{kind}:{version}" for kind, version in UPCASTERS)
    rows = con.execute(
        "SELECT seq, type, schema_version, payload FROM stored_events "
        "WHERE seq >= ? AND list_contains(?, concat(type, ':', schema_version))",
        [since_seq, keys],
    ).fetchall()
    current = [
        (seq, FACT_TYPES[kind].schema_version, canonical_json(upcast(kind, version, json.loads(payload))))
        for seq, kind, version, payload in rows
        if kind in FACT_TYPES
    ]
    if current:
        con.executemany("INSERT INTO upcasts VALUES (?, ?, ?)", current)


def check_migration_names(
    applied: Sequence[tuple[int, str]], where: str, migrations: Sequence[Callable[..., None]] = MIGRATIONS
) -> None:
    """Migrations are matched by name, not by position: the ledger's history of them must be ours, in order.

    A ledger migrated by another build (a migration renamed, reordered, or one this govern never had) could
    hold views that do not mean what this govern's views mean; refusing is safer than building on them.
    """
    for position, (version, name) in enumerate(applied, start=1):
        expected = migrations[position - 1].__name__ if position <= len(migrations) else None
        if version != position or name != expected:
            raise LedgerError(
                f"The ledger {where} records migration {version} as {name!r}, but this govern's migration "
                f"{position} is {expected!r}: it was migrated by another build of govern; open it with that "
                "build, or restore a backup"
            )


def schema_version() -> int:
    """The ledger schema this govern writes and understands."""
    return len(MIGRATIONS)


# ---------------------------------------------------------------- the ledger


class StaleReadModel(Exception):  # noqa: N818 - a signal between backends, never shown to a user
    """A read model is not at the head its source has: pull, then read again."""


class Reader(Protocol):
    """Anything that answers read queries: the ledger itself, or a transaction in progress."""

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]: ...


class _TransactionReader:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]:
        cursor = self._con.execute(sql, params)
        return [d[0] for d in cursor.description], cursor.fetchall()


@dataclass(frozen=True)
class Verification:
    """The outcome of checking every hash and link of the chain."""

    ok: bool
    count: int
    head_hash: str | None
    bad_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "head_hash": self.head_hash,
            "bad_seq": self.bad_seq,
            "problem": self.problem,
        }


# With eight processes appending at once, DuckDB 2.0 has (rarely) failed a writer's first read of a
# file that the previous writer had just closed: "Could not read enough bytes from file". The
# transaction never started writing; running it again on a fresh connection succeeds.
TRANSIENT_READ = "could not read enough bytes"
CREATION_WAIT = 3.0  # seconds a file shorter than its headers is given to become a database
DUCKDB_HEADERS = 3 * 4096  # a DuckDB file starts with a main header and two database headers of one block each


def _younger_than_headers(path: Path) -> bool:
    """Shorter than DuckDB's headers: a file another process is creating right now, not a damaged one."""
    try:
        return path.stat().st_size < DUCKDB_HEADERS
    except FileNotFoundError:
        return True


TRANSIENT_ATTEMPTS = 3

# DuckDB never checkpoints on its own (see govern.checkpoints): not at a log size, not instead of logging a
# large commit, not on close. govern checkpoints behind a backup once the log holds about 20 one-event
# commits: every open replays the log (about 0.85 ms per commit at 1,000,000 events), and a checkpoint
# copies the file (0.25 s at 1,000,000 events).
# Nor does govern let DuckDB fetch or load an extension on its own (a SQLite file given as a ledger would otherwise
# make it download sqlite_scanner): govern runs offline, and the ledger needs none.
CONNECT_CONFIG = {
    "checkpoint_threshold": "1000TB",
    "auto_checkpoint_skip_wal_threshold": 1 << 62,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
# What an auditor's SQL may touch: the ledger's tables and views, nothing else. DuckDB itself enforces it: no
# file system (COPY, read_*, glob, ATTACH, EXPORT, secrets), no extension installed or loaded, and, once the
# session is set up, the configuration locked so that no statement can switch any of it back on.
SANDBOX_CONFIG = {
    **CONNECT_CONFIG,
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
}
CHECKPOINT_WAL_BYTES = 16 * 1024
FETCH_ROWS = 2_048  # rows of an auditor's result fetched at a time, each batch counted against the limits


def _sandbox_config(limits: AuditLimits | None) -> dict[str, Any]:
    """SANDBOX_CONFIG with an auditor statement's threads and memory (and no spilling to disk beside the ledger:
    a statement that does not fit in memory_limit fails, it does not fill the ledger's disk)."""
    from govern.config import AuditLimits

    limits = limits or AuditLimits()
    return {**SANDBOX_CONFIG, "threads": limits.threads, "memory_limit": limits.memory_limit, "temp_directory": ""}


def _fetch_within(cursor: duckdb.DuckDBPyConnection, limits: AuditLimits) -> list[tuple]:
    """The rows of a streaming result, refused as soon as they pass `limits.max_rows` or `limits.max_bytes` (the
    size of each batch's text, which is about what its JSON takes, counted at C speed)."""
    rows: list[tuple] = []
    size = 0
    while True:
        batch = cursor.fetchmany(FETCH_ROWS)
        if not batch:
            return rows
        rows.extend(batch)
        size += len(repr(batch))
        if len(rows) > limits.max_rows:
            raise QueryLimitExceeded(
                f"The result has more than {limits.max_rows} rows: add LIMIT or aggregate (the limit is "
                "`audit.max_rows`; locally, --max-rows raises it)"
            )
        if size > limits.max_bytes:
            raise QueryLimitExceeded(
                f"The result is larger than {_size(limits.max_bytes)}: select fewer columns or rows, or aggregate "
                "(the limit is `audit.max_bytes`; locally, --max-bytes raises it)"
            )


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


log = logging.getLogger(__name__)
T = TypeVar("T")


class Ledger:
    """One ledger file. Connections are short: opened per call, closed at once.

    Commits land in DuckDB's write-ahead log; `govern.checkpoints` folds the log into the file.
    """

    backend = "duckdb"

    def __init__(self, path: Path, lock_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._expected_head: tuple[int, str] | None = None

    def expecting(self, head: tuple[int, str]) -> Ledger:
        """This ledger, for reads that must see exactly `head` ((0, GENESIS_HASH) when empty): a read model asks
        in the same connection that answers, and pulls only on `StaleReadModel`."""
        view = Ledger(self.path, self.lock_timeout)
        view._expected_head = head
        return view

    @property
    def location(self) -> str:
        """Where the ledger is, as shown to users and passed on in GOVERN_LEDGER."""
        return str(self.path)

    @property
    def address(self) -> str:
        """What opens this ledger again in another process (GOVERN_LEDGER)."""
        return str(self.path)

    @property
    def state_dir(self) -> Path:
        """Where govern keeps this ledger's local companions (the registry mirror's log and lock)."""
        return self.path.parent

    def exists(self) -> bool:
        """Has the first event been written? (A missing ledger is a new project, or a lost file.)"""
        return self.path.exists()

    def close(self) -> None:
        """Nothing to release: connections are opened per call."""

    # -- connections

    @contextmanager
    def _connect(
        self, *, write: bool, sandbox: bool = False, limits: AuditLimits | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        if not write and not self.path.exists():
            raise LedgerMissing(
                f"No ledger at {self.path}: run `govern repro` to record the first event, "
                "or point GOVERN_LEDGER at an existing ledger (where this repository holds anchors, "
                "`git tag -l 'govern-anchor/*'`, the ledger was lost: restore it from its backup)"
            )
        if write:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise LedgerError(f"Cannot create the ledger directory {self.path.parent}: {error.strerror}") from None
        current = current_session()
        if current is not None and sandbox:
            _let_go(self.path)  # a sandboxed connection needs the file to itself in this process
        elif current is not None:
            with self._held_connection(current, write=write) as con:
                yield con
            return
        with self._turn():
            con = self._open_with_retry(read_only=not write, sandbox=_sandbox_config(limits) if sandbox else None)
            try:
                self._prepare(con, write=write, sandbox=sandbox)
                yield con
            finally:
                _close(con)

    @contextmanager
    def _held_connection(self, current: Session, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """Inside `session()`: the connection this thread already holds to the file, opened on first use (read-write
        once anything writes; DuckDB gives one process one configuration per file) and kept until the session
        ends. A connection that failed is dropped, so a retry opens a fresh one."""
        held = current.held
        key = str(self.path.resolve())
        found = held.get(key)
        if found is not None and write and not found.write:
            held.pop(key).release()
            found = None
        if found is None:
            write = write or current.write
            found = _Held(self.path, write=write, lock=_writer_lock(self.path))
            if not found.lock.acquire(timeout=self.lock_timeout):
                raise self._busy_here()
            try:
                found.con = self._open_with_retry(read_only=not write)
                self._prepare(found.con, write=write, sandbox=False)
            except BaseException:
                found.release()
                raise
            held[key] = found
        elif self._expected_head is not None:
            self._check_expected_head(found.con)
        try:
            yield found.con
        except duckdb.Error:
            held.pop(key, None)
            found.release()
            raise

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's threads use the file one at a time: DuckDB refuses a second connection to a file with
        another configuration (read-only, sandboxed) while one is open, and a server answers in threads."""
        lock = _writer_lock(self.path)
        if not lock.acquire(timeout=self.lock_timeout):
            raise self._busy_here()
        try:
            yield
        finally:
            lock.release()

    def _busy_here(self) -> LedgerLocked:
        waited = bounded_wait(self.lock_timeout) or 0.0
        return LedgerLocked(f"The ledger {self.path} is busy in this process; gave up after {waited:g} s. Retry")

    def _prepare(self, con: duckdb.DuckDBPyConnection, *, write: bool, sandbox: bool) -> None:
        # TIMESTAMP columns hold UTC, casts from TIMESTAMPTZ must agree; no progress bars on our stderr
        con.execute("SET TimeZone = 'UTC'; SET enable_progress_bar = false; PRAGMA disable_checkpoint_on_shutdown")
        if sandbox:
            con.execute("SET lock_configuration = true")
        self._check_schema(con, migrate=write)
        if self._expected_head is not None and not write:
            self._check_expected_head(con)

    def _check_expected_head(self, con: duckdb.DuckDBPyConnection) -> None:
        found = con.execute("SELECT seq, hash FROM stored_events ORDER BY seq DESC LIMIT 1").fetchall()
        if (found[0] if found else (0, GENESIS_HASH)) != self._expected_head:
            raise StaleReadModel

    def _open_with_retry(self, *, read_only: bool, sandbox: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
        if sandbox is not None:  # an instance of its own, locked down; the host's settings are not its own
            return self._retrying(lambda: duckdb.connect(str(self.path), read_only=read_only, config=sandbox))
        return self._retrying(lambda: _attached(self.path, read_only=read_only))

    def _retrying(self, open_file: Callable[[], T]) -> T:
        """DuckDB allows one writing process per file: wait for it, with backoff and jitter."""
        waiting = bounded_wait(self.lock_timeout) or 0.0
        deadline = time.monotonic() + waiting
        creation_deadline = time.monotonic() + CREATION_WAIT
        delay = 0.01
        while True:
            if restore_interrupted_checkpoint(self.path):
                log.warning(
                    "govern: restored %s from the backup of a checkpoint that was interrupted; no event was lost",
                    self.path,
                )
            try:
                return open_file()
            except duckdb.IOException as error:
                message = str(error)
                wal = wal_path(self.path)
                if "WAL does not match" in message and wal.exists():
                    raise LedgerError(
                        f"{self.path} and its write-ahead log {wal.name} are from different copies of the ledger (a "
                        f"file restored beside a newer log?): if {self.path.name} is the copy you want, move "
                        f"{wal.name} away; otherwise restore both from the same backup"
                    ) from None
                being_created = "not a valid duckdb database file" in message.lower() and _younger_than_headers(
                    self.path
                )
                if being_created and time.monotonic() < creation_deadline:
                    # Another process created the file a moment ago and has not written DuckDB's headers yet (seen
                    # with eight processes opening a new ledger at once): wait for it, as for its lock.
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.5)
                    continue
                if "lock" not in message.lower():
                    raise LedgerError(
                        f"{self.path} is not a readable govern ledger ({_first_line(message)}); "
                        "restore it from a backup or point GOVERN_LEDGER elsewhere"
                    ) from None
                if time.monotonic() >= deadline:
                    raise LedgerLocked(
                        f"The ledger {self.path} is locked by another govern process; "
                        f"gave up after {waiting:g} s. Retry when it has finished"
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)
            except duckdb.Error as error:
                raise LedgerError(
                    f"{self.path} is not a readable govern ledger ({_first_line(str(error))}); "
                    "restore it from a backup or point GOVERN_LEDGER elsewhere"
                ) from None

    def _check_schema(self, con: duckdb.DuckDBPyConnection, *, migrate: bool) -> None:
        try:  # one cheap query on every open; information_schema costs ten times more
            rows = con.execute("SELECT version, name FROM govern_migrations ORDER BY version").fetchall()
        except duckdb.CatalogException:
            rows = []  # a new file: nothing applied yet
        applied = len(rows)
        if rows and rows[-1][0] > schema_version():
            raise LedgerSchemaTooNew(
                f"The ledger {self.path} has schema version {rows[-1][0]}, newer than this govern "
                f"understands ({schema_version()}): upgrade govern"
            )
        check_migration_names(rows, str(self.path))
        if applied == schema_version():
            return
        if not rows and not migrate:
            raise LedgerError(
                f"{self.path} is a DuckDB file but not a govern ledger (it has no govern_migrations table): "
                "point GOVERN_LEDGER at a ledger"
            )
        if not migrate:
            raise LedgerError(
                f"The ledger {self.path} has schema version {applied}, older than this govern's "
                f"({schema_version()}): run any govern write command, such as `govern repro`, to migrate it"
            )
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS govern_migrations "
                "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            for version, step in enumerate(MIGRATIONS[applied:], start=applied + 1):
                step(con)
                con.execute(
                    "INSERT INTO govern_migrations VALUES (?, ?, ?)",
                    [version, step.__name__, to_utc(utc_now()).replace(tzinfo=None)],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # -- writing

    def append(self, pending: Sequence[PendingEvent]) -> list[RecordedEvent]:
        """Append events in one transaction; a retried identical event is a no-op.

        Returns the recorded form of every event passed, including ones that
        were already in the ledger.
        """
        if not pending:
            return []
        return self.transact(lambda _reader: pending)

    def transact(self, decide: Callable[[Reader], Sequence[PendingEvent]]) -> list[RecordedEvent]:
        """Decide what to append from the current state, and append it, atomically.

        `decide` runs inside the write transaction with a reader on the same
        connection, so no other writer can change the state it checked; it
        may raise to append nothing. Keep it fast: it holds the write lock.
        """
        attempt = 1
        while True:
            try:
                return self._transact_once(decide)
            except duckdb.IOException as error:
                if TRANSIENT_READ not in str(error).lower():
                    raise
                if attempt == TRANSIENT_ATTEMPTS:
                    raise LedgerError(
                        f"The ledger {self.path} could not be read while writing ({_first_line(str(error))}), "
                        f"{attempt} times; nothing was appended. Retry, and run `govern audit verify`"
                    ) from None
                time.sleep(0.05 * attempt)
                attempt += 1

    def _transact_once(self, decide: Callable[[Reader], Sequence[PendingEvent]]) -> list[RecordedEvent]:
        # DuckDB's file lock keeps other processes out; threads of this process share one database instance
        # and would race on the head, so they take turns here (a server answering requests in threads), each wait
        # bounded (`_turn`: the ledger's lock_timeout, and a server request's budget).
        with self._turn(), contextlib.ExitStack() as own, self._connect(write=True) as con:
            after_close = _after_close(self.path, own)
            con.execute("BEGIN TRANSACTION")
            try:
                pending = decide(_TransactionReader(con))
                recorded = self._append_in(con, pending) if pending else []
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # a failed read may have ended the transaction already
                    con.execute("ROLLBACK")
                raise
            if recorded and wal_size(self.path) >= CHECKPOINT_WAL_BYTES:
                self._checkpoint(con, after_close)
        return recorded

    def _checkpoint(self, con: duckdb.DuckDBPyConnection, after_close: contextlib.ExitStack) -> None:
        """Fold the write-ahead log into the file; the events are committed whether or not this works."""
        try:
            [(block_size,)] = con.execute(
                "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
            ).fetchall()
            [(name,)] = con.execute("SELECT current_database()").fetchall()
            checkpoint = f'CHECKPOINT "{name}"'  # the attached file, not the host's memory
            checkpoint_behind_backup(self.path, lambda: con.execute(checkpoint), after_close, block_size)
        except (OSError, duckdb.Error) as error:
            log.warning(
                "govern: the ledger %s was not checkpointed (%s); its events are safe in the write-ahead log, "
                "and the next write tries again",
                self.path,
                _first_line(str(error)),
            )

    def _append_in(self, con: duckdb.DuckDBPyConnection, pending: Sequence[PendingEvent]) -> list[RecordedEvent]:
        ids = [event.event_id for event in pending]
        if len(set(ids)) != len(ids):
            raise EventConflict("The same event id appears twice in one append")
        existing = {row.event_id: row for row in _existing(con, ids)}
        head = con.execute("SELECT seq, hash FROM stored_events ORDER BY seq DESC LIMIT 1").fetchall()
        seq, prev_hash = head[0] if head else (0, GENESIS_HASH)
        recorded_at = to_utc(utc_now()).replace(tzinfo=None)
        recorded_text = format_timestamp(recorded_at)
        result: list[RecordedEvent] = []
        fresh: list[tuple] = []
        signer = attestation_signer(pending)
        secrets = redaction.guard()
        for event in pending:
            if event.event_id in existing:
                result.append(_same_or_conflict(existing[event.event_id], event, signer))
                continue
            seq += 1
            fact, occurred_at, payload_json = (
                event.fact,
                to_utc(event.occurred_at).replace(tzinfo=None),
                event.payload_json,
            )
            if secrets:  # defence in depth: what the redaction could not recognise is refused, never recorded
                refuse_secrets(event, payload_json)
            authn = authn_text(event, signer)
            digest = chain_hash(
                prev_hash,
                seq=seq,
                event_id=event.event_id,
                type=fact.type,
                schema_version=fact.schema_version,
                occurred_text=format_timestamp(occurred_at),
                recorded_text=recorded_text,
                actor=event.actor,
                subject=fact.subject,
                git_commit=event.git_commit,
                payload_json=payload_json,
                authn=authn,
            )
            row = (
                seq,
                event.event_id,
                fact.type,
                fact.schema_version,
                occurred_at,
                recorded_at,
                event.actor,
                fact.subject,
                event.git_commit,
                payload_json,
                prev_hash,
                digest,
                authn,
                signer.sign_event(digest) if signer and event.authn and event.authn.authenticated else None,
            )
            prev_hash = digest
            fresh.append(row)
            result.append(RecordedEvent(*row))
        if fresh:
            _store(con, fresh)
        return result

    def ingest(self, rows: Sequence[RecordedEvent]) -> int:
        """Add events recorded elsewhere (a PostgreSQL ledger pulled into its read model, `audit copy`), as they are.

        They must continue this ledger's chain: the first links to the current head, each hash is recomputed in
        SQL before the transaction commits, and a single bad row rolls the whole batch back. Returns the new count.
        """
        with self._turn(), contextlib.ExitStack() as own, self._connect(write=True) as con:
            after_close = _after_close(self.path, own)
            con.execute("BEGIN TRANSACTION")
            try:
                count = _ingest_in(con, rows, str(self.path))
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            if rows and wal_size(self.path) >= CHECKPOINT_WAL_BYTES:  # or every open replays the whole pull
                self._checkpoint(con, after_close)
        return count

    # -- reading

    def read(
        self,
        *,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        subject_prefix: str | None = None,
        seqs: Sequence[int] | None = None,
    ) -> list[RecordedEvent]:
        """Events in ledger order (oldest first); `limit` keeps the newest N."""
        where, params = [], []
        if types:
            where.append("type IN (SELECT unnest(?))")
            params.append(list(types))
        if since is not None:
            where.append("occurred_at >= ?")
            params.append(to_utc(since).replace(tzinfo=None))
        if subject_prefix:
            where.append("starts_with(subject, ?)")
            params.append(subject_prefix)
        if seqs is not None:
            where.append("seq IN (SELECT unnest(?))")
            params.append(list(seqs))
        sql = "SELECT * FROM stored_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit is not None:
            # LIMIT is a BIGINT: a larger N (`audit log -n 10**23`, `?limit=`) means every event, not an error
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT {min(int(limit), 2**63 - 1)})"
        sql += " ORDER BY seq"
        with self._connect(write=False) as con:
            return self._rows(con, sql, params)

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest event, or None for an empty or missing ledger."""
        if not self.path.exists():
            return None
        with self._connect(write=False) as con:
            row = con.execute("SELECT seq, hash FROM stored_events ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """One read-only connection for many queries (a long-lived process answering audit questions).

        While it is open, writers in other processes wait (DuckDB's file lock): keep it for a burst of reads.
        """
        with self._connect(write=False) as con:
            yield _TransactionReader(con)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]:
        """Run one query on a read-only connection; returns (column names, rows).

        DuckDB itself refuses writes on the read-only connection; several
        statements in one string are refused here.
        """
        with self._connect(write=False) as con:
            _one_statement(con, sql)
            try:
                cursor = con.execute(sql, params)
            except duckdb.Error as error:
                message = _first_line(str(error))
                if "read-only" in message.lower() or "cannot execute statement of type" in message.lower():
                    raise QueryError(
                        f"The ledger is read-only for queries; only SELECT is allowed ({message})"
                    ) from None
                raise QueryError(f"The query failed: {message}") from None
            names = [d[0] for d in cursor.description] if cursor.description else []
            return names, cursor.fetchall()

    def audit_query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = (), limits: AuditLimits | None = None
    ) -> tuple[list[str], list[tuple]]:
        """An auditor's statement (`audit sql`, `audit run`): one SELECT, in DuckDB's sandbox, within `limits`.

        The connection is read-only, cannot reach files or extensions and cannot change its configuration
        (SANDBOX_CONFIG); DuckDB's own parser refuses every statement that is not a SELECT (WITH, VALUES,
        DESCRIBE, SHOW and SUMMARIZE are SELECTs), so temporary tables, macros, PRAGMA and SET are out too.
        What it may cost is bounded too (`config.AuditLimits`): its threads and memory are set when the sandbox
        opens (and locked with the rest), a timer interrupts it at its timeout (DuckDB's `interrupt`, while it
        runs or while its result is fetched), and its result is fetched in batches and refused as soon as it passes
        the row or byte limit, before the whole of it is ever held.
        """
        from govern.config import AuditLimits

        limits = limits or AuditLimits()
        with self._connect(write=False, sandbox=True, limits=limits) as con:
            kind = _one_statement(con, sql).type
            if kind != duckdb.StatementType.SELECT:
                raise QueryError(
                    f"Refused: audit SQL runs one SELECT (or WITH/VALUES/DESCRIBE/SHOW) over the ledger, "
                    f"not {kind.name}; COPY, ATTACH, PRAGMA, SET, CREATE and the like are not allowed"
                )
            timer = threading.Timer(limits.timeout, con.interrupt)
            timer.daemon = True
            timer.start()
            try:
                cursor = con.execute(sql, params)
                names = [d[0] for d in cursor.description]
                return names, _fetch_within(cursor, limits)
            except duckdb.InterruptException:
                raise QueryLimitExceeded(
                    f"The query ran longer than {limits.timeout:g} s and was stopped: narrow it (a WHERE on seq or "
                    "occurred_at, fewer joins) or aggregate; the limit is `audit.timeout` (locally, --timeout)"
                ) from None
            except duckdb.PermissionException as error:
                raise QueryError(
                    "Refused: audit SQL reads the ledger's tables and views only; files and extensions are out of "
                    f"its reach ({_first_line(str(error))})"
                ) from None
            except duckdb.OutOfMemoryException:
                raise QueryLimitExceeded(
                    f"The query needs more than the {limits.memory_limit} of memory audit SQL may use: narrow it or "
                    "aggregate; the limit is `audit.memory_limit`"
                ) from None
            except duckdb.Error as error:
                raise QueryError(f"The query failed: {_first_line(str(error))}") from None
            finally:
                timer.cancel()

    def backup(self, target: Path) -> Verification:
        """A consistent, self-contained copy of the ledger in one new file (no write-ahead log beside it).

        Safe while other govern processes write: the ledger is attached read-only, which waits for a writer
        to finish and keeps the next one waiting until the copy is done. The copy is written under a temporary
        name, checkpointed, synced and renamed, then verified; a failure leaves no half-written backup.
        """
        _remove_dead_partials(target)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        for leftover in (partial, wal_path(partial)):
            leftover.unlink(missing_ok=True)
        _let_go(self.path)
        with self._turn():
            con = duckdb.connect(":memory:", config=CONNECT_CONFIG)
            try:
                self._retrying(lambda: con.execute(f"ATTACH {_sql_text(self.path)} AS ledger (READ_ONLY)"))
                con.execute(f"ATTACH {_sql_text(partial)} AS copy")
                con.execute("COPY FROM DATABASE ledger TO copy")
                con.execute("CHECKPOINT copy")
                con.execute("DETACH copy")
            except duckdb.Error as error:
                raise LedgerError(f"The backup to {target} failed: {_first_line(str(error))}") from None
            finally:
                con.close()
                wal_path(partial).unlink(missing_ok=True)  # empty after the checkpoint; the copy is the file alone
        try:
            with partial.open("rb+") as handle:
                os.fsync(handle.fileno())
            partial.rename(target)
            descriptor = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise LedgerError(f"The backup to {target} failed: {error.strerror}") from None
        return Ledger(target).verify()

    def query_stored(self, sql: str) -> list[tuple]:
        """A parameterless query over the stored rows (`{events}` names their table), for integrity checks that
        must read what the system of record holds (signatures are outside the hash)."""
        with self._connect(write=False) as con:
            return con.execute(sql.replace("{events}", "stored_events")).fetchall()

    def verify(self) -> Verification:
        """Recompute every hash and link in one vectorised query."""
        with self._connect(write=False) as con:
            return verify_chain_in(_TransactionReader(con))

    @staticmethod
    def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> list[RecordedEvent]:
        cursor = con.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [_from_row(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def _remove_dead_partials(target: Path) -> None:
    """Temporary copies left by backups to `target` whose process died (kill -9): each is as large as the ledger."""
    for leftover in target.parent.glob(f".{target.name}.partial-*"):
        pid = leftover.name.rsplit("-", 1)[1].removesuffix(".wal")
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


_WRITER_LOCKS: dict[str, _Turn] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


class _Turn:
    """A re-entrant lock per file whose owner is the current session, or else the thread; fair between callers.

    A server request's session may authenticate in one worker thread and run its handler in another (FastAPI
    runs a dependency and an endpoint as separate thread-pool calls); both are the same owner, one after the
    other, so the session keeps the file across them, and other threads and requests wait their turn.

    Waiters are served one caller after the other (`waiting_as`: a server names the principal, or the address of
    an unauthenticated client), and each caller's waiters in the order they came; the turn is handed to the next
    one on release, so a newcomer never overtakes. A principal with many requests queued delays another principal
    by one turn, not by all of them; with a bounded wait (`wait_at_most`), a request's wait is bounded by one turn
    of each caller waiting, not by its luck. Every wait is bounded by the caller's timeout and by the budget of the
    current context (a server request's `lock_wait`)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._owner: object | None = None
        self._depth = 0
        self._queues: dict[str, deque[_Waiter]] = {}  # per caller, the callers in line in order

    def acquire(self, timeout: float | None = None) -> bool:
        me = _owner()
        timeout = bounded_wait(timeout)
        with self._guard:
            if self._owner is not None and (self._owner is me or self._owner == me):
                self._depth += 1
                return True
            if self._owner is None and not self._queues:
                self._owner, self._depth = me, 1
                return True
            if timeout is not None and timeout <= 0:
                return False
            waiter = _Waiter(me, _CALLER.get())
            self._queues.setdefault(waiter.caller, deque()).append(waiter)
        waiter.granted.wait(timeout)
        with self._guard:
            if waiter.granted.is_set():  # handed over, perhaps just as the wait ran out: it is ours
                return True
            queue = self._queues[waiter.caller]
            queue.remove(waiter)
            if not queue:
                del self._queues[waiter.caller]
            return False

    def release(self) -> None:
        with self._guard:
            self._depth -= 1
            if self._depth > 0:
                return
            following = self._next()
            if following is None:
                self._owner = None
                return
            self._owner, self._depth = following.owner, 1
            following.granted.set()

    def _next(self) -> _Waiter | None:
        """The first waiter of the first caller in line; that caller, if it has more, goes to the end of the line."""
        if not self._queues:
            return None
        caller = next(iter(self._queues))
        queue = self._queues.pop(caller)
        following = queue.popleft()
        if queue:
            self._queues[caller] = queue
        return following

    def busy(self) -> bool:
        """Held by someone, or waited for (a snapshot: for choosing not to queue, never for deciding)."""
        with self._guard:
            return self._owner is not None or bool(self._queues)


@dataclass
class _Waiter:
    owner: object
    caller: str
    granted: threading.Event = field(default_factory=threading.Event)


# Who the work of the current context is done for, so that the per-file turn is shared fairly between callers: a
# server sets it per request (the principal, or the client's address); "" for everything else (one caller).
_CALLER: ContextVar[str] = ContextVar("govern_ledger_caller", default="")


@contextmanager
def waiting_as(caller: str) -> Iterator[None]:
    """Wait for the ledger's turn as `caller` in this context (and the thread-pool calls made from it)."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)


# How long the work of the current context may wait for a lock on the ledger (this process's turn on a file,
# DuckDB's file lock, PostgreSQL's chain lock), on top of each ledger's own `lock_timeout`: a server sets it per
# request (`[tool.govern.server] lock_wait`), so that no request holds a worker thread for longer, and answers
# 503 with Retry-After instead. None (command lines, background jobs): the ledger's lock_timeout alone.
_WAIT_BUDGET: ContextVar[float | None] = ContextVar("govern_ledger_wait_budget", default=None)


@contextmanager
def wait_at_most(seconds: float | None) -> Iterator[None]:
    """Bound every wait for a ledger lock in this context (and the thread-pool calls made from it) to `seconds`;
    0 means do not wait at all."""
    token = _WAIT_BUDGET.set(seconds)
    try:
        yield
    finally:
        _WAIT_BUDGET.reset(token)


def wait_budget() -> float | None:
    """The current context's bound on waiting for a ledger lock, if any (see `wait_at_most`)."""
    return _WAIT_BUDGET.get()


def bounded_wait(timeout: float | None) -> float | None:
    """`timeout` (None: unbounded) cut to the current context's budget."""
    budget = _WAIT_BUDGET.get()
    if budget is None:
        return timeout
    return budget if timeout is None else min(timeout, budget)


@dataclass
class _Held:
    """A connection a session holds, with the turn on the file it holds for it and what must wait for its close."""

    path: Path
    write: bool
    lock: _Turn
    con: duckdb.DuckDBPyConnection | None = None
    after_close: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def release(self) -> None:
        try:
            if self.con is not None:
                _close(self.con)
            self.after_close.close()  # descriptors a checkpoint kept open: closed only once DuckDB's are
        finally:
            self.lock.release()


class Session:
    """One connection per ledger file for a unit of work, opened on first use and closed by `close()`.

    Opening a DuckDB file costs tens of milliseconds (its catalogue of views is loaded each time); a server
    request that authenticates, reads, decides, writes and looks for pending mirrors would open it four or
    five times. Inside a session it opens once. The connection, and so DuckDB's lock on the file, is held until
    `close()`: keep a session as short as one request's ledger work (no model runs, no network waits). Sandboxed
    auditor queries still get their own connection. `write` opens read-write from the first read, for work that
    will write (reopening would cost a second open). Other stores join through `resources` (a pool's lease)."""

    def __init__(self, *, write: bool = False) -> None:
        self.write = write
        self.closed = False
        self.held: dict[str, _Held] = {}
        self.stores: dict[Any, Any] = {}
        self.resources = contextlib.ExitStack()

    def holds_nothing(self) -> bool:
        """Nothing opened yet (no connection, no pooled store): closing it has nothing to let go of."""
        return not self.held and not self.stores

    def close(self) -> None:
        """Release what the session holds. It stays closed: work after it (a page's error handler, which runs in
        the request's context once the route's dependencies have ended) opens and closes its own connections,
        instead of holding the file in a session no one would close again."""
        self.closed = True
        try:
            for found in list(self.held.values()):
                found.release()
            self.held.clear()
        finally:
            self.stores.clear()
            self.resources.close()


_HOST: duckdb.DuckDBPyConnection | None = None
_HOST_GUARD = threading.Lock()
_ATTACHED: dict[int, str] = {}  # id of a cursor -> the alias it attached


def _host_cursor() -> duckdb.DuckDBPyConnection:
    """A new connection to this process's one in-memory DuckDB, into which ledger files are attached for each use.

    Creating a DuckDB instance costs 15-25 ms (its built-in catalogue), attaching a file to a live one about
    3 ms: every govern command and server request opens the ledger several times. The file lock is the same
    (ATTACH takes it, DETACH drops it), so other processes wait exactly as they did for a connection."""
    global _HOST
    with _HOST_GUARD:
        if _HOST is None:
            _HOST = duckdb.connect(":memory:", config=CONNECT_CONFIG)
            _HOST.execute("PRAGMA disable_checkpoint_on_shutdown")  # nor on DETACH: checkpoints are govern's
        return _HOST.cursor()


def _alias(path: Path) -> str:
    return "ledger_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def _attached(path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A cursor of the host with `path` attached (read-only or read-write) and selected as its database."""
    con = _host_cursor()
    alias = _alias(path)
    try:
        con.execute(f"DETACH DATABASE IF EXISTS {alias}")  # left by a use that could not detach
        con.execute(f"ATTACH {_sql_text(path)} AS {alias}{' (READ_ONLY)' if read_only else ''}")
        con.execute(f"USE {alias}")
    except BaseException:
        con.close()
        raise
    _ATTACHED[id(con)] = alias
    return con


def _close(con: duckdb.DuckDBPyConnection) -> None:
    """Close a connection `_attached` made (detaching its file, which releases the file's lock) or any other."""
    alias = _ATTACHED.pop(id(con), None)
    try:
        if alias is not None:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")  # an unfinished transaction would keep the file attached
            con.execute("USE memory")
            con.execute(f"DETACH {alias}")
    except duckdb.Error as error:
        log.warning("govern: could not detach %s (%s); the next use detaches it", alias, _first_line(str(error)))
    finally:
        with contextlib.suppress(duckdb.Error):
            con.close()


_SESSION: ContextVar[Session | None] = ContextVar("govern_ledger_session", default=None)


def current_session() -> Session | None:
    """The open session of this context, if any (a closed one is no session)."""
    found = _SESSION.get()
    return found if found is not None and not found.closed else None


@contextmanager
def session(*, write: bool = False) -> Iterator[Session]:
    """A `Session` for the block (its context: this thread, and threads started with a copy of the context);
    a nested block shares the outer one."""
    outer = current_session()
    if outer is not None:
        yield outer
        return
    current = Session(write=write)
    token = _SESSION.set(current)
    try:
        yield current
    finally:
        _SESSION.reset(token)
        current.close()


def enter_session(current: Session | None) -> None:
    """Make `current` the session of this context (an ASGI dependency's, which ends it with `current.close()`)."""
    _SESSION.set(current)


def _owner() -> object:
    return current_session() or threading.get_ident()


def _let_go(path: Path) -> None:
    """Close the session's connection to `path`, if any: what comes next needs another configuration."""
    current = current_session()
    found = current.held.pop(str(path.resolve()), None) if current else None
    if found is not None:
        found.release()


def _after_close(path: Path, own: contextlib.ExitStack) -> contextlib.ExitStack:
    """Where a checkpoint parks what must outlive the connection: the session's connection closes later."""
    current = current_session()
    found = current.held.get(str(path.resolve())) if current else None
    return found.after_close if found is not None else own


def _writer_lock(path: Path) -> _Turn:
    """One turn per file in this process: writers take it for their whole transaction (and its checkpoint),
    every connection for its lifetime (`Ledger._turn`), a session until it closes."""
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(str(path.resolve()), _Turn())


# From this many rows on, an append travels to DuckDB as an Arrow table (columnar, one copy) instead of
# as Python lists bound one value at a time: ten times faster for bulk imports, not worth importing
# pyarrow for the handful of events a command appends.
BULK_ROWS = 2_000


def _sql_text(path: Path) -> str:
    """A path as an SQL string literal (ATTACH takes no bound parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def _insert(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple]) -> None:
    """Insert rows given as tuples in COLUMNS order."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    if len(rows) < BULK_ROWS:
        selects = ", ".join(f"unnest(${i + 1})" for i in range(len(COLUMNS)))
        con.execute(f"INSERT INTO stored_events ({', '.join(COLUMNS)}) SELECT {selects}", columns)
        return
    import pyarrow

    stamp = pyarrow.timestamp("us")
    batch = pyarrow.Table.from_arrays(
        [
            pyarrow.array(values, type=stamp if name in ("occurred_at", "recorded_at") else None)
            for name, values in zip(COLUMNS, columns, strict=True)
        ],
        names=list(COLUMNS),
    )
    with _registered(con, "govern_pending_batch", batch):
        names = ", ".join(COLUMNS)
        con.execute(f"INSERT INTO stored_events ({names}) SELECT {names} FROM govern_pending_batch")


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, table: Any) -> Iterator[None]:
    """An Arrow table visible to SQL under `name` for the duration of the block."""
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)


def _store(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple]) -> None:
    """Insert new rows (tuples in COLUMNS order), their upcasts if they are old, and the projection rows they feed."""
    _insert(con, rows)
    if needs_upcast(rows):
        upcast_stored(con, rows[0][0])
    appended = {row[2] for row in rows}
    for table, projection in PROJECTIONS.items():
        if appended.intersection(projection.types):
            con.execute(f"INSERT INTO {table} SELECT * FROM ({projection.select}) WHERE seq >= ?", [rows[0][0]])
            if projection.sorted_by:
                _compact_if_due(con, table, projection.sorted_by)


TAIL_PROBLEMS_SQL = f"""
SELECT seq FROM (
    SELECT seq, hash, prev_hash, lag(hash) OVER (ORDER BY seq) AS before, {DIGEST_SQL} AS computed
    FROM stored_events WHERE seq >= $first - 1
) WHERE seq >= $first AND (computed <> hash OR (seq > 1 AND prev_hash IS DISTINCT FROM before))
ORDER BY seq LIMIT 1
"""


def _ingest_in(con: duckdb.DuckDBPyConnection, rows: Sequence[RecordedEvent], where: str) -> int:
    """`Ledger.ingest` inside an open transaction: link, store, recompute, or raise (the caller rolls back)."""
    head = con.execute("SELECT seq, hash FROM stored_events ORDER BY seq DESC LIMIT 1").fetchall()
    seq, head_hash = head[0] if head else (0, GENESIS_HASH)
    held = [row for row in rows if row.seq <= seq]  # another reader pulled them first: they must be the same
    if held:
        stored = dict(
            con.execute(
                "SELECT seq, hash FROM stored_events WHERE seq >= ? AND seq <= ?", [held[0].seq, seq]
            ).fetchall()
        )
        changed = [row.seq for row in held if stored.get(row.seq) != row.hash]
        if changed:
            raise LedgerCorrupt(
                f"Event seq {changed[0]} offered to {where} differs from the one it holds: the source was rewritten"
            )
        rows = rows[len(held) :]
    if not rows:
        return seq
    first = rows[0]
    if first.seq != seq + 1 or first.prev_hash != head_hash:
        raise LedgerCorrupt(
            f"The events offered to {where} do not continue its chain: it ends at seq {seq}, and seq {first.seq} "
            f"links to {first.prev_hash[:12]}, not {head_hash[:12]}; the source was rewritten or is another ledger"
        )
    tuples = [tuple(getattr(row, _attr(name)) for name in COLUMNS) for row in rows]
    for position, row in enumerate(tuples[1:], start=1):
        if row[0] != first.seq + position:
            raise LedgerCorrupt(f"The events offered to {where} skip from seq {row[0] - 1} to seq {row[0]}")
    _store(con, tuples)
    bad = con.execute(TAIL_PROBLEMS_SQL, {"first": first.seq}).fetchall()
    if bad:
        raise LedgerCorrupt(
            f"Event seq {bad[0][0]} offered to {where} does not verify (its hash or link was altered); "
            "nothing was taken. Run `govern audit verify` on the source"
        )
    return tuples[-1][0]


def _compact_if_due(con: duckdb.DuckDBPyConnection, table: str, sorted_by: str) -> None:
    """Rewrite a sorted projection once COMPACT_ROWS rows have been appended unsorted since the last time."""
    [(watermark,)] = con.execute(
        "SELECT coalesce(max(up_to_seq), 0) FROM govern_compactions WHERE table_name = ?", [table]
    ).fetchall()
    [(unsorted, last)] = con.execute(f"SELECT count(*), max(seq) FROM {table} WHERE seq > ?", [watermark]).fetchall()
    if unsorted < COMPACT_ROWS:
        return
    con.execute(f"CREATE TABLE {table}__sorted AS SELECT * FROM {table} ORDER BY {sorted_by}")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE {table}__sorted RENAME TO {table}")
    con.execute(
        "INSERT INTO govern_compactions VALUES (?, ?, ?)", [table, last, to_utc(utc_now()).replace(tzinfo=None)]
    )


def _existing(con: duckdb.DuckDBPyConnection, ids: list[str]) -> list[RecordedEvent]:
    """Events already recorded under these ids (a retried append is a no-op, a clash an error)."""
    if len(ids) < BULK_ROWS:
        return Ledger._rows(con, "SELECT * FROM stored_events WHERE event_id IN (SELECT unnest(?))", [ids])
    import pyarrow

    pending_ids = pyarrow.Table.from_arrays([pyarrow.array(ids, type=pyarrow.string())], names=["event_id"])
    with _registered(con, "govern_pending_ids", pending_ids):
        return Ledger._rows(
            con, "SELECT * FROM stored_events WHERE event_id IN (SELECT event_id FROM govern_pending_ids)", []
        )


def verify_chain_in(
    reader: Reader, checks: tuple[str, str] = (QUICK_VERIFY_SQL, VERIFY_SQL), projections: bool = True
) -> Verification:
    """Recompute every hash and link, vectorised, and compare each projection with its events."""
    quick, full = checks
    _, [(count, first, last, head_hash, bad_links, bad_hashes)] = reader.query(quick)
    bad_seq = position = previous_seq = problem = None
    if count != last or first != 1 or bad_links or bad_hashes:
        _, [(count, head_hash, bad_seq, position, previous_seq, problem)] = reader.query(full)
    drifted = (
        [table for table, projection in PROJECTIONS.items() if _drifted(reader, table, projection.select)]
        if projections
        else []
    )
    if bad_seq is None and drifted:
        return Verification(
            ok=False,
            count=count,
            head_hash=head_hash,
            problem=(
                f"the {', '.join(drifted)} table disagrees with the events it derives from (edited behind govern)"
            ),
        )
    if bad_seq is None:
        return Verification(ok=True, count=count, head_hash=head_hash)
    if problem == "gap":
        after = f"after seq {previous_seq}" if previous_seq is not None else "at the start"
        reason = f"seq {position} is missing: seq {bad_seq} follows {after}"
    elif problem == "link":
        reason = (
            f"seq {bad_seq}: prev_hash does not match the hash of the event before it "
            "(row deleted, inserted or reordered)"
        )
    else:
        reason = f"seq {bad_seq}: stored hash does not match its content (event altered)"
    return Verification(ok=False, count=count, head_hash=head_hash, bad_seq=bad_seq, problem=reason)


def _drifted(reader: Reader, table: str, select: str) -> bool:
    """Does a projection table differ, row for row, from what its events say? (Joined on seq, its key.)"""
    names, _ = reader.query(f"SELECT * FROM {table} LIMIT 0")
    mine = ", ".join(f"p.{name}" for name in names)
    theirs = ", ".join(f"e.{name}" for name in names)
    _, [(differing,)] = reader.query(
        f"SELECT count(*) FROM {table} AS p FULL JOIN ({select}) AS e ON p.seq = e.seq "
        f"WHERE ({mine}) IS DISTINCT FROM ({theirs})"
    )
    return differing > 0


def _attr(column: str) -> str:
    return "payload_json" if column == "payload" else column


def _from_row(row: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(**{_attr(name): row[name] for name in COLUMNS})


def refuse_secrets(event: PendingEvent, payload_json: str, also: dict[str, str] | None = None) -> None:
    """`SecretInEvent` when the event's payload, actor, subject or commit holds a secret this process was configured
    with (`redaction.remember`), or one of `also` (a ledger's own URL's): raised before anything is written."""
    redaction.refuse_secrets(
        event.fact.type,
        {"payload": payload_json, "actor": event.actor, "subject": event.fact.subject, "git commit": event.git_commit},
        also,
    )


def attestation_signer(pending: Sequence[PendingEvent]) -> Signer | None:
    """This process's signing key when any of `pending` claims the server's authentication; such a claim without
    the key is refused, so nothing but a govern server holding its key can write one."""
    if not any(event.authn is not None and event.authn.authenticated for event in pending):
        return None
    from govern import signing

    signer = signing.active()
    if signer is None:
        raise AttestationRefused(
            "An event that claims authentication by govern serve can be written only by the server holding its "
            "signing key; nothing was appended. Act through the server (GOVERN_URL and GOVERN_TOKEN)"
        )
    return signer


def authn_text(event: PendingEvent, signer: Signer | None) -> str | None:
    """The hashed `authn` member of an event: its authentication, with the signing key's fingerprint when the
    server signs it; a self-asserted name that reads like the server's is refused here too."""
    if event.authn is None:
        return None
    if event.authn.authenticated:
        assert signer is not None  # attestation_signer refused otherwise
        return event.authn.with_key(signer.fingerprint).to_json()
    from govern.attribution import check_self_asserted

    check_self_asserted(event.actor, event.authn.via)
    return event.authn.to_json()


def _same_or_conflict(stored: RecordedEvent, event: PendingEvent, signer: Signer | None = None) -> RecordedEvent:
    same = (
        stored.type == event.fact.type
        and stored.schema_version == event.fact.schema_version
        and stored.subject == event.fact.subject
        and stored.actor == event.actor
        and stored.authn == authn_text(event, signer)
        and stored.git_commit == event.git_commit
        and stored.occurred_at == to_utc(event.occurred_at).replace(tzinfo=None)
        and stored.payload_json == event.payload_json
    )
    if not same:
        raise EventConflict(
            f"Event {event.event_id} is already in the ledger (seq {stored.seq}) with different content; "
            "an event id can be recorded once only"
        )
    return stored


def _one_statement(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """DuckDB's own parse of `sql`, which must be exactly one statement."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryError(f"The query does not parse: {_first_line(str(error))}") from None
    if len(statements) != 1:
        raise QueryError(f"Give exactly one SQL statement, not {len(statements)}")
    return statements[0]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
