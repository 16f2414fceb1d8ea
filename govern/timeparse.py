"""Instants given on the command line: ISO 8601 with `Z` or an offset, never naive."""

from __future__ import annotations

from datetime import datetime

from govern.envelope import to_utc
from govern.errors import InvalidInput


def parse_instant(text: str, option: str = "time") -> datetime:
    """An aware UTC datetime, or `InvalidInput` saying what a valid value looks like."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{option}: {text!r} is not an ISO 8601 time; use e.g. 2026-03-01T09:30:00Z or 2026-03-01T10:30:00+01:00"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{option}: {text!r} has no time zone; add Z for UTC or an offset such as +01:00")
    return to_utc(moment)
