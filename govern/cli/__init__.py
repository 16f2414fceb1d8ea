"""The `govern` command line: parse, call one api function, print. The only package that imports click.

Every `GovernError` becomes one line on stderr and a non-zero exit code here,
in one place; `--traceback` shows the whole story instead. Modules behind the
commands are imported inside them, so `govern --help` stays fast.

The root group is here; the commands are in one module per group (project,
repro, lifecycle, approvals, audit and audit_queries, ci, serve, access,
hooks), which this module adds to the root; their shared helpers are in
`common`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from govern import __version__
from govern.cli import access, approvals, audit, ci, hooks, lifecycle, project, repro, serve
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
        except BrokenPipeError:  # `govern audit log | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            ctx.exit(141)  # as a process ended by SIGPIPE
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


@click.group(cls=GovernGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="govern")
@click.option("--traceback", is_flag=True, help="On an error, show the full Python traceback instead of one line.")
def cli(traceback: bool) -> None:
    """Git-driven, event-sourced governance for machine-learning models.

    Reproduce the DVC pipeline, mirror each run into MLflow, and record every
    fact in an append-only, hash-chained ledger that auditors can query.
    """
    _quiet_third_parties()


for _command in (
    project.init,
    repro.repro,
    lifecycle.promote,
    approvals.request_promotion,
    approvals.approve,
    approvals.reject,
    approvals.requests,
    lifecycle.deprecate,
    lifecycle.deploy,
    lifecycle.retire,
    lifecycle.predict,
    audit.audit,
    ci.ci,
    serve.serve,
    access.principals,
    access.tokens,
    hooks.hooks,
    project.mirror,
    project.sync,
    project.status,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="govern")
