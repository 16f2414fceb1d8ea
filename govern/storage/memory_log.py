"""The ledger in this process's memory: the DuckDB file's schema, chain, rules and read model, without the file.

For tests of use cases (as eventsourcing's POPO recorder serves its applications' tests): the same contract suite
runs on it as on the file and on PostgreSQL, so what passes here is the ledger's behaviour, not a mock's. It is
not a configuration users can choose: a ledger that vanishes when its process ends is no evidence.

One DuckDB instance per store, opened with external access off (no file, no extension: the auditor's sandbox is
the whole instance), its connections taken one at a time. What a file adds and memory has no use for is left
out: the write-ahead log and its checkpoints, the file lock between processes, the sandbox's own instance.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from govern.errors import LedgerLocked, LedgerMissing
from govern.storage.contract import Verification
from govern.storage.duckdb_files import CONNECT_CONFIG
from govern.storage.duckdb_log import Ledger
from govern.storage.sessions import bounded_wait

if TYPE_CHECKING:
    import contextlib

    from govern.config import AuditLimits


class _Instance:
    """One in-memory database, shared by every view of one store."""

    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:", config={**CONNECT_CONFIG, "enable_external_access": False})
        self.turn = threading.RLock()
        self.written = False


class MemoryLedger(Ledger):
    """A ledger held in memory; `sharing()` is another handle on the same events (a reopened file's twin)."""

    backend = "memory"

    def __init__(self, lock_timeout: float = 30.0, *, name: str | None = None, _instance: _Instance | None = None):
        self.name = name or f"memory-{uuid.uuid4().hex[:12]}"
        super().__init__(Path(self.name), lock_timeout)
        self._instance = _instance or _Instance()

    def sharing(self) -> MemoryLedger:
        return MemoryLedger(self.lock_timeout, name=self.name, _instance=self._instance)

    def expecting(self, head: tuple[int, str]) -> Ledger:
        view = self.sharing()
        view._expected_head = head
        return view

    @property
    def location(self) -> str:
        return f"(in memory) {self.name}"

    @property
    def address(self) -> str:
        return self.location  # no other process can open it

    @property
    def state_dir(self) -> Path:
        raise NotImplementedError("an in-memory ledger has no directory on this machine")

    def exists(self) -> bool:
        return self._instance.written

    def head(self) -> tuple[int, str] | None:
        if not self._instance.written:
            return None
        with self._connect(write=False) as con:
            row = con.execute("SELECT seq, hash FROM stored_events ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def raw(self) -> duckdb.DuckDBPyConnection:
        """A connection to the instance itself, outside govern's rules: for tests that alter stored rows."""
        return self._instance.con.cursor()

    @contextmanager
    def _connect(
        self, *, write: bool, sandbox: bool = False, limits: AuditLimits | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        if not write and not self._instance.written:
            raise LedgerMissing(f"The ledger {self.location} holds no event yet")
        waited = bounded_wait(self.lock_timeout)
        if not self._instance.turn.acquire(timeout=-1 if waited is None else waited):
            raise LedgerLocked(f"The ledger {self.location} is busy; gave up after {waited:g} s. Retry")
        con = self._instance.con.cursor()
        try:
            con.execute("SET TimeZone = 'UTC'; SET enable_progress_bar = false")
            self._check_schema(con, migrate=write)
            if write:
                self._instance.written = True
            if self._expected_head is not None and not write:
                self._check_expected_head(con)
            yield con
        finally:
            con.close()
            self._instance.turn.release()

    @contextmanager
    def _turn(self) -> Iterator[None]:
        yield  # `_connect` takes the instance's turn

    def _checkpoint(self, con: duckdb.DuckDBPyConnection, after_close: contextlib.ExitStack) -> None:
        """Nothing to fold: there is no write-ahead log."""

    def backup(self, target: Path) -> Verification:
        """The events into a new ledger file, each link verified as it lands, then the whole file verified."""
        copy = Ledger(target)
        copy.ingest(self.read())
        return copy.verify()
