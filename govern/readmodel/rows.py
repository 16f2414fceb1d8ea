"""Helpers every read query shares: typed rows, UTC parameters, actors shown with their identity's strength."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from govern.envelope import to_utc
from govern.readmodel.reader import Reader

Row = TypeVar("Row")


def rows_as(reader: Reader, row_type: type[Row], sql: str, params: Any = ()) -> list[Row]:
    """The answer as typed rows (frozen dataclasses), built by column name: a column the type lacks, or a field the
    query does not select, fails at once instead of shifting values into the wrong field."""
    names, rows = reader.query(sql, params)
    return [row_type(**dict(zip(names, row, strict=True))) for row in rows]


def naive_utc(moment: datetime) -> datetime:
    """The ledger stores UTC as naive TIMESTAMP; parameters must match."""
    return to_utc(moment).replace(tzinfo=None)


ATTRIBUTION_SQL = "SELECT seq, authn FROM events WHERE seq IN (SELECT unnest($seqs::BIGINT[]))"


def shown_in(reader: Reader, rows: list[Row], fields: dict[str, str]) -> list[Row]:
    """Actors with the strength of their identity, as `attribution.shown` spells it, in one query for all rows:
    each row type declares `<name>_shown: str | None = None` for each `fields` item (name -> the field holding the
    seq of the event it names); the rows come back with those fields filled."""
    from govern.attribution import shown  # as before the rows were typed: the read side's cold start skips it

    seqs = sorted({getattr(row, seq) for row in rows for seq in fields.values() if getattr(row, seq) is not None})
    authn = dict(reader.query(ATTRIBUTION_SQL, {"seqs": seqs})[1]) if seqs else {}
    filled = []
    for row in rows:
        changes = {
            f"{name}_shown": shown(getattr(row, name), authn.get(getattr(row, seq)))
            for name, seq in fields.items()
            if getattr(row, name) is not None
        }
        filled.append(replace(row, **changes) if changes else row)  # type: ignore[type-var]
    return filled
