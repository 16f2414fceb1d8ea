"""The read side: questions asked of the ledger's views, rows in, plain data out.

Every function takes a `Reader` (the ledger, or a transaction in progress)
and runs SQL with bound parameters; nothing is computed in Python loops over
events. State is always derived here from events, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from govern.envelope import to_utc
from govern.errors import NotFound
from govern.ledger import Reader


def rows_as_dicts(reader: Reader, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    names, rows = reader.query(sql, params)
    return [dict(zip(names, row, strict=True)) for row in rows]


def naive_utc(moment: datetime) -> datetime:
    """The ledger stores UTC as naive TIMESTAMP; parameters must match."""
    return to_utc(moment).replace(tzinfo=None)


# ---------------------------------------------------------------- model versions


@dataclass(frozen=True)
class VersionFacts:
    model: str
    version: str
    registered_seq: int
    training_event_id: str
    training_actor: str | None
    git_commit: str | None
    deprecated_seq: int | None
    stage: str | None  # the stage of its latest promotion
    holds: tuple[str, ...]  # stages it currently holds


VERSION_SQL = """
WITH reg AS (
    SELECT * FROM model_versions WHERE model = $model AND version = $version ORDER BY seq DESC LIMIT 1
)
SELECT
    reg.seq,
    reg.training_event_id,
    t.actor,
    reg.git_commit,
    (SELECT min(seq) FROM deprecations d WHERE d.model = $model AND d.version = $version),
    (SELECT arg_max(to_stage, seq) FROM promotions p WHERE p.model = $model AND p.version = $version),
    (SELECT coalesce(list(stage ORDER BY stage), []) FROM stage_assignments s
        WHERE s.model = $model AND s.version = $version)
FROM reg
LEFT JOIN events AS t ON t.event_id = reg.training_event_id
"""


def version_facts(reader: Reader, model: str, version: str) -> VersionFacts:
    """What the ledger knows of one model version; `NotFound` names what exists instead."""
    _, rows = reader.query(VERSION_SQL, {"model": model, "version": version})
    if not rows:
        _, versions = reader.query(
            "SELECT DISTINCT version FROM model_versions WHERE model = ? ORDER BY try_cast(version AS INTEGER)",
            [model],
        )
        if versions:
            known = ", ".join(v for (v,) in versions)
            raise NotFound(f"Model {model!r} has no version {version!r}: its versions are {known}")
        _, models = reader.query("SELECT DISTINCT model FROM model_versions ORDER BY model")
        known = ", ".join(m for (m,) in models) or "none yet (run `govern repro`)"
        raise NotFound(f"Unknown model {model!r}: registered models are {known}")
    seq, training_id, actor, commit, deprecated, stage, holds = rows[0]
    return VersionFacts(model, version, seq, training_id, actor, commit, deprecated, stage, tuple(holds))


def stage_holder(reader: Reader, model: str, stage: str) -> str | None:
    _, rows = reader.query("SELECT version FROM stage_assignments WHERE model = ? AND stage = ?", [model, stage])
    return rows[0][0] if rows else None


def stage_holders(reader: Reader, model: str) -> dict[str, str]:
    _, rows = reader.query("SELECT stage, version FROM stage_assignments WHERE model = ?", [model])
    return dict(rows)


# ---------------------------------------------------------------- deployment slots


@dataclass(frozen=True)
class Slot:
    app: str
    env: str
    latest_at: datetime | None
    serving: dict[str, Any] | None  # the open window, if any


def slot(reader: Reader, app: str, env: str) -> Slot:
    _, latest = reader.query("SELECT max(occurred_at) FROM deployment_events WHERE app = ? AND env = ?", [app, env])
    open_windows = rows_as_dicts(
        reader,
        "SELECT * FROM production_windows WHERE app = ? AND env = ? AND ended_at IS NULL",
        [app, env],
    )
    return Slot(app, env, latest[0][0], open_windows[0] if open_windows else None)


def known_slots(reader: Reader) -> list[str]:
    _, rows = reader.query("SELECT DISTINCT app || '/' || env FROM deployment_events ORDER BY 1")
    return [r for (r,) in rows]


# ---------------------------------------------------------------- audit questions

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

# The window serving a slot at an instant, without deriving every window: the slot's last deployment
# event at or before the instant (a start, or nothing serves), then the event after it (its end, if an
# end). Exact because govern refuses deployment events dated before the slot's latest one, so a slot's
# event times never decrease. Two small queries on projection tables, never the JSON of the ledger; the
# second is bound to a constant seq, so DuckDB skips every row group before it.
LAST_AT_SQL = """
SELECT seq, type, app, env, model, version, occurred_at, actor
FROM deployment_index WHERE app = $app AND env = $env AND occurred_at <= $at
ORDER BY seq DESC LIMIT 1
"""

WINDOW_END_SQL = """
SELECT
    e.occurred_at AS ended_at, e.actor AS ended_by, e.reason AS end_reason, e.seq AS end_seq, e.type,
    (SELECT arg_max(training_seq, seq) FROM registrations WHERE model = $model AND version = $version),
    (SELECT arg_max(training_commit, seq) FROM registrations WHERE model = $model AND version = $version)
