"""`govern audit`'s questions: production windows, a model's history, SQL, reviewed queries, reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from govern.cli.common import (
    instant,
    is_remote,
    jsonable,
    local_only,
    print_json,
    print_table,
    project,
    service,
    writable_path,
)
from govern.errors import InvalidInput


@click.command("production")
@click.option("--app", required=True, help="The application.")
@click.option("--env", default="production", show_default=True, help="The environment.")
@click.option("--at", "at", required=True, help="The instant (ISO 8601 with Z or an offset).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object on stdout.")
def audit_production(app: str, env: str, at: str, as_json: bool) -> None:
    """Which model version served APP in ENV at an instant.

    Windows are half-open: at a window's exact end the version no longer
    serves (its successor, if any, does).
    """
    moment = instant(at, "--at")
    answer = service().production_answer(app, env, moment)
    if as_json:
        print_json(answer)
    elif answer["version"] is None:
        click.echo(f"Nothing deployed to {app}/{env} at {jsonable(moment)}.")
    else:
        end = jsonable(answer["end"]) or "still serving"
        click.echo(f"{answer['model']} version {answer['version']} served {app}/{env} at {jsonable(moment)}")
        click.echo(f"  window: {jsonable(answer['start'])} -> {end} (deployed by {answer['deployed_by']})")
        click.echo(f"  training: seq {answer['training_seq']}, git commit {answer['git_commit']}")


@click.command("windows")
@click.option("--app", help="Only this application.")
@click.option("--model", help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
def audit_windows(app: str | None, model: str | None, as_json: bool) -> None:
    """Every production window: start, end (null while open) and duration."""
    records = service().window_records(app=app, model=model)
    if as_json:
        print_json(records)
        return
    if not records:
        click.echo("No production windows yet.", err=True)
        return
    columns = ["app", "env", "model", "version", "start", "end", "duration_s", "end_reason"]
    print_table(columns, [[r[c] for c in columns] for r in records])


@click.command("history")
@click.argument("model")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
def audit_history(model: str, version: str | None, as_json: bool) -> None:
    """Every event of MODEL (or of one VERSION) in order: trainings, registrations, promotions, deployments."""
    # cold start: import the time display on use
    from govern.timeparse import display

    events = service().history(model, version)
    if as_json:
        print_json([event.to_dict() for event in events])
        return
    for event in events:
        click.echo(
            f"{event.seq:>6}  {display(event.occurred_at)}  {event.type:<20}  {event.subject}  by {event.actor_shown}"
        )
        detail = _history_detail(event.type, event.payload)
        if detail:
            click.echo(f"{'':>8}{detail}")


def _history_detail(kind: str, payload: dict[str, Any]) -> str:
    """The part of an event a reader of a model's history needs: stages, approver and reason, windows."""
    if kind == "model.promoted":
        forced = " (forced)" if payload.get("forced") else ""
        moved = f"{payload.get('from_stage') or 'no stage'} -> {payload['to_stage']}{forced}"
        return f"{moved}; approved by {payload.get('approver')}; reason: {payload.get('reason')}"
    if kind == "model.deprecated":
        return f"reason: {payload.get('reason')}"
    if kind in ("deployment.started", "deployment.ended"):
        ended = f" ({payload['reason']})" if kind == "deployment.ended" else ""
        return f"version {payload['version']} at {payload['app']}/{payload['env']}{ended}"
    if kind == "model.registered":
        same = payload.get("same_artifact_as") or []
        twin = f"; same file as version(s) {', '.join(same)}" if same else ""
        return f"version {payload['version']}, sha256 {payload.get('sha256')}{twin}"
    if kind == "training.completed":
        return f"commit {payload['git']['commit'][:12]}, MLflow run {(payload.get('mlflow') or {}).get('run_id')}"
    if kind == "training.locked":
        versions = ", ".join(f"version {v['version']}" for v in payload.get("versions") or [])
        return f"lock commit {payload['commit']} rebuilds {versions} (its dvc.lock; found by {payload.get('found_by')})"
    if kind == "model.promotion_requested":
        return f"to {payload.get('to_stage')}; reason: {payload.get('reason')}"
    if kind in ("model.promotion_approved", "model.promotion_rejected"):
        return f"request {payload.get('request_seq')}; reason: {payload.get('reason')}"
    if kind == "inference.recorded":
        where = f" for {payload['app']}/{payload['env']}" if payload.get("app") else ""
        return f"version {payload['version']}, {payload.get('rows')} rows{where}"
    return ""


SQL_LIMIT_OPTIONS = (
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        help="Stop the query after this many seconds (default: audit.timeout, 30).",
    ),
    click.option(
        "--max-rows", type=click.IntRange(min=1), help="Refuse a result of more rows (default: audit.max_rows, 100000)."
    ),
    click.option(
        "--max-bytes",
        type=click.IntRange(min=1),
        help="Refuse a result larger than this many bytes as text (default: audit.max_bytes, 64 MiB).",
    ),
)


def _sql_limit_options(command: Any) -> Any:
    """`--timeout`, `--max-rows` and `--max-bytes` of the auditor's SQL commands."""
    for option in reversed(SQL_LIMIT_OPTIONS):
        command = option(command)
    return command


