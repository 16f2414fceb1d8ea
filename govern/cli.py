"""The `govern` command line: parse, call one api function, print. The only click importer.

Every `GovernError` becomes one line on stderr and a non-zero exit code here,
in one place; `--traceback` shows the whole story instead. Modules behind the
commands are imported inside them, so `govern --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from govern import __version__
from govern.errors import GovernError


def _quiet_third_parties() -> None:
    """No analytics or telemetry from govern's own processes, unless the user asks for it."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class GovernGroup(click.Group):
    """Turns failures into one clear line; `--traceback` re-raises them."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GovernError as error:
            if _wants_traceback(ctx):
                raise
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence for the user
            if _wants_traceback(ctx):
                raise
            message = " ".join(str(error).split()) or type(error).__name__
            click.echo(
                f"Error: unexpected {type(error).__name__}: {message} (run with --traceback for details)", err=True
            )
            ctx.exit(1)


def _wants_traceback(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("traceback")) or "--traceback" in sys.argv


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))


@click.group(cls=GovernGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="govern")
@click.option("--traceback", is_flag=True, hidden=True, help="Show the full traceback of an error.")
def cli(traceback: bool) -> None:
    """Git-driven, event-sourced governance for machine-learning models.

    Reproduce the DVC pipeline, mirror each run into MLflow, and record every
    fact in an append-only, hash-chained ledger that auditors can query.
    """
    _quiet_third_parties()


@cli.command()
def init() -> None:
    """Make this git repository a governed project (idempotent).

    Writes the govern configuration ([tool.govern] in pyproject.toml, or
    govern.toml), creates audit/, adds the ledger and the local MLflow store
    to .gitignore, and runs `dvc init` when needed.
    """
    from govern.api import init_project

    result = init_project()
    if result.already_initialized:
        click.echo(f"{result.root} is already governed (configuration: {result.config_file}).")
        return
    for path in result.changed:
        click.echo(f"wrote {path}")
    if result.dvc_initialized:
        click.echo("initialised DVC (.dvc/)")
    click.echo(f"Governed project ready (configuration: {result.config_file}). Next: `govern repro`.")


@cli.command()
@click.argument("stages", nargs=-1)
@click.option("--allow-dirty", is_flag=True, help="Run despite uncommitted changes; the event records it.")
@click.option("--commit", "commit_lock", is_flag=True, help="Commit the updated dvc.lock afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
def repro(stages: tuple[str, ...], allow_dirty: bool, commit_lock: bool, as_json: bool) -> None:
    """Reproduce the DVC pipeline (or STAGES), mirror it into MLflow, record it.

    A dirty worktree is refused unless --allow-dirty. Running again with
    nothing changed records nothing.
    """
    from govern.api import repro as run_repro

    def progress(kind: str, stage: str, run: Any) -> None:
        if kind == "start":
            click.echo(f"[{stage}] checking", err=True)
        else:
            click.echo(f"[{stage}] {run.status} ({run.duration_s:.2f} s)", err=True)

    outcome = run_repro(stages, allow_dirty=allow_dirty, commit=commit_lock, on_progress=progress)
    if as_json:
        _print_json(outcome.to_dict())
    elif outcome.status == "up-to-date":
        click.echo(
            f"Nothing changed: the pipeline is up to date and already recorded (training seq {outcome.existing_seq})."
        )
    else:
        for event in outcome.events:
            click.echo(f"recorded seq {event.seq:>4}  {event.type:<20} {event.subject}")
        training = outcome.training
        mlflow_facts = training.payload.get("mlflow", {}) if training else {}
        if mlflow_facts.get("run_id"):
            click.echo(f"MLflow run {mlflow_facts['run_id']} in experiment {mlflow_facts['experiment']!r}")
    if outcome.committed:
        click.echo(f"committed dvc.lock as {outcome.committed[:12]}")
    if outcome.mirror_error:
        click.echo(f"Error: the training is recorded but not mirrored: {outcome.mirror_error}", err=True)
        sys.exit(1)


@cli.group()
def audit() -> None:
    """Ask the ledger: events, integrity."""


@audit.command("log")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable), e.g. training.completed.")
@click.option("--since", help="Only events that occurred at or after this ISO 8601 time (with Z or an offset).")
@click.option("-n", "--limit", type=click.IntRange(min=0), help="Only the newest N events.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
def audit_log(types: tuple[str, ...], since: str | None, limit: int | None, as_json: bool) -> None:
    """List recorded events, oldest first."""
    from govern.api import audit_log as read_log
    from govern.events import format_timestamp
    from govern.timeparse import parse_instant

    events = read_log(types=types, since=parse_instant(since, "--since") if since else None, limit=limit)
    if as_json:
        _print_json([event.to_dict() for event in events])
        return
    if not events:
        click.echo("No events.", err=True)
        return
    for event in events:
        click.echo(
            f"{event.seq:>6}  {format_timestamp(event.occurred_at)}  {event.type:<20}  {event.subject}  ({event.actor})"
        )


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object on stdout.")
def audit_verify(as_json: bool) -> None:
    """Recompute every hash and link of the ledger's chain; exit 1 on the first bad event."""
    from govern.api import audit_verify as verify

    result = verify()
    if as_json:
        _print_json(result.to_dict())
    elif result.ok:
        click.echo(f"OK: {result.count} events, head hash {result.head_hash}")
    else:
        click.echo(f"FAILED: {result.problem} ({result.count} events)", err=True)
    if not result.ok:
        sys.exit(1)


def main() -> None:
    cli(prog_name="govern")
