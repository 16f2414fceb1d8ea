"""Read-side use cases: the event log and chain verification. Never imports mlflow or dvc."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from govern import config
from govern.events import RecordedEvent
from govern.ledger import Ledger, Verification


def open_ledger(start: Path | None = None) -> Ledger:
    """The project's ledger (or GOVERN_LEDGER's), for reading."""
    return Ledger(config.ledger_path(start))


def audit_log(
    *,
    types: Sequence[str] = (),
    since: datetime | None = None,
    limit: int | None = None,
    start: Path | None = None,
) -> list[RecordedEvent]:
    """Events oldest first; with `limit`, the newest `limit` of them."""
    return open_ledger(start).read(types=types or None, since=since, limit=limit)


def audit_verify(start: Path | None = None) -> Verification:
    """Recompute every hash and link of the chain."""
    return open_ledger(start).verify()