def _sql_limits(timeout: float | None, max_rows: int | None, max_bytes: int | None) -> Any:
    """The project here and the limits the options ask for, over its own; None where none is given (then the
    query goes where `service()` sends it). A server applies its own."""
    if timeout is None and max_rows is None and max_bytes is None:
        return None
    if is_remote():
        raise InvalidInput(
            "--timeout, --max-rows and --max-bytes apply to a local ledger: the server's own limits "
            "([tool.govern.audit] where it runs) apply to its queries; unset GOVERN_URL to query here"
        )
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.audit import sql_limits

    here = project(writing=False)
    return here, sql_limits(here, timeout=timeout, max_rows=max_rows, max_bytes=max_bytes)


@click.command("sql")
@click.argument("statement")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects on stdout.")
@_sql_limit_options
def audit_sql(
    statement: str, as_json: bool, timeout: float | None, max_rows: int | None, max_bytes: int | None
) -> None:
    """Run one read-only SQL STATEMENT over the ledger's views.

    Views: events, trainings, model_versions, datasets, promotions,
    deprecations, stage_assignments, deployment_events, production_windows,
    inferences, experiments. The connection is read-only: writes are refused.
    It stops at a timeout and refuses a result past a row or byte limit
    ([tool.govern.audit]; the options raise them here, not on a server).
    """
    limited = _sql_limits(timeout, max_rows, max_bytes)
    if limited is None:
        result = service().sql(statement)
    else:
        # cold start: import the use case on use (the api modules load DuckDB)
        from govern.api.audit import sql

        here, limits = limited
        result = sql(here, statement, limits=limits)
    print_json(result.records()) if as_json else print_table(result.columns, result.rows)


@click.command("run")
@click.argument("name", required=False)
@click.option("--param", "params", multiple=True, help="A bound parameter NAME=VALUE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects on stdout.")
@_sql_limit_options
def audit_run(
    name: str | None,
    params: tuple[str, ...],
    as_json: bool,
    timeout: float | None,
    max_rows: int | None,
    max_bytes: int | None,
) -> None:
    """Run a reviewed query from audit/queries/NAME.sql; without NAME, list them.

    Parameters are bound ($name in the SQL), never pasted into it. The limits
    of `audit sql` apply.
    """
    limited = _sql_limits(timeout, max_rows, max_bytes)
    if name is None:
        found = service().named_queries()
        print_json(found) if as_json else print_table(["name", "description"], list(found.items()))
        return
    bound = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--param {item!r} is not NAME=VALUE")
        bound[key] = value
    if limited is None:
        result = service().run_named(name, bound)
    else:
        # cold start: import the use case on use (the api modules load DuckDB)
        from govern.api.audit import run_named

        here, limits = limited
        result = run_named(here, name, bound, limits=limits)
    print_json(result.records()) if as_json else print_table(result.columns, result.rows)


@click.command("report")
@click.argument("model")
@click.argument("version")
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json"]), default="html", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@click.option(
    "--verify-chain",
    is_flag=True,
    help="Also re-verify the whole ledger, not only the events the report cites (slower on large ledgers).",
)
def audit_report(model: str, version: str, fmt: str, output: Path | None, verify_chain: bool) -> None:
    """A self-contained lineage report of MODEL VERSION for auditors.

    Eleven sections (identity, code, data provenance, pipeline, training,
    validation, approvals, production windows, reproductions, inference,
    integrity), each from recorded facts, each saying what is not recorded.
    HTML (one file, inline CSS and SVG, printable), Markdown or JSON.
    Every event the report cites is re-hashed and linked to the one before it;
    when one fails, the report is still written and the command exits 1.
    """
    # cold start: import the report's renderers on use
    from govern.report import render

    if output is not None:
        writable_path(output, "--output")
    report = service().gather(model, version, verify_chain=verify_chain)
    text = render(report, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    integrity = report["integrity"]
    if not integrity["verified"]:
        failures = [m for m in integrity["missing"] if m.startswith(("The ledger does not", "Anchor check failed"))]
        click.echo(f"FAILED: the report cites events that do not verify: {'; '.join(failures)}", err=True)
        sys.exit(1)


@click.command("lineage")
@click.argument("model")
@click.argument("version")
def audit_lineage(model: str, version: str) -> None:
    """The lineage of MODEL VERSION as a tree: training, commit, stages, datasets, promotions, windows."""
    # cold start: import the report's renderers on use
    from govern.report import render_tree

    click.echo(render_tree(service().gather(model, version)), nl=False)


@click.command("openlineage")
@click.option("--since", help="Only trainings that completed at or after this ISO 8601 time.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
def audit_openlineage(since: str | None, output: Path | None) -> None:
    """Export trainings as OpenLineage run events (JSON lines: START/COMPLETE, one job per stage)."""
    local_only("audit openlineage")
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.audit import openlineage

    if output is not None:
        writable_path(output, "--output")
    found = openlineage(project(writing=False), instant(since, "--since"))
    lines = "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in found)
    if output is None:
        click.echo(lines, nl=False)
    else:
        output.write_text(lines, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
