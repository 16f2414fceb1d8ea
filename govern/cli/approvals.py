"""Four-eyes promotions: `govern request-promotion`, `approve`, `reject`, `requests`."""

from __future__ import annotations

from typing import Any

import click

from govern.cli.common import echo_progress, print_json, print_recorded, print_table, service


@click.command("request-promotion")
@click.argument("model")
@click.argument("version")
@click.option("--to", "to_stage", required=True, help="The stage asked for, e.g. production.")
@click.option("--reason", required=True, help="Why, for the approver and the record.")
@click.option("--force", is_flag=True, help="Ask for a promotion out of the stages' order (team mode: an admin's).")
@click.option("--json", "as_json", is_flag=True, help="Print the request as JSON on stdout.")
def request_promotion(model: str, version: str, to_stage: str, reason: str, force: bool, as_json: bool) -> None:
    """Ask for MODEL VERSION to enter a stage; an approver who neither asked nor trained it decides.

    The same checks as `govern promote` run now and again at approval; the
    declared gates' findings are recorded with the request as evidence.
    """
    requested = service().request_promotion(model, version, to_stage, reason, force=force)
    if as_json:
        print_json(requested.to_dict())
        return
    click.echo(
        f"recorded seq {requested.event.seq}: request {requested.request_id} asks for {model} {version} "
        f"to enter {to_stage}"
    )
    for finding in requested.event.payload["evidence"]["gates"]:
        click.echo(f"  gate {finding['gate']}: {'passes' if finding['passed'] else 'FAILS'} ({finding['seen']})")
    click.echo(f"An approver decides it: govern approve {requested.request_id} --reason ...", err=True)


@click.command()
@click.argument("request")
@click.option("--reason", required=True, help="Why, for the record.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded events as JSON on stdout.")
def approve(request: str, reason: str, as_json: bool) -> None:
    """Approve promotion REQUEST (its number): the promotion is recorded, tagged and mirrored.

    Refused to whoever asked and to whoever trained the version (the four-eyes
    rule, by identity), and where a declared gate of the stage fails.
    """
    outcome = service().approve(request, reason, on_progress=echo_progress)
    print_json(outcome.to_dict()) if as_json else print_recorded(outcome)


@click.command()
@click.argument("request")
@click.option("--reason", required=True, help="Why, for the record.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def reject(request: str, reason: str, as_json: bool) -> None:
    """Reject promotion REQUEST (its number), or withdraw your own: the version keeps its stage."""
    event = service().reject(request, reason)
    if as_json:
        print_json(event.to_dict())
    else:
        click.echo(f"recorded seq {event.seq}: request {event.payload['request_seq']} is rejected")


@click.command()
@click.option("--state", default="pending", show_default=True, help="pending, approved, rejected, or all.")
@click.option("--model", help="Only this model's requests.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def requests(state: str, model: str | None, as_json: bool) -> None:
    """Promotion requests, oldest first: the approvers' queue (pending) or the record of decisions."""
    rows = service().requests(None if state == "all" else state, model)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"No {'' if state == 'all' else state + ' '}promotion request (govern request-promotion).", err=True)
        return
    print_table(
        ["request", "state", "model", "version", "to_stage", "requested_by", "reason", "gates", "decided_by"],
        [
            [
                r["request_seq"],
                r["state"],
                r["model"],
                r["version"],
                r["to_stage"],
                r["requested_by"],
                r["reason"],
                _gates_cell(r["evidence"].get("gates", [])),
                r["decided_by"],
            ]
            for r in rows
        ],
    )


def _gates_cell(findings: list[dict[str, Any]]) -> str | None:
    if not findings:
        return None
    failed = sum(1 for f in findings if not f["passed"])
    return f"{len(findings) - failed}/{len(findings)} pass"
