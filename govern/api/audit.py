"""Read-side use cases: the event log, chain verification and audit queries.

Never imports mlflow, dvc or GitPython: auditors' commands must start fast.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govern import config, storage
from govern.api.results import Copied, QueryResult
from govern.envelope import RecordedEvent
from govern.errors import GovernError, InvalidInput, NotFound
from govern.readmodel import deployments, events
from govern.readmodel.deployments import WindowRow, known_slots, production_at, require_slot
from govern.readmodel.rows import naive_utc, shown_in
from govern.readmodel.versions import RegisteredVersionRow, history_seqs, lock_commit, registered_models, version_facts
from govern.readmodel.versions import registered_versions as registered_versions_of
from govern.storage import LedgerStore, open_store
from govern.storage.contract import Verification
from govern.timeparse import not_in_future, parse_instant

if TYPE_CHECKING:
    from govern.api.context import Project

QUERY_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def copy_to(project: Project, target: str) -> Copied:
    """`govern audit copy --to`: the configured ledger into a new file or an empty PostgreSQL ledger."""
    source = project.ledger
    if not source.exists():
        raise NotFound(f"There is no ledger at {source.location} to copy yet")
    location = config.ledger_location(target, "--to")
    destination = open_store(location if isinstance(location, str) else location.resolve())
    if destination.location == source.location:
        raise InvalidInput(f"--to {target} is the ledger being copied: give another file or database")
    try:
        if _same_postgres_ledger(source, destination):
            raise InvalidInput(
                f"--to {target} is the ledger being copied (the same database under another URL): give another "
                "database or a file"
            )
        if isinstance(location, Path) and location.exists():
            try:
                destination.head()
            except GovernError:
                raise InvalidInput(f"--to {target} exists and is not a govern ledger: give a new path") from None
        created = not destination.exists()
        before = None if created else destination.head()
        verification = storage.copy(source, destination)
        grants = destination.grants() if created and destination.backend == "postgresql" else []  # type: ignore[attr-defined]
        return Copied(destination.location, verification, verification.count - (before[0] if before else 0), grants)
    finally:
        destination.close()


def _same_postgres_ledger(source: LedgerStore, destination: LedgerStore) -> bool:
    """Two URLs (another host name, port or role) for one database: its ledger id says so."""
    if not (source.backend == destination.backend == "postgresql") or not destination.exists():
        return False
    return source.ledger_id() == destination.ledger_id()  # type: ignore[attr-defined]


def audit_log(
    project: Project,
    *,
    types: Sequence[str] = (),
    since: datetime | None = None,
    limit: int | None = None,
) -> list[RecordedEvent]:
    """Events oldest first; with `limit`, the newest `limit` of them. An unknown `types` entry is refused."""
    if since is not None:
        not_in_future(since, "--since", "nothing is recorded yet")
    ledger = project.ledger
    if types:
        _check_types(ledger, types)
    return ledger.read(types=types or None, since=since, limit=limit)


def _check_types(ledger: LedgerStore, types: Sequence[str]) -> None:
    """A type that govern does not write and the ledger does not hold is a typo, not an empty answer."""
    from govern.events import FACT_TYPES  # only with --type: reading the log never builds the fact classes

    if set(types) <= set(FACT_TYPES):
        return
    known = sorted(set(FACT_TYPES) | events.event_types(ledger))
    unknown = [kind for kind in types if kind not in known]
    if unknown:
        raise InvalidInput(f"Unknown event type {unknown[0]!r}: the types are {', '.join(known)}")


def audit_verify(project: Project) -> Verification:
    """Recompute every hash and link of the chain."""
    return project.ledger.verify()


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


def _name(option: str, value: str | None) -> None:
    """Filter values are bound, never pasted into SQL; a value no name can have is refused all the same."""
    if value is not None and not NAME.match(value):
        raise InvalidInput(
            f"{option} {json.dumps(value)} is not a valid name: use letters, digits, '.', '_', '-' and '/'"
        )


def production(project: Project, app: str, env: str, at: datetime) -> WindowRow | None:
    """The window (version, start, end, training, commit) serving app/env at `at`, or None."""
    _name("--app", app)
    _name("--env", env)
    not_in_future(at, "--at", "the ledger knows what served until now, not after")
    _declared_environment(project, env)
    ledger = project.ledger
    found = production_at(ledger, app, env, at)
    if found is None:
        require_slot(ledger, app, env)
    return found


def _declared_environment(project: Project, env: str) -> None:
    """Environments are a declared list; outside a project (GOVERN_LEDGER alone) the ledger's names are the list."""
    if project.config is not None:
        config.check_environment(project.config, env)


