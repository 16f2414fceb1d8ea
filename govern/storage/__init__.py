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

from govern.storage.contract import LedgerStore, Reader, Verification

__all__ = ["COPY_BATCH", "LedgerStore", "Reader", "Verification", "copy", "open_store"]


def open_store(location: Path | str, lock_timeout: float = 30.0) -> LedgerStore:
    """A DuckDB file path, or a `postgresql://` URL (psycopg is imported only then)."""
    if isinstance(location, str) and "://" in location:  # config keeps a URL as a string, a path as a Path
        from govern.storage.postgres_log import PostgresLedger, leased
        from govern.storage.sessions import current_session

        current = current_session()
        if current is not None:  # a server request: one pooled connection for all it does
            return leased(str(location), lock_timeout, current)
        return PostgresLedger(str(location), lock_timeout=lock_timeout)
    from govern.storage.duckdb_log import Ledger

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
