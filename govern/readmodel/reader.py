"""What the read side asks of a ledger: one method that answers a query in DuckDB's SQL over the read model.

The ledger itself, a transaction in progress (what a rule decides on) and a PostgreSQL ledger's read model all
answer it; read queries take a `Reader` and never know which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Reader(Protocol):
    """Anything that answers read queries: the ledger itself, or a transaction in progress."""

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[list[str], list[tuple]]: ...
