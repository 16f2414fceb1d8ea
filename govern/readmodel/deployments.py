"""Deployment slots and production windows: a slot's state, the known slots, the window serving at an instant."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime

from govern.errors import NotFound
from govern.readmodel.migrations import SLOT_KEY_SQL
from govern.readmodel.reader import Reader
from govern.readmodel.rows import naive_utc, rows_as


@dataclass(frozen=True, slots=True)
class ServingRow:
    """A slot's open window, as its `deployment.started` event has it."""

    app: str
    env: str
    model: str
    version: str
    start_event_id: str
    started_at: datetime
    start_seq: int
    deployed_by: str


@dataclass(frozen=True)
class Slot:
    app: str
    env: str
    latest_at: datetime | None
    serving: ServingRow | None  # the open window, if any


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
    if last is None or last.pop("type") != "deployment.started":
        return Slot(app, env, latest_at, None)
    return Slot(app, env, latest_at, ServingRow(**last))


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


@dataclass(frozen=True, slots=True)
class WindowRow:
    """A production window: a version serving app/env from a start to an end (None while open), who opened and
    who closed it, and the training behind the version. Half-open: [started_at, ended_at)."""

    app: str
    env: str
    model: str
    version: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    deployed_by: str
    ended_by: str | None
    end_reason: str | None
    start_seq: int
    end_seq: int | None
    training_seq: int | None
    git_commit: str | None
    deployed_by_shown: str | None = None  # filled by `rows.shown_in`
    ended_by_shown: str | None = None


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


def production_at(reader: Reader, app: str, env: str, at: datetime) -> WindowRow | None:
    """The window serving app/env at an instant; windows are half-open [start, end)."""
    _, [(last, following)] = reader.query(PRODUCTION_AT_SQL, {"app": app, "env": env, "at": naive_utc(at)})
    if last is None or last["type"] != "deployment.started":
        return None
    _, [(training_seq, git_commit)] = reader.query(
        TRAINING_OF_SQL, {"model": last["model"], "version": last["version"]}
    )
    ended = following if following is not None and following["type"] == "deployment.ended" else None
    return WindowRow(
        app=app,
        env=env,
        model=last["model"],
        version=last["version"],
        started_at=last["at"],
        ended_at=ended["at"] if ended else None,
        duration_s=(ended["at"] - last["at"]).total_seconds() if ended else None,
        deployed_by=last["actor"],
        ended_by=ended["actor"] if ended else None,
        end_reason=ended["reason"] if ended else None,
        start_seq=last["seq"],
        end_seq=ended["seq"] if ended else None,
        training_seq=training_seq,
        git_commit=git_commit,
    )


def windows(reader: Reader, app: str | None = None, model: str | None = None) -> list[WindowRow]:
    """Every production window (of one app, of one model), by app, env and start."""
    return rows_as(reader, WindowRow, WINDOWS_SQL, {"app": app, "model": model})


# Each slot's last deployment event (what `govern status` shows of it).
SLOTS_SQL = """
SELECT app, env,
       arg_max({'type': type, 'model': model, 'version': version, 'at': occurred_at, 'actor': actor, 'seq': seq}, seq)
           AS last
FROM deployment_index GROUP BY app, env ORDER BY app, env
"""


@dataclass(frozen=True, slots=True)
class SlotStateRow:
    """An app/env with its last deployment event: a start (the version serving it) or an end."""

    app: str
    env: str
    type: str
    model: str
    version: str
    at: datetime
    actor: str
    seq: int
    actor_shown: str | None = None  # filled by `rows.shown_in`


def slot_states(reader: Reader) -> list[SlotStateRow]:
    """Each app/env with its last deployment event, by app and env."""
    _, rows = reader.query(SLOTS_SQL)
    return [SlotStateRow(app=app, env=env, **last) for app, env, last in rows]


SLOT_WINDOWS_SQL = f"""
WITH slot AS (
    SELECT seq, type, model, version, occurred_at, actor,
           lead(type) OVER w AS next_type, lead(occurred_at) OVER w AS next_at, lead(seq) OVER w AS next_seq,
           lead(actor) OVER w AS next_actor, lead(reason) OVER w AS next_reason
    FROM deployment_index WHERE slot_key = {SLOT_KEY_SQL} AND app = $app AND env = $env
    WINDOW w AS (ORDER BY seq)
),
w AS (
    SELECT $app AS app, $env AS env, model, version, occurred_at AS started_at,
           CASE WHEN next_type = 'deployment.ended' THEN next_at END AS ended_at,
           CASE WHEN next_type = 'deployment.ended' THEN next_actor END AS ended_by,
           CASE WHEN next_type = 'deployment.ended' THEN next_reason END AS end_reason,
           CASE WHEN next_type = 'deployment.ended' THEN next_seq END AS end_seq,
           actor AS deployed_by, seq AS start_seq
    FROM slot WHERE type = 'deployment.started' AND seq < $before
    ORDER BY seq DESC LIMIT $limit
)
SELECT w.*, epoch(w.ended_at - w.started_at) AS duration_s, t.training_seq, t.git_commit
FROM w
{WINDOW_JOINS}
ORDER BY w.start_seq DESC
"""

SLOT_OF_SQL = "SELECT app, env FROM deployment_index WHERE seq = $seq AND type = 'deployment.started'"


def slot_windows(reader: Reader, app: str, env: str, before: int, limit: int) -> list[WindowRow]:
    """One slot's newest `limit` windows started before seq `before`, newest first, as `windows` gives them."""
    return rows_as(reader, WindowRow, SLOT_WINDOWS_SQL, {"app": app, "env": env, "before": before, "limit": limit})


@dataclass(frozen=True, slots=True)
class AppEnvRow:
    """A slot by name."""

    app: str
    env: str


def slot_of_start(reader: Reader, start_seq: int) -> AppEnvRow | None:
    """The app and env of the `deployment.started` at `start_seq` (None: it is not one)."""
    rows = rows_as(reader, AppEnvRow, SLOT_OF_SQL, {"seq": start_seq})
    return rows[0] if rows else None
