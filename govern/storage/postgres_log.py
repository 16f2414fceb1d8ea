"""The ledger in PostgreSQL, for a team: the same envelope, chain and hashes as the DuckDB file.

PostgreSQL is the system of record. An append takes a transaction-scoped advisory lock, reads the head,
hashes in Python exactly as the file does and inserts; `UNIQUE(seq)`, `UNIQUE(event_id)` and
`UNIQUE(prev_hash)` make a fork impossible even for a writer that skipped the lock, and a trigger refuses
UPDATE, DELETE and TRUNCATE. `verify` recomputes every hash in PostgreSQL's own SQL, on what it holds now.

Audit questions keep DuckDB's SQL and views: they run on a read model, a DuckDB ledger on this machine that
is pulled from PostgreSQL by seq and verified link by link (`Ledger.ingest`) before anything reads it.
ARCHITECTURE.md says why this and not DuckDB reading PostgreSQL directly. This module is the only importer
of psycopg.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from govern import redaction
from govern.config import AuditLimits
from govern.envelope import GENESIS_HASH, PendingEvent, RecordedEvent, envelope_hash, to_utc, utc_now
from govern.errors import (
    ConfigError,
    EventConflict,
    LedgerCorrupt,
    LedgerError,
    LedgerLocked,
    LedgerMissing,
    LedgerSchemaTooNew,
)
from govern.readmodel.migrations import check_migration_names
from govern.redaction import without_password
from govern.storage.chain import COLUMNS, verify_chain_in
from govern.storage.contract import Reader, StaleReadModel, Verification
from govern.storage.duckdb_log import Ledger
from govern.storage.postgres_schema import (
    APPEND_ONE,
    AUDITOR_ROLE,
    CHECKS,
    LOCK_KEY,
    PG_MIGRATIONS,
    SCHEMA,
    WRITER_ROLE,
    grant_statements,
)
from govern.storage.rules import refuse_secrets
from govern.storage.sessions import Session, bounded_wait, wait_budget

log = logging.getLogger(__name__)
T = TypeVar("T")

PULL_BATCH = 50_000


def _now() -> datetime:
    return to_utc(utc_now()).replace(tzinfo=None)


def is_postgres_url(value: str) -> bool:
    return re.match(r"^postgres(ql)?(\+[a-z0-9]+)?://", value, re.IGNORECASE) is not None


_PRIVILEGES_CHECKED: set[tuple[str, str]] = set()
IDLE_PER_LEDGER = 8  # connections a long-lived process keeps open per ledger between sessions
_IDLE: dict[tuple[str, float], list[PostgresLedger]] = {}
_IDLE_GUARD = threading.Lock()


def leased(url: str, lock_timeout: float, current: Session) -> PostgresLedger:
    """The session's ledger for `url`: taken from this process's pool on first use in the session and given back
    when it closes, so a server request reuses a connection (and its read model's known head) instead of
    connecting anew for each use case it calls."""
    key = (url, lock_timeout)
    found = current.stores.get(key)
    if isinstance(found, PostgresLedger):
        return found
    with _IDLE_GUARD:
        idle = _IDLE.get(key)
        ledger = idle.pop() if idle else PostgresLedger(url, lock_timeout=lock_timeout)
    ledger.session = current
    current.stores[key] = ledger
    current.resources.callback(_give_back, key, ledger)
    return ledger


def _give_back(key: tuple[str, float], ledger: PostgresLedger) -> None:
    ledger.session = None
    con = ledger._con
    usable = con is not None and not con.closed and not con.broken and con.info.transaction_status == 0
    with _IDLE_GUARD:
        idle = _IDLE.setdefault(key, [])
        if usable and len(idle) < IDLE_PER_LEDGER:
            idle.append(ledger)
            return
    ledger.close()


class PostgresLedger:
    """A ledger in a PostgreSQL database (schema `govern`), read through a DuckDB read model on this machine."""

    backend = "postgresql"

    def __init__(self, url: str, lock_timeout: float = 30.0, cache_dir: Path | None = None) -> None:
        self.url = url
        self.lock_timeout = lock_timeout
        self._cache_dir = cache_dir
        self._con: psycopg.Connection | None = None
        self._ready = False
        self._ledger_id: str | None = None
        self._synced: tuple[int, str] | None = None
        self._privileges_checked = False
        self.session: Session | None = None  # set while a session leases it (`leased`): its read model joins
        # the password of its own URL (GOVERN_LEDGER's), refused in any event it appends, however it was opened
        self._own_secrets = redaction.guarded(
            dict.fromkeys(redaction.secrets_of_uri(url), "the password of the ledger's URL"), [without_password(url)]
        )

    # -- where

    @property
    def location(self) -> str:
        return without_password(self.url)

    @property
    def address(self) -> str:
        """The URL as configured, password included: for a child process's GOVERN_LEDGER, never for display."""
        return self.url

    @property
    def state_dir(self) -> Path:
        """This ledger's own folder beside its read model (the mirror log of one ledger is not another's)."""
        folder = self._model().path.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def exists(self) -> bool:
        with self._errors():
            return self._applied(self._connection()) is not None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Any database error as one line that says what to do (privileges are the operator's to grant)."""
        try:
            yield
        except pg_errors.InsufficientPrivilege as error:
            raise self._lacking(error) from None
        except psycopg.Error as error:
            raise LedgerError(f"The PostgreSQL ledger at {self.location} failed: {_first_line(error)}") from None

    def _lacking(self, error: psycopg.Error) -> LedgerError:
        return LedgerError(
            f"The role connecting to {self.location} lacks privileges on govern's schema ({_first_line(error)}): "
            "an operator grants them with the statements `govern init --ledger URL` prints"
        )

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
            self._ready = False

    # -- connections

    def _connection(self) -> psycopg.Connection:
        """One connection per process, opened on first use (a CLI command makes a handful of round trips)."""
        if self._con is None or self._con.closed:
            dsn = re.sub(r"^postgres(ql)?\+[a-z0-9]+://", "postgresql://", self.url, flags=re.IGNORECASE)
            try:
                self._con = psycopg.connect(dsn, autocommit=True, connect_timeout=10, application_name="govern")
                # the verification SQL names `events` unqualified; a writer waits this long for the chain's lock
                # (lock_timeout 0 would mean no limit to PostgreSQL: a millisecond is the least)
                self._con.execute(
                    f"SET search_path = {SCHEMA}; SET lock_timeout = '{max(1, int(self.lock_timeout * 1000))}ms'"
                )
            except psycopg.Error as error:
                raise LedgerError(
                    f"Cannot reach the PostgreSQL ledger at {self.location} ({_first_line(error)}): check the URL's "
                    "host, port, user and database, that the database exists, and that the server is running"
                ) from None
        return self._con

    def _applied(self, con: psycopg.Connection) -> list[tuple[int, str]] | None:
        """The migrations recorded in the database, or None where govern's schema is not there yet."""
        if con.execute("SELECT to_regclass('govern.migrations')").fetchone()[0] is None:
            return None
        return [tuple(row) for row in con.execute("SELECT version, name FROM govern.migrations ORDER BY version")]

    def _ready_connection(self, *, write: bool) -> psycopg.Connection:
        """A connection to a ledger whose schema this govern understands, migrating it on a write."""
        con = self._connection()
        if self._ready:
            return con
        try:
            applied = self._applied(con)
            if applied is None and not write:
                raise LedgerMissing(
                    f"No govern ledger in {self.location} yet: run `govern init --ledger URL` to create it, "
                    "or point GOVERN_LEDGER at an existing ledger"
                )
            applied = applied or []
            if applied and applied[-1][0] > len(PG_MIGRATIONS):
                raise LedgerSchemaTooNew(
                    f"The ledger {self.location} has schema version {applied[-1][0]}, newer than this govern "
                    f"understands ({len(PG_MIGRATIONS)}): upgrade govern"
                )
            check_migration_names(applied, self.location, PG_MIGRATIONS)
            if len(applied) < len(PG_MIGRATIONS):
                if not write:
                    raise LedgerError(
                        f"The ledger {self.location} has schema version {len(applied)}, older than this govern's "
                        f"({len(PG_MIGRATIONS)}): run any govern write command, such as `govern repro`, to migrate it"
                    )
                self._migrate(con, len(applied))
        except pg_errors.InsufficientPrivilege as error:
            if con.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [SCHEMA]).fetchone():
                raise self._lacking(error) from None
            raise LedgerError(
                f"The role connecting to {self.location} may not create govern's schema ({_first_line(error)}): "
                "run `govern init --ledger URL` once as the database's owner"
            ) from None
        except psycopg.Error as error:
            raise LedgerError(f"The PostgreSQL ledger at {self.location} failed: {_first_line(error)}") from None
        self._ready = True
        return con

    def _migrate(self, con: psycopg.Connection, applied: int) -> None:
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            now = self._applied(con) or []  # another process may have migrated while we waited
            if len(now) > applied:
                return
            con.execute("CREATE SCHEMA IF NOT EXISTS govern")
            con.execute(
                "CREATE TABLE IF NOT EXISTS govern.migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            for version, step in enumerate(PG_MIGRATIONS[applied:], start=applied + 1):
                step(con)
                con.execute("INSERT INTO govern.migrations VALUES (%s, %s, %s)", [version, step.__name__, _now()])

    def create(self, writer: str = WRITER_ROLE, auditor: str = AUDITOR_ROLE) -> list[str]:
        """`govern init --ledger URL`: the schema, migrated; returns what the operator should grant."""
        self._ready_connection(write=True)
        return self.grants(writer, auditor)

    def grants(self, writer: str = WRITER_ROLE, auditor: str = AUDITOR_ROLE) -> list[str]:
        return grant_statements(writer, auditor, self._connection().info.dbname)

    # -- the read model

    def ledger_id(self) -> str:
        if self._ledger_id is None:
            con = self._ready_connection(write=False)
            with self._errors():
                self._ledger_id = con.execute("SELECT id FROM govern.ledger").fetchone()[0]
        return self._ledger_id

    def _model(self) -> Ledger:
        base = self._cache_dir or _cache_home()
        return Ledger(base / f"{self.ledger_id()}.duckdb", lock_timeout=self.lock_timeout, session=self.session)

    def _pull(self, con: psycopg.Connection) -> Ledger:
        """Bring this machine's read model up to PostgreSQL's head, verifying each pulled event on the way in."""
        model = self._model()
        head = _head(con)
        if head is not None and head == self._synced:
            return model
        if not model.exists():
            model.ingest([])  # an empty read model, migrated: queries of an empty ledger answer, not fail
        local = model.head()
        if local is not None:
            row = con.execute("SELECT hash FROM govern.events WHERE seq = %s", [local[0]]).fetchone()
            if row is None or row[0] != local[1]:
                what = "no longer holds" if row is None else "holds a different"
                raise LedgerCorrupt(
                    f"PostgreSQL {what} event seq {local[0]} than this machine read before: the ledger at "
                    f"{self.location} was changed behind govern. Run `govern audit verify`; the read model is "
                    f"{model.path}"
                )
        done = local[0] if local else 0
        while head is not None and done < head[0]:
            cursor = con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM govern.events WHERE seq > %s ORDER BY seq LIMIT %s",
                [done, PULL_BATCH],
            )
            rows = [RecordedEvent(*row) for row in cursor.fetchall()]
            if not rows:
                break
            done = model.ingest(rows)
        self._synced = head
        return model

    def _fresh(self, ask: Callable[[Ledger], T]) -> T:
        """Answer from the read model at PostgreSQL's head: asked in one DuckDB connection that also checks the
        head, and pulled first only when it is behind (the usual case costs one PostgreSQL query)."""
        with self._errors():
            con = self._ready_connection(write=False)
            head = _head(con) or (0, GENESIS_HASH)
            model = self._model()
            if model.path.exists():
                try:
                    return ask(model.expecting(head))
                except StaleReadModel:
                    pass
            self._pull(con)
        return ask(model)

    # -- writing

    def append(self, pending: Sequence[PendingEvent]) -> list[RecordedEvent]:
        if not pending:
            return []
        if len(pending) == 1 and not (pending[0].authn and pending[0].authn.authenticated):
            recorded = self._append_one(pending[0])
            if recorded is not None:
                return [recorded]
        return self._write(lambda _reader: pending)

    def _append_one(self, event: PendingEvent) -> RecordedEvent | None:
        """One event in one round trip, the chain's lock held only inside PostgreSQL: BEGIN, the lock, an INSERT
        that reads the head and hashes in SQL (the twin `verify` uses), and COMMIT go out as one pipeline, so no
        client's scheduling or network stands between taking the lock and releasing it. None where the event id
        is already recorded: the caller's general path compares a retried event with what is there."""
        from govern.storage.rules import authn_text

        payload_json = event.payload_json
        if redaction.guard() or self._own_secrets:
            refuse_secrets(event, payload_json, self._own_secrets)
        con = self._ready_connection(write=True)
        self._warn_about_privileges(con)
        fact = event.fact
        authn = authn_text(event, None)  # a signed event takes the general path: its hash is needed to sign it
        values = {
            "event_id": event.event_id,
            "type": fact.type,
            "schema_version": fact.schema_version,
            "occurred_at": to_utc(event.occurred_at).replace(tzinfo=None),
            "recorded_at": _now(),
            "actor": event.actor,
            "subject": fact.subject,
            "git_commit": event.git_commit,
            "payload": payload_json,
            "authn": authn,
        }
        with self._write_errors(), con.pipeline(), con.transaction():
            self._bound_lock_wait(con)
            con.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            cursor = con.execute(APPEND_ONE, values)
        row = cursor.fetchone()
        if row is None:
            return None
        seq, prev_hash, hash_ = row
        return RecordedEvent(
            seq=seq,
            event_id=values["event_id"],
            type=values["type"],
            schema_version=values["schema_version"],
            occurred_at=values["occurred_at"],
            recorded_at=values["recorded_at"],
            actor=values["actor"],
            subject=values["subject"],
            git_commit=values["git_commit"],
            payload_json=values["payload"],
            prev_hash=prev_hash,
            hash=hash_,
            authn=authn,
        )

    def transact(self, decide: Callable[[Reader], Sequence[PendingEvent]]) -> list[RecordedEvent]:
        """As `Ledger.transact`: `decide` reads a state no other writer, on any machine, can change meanwhile."""
        return self._write(decide)

    def _write(self, decide: Callable[[Reader], Sequence[PendingEvent]]) -> list[RecordedEvent]:
        """One transaction in two round trips when `decide` reads nothing: psycopg's pipeline sends BEGIN, the
        lock and the head query together, then the insert with COMMIT. The lock is held for the second only."""
        con = self._ready_connection(write=True)
        self._warn_about_privileges(con)
        with self._write_errors(), con.pipeline(), con.transaction(), ExitStack() as stack:
            self._bound_lock_wait(con)
            con.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            pending = decide(_LockedReader(self, con, stack))
            return self._append_in(con, pending) if pending else []

    def _bound_lock_wait(self, con: psycopg.Connection) -> None:
        """Within a server request, the chain's lock is waited for at most the request's budget (`ledger.wait_at_most`),
        for this transaction only; then PostgreSQL gives up (LockNotAvailable: LedgerLocked, 503)."""
        budget = wait_budget()
        if budget is not None and budget < self.lock_timeout:
            con.execute("SELECT set_config('lock_timeout', %s, true)", [f"{max(1, int(budget * 1000))}ms"])

    @contextmanager
    def _write_errors(self) -> Iterator[None]:
        try:
            yield
        except pg_errors.LockNotAvailable:
            raise LedgerLocked(
                f"The ledger {self.location} is held by another govern writer; gave up after "
                f"{bounded_wait(self.lock_timeout):g} s. Retry when it has finished"
            ) from None
        except pg_errors.InsufficientPrivilege as error:
            raise LedgerError(
                f"The PostgreSQL ledger at {self.location} refused the write ({_first_line(error)}); nothing was "
                "appended. govern's role needs INSERT and SELECT on govern.events"
            ) from None
        except psycopg.Error as error:
            raise LedgerError(
                f"The PostgreSQL ledger at {self.location} failed ({_first_line(error)}); nothing was appended"
            ) from None

    def _append_in(self, con: psycopg.Connection, pending: Sequence[PendingEvent]) -> list[RecordedEvent]:
        from govern.storage.rules import attestation_signer, authn_text, same_or_conflict

        ids = [event.event_id for event in pending]
        if len(set(ids)) != len(ids):
            raise EventConflict("The same event id appears twice in one append")
        head_seq, head_hash, known = con.execute(
            "SELECT (SELECT seq FROM govern.events ORDER BY seq DESC LIMIT 1), "
            "(SELECT hash FROM govern.events ORDER BY seq DESC LIMIT 1), "
            "(SELECT count(*) FROM govern.events WHERE event_id = ANY(%s))",
            [ids],
        ).fetchone()
        existing = {}
        if known:  # a retried append: rare, so its rows are fetched only then
            cursor = con.execute(f"SELECT {', '.join(COLUMNS)} FROM govern.events WHERE event_id = ANY(%s)", [ids])
            existing = {row.event_id: row for row in (RecordedEvent(*values) for values in cursor.fetchall())}
        seq, prev_hash = (head_seq, head_hash) if head_seq is not None else (0, GENESIS_HASH)
        recorded_at = _now()
        signer = attestation_signer(pending)
        result, fresh = [], []
        checked = bool(redaction.guard() or self._own_secrets)
        for event in pending:
            if event.event_id in existing:
                result.append(same_or_conflict(existing[event.event_id], event, signer))
                continue
            seq += 1
            fact = event.fact
            occurred_at = to_utc(event.occurred_at).replace(tzinfo=None)
            payload_json = event.payload_json
            if checked:  # defence in depth: what the redaction could not recognise is refused, never recorded
                refuse_secrets(event, payload_json, self._own_secrets)
            row = RecordedEvent(
                seq=seq,
                event_id=event.event_id,
                type=fact.type,
                schema_version=fact.schema_version,
                occurred_at=occurred_at,
                recorded_at=recorded_at,
                actor=event.actor,
                subject=fact.subject,
                git_commit=event.git_commit,
                payload_json=payload_json,
                prev_hash=prev_hash,
                hash="",
                authn=authn_text(event, signer),
            )
            row = _with_hash(row)
            if signer is not None and event.authn is not None and event.authn.authenticated:
                row = replace(row, signature=signer.sign_event(row.hash))
            prev_hash = row.hash
            fresh.append(row)
            result.append(row)
        _insert(con, fresh)
        return result

    def ingest(self, rows: Sequence[RecordedEvent]) -> int:
        """Add events recorded elsewhere (`audit copy`), each hash recomputed and each link checked first."""
        con = self._ready_connection(write=True)
        try:
            with con.transaction():
                self._bound_lock_wait(con)
                con.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
                seq, prev = _head(con) or (0, GENESIS_HASH)
                for row in rows:
                    if row.seq != seq + 1 or row.prev_hash != prev or _with_hash(row).hash != row.hash:
                        raise LedgerCorrupt(
                            f"Event seq {row.seq} offered to {self.location} does not continue its chain at seq "
                            f"{seq} (altered, reordered, or from another ledger); nothing was taken"
                        )
                    seq, prev = row.seq, row.hash
                _insert(con, rows)
        except pg_errors.LockNotAvailable:
            raise LedgerLocked(
                f"The ledger {self.location} is held by another govern writer; nothing was taken. Retry"
            ) from None
        except psycopg.Error as error:
            raise LedgerError(f"Writing to {self.location} failed ({_first_line(error)}); nothing was taken") from None
        return seq

    def _warn_about_privileges(self, con: psycopg.Connection) -> None:
        """Append-only holds for govern's role only if it cannot UPDATE, DELETE or TRUNCATE, or switch triggers off."""
        if self._privileges_checked:
            return
        if self._ledger_id is None:
            with self._errors():
                self._ledger_id = con.execute("SELECT id FROM govern.ledger").fetchone()[0]
        ledger = (self.url, self._ledger_id)  # a database dropped and made again at one URL is another ledger
        if ledger in _PRIVILEGES_CHECKED:
            return  # once per process and ledger: a server would otherwise log the warning on every write
        self._privileges_checked = True
        _PRIVILEGES_CHECKED.add(ledger)
        with self._errors():
            found = con.execute(
                "SELECT current_user, rolsuper, "
                "has_table_privilege('govern.events', 'UPDATE'), has_table_privilege('govern.events', 'DELETE'), "
                "has_table_privilege('govern.events', 'TRUNCATE'), "
                "pg_has_role((SELECT tableowner FROM pg_tables WHERE schemaname = 'govern' AND tablename = 'events'), "
                "'MEMBER') "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        role, superuser, *rights = found
        too_much = [name for name, held in zip(("UPDATE", "DELETE", "TRUNCATE", "owner"), rights, strict=True) if held]
        if superuser:
            too_much.insert(0, "superuser")
        if too_much:
            log.warning(
                "govern: writing to the ledger as role %s, which holds %s on govern.events: anyone with this role "
                "can rewrite history behind govern. Write with a role that has INSERT and SELECT only "
                "(`govern init --ledger URL` prints the GRANTs)",
                role,
                ", ".join(too_much),
            )

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
        return self._fresh(
            lambda model: model.read(types=types, since=since, limit=limit, subject_prefix=subject_prefix, seqs=seqs)
        )

    def head(self) -> tuple[int, str] | None:
        with self._errors():
            if self._applied(self._connection()) is None:
                return None
            return _head(self._ready_connection(write=False))

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        with ExitStack() as stack:
            yield self._fresh(lambda model: stack.enter_context(model.reader()))

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]:
        return self._fresh(lambda model: model.query(sql, params))

    def access_changes(self, seen: int, types: Sequence[str]) -> tuple[str | None, int | None, str | None, int]:
        """(the hash at `seen`, the head's seq and hash, how many events of `types` came after `seen`), asked of
        PostgreSQL itself: a server's token table checks whether it still holds without this machine's read model,
        which a job or a command line may hold for seconds (`api.access.TokenTable`)."""
        with self._errors():
            con = self._ready_connection(write=False)
            row = con.execute(
                "SELECT (SELECT hash FROM govern.events WHERE seq = %(seen)s), "
                "(SELECT seq FROM govern.events ORDER BY seq DESC LIMIT 1), "
                "(SELECT hash FROM govern.events ORDER BY seq DESC LIMIT 1), "
                "(SELECT count(*) FROM govern.events WHERE seq > %(seen)s AND type = ANY(%(types)s))",
                {"seen": seen, "types": list(types)},
            ).fetchone()
        return row[0], row[1], row[2], row[3]

    def audit_query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = (), limits: AuditLimits | None = None
    ) -> tuple[list[str], list[tuple]]:
        """Audit SQL runs on this machine's read model (DuckDB's sandbox, with its limits), never on PostgreSQL."""
        return self._fresh(lambda model: model.audit_query(sql, params, limits))

    def query_stored(self, sql: str) -> list[tuple]:
        """A parameterless query over what PostgreSQL holds now (`{events}` names the table), not the read model."""
        con = self._ready_connection(write=False)
        try:
            return con.execute(sql.replace("{events}", "govern.events")).fetchall()
        except psycopg.Error as error:
            raise LedgerError(f"Reading {self.location} failed: {_first_line(error)}") from None

    def verify(self) -> Verification:
        """Every hash and link recomputed by PostgreSQL on what it holds now; then this machine's read model
        must agree with it (a copy that was pulled before a rewrite is named, never trusted)."""
        con = self._ready_connection(write=False)
        try:
            result = verify_chain_in(_PgReader(con), CHECKS, projections=False)
        except psycopg.Error as error:
            raise LedgerError(f"Verifying {self.location} failed: {_first_line(error)}") from None
        if not result.ok:
            return result
        model = self._model()
        local = model.head() if model.exists() else None
        if local is not None:
            row = con.execute("SELECT hash FROM govern.events WHERE seq = %s", [local[0]]).fetchone()
            if row is None or row[0] != local[1]:
                return Verification(
                    ok=False,
                    count=result.count,
                    head_hash=result.head_hash,
                    bad_seq=local[0],
                    problem=(
                        f"seq {local[0]}: PostgreSQL's chain verifies, but this machine read a different history "
                        f"before (read model {model.path}): the ledger was rewritten behind govern"
                    ),
                )
        return result

    def backup(self, target: Path) -> Verification:
        """A self-contained DuckDB copy of the ledger as it is now, verified (pg_dump stays the operator's tool)."""
        from govern.storage.copying import copy

        return copy(self, Ledger(target))