def production_answer(project: Project, app: str, env: str, at: datetime) -> dict[str, Any]:
    """`audit production --json` and the server's answer: the documented keys, nulls where nothing served."""
    window = production(project, app, env, at)
    locked = None
    if window is not None:
        with project.ledger.reader() as reader:  # a window names no training event: the lock is found by version
            locked = lock_commit(reader, window.model, window.version, None)
    served = asdict(window) if window is not None else {}
    return {
        "app": app,
        "env": env,
        "at": at,
        "model": served.get("model"),
        "version": served.get("version"),
        "start": served.get("started_at"),
        "end": served.get("ended_at"),
        "training_seq": served.get("training_seq"),
        "git_commit": locked or served.get("git_commit"),  # the commit whose dvc.lock rebuilds what served
        "trained_at_commit": served.get("git_commit"),
        "deployed_by": served.get("deployed_by"),
        "start_seq": served.get("start_seq"),
    }


def window_records(project: Project, app: str | None = None, model: str | None = None) -> list[dict]:
    """`audit windows --json` and the server's answer: one record per production window. Its `git_commit` is the
    commit whose dvc.lock rebuilds what served, as `audit production` answers (the training's own commit is
    `trained_at_commit`): what tells an auditor "check out this" must yield the registered bytes."""
    found = windows(project, app=app, model=model)
    locks: dict[tuple[str, str], str | None] = {}
    if found:
        with project.ledger.reader() as reader:
            for key in dict.fromkeys((w.model, w.version) for w in found):
                locks[key] = lock_commit(reader, key[0], key[1], None)  # one query per version, not per window
    return [
        {
            "app": w.app,
            "env": w.env,
            "model": w.model,
            "version": w.version,
            "start": w.started_at,
            "end": w.ended_at,
            "duration_s": w.duration_s,
            "deployed_by": w.deployed_by,
            "deployed_by_shown": w.deployed_by_shown,
            "ended_by": w.ended_by,
            "ended_by_shown": w.ended_by_shown,
            "end_reason": w.end_reason,
            "training_seq": w.training_seq,
            "git_commit": locks.get((w.model, w.version)) or w.git_commit,
            "trained_at_commit": w.git_commit,
        }
        for w in found
    ]


def windows(project: Project, app: str | None = None, model: str | None = None) -> list[WindowRow]:
    """Every production window, of one app or model; naming an app or model never seen is refused."""
    _name("--app", app)
    _name("--model", model)
    ledger = project.ledger
    with ledger.reader() as reader:
        found = shown_in(
            reader,
            deployments.windows(reader, app=app, model=model),
            {"deployed_by": "start_seq", "ended_by": "end_seq"},
        )
    if not found:
        if app is not None:
            require_slot(ledger, app)
        if model is not None:
            models = registered_models(ledger)
            if model not in models:
                known = ", ".join(models) or "none yet (govern repro)"
                raise NotFound(f"Unknown model {model!r}: registered models are {known}")
    return found


def history(project: Project, model: str, version: str | None = None) -> list[RecordedEvent]:
    """Every event about a model (or one version), in ledger order."""
    ledger = project.ledger
    seqs = history_seqs(ledger, model, version)
    if not seqs:
        if version is not None:
            version_facts(ledger, model, version)
        known = ", ".join(registered_models(ledger)) or "none yet"
        raise NotFound(f"No events about model {model!r}: registered models are {known}")
    return ledger.read(seqs=seqs)


def sql(
    project: Project,
    statement: str,
    params: Mapping[str, Any] | None = None,
    limits: config.AuditLimits | None = None,
) -> QueryResult:
    """One SELECT over the ledger's tables and views, in DuckDB's sandbox (`Ledger.audit_query`), within `limits`
    (default: the project's `[tool.govern.audit]`): a timeout, a row and a byte limit, threads and memory."""
    columns, rows = project.ledger.audit_query(statement, dict(params or {}), limits or sql_limits(project))
    return QueryResult(columns, rows)


def sql_limits(
    project: Project,
    *,
    timeout: float | None = None,
    max_rows: int | None = None,
    max_bytes: int | None = None,
) -> config.AuditLimits:
    """The project's `[tool.govern.audit]` limits (the defaults outside a project: GOVERN_LEDGER alone), with the
    command line's overrides (`--timeout`, `--max-rows`, `--max-bytes`)."""
    from dataclasses import replace

    # no project: the ledger alone (GOVERN_LEDGER outside a repository), at the defaults
    found = project.config.audit if project.config is not None else config.AuditLimits()
    given = {"timeout": timeout, "max_rows": max_rows, "max_bytes": max_bytes}
    for key, value in given.items():
        if value is not None and (isinstance(value, bool) or value <= 0):
            raise InvalidInput(f"--{key.replace('_', '-')} must be a positive number, got {value}")
    return replace(found, **{key: value for key, value in given.items() if value is not None})


