"""The ledger's storage contract, and the one way to open a ledger from configuration.

Use cases depend on `LedgerStore`, never on a backend: `Ledger` is the DuckDB file (one person, one machine),
`PostgresLedger` the team's database. Both keep the same envelope, canonical JSON and hash chain byte for byte,
and both answer queries in DuckDB's SQL over the same views (`govern.ledger` holds them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from govern.config import AuditLimits
from govern.envelope import PendingEvent, RecordedEvent
from govern.ledger import Reader, Verification


class LedgerStore(Protocol):
    """What every use case may ask of a ledger."""

    backend: str

    @property
    def location(self) -> str:
        """The file path or the URL without its password: for messages, and GOVERN_LEDGER for a child process."""
        ...

    @property
    def address(self) -> str:
        """What opens this ledger again in a child process (GOVERN_LEDGER); may carry a password: never shown."""
        ...

    @property
    def state_dir(self) -> Path:
        """A directory on this machine for the ledger's local companions (the registry mirror's log and lock)."""
        ...

    def exists(self) -> bool: ...

    def close(self) -> None: ...

    def transact(self, decide: Callable[[Reader], Sequence[PendingEvent]]) -> list[RecordedEvent]:
        """Decide from the current state and append, atomically: no other writer changes the state meanwhile."""
        ...

    def append(self, pending: Sequence[PendingEvent]) -> list[RecordedEvent]: ...

    def ingest(self, rows: Sequence[RecordedEvent]) -> int:
        """Events recorded in another ledger, as they are (copies): verified link by link, all or nothing."""
        ...

    def read(
        self,
        *,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        subject_prefix: str | None = None,
        seqs: Sequence[int] | None = None,
    ) -> list[RecordedEvent]: ...

    def head(self) -> tuple[int, str] | None: ...

    def reader(self) -> AbstractContextManager[Reader]: ...

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]: ...

    def audit_query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = (), limits: AuditLimits | None = None
    ) -> tuple[list[str], list[tuple]]:
        """An auditor's one SELECT, in DuckDB's sandbox, within `limits` (the defaults when None)."""
        ...

    def verify(self) -> Verification: ...

    def query_stored(self, sql: str) -> list[tuple]:
        """A parameterless query over the system of record's own rows (`{events}` names the table): for checks of
        what the hash does not cover (signatures), which a read model pulled earlier would not see changed."""
        ...

    def backup(self, target: Path) -> Verification: ...


def open_store(location: Path | str, lock_timeout: float = 30.0) -> LedgerStore:
    """A DuckDB file path, or a `postgresql://` URL (psycopg is imported only then)."""
    if isinstance(location, str) and "://" in location:  # config keeps a URL as a string, a path as a Path
        from govern.ledger import current_session
        from govern.postgres_ledger import PostgresLedger, leased

        current = current_session()
        if current is not None:  # a server request: one pooled connection for all it does
            return leased(str(location), lock_timeout, current)
        return PostgresLedger(str(location), lock_timeout=lock_timeout)
    from govern.ledger import Ledger

    return Ledger(Path(location), lock_timeout=lock_timeout)


def copy(source: LedgerStore, target: LedgerStore) -> Verification:
    """Every event of `source` into `target`, in batches each verified as it lands; then verify the whole copy.

    `target` is new, empty, or an interrupted copy of `source` (its head is one of source's events): the copy
    resumes there. A target holding anything else is refused.
    """
    from govern.errors import LedgerError

    head = source.head()
    done = 0
    held = target.head() if target.exists() else None
    if held is not None:
        if head is None or held[0] > head[0]:
            raise LedgerError(
                f"{target.location} holds more events than this ledger ({held[0]} against {head[0] if head else 0}): "
                "copy into a new, empty ledger"
            )
        mine = source.read(seqs=[held[0]])
        if not mine or mine[0].hash != held[1]:
            raise LedgerError(
                f"{target.location} already holds other events (its seq {held[0]} is not this ledger's): copy into "
                "a new, empty ledger"
            )
        done = held[0]
    while head is not None and done < head[0]:
        batch = source.read(seqs=range(done + 1, min(done + COPY_BATCH, head[0]) + 1))
        if not batch:
            break
        done = target.ingest(batch)
    return target.verify()


COPY_BATCH = 50_000  # events per verified batch, as a PostgreSQL read model pulls them