class _PgReader:
    def __init__(self, con: psycopg.Connection) -> None:
        self._con = con

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]:
        with self._con.cursor() as cursor:
            cursor.execute(sql, params or None)
            return [d.name for d in cursor.description], cursor.fetchall()


class _LockedReader:
    """The state a writer decides on: the read model, pulled up to the head while the chain's lock is held."""

    def __init__(self, ledger: PostgresLedger, con: psycopg.Connection, stack: ExitStack) -> None:
        self._ledger, self._con, self._stack = ledger, con, stack
        self._reader: Reader | None = None

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]:
        if self._reader is None:
            model = self._ledger._pull(self._con)
            self._reader = self._stack.enter_context(model.reader())
        return self._reader.query(sql, params)


def _head(con: psycopg.Connection) -> tuple[int, str] | None:
    row = con.execute("SELECT seq, hash FROM govern.events ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


def _with_hash(row: RecordedEvent) -> RecordedEvent:
    from dataclasses import replace

    return replace(
        row,
        hash=envelope_hash(
            seq=row.seq,
            event_id=row.event_id,
            type=row.type,
            schema_version=row.schema_version,
            occurred_at=row.occurred_at,
            recorded_at=row.recorded_at,
            actor=row.actor,
            subject=row.subject,
            git_commit=row.git_commit,
            payload_json=row.payload_json,
            prev_hash=row.prev_hash,
            authn=row.authn,
        ),
    )


def _insert(con: psycopg.Connection, rows: Sequence[RecordedEvent]) -> None:
    """COPY for many rows (bulk copies), one multi-row INSERT for the few a command appends."""
    if not rows:
        return
    values = [tuple(getattr(row, "payload_json" if name == "payload" else name) for name in COLUMNS) for row in rows]
    if len(rows) > 100:
        with con.cursor().copy(f"COPY govern.events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        return
    placeholders = ", ".join("(" + ", ".join(["%s"] * len(COLUMNS)) + ")" for _ in values)
    con.execute(
        f"INSERT INTO govern.events ({', '.join(COLUMNS)}) VALUES {placeholders}",
        [value for row in values for value in row],
    )


def _cache_home() -> Path:
    """Where read models live on this machine: GOVERN_CACHE_DIR, else the XDG cache directory."""
    explicit = os.environ.get("GOVERN_CACHE_DIR")
    if explicit:
        folder = Path(explicit).absolute()
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"GOVERN_CACHE_DIR {explicit} is a file: give a directory for the ledgers' read models")
        return folder
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "govern" / "ledgers"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
