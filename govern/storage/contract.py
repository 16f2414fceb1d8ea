"""What every ledger backend answers with, and what use cases may ask of a ledger: the storage contract.

No backend's code lives here. `LedgerStore` is the protocol; `Reader` anything that answers read queries;
`Verification` the outcome of checking the chain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from govern.envelope import (
    PendingEvent,
    RecordedEvent,
)
from govern.readmodel.reader import Reader

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from govern.config import AuditLimits


class StaleReadModel(Exception):  # noqa: N818 - a signal between backends, never shown to a user
    """A read model is not at the head its source has: pull, then read again."""


@dataclass(frozen=True)
class Verification:
    """The outcome of checking every hash and link of the chain (its JSON form: `presentation.jsonable`)."""

    ok: bool
    count: int
    head_hash: str | None
    bad_seq: int | None = None
    problem: str | None = None


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
