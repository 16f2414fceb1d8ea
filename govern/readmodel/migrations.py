"""The ledger's schema: an ordered list of migrations that build the events table, the read-model views
and the projections (tables derived from events at append time), and the upcasts of older payloads.

The applied ones are recorded in `govern_migrations`; the rest run, in order, when a ledger is opened. Every
backend's read model is a DuckDB database built by these."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from govern.envelope import (
    to_utc,
    utc_now,
)
from govern.errors import (
    LedgerError,
)

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

    pass


# ---------------------------------------------------------------- migrations
# An ordered list of small functions; the applied ones are recorded in
# `govern_migrations` and the rest run, in order, when the ledger is opened.

Migration = Callable[["DuckDBPyConnection"], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_create_events(con: DuckDBPyConnection) -> None:
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
def m002_read_views(con: DuckDBPyConnection) -> None:
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


# The views m003 creates, in order (later ones read earlier ones).
PROMOTIONS_VIEW = """
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

DEPRECATIONS_VIEW = """
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

STAGE_ASSIGNMENTS_VIEW = """
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

PRODUCTION_WINDOWS_VIEW = """
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

INFERENCES_VIEW = """
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

EXPERIMENTS_VIEW = """
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


@migration
def m003_lifecycle_views(con: DuckDBPyConnection) -> None:
    """Promotions, stages, deployments, production windows, inferences, grid selections."""
    for view in (
        PROMOTIONS_VIEW,
        DEPRECATIONS_VIEW,
        STAGE_ASSIGNMENTS_VIEW,
        f"CREATE VIEW deployment_events AS {DEPLOYMENT_PROJECTION}",
        PRODUCTION_WINDOWS_VIEW,
        INFERENCES_VIEW,
        EXPERIMENTS_VIEW,
    ):
        con.execute(view)


@migration
def m004_deployment_index(con: DuckDBPyConnection) -> None:
    """The deployment events as plain columns: production questions become an index lookup."""
    con.execute(f"CREATE TABLE deployment_index AS {DEPLOYMENT_PROJECTION} ORDER BY seq")
    con.execute("CREATE INDEX deployment_index_slot ON deployment_index (app, env)")
    con.execute("CREATE OR REPLACE VIEW deployment_events AS SELECT * FROM deployment_index")


@migration
def m005_registrations(con: DuckDBPyConnection) -> None:
    """Model versions with their training's seq and commit: point queries join a small table, not the ledger."""
    con.execute(f"CREATE TABLE registrations AS {REGISTRATION_PROJECTION} ORDER BY r.seq")


@migration
def m006_slot_sorted_deployments(con: DuckDBPyConnection) -> None:
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
def m007_current_schema_events(con: DuckDBPyConnection) -> None:
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
def m008_access(con: DuckDBPyConnection) -> None:
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
def m009_promotion_requests(con: DuckDBPyConnection) -> None:
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
def m010_training_jobs(con: DuckDBPyConnection) -> None:
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
def m011_attestations(con: DuckDBPyConnection) -> None:
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
def m012_forced_promotion_requests(con: DuckDBPyConnection) -> None:
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
def m013_admin_duties(con: DuckDBPyConnection) -> None:
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


def upcast_stored(con: DuckDBPyConnection, since_seq: int) -> None:
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
