"""`govern init`, `mirror`, `sync` and `status`: the project itself, its MLflow mirror and its state on one screen."""

from __future__ import annotations

from pathlib import Path

import click

from govern.cli.common import jsonable, local_only, print_grants, print_json, print_recorded, project, service
from govern.errors import MirrorError


@click.command()
@click.option(
    "--ledger",
    "ledger_url",
    metavar="URL",
    help="A team ledger in PostgreSQL (postgresql://USER@HOST/DB): create its schema and print the GRANTs to run.",
)
@click.option("--writer-role", metavar="NAME", help="With --ledger: the writers' role (govern_writer).")
@click.option(
    "--auditor-role", metavar="NAME", help="With --ledger: the auditors' role in the GRANTs (govern_auditor)."
)
def init(ledger_url: str | None, writer_role: str | None, auditor_role: str | None) -> None:
    """Make this git repository a governed project (idempotent).

    Writes the govern configuration ([tool.govern] in pyproject.toml, or
    govern.toml), creates audit/, adds the ledger and the local MLflow store
    to .gitignore, and runs `dvc init` when needed. With --ledger, the
    PostgreSQL ledger's schema is created too (run it as the database owner),
    and a new configuration points at it.
    """
    local_only("init")
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.project import init_project, init_team_ledger

    if ledger_url is None and (writer_role or auditor_role):
        raise click.UsageError(
            "--writer-role and --auditor-role name the roles of a PostgreSQL ledger: add --ledger URL"
        )
    if ledger_url is not None:
        created = init_team_ledger(ledger_url, writer_role, auditor_role)
        click.echo(f"govern's schema is ready in {created.location} (schema version {created.schema_version}).")
        print_grants(created.grants)
    result = init_project(ledger=created.writer_url if ledger_url is not None else None)
    if ledger_url is not None:
        # cold start: import the configuration reader on use
        from govern.config import configured_ledger

        if configured_ledger(result.root) != created.writer_url:
            click.echo(
                f'To use it, set ledger = "{created.writer_url}" in {result.config_file} (or GOVERN_LEDGER); '
                "the password goes in PGPASSWORD or ~/.pgpass"
            )
    if result.already_initialized:
        click.echo(f"{result.root} is already governed (configuration: {result.config_file}).")
        return
    for path in result.changed:
        click.echo(f"wrote {path}")
    if result.dvc_initialized:
        click.echo("initialised DVC (.dvc/)")
    click.echo(f"Governed project ready (configuration: {result.config_file}).")
    if result.to_commit:
        paths = " ".join(result.to_commit)
        click.echo(
            f"Next: commit it, so that trainings point at a commit: git add {paths} && git commit -m 'govern init'"
        )
        click.echo("Then: govern repro")
    else:
        click.echo("Next: govern repro")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the recorded events as JSON on stdout.")
def mirror(as_json: bool) -> None:
    """Complete every pending MLflow mirror; idempotent.

    Trainings recorded while MLflow was unreachable get their run and
    registered versions (a run left half-finished by an earlier attempt is
    completed, not duplicated); models whose promotions or deprecations are
    not yet in MLflow get their stage aliases and deprecation tags. Exits 1
    while MLflow is still unreachable.
    """
    local_only("mirror")
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api import registry_mirror
    from govern.api.context import open_project
    from govern.api.mirror import retry_pending

    project = open_project()
    trainings = retry_pending(project)
    registry = registry_mirror.mirror_pending(project)
    events = trainings.events + registry.events
    if as_json:
        print_json(
            {
                "events": [e.to_dict() for e in events],
                "pending": trainings.pending,
                "pending_registry": [registry_mirror.describe(p) for p in registry.pending],
            }
        )
    else:
        print_recorded(trainings)
        print_recorded(registry)
        if not events and not trainings.errors and not registry.errors:
            click.echo("Nothing is pending.")
    if trainings.errors:
        raise MirrorError(f"{trainings.pending} training(s) still pending: {trainings.errors[0]}")
    if registry.errors:
        raise MirrorError(f"{len(registry.pending)} model(s) still wait for their MLflow aliases: {registry.errors[0]}")


