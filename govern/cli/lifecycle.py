"""A version's life after training: `govern promote`, `deprecate`, `deploy`, `retire`, and `predict` with it."""

from __future__ import annotations

from pathlib import Path

import click

from govern.cli.common import echo_progress, instant, print_json, print_recorded, service, writable_path


@click.command()
@click.argument("model")
@click.argument("version")
@click.option("--to", "to_stage", required=True, help="The stage to move the version to, e.g. production.")
@click.option("--reason", required=True, help="Why, for the record.")
@click.option("--approver", help="Who approved it (default: you). With the four-eyes rule, not the trainer.")
@click.option("--force", is_flag=True, help="Allow skipping or going back through stages; the event records it.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded events as JSON on stdout.")
def promote(
    model: str, version: str, to_stage: str, reason: str, approver: str | None, force: bool, as_json: bool
) -> None:
    """Promote MODEL VERSION to a stage, with a reason and an approver.

    Stages are passed in their configured order unless --force. Appends
    model.promoted, sets the MLflow alias named after the stage and writes a
    GTO tag (MODEL#STAGE#N).
    """
    outcome = service().promote(
        model, version, to_stage, reason, approver=approver, force=force, on_progress=echo_progress
    )
    print_json(outcome.to_dict()) if as_json else print_recorded(outcome)


@click.command()
@click.argument("model")
@click.argument("version")
@click.option("--reason", required=True, help="Why, for the record.")
@click.option("--force", is_flag=True, help="Deprecate a version that still serves an app; the event records it.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def deprecate(model: str, version: str, reason: str, force: bool, as_json: bool) -> None:
    """Deprecate MODEL VERSION: it can no longer be promoted, deployed or used for predictions.

    Refused while the version serves an app (the message lists where) unless
    --force. Appends model.deprecated, removes its MLflow aliases and writes
    GTO's deregistration tag (MODEL@vN.0.0!).
    """
    outcome = service().deprecate(model, version, reason, force=force, on_progress=echo_progress)
    print_json(outcome.to_dict()) if as_json else print_recorded(outcome)


@click.command()
@click.argument("model")
@click.argument("version")
@click.option("--app", required=True, help="The application the version serves.")
@click.option("--env", default="production", show_default=True, help="The environment.")
@click.option("--at", "at", help="When it started serving (ISO 8601 with Z or an offset; default now).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded events as JSON on stdout.")
def deploy(model: str, version: str, app: str, env: str, at: str | None, as_json: bool) -> None:
    """Record that MODEL VERSION serves APP in ENV from a time on.

    The version must hold the stage the environment requires (production
    needs production). A version already serving the slot is ended at the
    same instant.
    """
    outcome = service().deploy(model, version, app=app, env=env, at=instant(at, "--at"))
    print_json(outcome.to_dict()) if as_json else print_recorded(outcome)


@click.command()
@click.option("--app", required=True, help="The application.")
@click.option("--env", default="production", show_default=True, help="The environment.")
@click.option("--at", "at", help="When it stopped serving (ISO 8601 with Z or an offset; default now).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def retire(app: str, env: str, at: str | None, as_json: bool) -> None:
    """Record that APP in ENV is no longer served by its model version."""
    outcome = service().retire(app=app, env=env, at=instant(at, "--at"))
    print_json(outcome.to_dict()) if as_json else print_recorded(outcome)


@click.command()
@click.argument("model", required=False)
@click.argument("version", required=False)
@click.option("--app", help="Use the version serving this application now, instead of MODEL VERSION.")
@click.option("--env", default="production", show_default=True, help="The environment of --app.")
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path), help="Input CSV.")
@click.option("--output", "output_path", required=True, type=click.Path(path_type=Path), help="Predictions CSV.")
@click.option("--record", is_flag=True, help="Append one inference.recorded event for this batch.")
@click.option(
    "--allow-deprecated", is_flag=True, help="Predict with a deprecated version anyway; the inference event says so."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
def predict(
    model: str | None,
    version: str | None,
    app: str | None,
    env: str,
    input_path: Path,
    output_path: Path,
    record: bool,
    allow_deprecated: bool,
    as_json: bool,
) -> None:
    """Predict with MODEL VERSION, or with the version serving --app now.

    Runs the model's own inference command (the `infer` entry of its
    artifact's meta in dvc.yaml) on the exact registered model file.
    """
    writable_path(output_path, "--output", (input_path,))
    result = service().predict(
        input_path,
        output_path,
        model=model,
        version=version,
        app=app,
        env=env,
        record=record,
        allow_deprecated=allow_deprecated,
    )
    if as_json:
        print_json(result.to_dict())
        return
    click.echo(f"wrote {result.rows} predictions of {result.model} version {result.version} to {result.output}")
    if result.event is not None:
        click.echo(f"recorded seq {result.event.seq:>4}  {result.event.type:<20} {result.event.subject}")
