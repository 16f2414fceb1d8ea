"""Instants given on the command line: ISO 8601 with `Z` or an offset, never naive, and for facts never future."""

from __future__ import annotations

from datetime import datetime, timedelta

from govern.envelope import format_timestamp, to_utc, utc_now
from govern.errors import InvalidInput

# How far ahead of this machine's clock an instant may be and still count as "now" (another machine's clock).
CLOCK_SKEW = timedelta(seconds=5)


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


def not_in_future(moment: datetime, option: str, what: str) -> datetime:
    """Refuse an instant after now: the ledger records what happened, and knows nothing of the future."""
    now = utc_now()
    if moment > now + CLOCK_SKEW:
        raise InvalidInput(f"{option} {display(moment)} is in the future: {what} (now is {display(now)})")
    return moment


def display(moment: datetime) -> str:
    """An instant as govern prints it: UTC, four-digit year, microseconds, `Z` (year 1 is 0001-01-01T...)."""
    moment = to_utc(moment)
    if moment.year >= 1000:
        return format_timestamp(moment)
    return f"{moment.year:04d}{format_timestamp(moment.replace(year=2000))[4:]}"
