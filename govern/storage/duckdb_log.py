"""The append-only, hash-chained event ledger in a DuckDB file.

This package is the only importer of duckdb. The ledger appends events (one transaction per call), reads
them back, verifies the chain in one SQL query and runs read-only queries for the audit side. There is no
UPDATE or DELETE of events anywhere in govern: state is derived from events by views."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
    EventConflict,
    LedgerCorrupt,
    LedgerError,
    LedgerLocked,
    LedgerMissing,
    LedgerSchemaTooNew,
    QueryError,
    QueryLimitExceeded,
)
from govern.readmodel.migrations import (
    COMPACT_ROWS,
    MIGRATIONS,
    PROJECTIONS,
    check_migration_names,
    needs_upcast,
    schema_version,
    upcast_stored,
)
from govern.storage.chain import COLUMNS, DIGEST_SQL, verify_chain_in
from govern.storage.contract import Reader, StaleReadModel, Verification
from govern.storage.duckdb_files import (
    BULK_ROWS,
    CHECKPOINT_WAL_BYTES,
    CONNECT_CONFIG,
    CREATION_WAIT,
    TRANSIENT_ATTEMPTS,
    TRANSIENT_READ,
    Held,
    attached,
    close_connection,
    fetch_within,
    first_line,
    insert_rows,
    one_statement,
    registered,
    sandbox_config,
    sql_text,
    younger_than_headers,
)
from govern.storage.rules import attestation_signer, authn_text, refuse_secrets, same_or_conflict
from govern.storage.sessions import Session, after_close, bounded_wait, let_go, live, writer_lock

if TYPE_CHECKING:
    from govern.config import AuditLimits


class _TransactionReader:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]:
        cursor = self._con.execute(sql, params)
        return [d[0] for d in cursor.description], cursor.fetchall()


log = logging.getLogger(__name__)
T = TypeVar("T")


class Ledger:
    """One ledger file. Connections are short: opened per call, closed at once.

    Commits land in DuckDB's write-ahead log; `govern.checkpoints` folds the log into the file.
    """

    backend = "duckdb"

    def __init__(self, path: Path, lock_timeout: float = 30.0, session: Session | None = None) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self.session = session  # the unit of work this ledger's calls share a connection in (`sessions.Session`)
        self._expected_head: tuple[int, str] | None = None

    def expecting(self, head: tuple[int, str]) -> Ledger:
        """This ledger, for reads that must see exactly `head` ((0, GENESIS_HASH) when empty): a read model asks
        in the same connection that answers, and pulls only on `StaleReadModel`."""
        view = Ledger(self.path, self.lock_timeout, self.session)
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
        current = live(self.session)
        if current is not None and sandbox:
            let_go(current, self.path)  # a sandboxed connection needs the file to itself in this process
        elif current is not None:
            with self._held_connection(current, write=write) as con:
                yield con
            return
        with self._turn():
            con = self._open_with_retry(read_only=not write, sandbox=sandbox_config(limits) if sandbox else None)
            try:
                self._prepare(con, write=write, sandbox=sandbox)
                yield con
            finally:
                close_connection(con)

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
            found = Held(self.path, write=write, lock=writer_lock(self.path))
            if not found.lock.acquire(timeout=self.lock_timeout, owner=current):
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
        lock = writer_lock(self.path)
        if not lock.acquire(timeout=self.lock_timeout, owner=live(self.session)):
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
        return self._retrying(lambda: attached(self.path, read_only=read_only))

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
                being_created = "not a valid duckdb database file" in message.lower() and younger_than_headers(
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
                        f"{self.path} is not a readable govern ledger ({first_line(message)}); "
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
                    f"{self.path} is not a readable govern ledger ({first_line(str(error))}); "
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
                        f"The ledger {self.path} could not be read while writing ({first_line(str(error))}), "
                        f"{attempt} times; nothing was appended. Retry, and run `govern audit verify`"
                    ) from None
                time.sleep(0.05 * attempt)
                attempt += 1

    def _transact_once(self, decide: Callable[[Reader], Sequence[PendingEvent]]) -> list[RecordedEvent]:
        # DuckDB's file lock keeps other processes out; threads of this process share one database instance
        # and would race on the head, so they take turns here (a server answering requests in threads), each wait
        # bounded (`_turn`: the ledger's lock_timeout, and a server request's budget).
        with self._turn(), contextlib.ExitStack() as own, self._connect(write=True) as con:
            parked = after_close(self.session, self.path, own)
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
                self._checkpoint(con, parked)
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
                first_line(str(error)),
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
                result.append(same_or_conflict(existing[event.event_id], event, signer))
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
            parked = after_close(self.session, self.path, own)
            con.execute("BEGIN TRANSACTION")
            try:
                count = _ingest_in(con, rows, str(self.path))
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            if rows and wal_size(self.path) >= CHECKPOINT_WAL_BYTES:  # or every open replays the whole pull
                self._checkpoint(con, parked)
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
            one_statement(con, sql)
            try:
                cursor = con.execute(sql, params)
            except duckdb.Error as error:
                message = first_line(str(error))
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
            kind = one_statement(con, sql).type
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
                return names, fetch_within(cursor, limits)
            except duckdb.InterruptException:
                raise QueryLimitExceeded(
                    f"The query ran longer than {limits.timeout:g} s and was stopped: narrow it (a WHERE on seq or "
                    "occurred_at, fewer joins) or aggregate; the limit is `audit.timeout` (locally, --timeout)"
                ) from None
            except duckdb.PermissionException as error:
                raise QueryError(
                    "Refused: audit SQL reads the ledger's tables and views only; files and extensions are out of "
                    f"its reach ({first_line(str(error))})"
                ) from None
            except duckdb.OutOfMemoryException:
                raise QueryLimitExceeded(
                    f"The query needs more than the {limits.memory_limit} of memory audit SQL may use: narrow it or "
                    "aggregate; the limit is `audit.memory_limit`"
                ) from None
            except duckdb.Error as error:
                raise QueryError(f"The query failed: {first_line(str(error))}") from None
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
        let_go(self.session, self.path)
        with self._turn():
            con = duckdb.connect(":memory:", config=CONNECT_CONFIG)
            try:
                self._retrying(lambda: con.execute(f"ATTACH {sql_text(self.path)} AS ledger (READ_ONLY)"))
                con.execute(f"ATTACH {sql_text(partial)} AS copy")
                con.execute("COPY FROM DATABASE ledger TO copy")
                con.execute("CHECKPOINT copy")
                con.execute("DETACH copy")
            except duckdb.Error as error:
                raise LedgerError(f"The backup to {target} failed: {first_line(str(error))}") from None
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


def _store(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple]) -> None:
    """Insert new rows (tuples in COLUMNS order), their upcasts if they are old, and the projection rows they feed."""
    insert_rows(con, rows)
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
    with registered(con, "govern_pending_ids", pending_ids):
        return Ledger._rows(
            con, "SELECT * FROM stored_events WHERE event_id IN (SELECT event_id FROM govern_pending_ids)", []
        )


def _attr(column: str) -> str:
    return "payload_json" if column == "payload" else column


def _from_row(row: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(**{_attr(name): row[name] for name in COLUMNS})