@click.command()
@click.option("--repo", type=click.Path(path_type=Path), help="Read tags from this repository (default: this one).")
@click.option("--json", "as_json", is_flag=True, help="Print the imported events as JSON on stdout.")
def sync(repo: Path | None, as_json: bool) -> None:
    """Import promotions made with GTO (annotated git tags) into the ledger; idempotent."""
    local_only("sync")
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.sync import at_repository
    from govern.api.sync import sync as run

    outcome = run(at_repository(repo.resolve()) if repo is not None else project())
    if as_json:
        print_json({"events": [e.to_dict() for e in outcome.events], "skipped": outcome.skipped})
        return
    print_recorded(outcome)
    for note in outcome.skipped:
        click.echo(f"Warning: skipped {note}", err=True)
    if not outcome.events:
        click.echo("Nothing new to import.")


STATUS_SLOTS = 25  # one screen; --json lists every slot


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the state as a JSON object on stdout.")
def status(as_json: bool) -> None:
    """The current state on one screen: models and stages, what serves where since when, pending mirrors,
    the last verification and the newest anchor. All derived from the ledger."""
    state = service().status()
    if as_json:
        print_json(state)
        return
    ledger, anchor = state["ledger"], state["newest_anchor"]
    if ledger["head_seq"] is None:
        click.echo(f"Ledger {ledger['path']}: nothing recorded yet (govern repro records the first training)")
    else:
        click.echo(f"Ledger {ledger['path']}: {ledger['events']} events, head seq {ledger['head_seq']}")
    if anchor:
        click.echo(f"  newest anchor {anchor['tag']} (seq {anchor['seq']}, {anchor['events_since']} event(s) since)")
    else:
        click.echo("  no anchor yet: `govern audit anchor` records the head outside the ledger")
    click.echo("Models")
    for model in state["models"]:
        click.echo(f"  {model['model']}")
        for v in model["versions"]:
            held = f"  stages: {', '.join(v['stages'])}" if v["stages"] else ""
            gone = (
                f"  DEPRECATED {jsonable(v['deprecated_at'])}: {v['deprecation_reason']}" if v["deprecated_at"] else ""
            )
            lock = f"  lock {v['lock_commit'][:12]}" if v["lock_commit"] else "  NOT LOCKED"
            if v.get("lock_found"):
                lock = f"  lock {v['lock_found'][:12]} (found, recorded by the next write or `govern sync`)"
            click.echo(f"    version {v['version']:<4} registered {jsonable(v['registered_at'])}{lock}{held}{gone}")
    if not state["models"]:
        click.echo("  none registered yet (govern repro)")
    elif any(not v["lock_commit"] and not v.get("lock_found") for model in state["models"] for v in model["versions"]):
        # cold start: import the use case on use (the api modules load DuckDB)
        from govern.api.locks import NOT_LOCKED_HINT

        click.echo(f"  NOT LOCKED: no commit rebuilds it yet; {NOT_LOCKED_HINT}")
    click.echo("Deployments")
    slots = state["deployments"]
    for slot in slots[:STATUS_SLOTS]:
        where = f"{slot['app']}/{slot['env']}"
        if slot["serving"]:
            click.echo(f"  {where:<28} {slot['model']} version {slot['version']} since {jsonable(slot['since'])}")
        else:
            click.echo(f"  {where:<28} nothing serves (retired {jsonable(slot['since'])})")
    if len(slots) > STATUS_SLOTS:
        click.echo(f"  ... and {len(slots) - STATUS_SLOTS} more (govern status --json, or govern audit windows)")
    if not slots:
        click.echo("  none recorded yet (govern deploy)")
    pending = state["pending_mirrors"]
    click.echo("Mirrors")
    for training in pending["trainings"]:
        click.echo(f"  training {training['event_id']} waits for MLflow (govern mirror)")
    for item in pending["registry"]:
        click.echo(f"  the MLflow aliases of {item['model']} wait for events up to seq {item['through_seq']}")
    if not pending["trainings"] and not pending["registry"]:
        click.echo("  nothing pending")
    last = state["last_verification"]
    click.echo("Last verification")
    if last:
        outcome = "diverged" if last["type"] == "reproduction.diverged" else f"verified ({last['match']})"
        click.echo(f"  {outcome}: commit {last['commit'][:12]} at {jsonable(last['at'])} by {last['by']}")
    else:
        click.echo("  none recorded (govern ci verify)")
