"""The ledger's schema in PostgreSQL: the events table with the chain's constraints and its trigger, the chain's
hash in PostgreSQL's SQL, the migrations (by name, as for the file), and the grants an operator runs once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import psycopg

from govern.envelope import GENESIS_HASH, to_utc, utc_now
from govern.storage.chain import chain_checks


def _now() -> datetime:
    return to_utc(utc_now()).replace(tzinfo=None)


SCHEMA = "govern"
# One chain per database: every writer of it takes this transaction-scoped advisory lock ("govern" in ASCII).
LOCK_KEY = 0x676F7665726E

# The SQL twin of envelope.chain_hash in PostgreSQL: to_json escapes a string exactly as Python's json does
# with ensure_ascii=False (the same six short escapes, \u00XX in lower case for other control characters).
HASHED_TEXT_PG = """
    concat(
        prev_hash,
        '{"actor":', to_json(actor)::text,
        CASE WHEN authn IS NULL THEN '' ELSE concat(',"authn":', authn) END,
        ',"event_id":', to_json(event_id)::text,
        ',"git_commit":', coalesce(to_json(git_commit)::text, 'null'),
        ',"occurred_at":"', to_char(occurred_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        '","payload":', payload,
        ',"prev_hash":', to_json(prev_hash)::text,
        ',"recorded_at":"', to_char(recorded_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        '","schema_version":', schema_version::text,
        ',"seq":', seq::text,
        ',"subject":', to_json(subject)::text,
        ',"type":', to_json(type)::text,
        '}'
    )
"""
# The insert of `_append_one`: it runs after the lock, so its snapshot sees every earlier writer's event.
APPEND_ONE = f"""
    INSERT INTO govern.events (seq, event_id, type, schema_version, occurred_at, recorded_at, actor, subject,
                               git_commit, payload, prev_hash, hash, authn)
    SELECT seq, event_id, type, schema_version, occurred_at, recorded_at, actor, subject, git_commit, payload,
           prev_hash, encode(sha256(convert_to({HASHED_TEXT_PG}, 'UTF8')), 'hex'), authn
    FROM (
        SELECT coalesce(head.seq, 0) + 1 AS seq, %(event_id)s::text AS event_id, %(type)s::text AS type,
               %(schema_version)s::integer AS schema_version, %(occurred_at)s::timestamp AS occurred_at,
               %(recorded_at)s::timestamp AS recorded_at, %(actor)s::text AS actor, %(subject)s::text AS subject,
               %(git_commit)s::text AS git_commit, %(payload)s::text AS payload, %(authn)s::text AS authn,
               coalesce(head.hash, '{GENESIS_HASH}') AS prev_hash
        FROM (SELECT 1) AS one
        LEFT JOIN (SELECT seq, hash FROM govern.events ORDER BY seq DESC LIMIT 1) AS head ON true
    ) AS envelope
    WHERE NOT EXISTS (SELECT 1 FROM govern.events WHERE event_id = %(event_id)s::text)
    RETURNING seq, prev_hash, hash
"""
CHECKS = chain_checks(f"encode(sha256(convert_to({HASHED_TEXT_PG}, 'UTF8')), 'hex')", "events")

# ---------------------------------------------------------------- migrations (by name, as for the file)

PgMigration = Callable[[psycopg.Connection], None]
PG_MIGRATIONS: list[PgMigration] = []


def pg_migration(fn: PgMigration) -> PgMigration:
    PG_MIGRATIONS.append(fn)
    return fn


@pg_migration
def m001_create_events(con: psycopg.Connection) -> None:
    """The events table with the constraints that make a fork impossible, append-only by trigger."""
    con.execute(
        """
        CREATE TABLE govern.events (
            seq BIGINT PRIMARY KEY CHECK (seq >= 1),
            event_id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            occurred_at TIMESTAMP NOT NULL,
            recorded_at TIMESTAMP NOT NULL,
            actor TEXT NOT NULL,
            subject TEXT NOT NULL,
            git_commit TEXT,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL UNIQUE,
            hash TEXT NOT NULL UNIQUE
        )
        """
    )
    con.execute(
        """
        CREATE FUNCTION govern.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'govern.events is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    con.execute(
        "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON govern.events "
        "FOR EACH ROW EXECUTE FUNCTION govern.refuse_change()"
    )
    con.execute(
        "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON govern.events "
        "FOR EACH STATEMENT EXECUTE FUNCTION govern.refuse_change()"
    )
    # The ledger's identity: which read model on a machine belongs to it (a database recreated under the same
    # name is another ledger).
    con.execute("CREATE TABLE govern.ledger (id TEXT PRIMARY KEY, created_at TIMESTAMP NOT NULL)")
    con.execute("INSERT INTO govern.ledger VALUES (gen_random_uuid()::text, %s)", [_now()])


@pg_migration
def m002_attestations(con: psycopg.Connection) -> None:
    """How each actor was established (hashed) and the server's signature over the event's hash, as in the file."""
    con.execute("ALTER TABLE govern.events ADD COLUMN authn TEXT, ADD COLUMN signature TEXT")


WRITER_ROLE, AUDITOR_ROLE = "govern_writer", "govern_auditor"


def grant_statements(writer: str = WRITER_ROLE, auditor: str = AUDITOR_ROLE, database: str | None = None) -> list[str]:
    """What an operator runs once: govern writes with INSERT and SELECT only, auditors read only. Roles are
    cluster-wide: a second govern database on the same server needs other names (or skips the CREATE ROLEs)."""
    connect = [f'GRANT CONNECT ON DATABASE "{database}" TO {writer}, {auditor};'] if database else []
    return [
        f"CREATE ROLE {writer} LOGIN PASSWORD '...';",
        f"CREATE ROLE {auditor} LOGIN PASSWORD '...';",
        *connect,
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {writer}, {auditor};",
        f"GRANT SELECT ON {SCHEMA}.migrations, {SCHEMA}.ledger, {SCHEMA}.events TO {writer}, {auditor};",
        f"GRANT INSERT ON {SCHEMA}.events TO {writer};",
    ]
