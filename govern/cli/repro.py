"""`govern repro`: reproduce the pipeline and record it; its grid search and a training job's facts (hidden)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from govern.cli.common import local_only, print_json, project, service, warning_line
from govern.errors import InvalidInput


@click.command()
@click.argument("stages", nargs=-1)
@click.option("--allow-dirty", is_flag=True, help="Run despite uncommitted changes; the event records it.")
@click.option("--commit", "commit_lock", is_flag=True, help="Commit the updated dvc.lock afterwards.")
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2", help="Grid search over these values (repeatable).")
@click.option("--metric", help="With --grid: the metric that selects the best (default: config selection.metric).")
@click.option(
    "--direction", type=click.Choice(["maximize", "minimize"]), help="With --grid: better is higher or lower."
)
@click.option("--apply-best", is_flag=True, help="With --grid: write the winning values into the params file.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--facts-out", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@click.option("--known-snapshots", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
def repro(
    stages: tuple[str, ...],
    allow_dirty: bool,
    commit_lock: bool,
    grid: tuple[str, ...],
    metric: str | None,
    direction: str | None,
    apply_best: bool,
    as_json: bool,
    facts_out: Path | None,
    known_snapshots: Path | None,
) -> None:
    """Reproduce the DVC pipeline (or STAGES), mirror it into MLflow, record it.

    A dirty worktree is refused unless --allow-dirty. Running again with
    nothing changed records nothing. With --grid, every combination runs as a
    child MLflow run, the best by --metric is selected and registered, and
    the worktree is left as it was (unless --apply-best).
    """

    def progress(kind: str, stage: str, run: Any) -> None:
        if kind == "start":
            click.echo(f"[{stage}] checking", err=True)
        else:
            click.echo(f"[{stage}] {run.status} ({run.duration_s:.2f} s)", err=True)

    if grid:
        local_only("repro --grid")
        if stages or commit_lock:
            raise InvalidInput(
                "--grid runs the whole pipeline and leaves the worktree as it was: drop STAGES and --commit"
            )
        _grid(grid, metric, direction, apply_best, allow_dirty, as_json, progress)
        return
    if metric or direction or apply_best:
        raise InvalidInput("--metric, --direction and --apply-best go with --grid")
    if facts_out is not None or known_snapshots is not None:
        local_only("repro --facts-out")
        _report_facts(stages, facts_out, known_snapshots, allow_dirty or commit_lock, as_json, progress)
        return
    outcome = service().repro(stages, allow_dirty=allow_dirty, commit_lock=commit_lock, on_progress=progress)
    if as_json:
        print_json(outcome.to_dict())
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
        for reused in outcome.reused_versions:
            click.echo(
                f"{reused['model']}: the same file (sha256) is version {reused['version']} already; "
                "not registered again (one artifact, one version)"
            )
    if outcome.committed:  # with --json, stdout is the JSON alone (it says `committed` too)
        click.echo(f"committed dvc.lock as {outcome.committed[:12]}", err=as_json)
    for warning in outcome.warnings:
        click.echo(f"Note: {warning}", err=True)
    if outcome.mirror_error:
        click.echo(
            f"Warning: the training is recorded, its MLflow mirror is pending ({outcome.mirror_error}); "
            "`govern mirror` retries it, and so does every later govern write",
            err=True,
        )


def _report_facts(
    stages: tuple[str, ...],
    facts_out: Path | None,
    known_snapshots: Path | None,
    local_options: bool,
    as_json: bool,
    progress: Any,
) -> None:
    """A training job's mode (hidden): reproduce, write the facts to --facts-out for the server to record."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.repro import report_facts, reporting

    if facts_out is None or local_options:
        raise InvalidInput("--facts-out FILE reports a clean checkout's facts: drop --allow-dirty and --commit")
    reported = report_facts(reporting(), stages, facts_out, known_snapshots, on_progress=progress)
    if as_json:
        print_json(reported.to_dict())
    else:
        click.echo(f"reported {len(reported.events)} fact(s) in {facts_out}: the server records them")


def _grid(
    grid: tuple[str, ...],
    metric: str | None,
    direction: str | None,
    apply_best: bool,
    allow_dirty: bool,
    as_json: bool,
    progress: Any,
) -> None:
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.grid import grid_search

    def announce(index: int, size: int, combination: dict[str, Any]) -> None:
        shown = ", ".join(f"{k}={v}" for k, v in combination.items())
        click.echo(f"== combination {index + 1}/{size}: {shown}", err=True)

    outcome = grid_search(
        project(),
        grid,
        metric=metric,
        direction=direction,
        apply_best=apply_best,
        allow_dirty=allow_dirty,
        on_progress=progress,
        on_combination=announce,
    )
    if as_json:
        print_json(outcome.to_dict())
    else:
        for training in outcome.trainings:
            params = ", ".join(f"{k}={v}" for k, v in training.payload["grid"]["params"].items())
            click.echo(f"recorded seq {training.seq:>4}  training.completed   {params}")
        winner = ", ".join(f"{k}={v}" for k, v in outcome.winner["params"].items())
        metric_name = outcome.selection.payload["metric"]
        best = f"best {winner} ({metric_name} = {outcome.winner['value']})"
        click.echo(f"recorded seq {outcome.selection.seq:>4}  experiment.selected  {best}")
        for event in outcome.registrations:
            click.echo(f"recorded seq {event.seq:>4}  {event.type:<20} {event.subject}")
        if outcome.applied:
            click.echo("wrote the winning values into the params file: review and commit them")
    for warning in outcome.warnings:
        click.echo(warning_line(warning), err=True)
