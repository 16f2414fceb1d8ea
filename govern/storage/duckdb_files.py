"""DuckDB files as govern opens them: one in-memory host per process into which ledger files are attached,
the connection settings (no automatic checkpoints, no extensions), and the auditor's sandbox."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from govern.errors import (
    QueryError,
    QueryLimitExceeded,
)
from govern.storage.chain import COLUMNS

if TYPE_CHECKING:
    from govern.config import AuditLimits
    from govern.storage.sessions import Turn


# With eight processes appending at once, DuckDB 2.0 has (rarely) failed a writer's first read of a
# file that the previous writer had just closed: "Could not read enough bytes from file". The
# transaction never started writing; running it again on a fresh connection succeeds.
TRANSIENT_READ = "could not read enough bytes"
CREATION_WAIT = 3.0  # seconds a file shorter than its headers is given to become a database
DUCKDB_HEADERS = 3 * 4096  # a DuckDB file starts with a main header and two database headers of one block each


def younger_than_headers(path: Path) -> bool:
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


def sandbox_config(limits: AuditLimits | None) -> dict[str, Any]:
    """SANDBOX_CONFIG with an auditor statement's threads and memory (and no spilling to disk beside the ledger:
    a statement that does not fit in memory_limit fails, it does not fill the ledger's disk)."""
    from govern.config import AuditLimits

    limits = limits or AuditLimits()
    return {**SANDBOX_CONFIG, "threads": limits.threads, "memory_limit": limits.memory_limit, "temp_directory": ""}


def fetch_within(cursor: duckdb.DuckDBPyConnection, limits: AuditLimits) -> list[tuple]:
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


@dataclass
class Held:
    """A connection a session holds, with the turn on the file it holds for it and what must wait for its close."""

    path: Path
    write: bool
    lock: Turn
    con: duckdb.DuckDBPyConnection | None = None
    after_close: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def release(self) -> None:
        try:
            if self.con is not None:
                close_connection(self.con)
            self.after_close.close()  # descriptors a checkpoint kept open: closed only once DuckDB's are
        finally:
            self.lock.release()


_HOST: duckdb.DuckDBPyConnection | None = None
_HOST_GUARD = threading.Lock()
_ATTACHED: dict[int, str] = {}  # id of a cursor -> the alias it attached


def host_cursor() -> duckdb.DuckDBPyConnection:
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


def attached(path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A cursor of the host with `path` attached (read-only or read-write) and selected as its database."""
    con = host_cursor()
    alias = _alias(path)
    try:
        con.execute(f"DETACH DATABASE IF EXISTS {alias}")  # left by a use that could not detach
        con.execute(f"ATTACH {sql_text(path)} AS {alias}{' (READ_ONLY)' if read_only else ''}")
        con.execute(f"USE {alias}")
    except BaseException:
        con.close()
        raise
    _ATTACHED[id(con)] = alias
    return con


def close_connection(con: duckdb.DuckDBPyConnection) -> None:
    """Close a connection `attached` made (detaching its file, which releases the file's lock) or any other."""
    alias = _ATTACHED.pop(id(con), None)
    try:
        if alias is not None:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")  # an unfinished transaction would keep the file attached
            con.execute("USE memory")
            con.execute(f"DETACH {alias}")
    except duckdb.Error as error:
        log.warning("govern: could not detach %s (%s); the next use detaches it", alias, first_line(str(error)))
    finally:
        with contextlib.suppress(duckdb.Error):
            con.close()


def sql_text(path: Path) -> str:
    """A path as an SQL string literal (ATTACH takes no bound parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def one_statement(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """DuckDB's own parse of `sql`, which must be exactly one statement."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryError(f"The query does not parse: {first_line(str(error))}") from None
    if len(statements) != 1:
        raise QueryError(f"Give exactly one SQL statement, not {len(statements)}")
    return statements[0]


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


# From this many rows on, an append travels to DuckDB as an Arrow table (columnar, one copy) instead of
# as Python lists bound one value at a time: ten times faster for bulk imports, not worth importing
# pyarrow for the handful of events a command appends.
BULK_ROWS = 2_000


def insert_rows(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple]) -> None:
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
    with registered(con, "govern_pending_batch", batch):
        names = ", ".join(COLUMNS)
        con.execute(f"INSERT INTO stored_events ({names}) SELECT {names} FROM govern_pending_batch")


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, table: Any) -> Iterator[None]:
    """An Arrow table visible to SQL under `name` for the duration of the block."""
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)
