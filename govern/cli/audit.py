"""`govern audit`: the ledger's events, its integrity (verify, anchor) and copies of it (backup, copy)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from govern.cli import audit_queries
from govern.cli.common import (
    instant,
    jsonable,
    local_only,
    print_grants,
    print_json,
    project,
    service,
    writable_path,
)
from govern.errors import InvalidInput


@click.group()
def audit() -> None:
    """Ask the ledger: events, integrity, production windows, history, SQL."""


@audit.command("log")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable), e.g. training.completed.")
@click.option("--since", help="Only events that occurred at or after this ISO 8601 time (with Z or an offset).")
@click.option("-n", "--limit", type=click.IntRange(min=0), help="Only the newest N events.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
def audit_log(types: tuple[str, ...], since: str | None, limit: int | None, as_json: bool) -> None:
    """List recorded events, oldest first."""
    # cold start: import the time display on use
    from govern.timeparse import display

    events = service().audit_log(types=types, since=instant(since, "--since"), limit=limit)
    if as_json:
        print_json([event.to_dict() for event in events])
        return
    if not events:
        what = "No events" + (f" of type {', '.join(types)}" if types else "")
        if since:
            what += f" since {since}"
        elif limit != 0:
            what += " yet"
        click.echo(f"{what}.", err=True)
        return
    for event in events:
        click.echo(
            f"{event.seq:>6}  {display(event.occurred_at)}  {event.type:<20}  {event.subject}  by {event.actor_shown}"
        )


@audit.command("verify")
@click.option(
    "--repo",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="The git repository whose anchors to check (default: the one around the current directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object on stdout.")
def audit_verify(repo: Path | None, as_json: bool) -> None:
    """Recompute every hash and link of the ledger's chain, and check it against every anchor in git.

    Exits 1 on the first bad event, or on an anchor the ledger no longer matches. Outside a repository
    (GOVERN_LEDGER alone) it says that the anchors were not checked; --repo PATH checks them.
    """
    result = service().verify(repository=repo)
    chain = result.chain
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        if not result.anchors_checked:
            anchored = "; anchors NOT checked: no git repository here (run it in the project, or pass --repo PATH)"
        elif result.anchors:
            anchored = f"; {len(result.anchors)} anchor(s) match, latest at seq {result.anchors[-1].seq}"
        else:
            anchored = f"; no anchors in {result.repository} (`govern audit anchor` makes one)"
        click.echo(f"OK: {chain.count} events, head hash {chain.head_hash}{anchored}")
        if result.attestations is not None:
            click.echo(f"OK: {_attested(result.attestations)}")
    else:
        if not chain.ok:
            click.echo(f"FAILED: {chain.problem} ({chain.count} events)", err=True)
        for problem in result.problems:
            click.echo(f"FAILED: anchor {problem}", err=True)
        found = result.attestations
        if found is not None and not found.ok:
            for problem in found.problems:
                click.echo(f"FAILED: attestation {problem}", err=True)
            if found.problem_count > len(found.problems):
                click.echo(f"FAILED: and {found.problem_count - len(found.problems)} more attestation(s)", err=True)
    if not result.ok:
        sys.exit(1)


def _attested(found: Any) -> str:
    """One line on who the ledger says acted, and how sure it is."""
    keys = [key for key in found.keys if key.trusted]
    signed = f" (signed by {len(keys)} trusted key(s): {', '.join(k.fingerprint for k in keys)})" if keys else ""
    parts = [
        f"{found.authenticated} event(s) authenticated by govern serve{signed}",
        f"{found.self_asserted} self-asserted",
    ]
    if found.unrecorded:
        parts.append(f"{found.unrecorded} without a recorded identity source (written before attestations)")
    return ", ".join(parts)


@audit.command("backup")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the backup's verification as JSON on stdout.")
def audit_backup(path: Path, as_json: bool) -> None:
    """Write a consistent, self-contained copy of the ledger to PATH (a new file), and verify it.

    Safe while other govern commands run. Copying the .duckdb file alone would miss the newest events,
    which live in DuckDB's write-ahead log beside it. Check it any time with
    GOVERN_LEDGER=PATH govern audit verify.
    """
    local_only("audit backup")
    if path.exists():
        raise InvalidInput(f"{path} exists: a backup goes to a new file; choose another name")
    stale_log = path.with_name(path.name + ".wal")
    if stale_log.exists():
        raise InvalidInput(
            f"{stale_log} exists: DuckDB would replay that log onto the backup {path.name}; move it away or "
            "choose another name"
        )
    writable_path(path, "PATH")
    result = project(writing=False).ledger.backup(path)
    if as_json:
        print_json({"path": str(path), **jsonable(result)})
    else:
        click.echo(f"backed up {result.count} events (head hash {result.head_hash}) to {path}")
    if not result.ok:
        click.echo(f"FAILED: the backup does not verify: {result.problem}", err=True)
        sys.exit(1)


@audit.command("copy")
@click.option(
    "--to", "target", required=True, metavar="PATH|URL", help="A new DuckDB file, or an empty PostgreSQL ledger."
)
@click.option("--json", "as_json", is_flag=True, help="Print the copy's verification as JSON on stdout.")
def audit_copy(target: str, as_json: bool) -> None:
    """Copy every event of the ledger to another backend, verifying each batch as it lands.

    Moves a ledger from the DuckDB file to PostgreSQL (`--to postgresql://...`) or back (`--to PATH`), byte for
    byte: the same events, hashes and head, so anchors made before the move still match. The target is new, empty,
    or an earlier copy of this ledger (the copy resumes after its head); one holding other events is refused. The
    source is never changed.
    """
    local_only("audit copy")
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api.audit import copy_to

    if "://" not in target:
        writable_path(Path(target), "--to")
    result = copy_to(project(writing=False), target)
    if as_json:
        print_json(result.to_dict())
    else:
        count, added = result.verification.count, result.added
        what = f"copied {added} events" if added == count else f"copied {added} new events ({count} in all)"
        what = f"{what} to {result.location}"
        if not added:
            what = f"nothing to copy: {result.location} already holds all {count} events"
        click.echo(f"{what}; the copy verifies (head hash {result.verification.head_hash})")
        if result.grants:
            click.echo("govern's schema was created there.")
            print_grants(result.grants)
    if not result.ok:
        click.echo(f"FAILED: the copy does not verify: {result.verification.problem}", err=True)
        sys.exit(1)


@audit.command("anchor")
@click.option("--json", "as_json", is_flag=True, help="Print the anchor event as JSON on stdout.")
def audit_anchor(as_json: bool) -> None:
    """Record the ledger head outside the ledger, as an annotated git tag govern-anchor/SEQ.

    Appends ledger.anchored and tags HEAD with that event's seq and hash, so
    the anchor covers its own event. Push it: git push --tags.
    """
    event = service().anchor()
    if as_json:
        print_json(event.to_dict())
    else:
        click.echo(f"anchored seq {event.seq} (hash {event.hash}) as tag govern-anchor/{event.seq}")


# The questions auditors ask of the ledger, and the reports, are in audit_queries.py.
for _question in (
    audit_queries.audit_production,
    audit_queries.audit_windows,
    audit_queries.audit_history,
    audit_queries.audit_sql,
    audit_queries.audit_run,
    audit_queries.audit_report,
    audit_queries.audit_lineage,
    audit_queries.audit_openlineage,
):
    audit.add_command(_question)
