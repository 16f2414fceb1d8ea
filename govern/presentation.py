"""How results look as JSON, the same for the terminal (`--json`) and the server: one place, so they agree."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from datetime import datetime, timedelta
from typing import Any

from govern.timeparse import display


def jsonable(value: Any) -> Any:
    """Timestamps as UTC `...Z` strings with microseconds; durations in seconds; typed rows and results (dataclasses)
    as objects of their fields; anything else as text."""
    if isinstance(value, datetime):
        return display(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in fields(value)}
    return str(value)
