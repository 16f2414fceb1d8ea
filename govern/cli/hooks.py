"""`govern hooks`: plain-git hooks, and the hidden commands they run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from govern.cli.common import project
from govern.errors import GovernError


@click.group()
def hooks() -> None:
    """Plain-git hooks: refuse stale pushes (client), verify every push (server)."""


@hooks.command("install")
@click.option("--force", is_flag=True, help="Replace existing pre-push and post-commit hooks that are not govern's.")
def hooks_install(force: bool) -> None:
    """Install a pre-push hook that refuses a push whose pipeline is stale or whose dvc.lock is uncommitted, and a
    post-commit hook that records the lock commit of a training (`training.locked`) when dvc.lock is committed."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.hooks import install_client

    for path in install_client(project(writing=False), force=force):
        click.echo(f"installed {path}")


@hooks.command("post-commit", hidden=True)
def hooks_post_commit() -> None:
    """Run by the post-commit hook: a commit has happened, so this never fails it; a problem is one line."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.hooks import after_commit

    try:
        for line in after_commit(project(writing=False)):  # the checks of a write, once there is one to make
            click.echo(line)
    except GovernError as error:
        click.echo(f"govern: the lock commit was not recorded ({error}); `govern sync` looks again", err=True)


@hooks.command("install-server")
@click.option("--bare", required=True, type=click.Path(path_type=Path), help="The bare repository pushed to.")
@click.option(
    "--ledger",
    help="The team's central ledger: a file path or a postgresql:// URL (default BARE/govern-hook/ledger.duckdb).",
)
@click.option(
    "--server",
    metavar="URL",
    help="Post verdicts to this govern server instead (its verifier token in GOVERN_TOKEN, kept in BARE/govern-hook).",
)
@click.option("--force", is_flag=True, help="Replace an existing post-receive hook that is not govern's.")
def hooks_install_server(bare: Path, ledger: str | None, server: str | None, force: bool) -> None:
    """Install a post-receive hook that verifies every pushed branch head in the background.

    Each head is checked out into a temporary worktree and verified like
    `govern ci verify`, appending to the central ledger; pushed GTO tags are
    imported (`govern sync`). The pusher is not held; see BARE/govern-hook/verify.log.
    """
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.hooks import install_server

    installed = install_server(bare, ledger, force, server)
    where = "server" if server else "ledger"
    click.echo(f"installed {installed.hook}; {where} {installed.ledger}; log {installed.log}")


@hooks.command("pre-push", hidden=True)
@click.argument("remote", required=False)
@click.argument("url", required=False)
def hooks_pre_push(remote: str | None, url: str | None) -> None:
    """Run by the pre-push hook."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.hooks import pre_push_problems

    problems = pre_push_problems(project(writing=False))
    for problem in problems:
        click.echo(f"govern: push refused: {problem}", err=True)
    if problems:
        sys.exit(1)


@hooks.command("post-receive", hidden=True)
@click.option("--bare", required=True, type=click.Path(path_type=Path))
@click.option("--ledger", required=True)
def hooks_post_receive(bare: Path, ledger: str) -> None:
    """Run by the post-receive hook with git's ref updates on stdin."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.hooks import on_receive

    for commit in on_receive(bare, ledger, sys.stdin.read().splitlines()):
        click.echo(f"govern: verifying {commit[:12]} in the background (log: {bare / 'govern-hook' / 'verify.log'})")


@hooks.command("verify-commit", hidden=True)
@click.option("--bare", required=True, type=click.Path(path_type=Path))
@click.option("--ledger", required=True)
@click.option("--rev", required=True)
def hooks_verify_commit(bare: Path, ledger: str, rev: str) -> None:
    """The detached verifier the post-receive hook starts."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.hooks import verify_pushed

    click.echo(verify_pushed(bare, ledger, rev))


@hooks.command("sync-server", hidden=True)
@click.option("--bare", required=True, type=click.Path(path_type=Path))
@click.option("--ledger", required=True)
def hooks_sync_server(bare: Path, ledger: str) -> None:
    """The detached tag import the post-receive hook starts for tag-only pushes."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.sync import at_repository, sync

    os.environ["GOVERN_LEDGER"] = str(ledger)
    click.echo(f"{len(sync(at_repository(bare, ledger)).events)} GTO promotion(s) imported")
