"""Deployment slots and production windows: a slot's state, the known slots, the window serving at an instant."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from govern.errors import NotFound
from govern.ledger import SLOT_KEY_SQL, Reader
from govern.readmodel.rows import naive_utc, rows_as_dicts


@dataclass(frozen=True)
class Slot:
    app: str
    env: str
    latest_at: datetime | None
    serving: dict[str, Any] | None  # the open window, if any


SLOT_SQL = f"""
SELECT
    max(occurred_at),
    arg_max({{'type': type, 'app': app, 'env': env, 'model': model, 'version': version,
              'start_event_id': event_id, 'started_at': occurred_at, 'start_seq': seq, 'deployed_by': actor}}, seq)
FROM deployment_index WHERE slot_key = {SLOT_KEY_SQL} AND app = $app AND env = $env
"""


def slot(reader: Reader, app: str, env: str) -> Slot:
    """The slot's latest event time, and its open window: its last event, when that is a start."""
    _, [(latest_at, last)] = reader.query(SLOT_SQL, {"app": app, "env": env})
    serving = last if last is not None and last["type"] == "deployment.started" else None
    return Slot(app, env, latest_at, serving)


def known_slots(reader: Reader) -> list[str]:
    _, rows = reader.query("SELECT DISTINCT app || '/' || env FROM deployment_events ORDER BY 1")
    return [r for (r,) in rows]


def require_slot(reader: Reader, app: str, env: str | None = None) -> None:
    """An app (or app/env) that no deployment ever named is unknown: `NotFound` says so, with those that exist."""
    slots = known_slots(reader)
    apps = {slot.split("/", 1)[0] for slot in slots}
    if app in apps and (env is None or f"{app}/{env}" in slots):
        return
    name, kind = (app, "app") if app not in apps else (f"{app}/{env}", "app/env")
    raise NotFound(f"Unknown {kind} {name!r}: deployments are recorded for {slot_list(slots, app)}")


def slot_list(slots: list[str], near: str, shown: int = 8) -> str:
    """The known slots for a message: those that look like `near` first, a few at most, and how many more."""
    if not slots:
        return "nothing yet (govern deploy)"
    close = difflib.get_close_matches(near, slots, n=shown, cutoff=0.5)
    first = close + [slot for slot in slots if slot not in close][: max(0, shown - len(close))]
    more = len(slots) - len(first)
    return ", ".join(first) + (f' and {more} more (govern audit sql "SELECT * FROM deployment_events")' if more else "")


WINDOW_COLUMNS = """
    w.app, w.env, w.model, w.version, w.started_at, w.ended_at,
    epoch(w.duration) AS duration_s, w.deployed_by, w.ended_by, w.end_reason, w.start_seq, w.end_seq,
    t.training_seq, t.git_commit
"""

WINDOW_JOINS = """
    LEFT JOIN (
        SELECT model, version, arg_max(training_seq, seq) AS training_seq, arg_max(training_commit, seq) AS git_commit
        FROM registrations GROUP BY model, version
    ) AS t ON t.model = w.model AND t.version = w.version
"""

# The window serving a slot at an instant, without deriving every window, in one aggregate over the
# slot's rows of deployment_index (stored sorted by slot key: one row group read at any ledger size):
# the slot's last event at or before the instant (a start, or nothing serves) and its first event
# after it (the end, if an end). Exact because govern refuses deployment events dated before the
# slot's latest one, so a slot's event times never decrease as its seqs grow.
PRODUCTION_AT_SQL = f"""
SELECT
    arg_max(
        {{'seq': seq, 'type': type, 'model': model, 'version': version, 'at': occurred_at, 'actor': actor}}, seq
    ) FILTER (WHERE occurred_at <= $at),
    arg_min({{'seq': seq, 'type': type, 'at': occurred_at, 'actor': actor, 'reason': reason}}, seq)
        FILTER (WHERE occurred_at > $at)
FROM deployment_index WHERE slot_key = {SLOT_KEY_SQL} AND app = $app AND env = $env
"""

WINDOWS_SQL = f"""
SELECT {WINDOW_COLUMNS}
FROM production_windows AS w
{WINDOW_JOINS}
WHERE ($app IS NULL OR w.app = $app) AND ($model IS NULL OR w.model = $model)
ORDER BY w.app, w.env, w.start_seq
"""

TRAINING_OF_SQL = """
SELECT arg_max(training_seq, seq), arg_max(training_commit, seq) FROM registrations
WHERE model = $model AND version = $version
"""


def production_at(reader: Reader, app: str, env: str, at: datetime) -> dict[str, Any] | None:
    """The window serving app/env at an instant; windows are half-open [start, end)."""
    _, [(last, following)] = reader.query(PRODUCTION_AT_SQL, {"app": app, "env": env, "at": naive_utc(at)})
    if last is None or last["type"] != "deployment.started":
        return None
    _, [(training_seq, git_commit)] = reader.query(
        TRAINING_OF_SQL, {"model": last["model"], "version": last["version"]}
    )
    ended = following if following is not None and following["type"] == "deployment.ended" else None
    return {
        "app": app,
        "env": env,
        "model": last["model"],
        "version": last["version"],
        "started_at": last["at"],
        "ended_at": ended["at"] if ended else None,
        "duration_s": (ended["at"] - last["at"]).total_seconds() if ended else None,
        "deployed_by": last["actor"],
        "ended_by": ended["actor"] if ended else None,
        "end_reason": ended["reason"] if ended else None,
        "start_seq": last["seq"],
        "end_seq": ended["seq"] if ended else None,
        "training_seq": training_seq,
        "git_commit": git_commit,
    }


def windows(reader: Reader, app: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, WINDOWS_SQL, {"app": app, "model": model})