FROM (SELECT 1) AS one
LEFT JOIN (
    SELECT * FROM deployment_index WHERE app = $app AND env = $env AND seq > $seq ORDER BY seq LIMIT 1
) AS e ON true
"""

WINDOWS_SQL = f"""
SELECT {WINDOW_COLUMNS}
FROM production_windows AS w
{WINDOW_JOINS}
WHERE ($app IS NULL OR w.app = $app) AND ($model IS NULL OR w.model = $model)
ORDER BY w.app, w.env, w.start_seq
"""


def production_at(reader: Reader, app: str, env: str, at: datetime) -> dict[str, Any] | None:
    """The window serving app/env at an instant; windows are half-open [start, end)."""
    _, last = reader.query(LAST_AT_SQL, {"app": app, "env": env, "at": naive_utc(at)})
    if not last or last[0][1] != "deployment.started":
        return None
    seq, _, app, env, model, version, started_at, deployed_by = last[0]
    _, [(ended_at, ended_by, end_reason, end_seq, end_type, training_seq, git_commit)] = reader.query(
        WINDOW_END_SQL, {"app": app, "env": env, "seq": seq, "model": model, "version": version}
    )
    if end_type != "deployment.ended":  # the slot's next event, if any, is what ended this window
        ended_at = ended_by = end_reason = end_seq = None
    return {
        "app": app,
        "env": env,
        "model": model,
        "version": version,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": (ended_at - started_at).total_seconds() if ended_at else None,
        "deployed_by": deployed_by,
        "ended_by": ended_by,
        "end_reason": end_reason,
        "start_seq": seq,
        "end_seq": end_seq,
        "training_seq": training_seq,
        "git_commit": git_commit,
    }


def windows(reader: Reader, app: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    return rows_as_dicts(reader, WINDOWS_SQL, {"app": app, "model": model})


HISTORY_SQL = """
SELECT seq FROM events
WHERE subject = 'model:' || $model || '@' || $version
   OR ($version IS NULL AND starts_with(subject, 'model:' || $model || '@'))
   OR (type IN ('deployment.started', 'deployment.ended')
       AND payload->>'$.model' = $model AND ($version IS NULL OR payload->>'$.version' = $version))
   OR (type = 'training.completed' AND event_id IN (
       SELECT training_event_id FROM model_versions WHERE model = $model AND ($version IS NULL OR version = $version)))
   OR (type = 'experiment.selected' AND payload->>'$.winner_event_id' IN (
       SELECT training_event_id FROM model_versions WHERE model = $model AND ($version IS NULL OR version = $version)))
ORDER BY seq
"""


def history_seqs(reader: Reader, model: str, version: str | None = None) -> list[int]:
    """Seqs of every event about a model (or one version): trainings, registrations, promotions, deployments."""
    _, rows = reader.query(HISTORY_SQL, {"model": model, "version": version})
    return [seq for (seq,) in rows]
