"""`govern ci`: re-execute a pushed commit and judge it against its dvc.lock; write a CI definition."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from govern.cli.common import print_json, project, writable_path
from govern.errors import GovernError, InvalidInput


@click.group()
def ci() -> None:
    """Continuous integration: re-execute pushed commits and verify them against their dvc.lock."""


@ci.command("verify")
@click.option("--rev", default="HEAD", show_default=True, help="The commit to verify.")
@click.option("--tolerance", "tolerances", multiple=True, metavar="METRIC=ABS", help="Allowed absolute metric change.")
@click.option("--strict", is_flag=True, help="Fail on `equivalent` too: require every output bit for bit.")
@click.option("--summary", type=click.Path(path_type=Path), help="Write the Markdown summary here (default: stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON on stdout.")
@click.option(
    "--server",
    metavar="URL",
    help="Record the verdict in this govern server's ledger (token in GOVERN_TOKEN, a verifier's), not locally; "
    "default GOVERN_URL.",
)
def ci_verify(
    rev: str, tolerances: tuple[str, ...], strict: bool, summary: Path | None, as_json: bool, server: str | None
) -> None:
    """Re-execute REV from scratch (dvc repro --force, no run-cache) and judge it against its dvc.lock.

    Three outcomes: exact (every output bit for bit), equivalent (each output
    that differs in bytes passes its declared rule: a model by its
    predictions on the evaluation split, metrics within tolerance), or
    diverged (also when the committed dvc.lock is stale). Appends
    reproduction.verified or reproduction.diverged with the evidence and the
    machine facts that differ from the training's, to the ledger (never a new
    one: with no ledger here it prints the verdict and records nothing), or
    with --server to the team's server's. The rules are the
    commit's own configuration. Exit codes: 0 exact or equivalent, 1
    diverged (or equivalent with --strict), 2 bad input, 3 could not verify.
    On GitHub Actions the summary also goes to $GITHUB_STEP_SUMMARY.
    """
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.ci import headline, parse_tolerances, verify
    from govern.api.ci import summary as render_summary

    limits = parse_tolerances(tolerances)
    if summary is not None:
        writable_path(summary, "--summary")

    started: list[str] = []

    def progress(kind: str, stage: str, run: Any) -> None:
        if not started:
            started.append(stage)
            click.echo(f"govern: re-executing {rev} in a scratch clone; your checkout is not touched", err=True)
        if kind == "end":
            click.echo(f"[{stage}] {run.status} ({run.duration_s:.2f} s)", err=True)

    upload = None
    server = server or os.environ.get("GOVERN_URL") or None
    if server is not None:
        # cold start: import the HTTP client only when a server is named
        from govern.remote import Server

        upload = Server.from_environment(server).upload_verdict
    try:
        # read-only: a verification never starts a ledger, and checks the anchors only where one exists
        verdict = verify(
            project(writing=False), rev, tolerances=limits, strict=strict, on_progress=progress, upload=upload
        )
    except InvalidInput:
        raise
    except GovernError as error:
        error.exit_code = 3  # could not verify at all: CI tells that apart from a divergence (1)
        raise
    for note in verdict.notes:
        click.echo(f"govern: note: {note}", err=True)
    if not verdict.recorded:
        click.echo(f"govern: the verdict is not recorded: {verdict.not_recorded}", err=True)
    text = render_summary(verdict)
    if summary is not None:
        summary.write_text(text, encoding="utf-8")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(text)
    if as_json:
        print_json(verdict.to_dict())
    elif summary is None:
        click.echo(text)
    else:
        click.echo(f"{headline(verdict)} ({f'seq {verdict.event.seq}' if verdict.recorded else 'not recorded'})")
    if not verdict.passed:
        sys.exit(1)


@ci.command("init")
@click.argument("system", type=click.Choice(["github", "gitlab"]), default="github")
@click.option("--install", help="The command that installs the project and govern in CI.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def ci_init(system: str, install: str | None, force: bool) -> None:
    """Write a CI definition that runs `govern ci verify` on every push and tag (GitHub Actions or GitLab CI)."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.ci import ci_init as write

    click.echo(f"wrote {write(project(writing=False), system, install=install, force=force)}")
