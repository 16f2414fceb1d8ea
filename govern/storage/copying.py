"""A ledger copied into another, of either backend, verified batch by batch as it lands (`audit copy`, backups of
a PostgreSQL ledger)."""

from __future__ import annotations

from govern.errors import LedgerError
from govern.storage.contract import LedgerStore, Verification


def copy(source: LedgerStore, target: LedgerStore) -> Verification:
    """Every event of `source` into `target`, in batches each verified as it lands; then verify the whole copy.

    `target` is new, empty, or an interrupted copy of `source` (its head is one of source's events): the copy
    resumes there. A target holding anything else is refused.
    """
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
