"""Read-side use cases: the event log, chain verification and audit queries.

Never imports mlflow, dvc or GitPython: auditors' commands must start fast.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from govern import config, queries
from govern.envelope import RecordedEvent
from govern.errors import GovernError, InvalidInput, NotFound
from govern.ledger import Ledger, Verification

QUERY_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


def _name(option: str, value: str | None) -> None:
    """Filter values are bound, never pasted into SQL; a value no name can have is refused all the same."""
    if value is not None and not NAME.match(value):
        raise InvalidInput(
            f"{option} {json.dumps(value)} is not a valid name: use letters, digits, '.', '_', '-' and '/'"
        )


def production(app: str, env: str, at: datetime, start: Path | None = None) -> dict[str, Any] | None:
    """The window (version, start, end, training, commit) serving app/env at `at`, or None."""
    _name("--app", app)
    _name("--env", env)
    return queries.production_at(open_ledger(start), app, env, at)


def windows(app: str | None = None, model: str | None = None, start: Path | None = None) -> list[dict[str, Any]]:
    _name("--app", app)
    _name("--model", model)
    return queries.windows(open_ledger(start), app=app, model=model)


def history(model: str, version: str | None = None, start: Path | None = None) -> list[RecordedEvent]:
    """Every event about a model (or one version), in ledger order."""
    ledger = open_ledger(start)
    seqs = queries.history_seqs(ledger, model, version)
    if not seqs:
        if version is not None:
            queries.version_facts(ledger, model, version)
        _, models = ledger.query("SELECT DISTINCT model FROM model_versions ORDER BY model")
        known = ", ".join(m for (m,) in models) or "none yet"
        raise NotFound(f"No events about model {model!r}: registered models are {known}")
    return ledger.read(seqs=seqs)


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def sql(statement: str, params: Mapping[str, str] | None = None, start: Path | None = None) -> QueryResult:
    """One read-only statement over the ledger's views; DuckDB refuses writes itself."""
    columns, rows = open_ledger(start).query(statement, dict(params or {}))
    return QueryResult(columns, rows)


def openlineage(since: datetime | None = None, start: Path | None = None) -> list[dict[str, Any]]:
    """Every recorded training (since a time) as OpenLineage START/COMPLETE run events."""
    from govern.openlineage import training_events

    ledger = open_ledger(start)
    try:
        project = config.find_root(start).name
    except GovernError:
        project = ledger.path.parent.name
    return [
        event
        for training in ledger.read(types=["training.completed"], since=since)
        for event in training_events(project, training.to_dict())
    ]


def queries_dir(start: Path | None = None) -> Path:
    return config.find_root(start) / "audit" / "queries"


def named_queries(start: Path | None = None) -> dict[str, str]:
    """Name -> first comment line (the description) of every reviewed query under audit/queries/."""
    folder = queries_dir(start)
    found = {}
    for path in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        found[path.stem] = first[0].lstrip("- ").strip() if first and first[0].startswith("--") else ""
    return found


def run_named(name: str, params: Mapping[str, str], start: Path | None = None) -> QueryResult:
    """Run audit/queries/NAME.sql with bound parameters (`$name` in the SQL), never string formatting."""
    if not QUERY_NAME.match(name):
        raise InvalidInput(f"{name!r} is not a query name: use the file name under audit/queries/ without .sql")
    path = queries_dir(start) / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(named_queries(start)) or "none"
        raise NotFound(f"No query named {name!r} in audit/queries/: the named queries are {known}")
    for key in params:
        if not PARAM_NAME.match(key):
            raise InvalidInput(f"--param {key!r}: parameter names are letters, digits and _")
    return sql(path.read_text(encoding="utf-8"), params, start)
