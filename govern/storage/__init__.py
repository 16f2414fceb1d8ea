"""The ledger's storage contract, and the one way to open a ledger from configuration.

Use cases depend on `LedgerStore`, never on a backend: `Ledger` is the DuckDB file (one person, one machine),
`PostgresLedger` the team's database. Both keep the same envelope, canonical JSON and hash chain byte for byte,
and both answer queries in DuckDB's SQL over the same views (`govern.readmodel.migrations` builds them).

The package: `contract` (the protocol and its value types), `chain` (the hash chain's SQL), `rules` (what every
backend checks of an event), `sessions` (the unit of work), `duckdb_files` and `duckdb_log` (the file),
`postgres_log` (the team's database).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from govern.storage.contract import LedgerStore, Reader, Verification
from govern.storage.copying import COPY_BATCH, copy

if TYPE_CHECKING:
    from govern.storage.sessions import Session

__all__ = ["COPY_BATCH", "LedgerStore", "Reader", "Verification", "copy", "create_postgres", "open_store"]


def open_store(location: Path | str, lock_timeout: float = 30.0, session: Session | None = None) -> LedgerStore:
    """A DuckDB file path, or a `postgresql://` URL (psycopg is imported only then). With a `session` (a server
    request's unit of work), every call shares one connection: the file's, or one leased from a pool."""
    if isinstance(location, str) and "://" in location:  # config keeps a URL as a string, a path as a Path
        from govern.storage.postgres_log import PostgresLedger, leased

        if session is not None and not session.closed:  # a server request: one pooled connection for all it does
            return leased(str(location), lock_timeout, session)
        return PostgresLedger(str(location), lock_timeout=lock_timeout)
    from govern.storage.duckdb_log import Ledger

    return Ledger(Path(location), lock_timeout=lock_timeout, session=session)


def create_postgres(url: str, writer: str, auditor: str) -> tuple[str, int, list[str]]:
    """Create (or migrate) govern's schema in a PostgreSQL database: its location (no password), the schema's
    version, and the GRANTs an operator runs once for the writer and auditor roles."""
    from govern.storage.postgres_log import PostgresLedger
    from govern.storage.postgres_schema import PG_MIGRATIONS

    ledger = PostgresLedger(url)
    try:
        grants = ledger.create(writer, auditor)
    finally:
        ledger.close()
    return ledger.location, len(PG_MIGRATIONS), grants
