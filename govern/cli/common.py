"""What the command modules share: output checks, printing, and where a use case runs (here or on a server).

Imports that cost a cold start (the api modules, DuckDB behind them, the client) stay inside the functions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from govern.errors import GovernError, InvalidInput, Note

PROJECT_FILES = frozenset(
    {"pyproject.toml", "govern.toml", "dvc.yaml", "dvc.lock", "params.yaml", ".gitignore", ".dvcignore"}
)
PROJECT_FOLDERS = (".git", ".dvc", "audit/queries")


def writable_path(path: Path, option: str, inputs: tuple[Path, ...] = ()) -> Path:
    """Every file govern writes on request: missing folders are created, and a path that cannot be written, or
    must not be (the ledger, the command's own input), is refused before any work is done."""
    # cold start: import the configuration reader on use
    from govern.config import configured_ledger, find_root

    target = path.resolve()
    existing = next((folder for folder in target.parents if folder.is_dir()), None)
    for start in dict.fromkeys([None, existing]):  # the project here, and the one the target lies in (remote CLI)
        try:
            root: Path | None = find_root(start).resolve()
        except GovernError:
            continue
        try:
            found = configured_ledger(root)
            ledger: Path | None = found if isinstance(found, Path) else None
        except GovernError:
            ledger = None
        if ledger is not None and (target == ledger or target.name.startswith(ledger.name + ".")):
            if target.parent == ledger.parent.resolve():
                raise InvalidInput(f"{option} {path} is the ledger itself (or its log or backup): choose another path")
        if root is not None and (
            (target.parent == root and target.name in PROJECT_FILES)
            or any(target.is_relative_to(root / folder) for folder in PROJECT_FOLDERS)
        ):
            raise InvalidInput(
                f"{option} {path} is one of the files this project is governed by (configuration, pipeline, git or "
                "DVC metadata, reviewed queries): choose another path"
            )
    if target.suffix == ".wal":
        raise InvalidInput(f"{option} {path} is a database's write-ahead log: choose another path")
    if any(target == source.resolve() for source in inputs):
        raise InvalidInput(f"{option} {path} is also the input: choose another path")
    if path.is_dir():
        raise InvalidInput(f"{option} {path} is a directory: give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocking} is a file, not a folder" if blocking else error.strerror
        raise InvalidInput(f"{option} {path}: cannot create its folder ({reason}); choose another path") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InvalidInput(f"{option} {path} is not writable: choose another path")
    return path


def jsonable(value: Any) -> Any:
    """A value as it prints in JSON (govern.presentation: instants as UTC ...Z strings, durations in seconds)."""
    # cold start: import the presentation rules on first output
    from govern.presentation import jsonable as shown

    return shown(value)


def print_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False, sort_keys=False))


def print_table(columns: list[str], rows: list[Any]) -> None:
    """A plain aligned table; cells as they print in JSON, null as '-'."""
    cells = [[("-" if v is None else str(v)) for v in jsonable(list(row))] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_recorded(outcome: Any) -> None:
    """What a write recorded: its events, the tags it wrote, its warnings (on stderr)."""
    for event in outcome.events:
        click.echo(f"recorded seq {event.seq:>4}  {event.type:<20} {event.subject}")
    for tag in getattr(outcome, "tags", []):
        click.echo(f"tagged {tag}")
    for warning in getattr(outcome, "warnings", []):
        click.echo(warning_line(warning), err=True)


def warning_line(message: str) -> str:
    """A warning as printed: a `Note` as it is, anything else after "Warning: "."""
    return message if isinstance(message, Note) else f"Warning: {message}"


def echo_progress(message: str) -> None:
    """A use case's progress, on stderr: stdout is for the answer."""
    click.echo(message, err=True)


_WARNED_TOKEN_ALONE = False


def is_remote() -> bool:
    """GOVERN_URL names a `govern serve`: commands that work on the ledger ask it instead (govern.client). So does a
    token in a project whose configuration declares its server (`[tool.govern.server] url`): a team's people hold
    tokens, not the ledger's credentials. A token with no server to send it to is said once: the command works on
    the local ledger, under the git identity, not the token's."""
    global _WARNED_TOKEN_ALONE
    remote = bool(os.environ.get("GOVERN_URL"))
    if not remote and os.environ.get("GOVERN_TOKEN"):
        declared = _declared_server()
        if declared:
            os.environ["GOVERN_URL"] = declared
            return True
    if not remote and os.environ.get("GOVERN_TOKEN") and not _WARNED_TOKEN_ALONE:
        _WARNED_TOKEN_ALONE = True
        click.echo(
            "govern: warning: GOVERN_TOKEN is set but GOVERN_URL is not: working on the local ledger as your git "
            "identity; set GOVERN_URL to act through the server",
            err=True,
        )
    return remote


def _declared_server() -> str | None:
    """The server the project around the current directory declares, if any (a broken configuration: none here;
    the command itself will say what is wrong with it)."""
    # cold start: import the configuration reader on use
    from govern import config

    try:
        return config.load(config.find_root()).server_url
    except GovernError:
        return None


def project(*, writing: bool = True) -> Any:
    """The composition root of this command (`api.context.Project`): the project around the current directory,
    its configuration loaded once, its ledger, the actor (CI's or git's identity, self-asserted), the clock. A
    read-only command opens it with `writing=False` (no anchor check, no secret guard)."""
    # cold start: import the use cases' context on use (the storage behind it loads DuckDB)
    from govern.api.context import open_project

    return open_project(writing=writing)


def local_ledger() -> Any:
    """The local ledger for a read use case; None when a server answers instead (its twin ignores it)."""
    if is_remote():
        return None
    return project(writing=False).ledger


def local_only(command: str) -> None:
    """A command that works on the project itself (its checkout, its ledger file) has no remote form."""
    if is_remote():
        raise InvalidInput(
            f"`govern {command}` runs where the project is, and has no server form: unset GOVERN_URL to run it here"
        )


def instant(value: str | None, option: str) -> Any:
    """The instant an option gives (ISO 8601 with a zone); None when it is not given."""
    # cold start: import the time parser on use
    from govern.timeparse import parse_instant

    return parse_instant(value, option) if value is not None else None


def print_grants(statements: list[str]) -> None:
    """The GRANTs a new PostgreSQL ledger needs (govern init --ledger, govern audit copy --to)."""
    click.echo("As a superuser (or a role with CREATEROLE), give govern's writers a role that may only INSERT")
    click.echo("and SELECT, and auditors one that may only SELECT (replace the passwords):")
    for statement in statements:
        click.echo(f"  {statement}")


def service() -> Any:
    """The use cases for this command (`api.service.Governance`): on the server of GOVERN_URL where one is named
    (`client.HttpGovernance`), else on the project here (`api.local.LocalGovernance`)."""
    # cold start: import the chosen implementation only (each imports its use cases on use)
    if is_remote():
        from govern.client import HttpGovernance

        return HttpGovernance()
    from govern.api.context import open_project
    from govern.api.local import LocalGovernance

    return LocalGovernance(open_project)