def openlineage(project: Project, since: datetime | None = None) -> list[dict[str, Any]]:
    """Every recorded training (since a time) as OpenLineage START/COMPLETE run events."""
    from govern.openlineage import training_events

    ledger = project.ledger
    name = project.root.name if project.root is not None else ledger.state_dir.name
    locks = {}
    if ledger.exists():
        locks = events.lock_commits(ledger)
    return [
        event
        for training in ledger.read(types=["training.completed"], since=since)
        for event in training_events(name, training.to_dict(), locks.get(training.event_id))
    ]


def queries_dir(project: Project) -> Path:
    """audit/queries/ of the project (outside a repository there is none: said as `find_root` says it)."""
    root = project.root if project.root is not None else config.find_root()
    return root / "audit" / "queries"


def named_queries(project: Project) -> dict[str, str]:
    """Name -> first comment line (the description) of every reviewed query under audit/queries/."""
    folder = queries_dir(project)
    found = {}
    for path in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        found[path.stem] = first[0].lstrip("- ").strip() if first and first[0].startswith("--") else ""
    return found


def run_named(
    project: Project, name: str, params: Mapping[str, str], limits: config.AuditLimits | None = None
) -> QueryResult:
    """Run audit/queries/NAME.sql with bound parameters (`$name` in the SQL), never string formatting.

    A query declares its parameters in a `-- Parameters: app, env, at:instant` line; each value is checked
    against its type before anything runs (an instant needs a time zone and may not be in the future).
    """
    if not QUERY_NAME.match(name):
        raise InvalidInput(f"{name!r} is not a query name: use the file name under audit/queries/ without .sql")
    path = queries_dir(project) / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(named_queries(project)) or "none"
        raise NotFound(f"No query named {name!r} in audit/queries/: the named queries are {known}")
    for key in params:
        if not PARAM_NAME.match(key):
            raise InvalidInput(f"--param {key!r}: parameter names are letters, digits and _")
    text = path.read_text(encoding="utf-8")
    declared = query_parameters(text)
    if declared is not None:
        unknown = sorted(set(params) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none"
            raise InvalidInput(f"--param {unknown[0]} is not a parameter of {name}: its parameters are {known}")
        missing = [key for key in declared if key not in params]
        if missing:
            needed = " ".join(f"--param {key}=... ({declared[key]})" for key in missing)
            raise InvalidInput(f"{name} needs {needed}")
    bound = {key: _typed(key, value, (declared or {}).get(key) or _guessed_type(key)) for key, value in params.items()}
    return sql(project, text, bound, limits)


PARAMETER_TYPES = ("text", "instant", "integer", "number")
PARAMETERS_LINE = re.compile(r"^--\s*Parameters:\s*(?P<names>.*)$", re.MULTILINE | re.IGNORECASE)
PARAMETER = re.compile(rf"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<type>{'|'.join(PARAMETER_TYPES)}))?$")


def query_parameters(text: str) -> dict[str, str] | None:
    """The parameters a named query declares (`-- Parameters: app, env, at:instant`), or None if it does not."""
    found = PARAMETERS_LINE.search(text)
    if found is None:
        return None
    names = found["names"].strip().rstrip(".")
    if names.lower() in ("", "none"):
        return {}
    declared = {}
    for token in (part.strip() for part in names.split(",")):
        match = PARAMETER.match(token)
        if match is None:
            return None  # free text, not a declaration: fall back to guessing by name
        declared[match["name"]] = match["type"] or "text"
    return declared


def _guessed_type(name: str) -> str:
    """Undeclared parameters named like instants are instants: `at`, `since`, `until`, `*_at`."""
    return "instant" if name in ("at", "since", "until") or name.endswith("_at") else "text"


def _typed(key: str, value: str, kind: str) -> Any:
    if kind == "instant":
        moment = parse_instant(value, f"--param {key}")
        return not_in_future(moment, f"--param {key}", "the ledger knows what happened until now, not after")
    if kind in ("integer", "number"):
        try:
            return int(value) if kind == "integer" else float(value)
        except ValueError:
            raise InvalidInput(f"--param {key}={value!r} is not a{'n' if kind == 'integer' else ''} {kind}") from None
    return value


# ---------------------------------------------------------------- the web pages' questions (govern/web/auditor.py)
# Each is a bounded answer: a page shows the newest few of a list, paged by seq, never every event or window.

LOG_PAGE_LIMIT = 500  # events a page of the log shows at most


def log_page(
    project: Project,
    *,
    types: Sequence[str] = (),
    since: datetime | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """`audit_log` one page at a time: the newest `limit` events (of `types`, since `since`) older than seq
    `before`, newest first, each with its envelope and its payload as stored. Checked as `audit log` checks its
    options."""
    if since is not None:
        not_in_future(since, "--since", "nothing is recorded yet")
    if not 1 <= limit <= LOG_PAGE_LIMIT:
        raise InvalidInput(f"-n {limit}: show between 1 and {LOG_PAGE_LIMIT} events at a time")
    ledger = project.ledger
    if not ledger.exists():
        return []
    if types:
        _check_types(ledger, types)
    with ledger.reader() as reader:
        rows = events.log_page(
            reader,
            before if before is not None else 2**62,
            limit,
            types=list(types) if types else None,
            since=naive_utc(since) if since is not None else None,
        )
    if not rows:
        return []
    from govern.attribution import split

    found = []
    for row in rows:
        entry = asdict(row)
        who, how = split(row.actor, entry.pop("authn"))
        found.append({**entry, "actor_shown": f"{who} ({how})", "actor_who": who, "actor_how": how})
    return found


def slots(project: Project) -> list[tuple[str, str]]:
    """Every app/env a deployment named, as (app, env)."""
    ledger = project.ledger
    if not ledger.exists():
        return []
    return [tuple(slot.split("/", 1)) for slot in known_slots(ledger)]  # type: ignore[misc]


def environments(project: Project) -> list[str]:
    """The declared environments (outside a project: those the ledger's deployments name)."""
    if project.config is not None:
        return list(project.config.environments)
    return sorted({env for _, env in slots(project)})


def slot_windows(
    project: Project, app: str, env: str, *, limit: int = 40, before: int | None = None
) -> list[WindowRow]:
    """The production timeline of one app/env: its newest `limit` windows (started before seq `before`), newest
    first, each as `windows` gives it (start and end seq, who deployed and who ended it, the training)."""
    _name("--app", app)
    _name("--env", env)
    if not 1 <= limit <= LOG_PAGE_LIMIT:
        raise InvalidInput(f"Show between 1 and {LOG_PAGE_LIMIT} windows at a time, not {limit}")
    ledger = project.ledger
    with ledger.reader() as reader:
        found = deployments.slot_windows(reader, app, env, before if before is not None else 2**62, limit)
        if not found:
            require_slot(reader, app, env)
    return found


def window_at(project: Project, start_seq: int) -> WindowRow:
    """The production window that the `deployment.started` at `start_seq` opened."""
    ledger = project.ledger
    found = deployments.slot_of_start(ledger, start_seq) if ledger.exists() else None
    if found is None:
        raise NotFound(f"Seq {start_seq} is not the start of a production window (a deployment.started event)")
    return slot_windows(project, found.app, found.env, limit=1, before=start_seq + 1)[0]


def training_of(project: Project, model: str, version: str) -> dict[str, Any]:
    """The training behind a version, as the lineage report records it: when and by whom, the commit, the
    datasets with their extraction dates, the params and the metrics."""
    from govern.api import report
    from govern.readmodel import reports  # the report's row types: every other audit command's start skips them

    with project.ledger.reader() as reader:
        facts = version_facts(reader, model, version)  # NotFound names the known models and versions
        row = reports.training_of_version(reader, model, version)
        training = json.loads(row.payload)
        data = report._data(reader, training, [])
    git = training.get("git", {})
    return {
        "model": model,
        "version": version,
        "training_seq": row.seq,
        "completed_at": row.occurred_at,
        "trained_by": row.actor,
        "registered_seq": row.registered_seq,
        "registered_at": row.registered_at,
        "git_commit": facts.lock_commit or row.git_commit,  # the commit to check out: its dvc.lock rebuilds it
        "locked": facts.lock_commit is not None,
        "trained_at_commit": row.git_commit,
        "branch": git.get("branch"),
        "dirty_paths": git.get("dirty_paths") or [],
        "datasets": data["datasets"],
        "missing": data["missing"],
        "params": training.get("params", {}),
        "metrics": training.get("metrics", {}),
        "mlflow_run_id": training.get("mlflow", {}).get("run_id"),
        "duration_s": training.get("duration_s"),
    }


def registered_versions(project: Project) -> list[RegisteredVersionRow]:
    """Every registered model version with the stages it holds and its deprecation (as `govern status` lists
    them): what a lineage report can be asked of."""
    ledger = project.ledger
    return registered_versions_of(ledger) if ledger.exists() else []
