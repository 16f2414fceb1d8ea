"""`govern principals` and `govern tokens`: who may act through `govern serve`, in which role, with which token."""

from __future__ import annotations

from typing import Any

import click

from govern.cli.common import instant, jsonable, print_json, print_table, service


@click.group()
def principals() -> None:
    """Who may act through `govern serve`, in which role: granted and revoked as ledger facts.

    Roles: scientist, approver, deployer, consumer (limited to --app), auditor, admin. Run here, the actor
    recorded is your git identity: whoever may write the ledger makes the first admin. Nobody grants, revokes or
    links an identity for themselves; an admin never holds approver too. Where approver and admin take two admins
    (`[tool.govern.access] two_admin_grants`, on in team mode), `add` proposes and another admin confirms.
    """


@principals.command("add")
@click.argument("name")
@click.option("--role", required=True, help="scientist, approver, deployer, consumer, auditor or admin.")
@click.option("--app", "apps", multiple=True, metavar="APP", help="A consumer's app (repeat for several).")
@click.option("--reason", default="", help="Why, for the record.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def principals_add(name: str, role: str, apps: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Grant NAME a role (a consumer, for the apps given); granting it again with other apps replaces them.

    Approver and admin, where they take two admins, are proposed: NAME holds the role once another admin confirms
    (govern principals confirm SEQ)."""
    event = service().grant(name, role, apps, reason)
    if as_json:
        print_json(event.to_dict())
        return
    limited = f" for {', '.join(event.payload['apps'])}" if event.payload["apps"] else ""
    if event.type == "access.grant_proposed":
        door = " (break-glass: an operator's local proposal)" if event.payload.get("break_glass") else ""
        click.echo(
            f"recorded seq {event.seq}: proposed {role}{limited} for {name}{door}; {name} holds it once another admin "
            f"confirms it: govern principals confirm {event.seq} (or declines it: govern principals decline)"
        )
        return
    note = " (bootstrap: no admin existed to confirm it)" if event.payload.get("basis") == "bootstrap" else ""
    click.echo(f"recorded seq {event.seq}: {name} holds the role {role}{limited}{note}")


@principals.command("revoke")
@click.argument("name")
@click.option("--role", required=True, help="The role to take away.")
@click.option("--reason", default="", help="Why, for the record.")
def principals_revoke(name: str, role: str, reason: str) -> None:
    """From now on NAME may no longer act in ROLE (its tokens stay, but carry no role unless it holds another)."""
    event = service().revoke(name, role, reason)
    click.echo(f"recorded seq {event.seq}: {name} no longer holds the role {role}")


@principals.command("confirm")
@click.argument("proposal")
@click.option("--reason", default="", help="Why, for the record (the proposal's reason is kept otherwise).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def principals_confirm(proposal: str, reason: str, as_json: bool) -> None:
    """Confirm the proposed grant PROPOSAL (its seq) as a second admin: never its proposer, nor its grantee."""
    event = service().confirm_grant(proposal, reason)
    if as_json:
        print_json(event.to_dict())
        return
    payload = event.payload
    door = " (break-glass: an operator's local confirmation)" if payload.get("basis") == "break-glass" else ""
    click.echo(
        f"recorded seq {event.seq}: {payload['principal']} holds the role {payload['role']}, proposed by "
        f"{payload['proposed_by']} (seq {payload['proposal_seq']}){door}"
    )


@principals.command("decline")
@click.argument("proposal")
@click.option("--reason", required=True, help="Why, for the record.")
def principals_decline(proposal: str, reason: str) -> None:
    """Refuse the proposed grant PROPOSAL (another admin's): it will not be held unless proposed again."""
    event = service().decline_grant(proposal, reason)
    click.echo(f"recorded seq {event.seq}: proposal {event.payload['proposal_seq']} is declined")


@principals.command("withdraw")
@click.argument("proposal")
@click.option("--reason", default="", help="Why, for the record.")
def principals_withdraw(proposal: str, reason: str) -> None:
    """Take back a grant you proposed, before anyone confirms it."""
    event = service().withdraw_grant(proposal, reason)
    click.echo(f"recorded seq {event.seq}: proposal {event.payload['proposal_seq']} is withdrawn")


@principals.command("proposals")
@click.option(
    "--state",
    type=click.Choice(["pending", "confirmed", "declined", "withdrawn", "all"]),
    default="pending",
    show_default=True,
    help="Which proposals.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def principals_proposals(state: str, as_json: bool) -> None:
    """Proposed grants of approver and admin, newest first, and what became of them."""
    rows = service().proposals(None if state == "all" else state)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"No {'' if state == 'all' else state + ' '}grant proposal.", err=True)
        return
    print_table(
        ["proposal", "principal", "role", "state", "proposed_at", "proposed_by", "decided_by"],
        [
            [
                r["proposal_seq"],
                r["principal"],
                r["role"],
                r["state"],
                r["proposed_at"],
                r["proposed_by_shown"],
                r["decided_by_shown"],
            ]
            for r in rows
        ],
    )


@principals.command("link")
@click.argument("name")
@click.argument("identity")
@click.option("--reason", default="", help="Why, for the record.")
def principals_link(name: str, identity: str, reason: str) -> None:
    """Record that git IDENTITY ('Name <email>') is NAME's: versions it trained count as NAME's for four-eyes."""
    event = service().link_identity(name, identity, reason)
    click.echo(f"recorded seq {event.seq}: {event.payload['identity']} is {name}")


@principals.command("identities")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def principals_identities(as_json: bool) -> None:
    """The git identities linked to principals (govern principals link)."""
    rows = service().identities()
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No identity is linked to a principal (govern principals link NAME 'Name <email>').", err=True)
        return
    print_table(
        ["principal", "identity", "linked_at", "linked_by"],
        [[r["principal"], r["identity"], r["linked_at"], r["linked_by"]] for r in rows],
    )


@principals.command("list")
@click.option("--at", help="Who held which role at this instant (ISO 8601 with a zone); default now.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def principals_list(at: str | None, as_json: bool) -> None:
    """Who holds which role now, or held it at --at: the answer to "who could approve on date T", with who
    granted (confirmed) each role and who proposed it."""
    rows = service().roles_at(instant(at, "--at"))
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No principal holds a role" + (f" at {at}" if at else "") + " (govern principals add).", err=True)
        return
    print_table(
        ["principal", "role", "apps", "granted_at", "granted_by", "proposed_by"],
        [
            [
                r["principal"],
                r["role"],
                ", ".join(r["apps"]) or None,
                r["granted_at"],
                _granted_by(r),
                r["proposed_by_shown"],
            ]
            for r in rows
        ],
    )


def _granted_by(row: dict[str, Any]) -> str:
    basis = row.get("basis")
    return row["granted_by_shown"] + (f" [{basis}]" if basis and basis != "direct" else "")


@principals.command("history")
@click.option("--principal", help="Only this principal's grants.")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Newest grants.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def principals_history(principal: str | None, limit: int, as_json: bool) -> None:
    """Every grant over time, newest first: who proposed and who confirmed it, and when and how it ended."""
    rows = service().grant_history(principal, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No grant recorded" + (f" for {principal}" if principal else "") + ".", err=True)
        return
    print_table(
        ["grant", "principal", "role", "granted_at", "granted_by", "proposed_by", "ended_at", "ended_how"],
        [
            [
                r["grant_seq"],
                r["principal"],
                r["role"],
                r["granted_at"],
                _granted_by(r),
                r["proposed_by_shown"],
                r["ended_at"],
                r["ended_how"],
            ]
            for r in rows
        ],
    )


@click.group()
def tokens() -> None:
    """Bearer tokens for `govern serve`: shown once when created, stored only as a hash, revocable.

    In team mode a token for someone else is an enrollment code: they exchange it, once and within 24 hours, for
    a token of their own (govern tokens redeem CODE), which nobody else sees."""


@tokens.command("create")
@click.argument("name")
@click.option("--expires", help="A lifetime (12h, 30d, 8w), an instant, or never (default 90d).")
@click.option("--description", default="", help="What the token is for, for the record (e.g. the CD system).")
@click.option("--json", "as_json", is_flag=True, help="Print the token (or code) and its id as JSON on stdout.")
def tokens_create(name: str, expires: str | None, description: str, as_json: bool) -> None:
    """Issue a token for NAME, who must hold a role. The token is printed once: store it now.

    In team mode, for anyone but yourself, what is printed is an enrollment code for NAME to redeem (govern
    tokens redeem CODE), not a token: single use, valid 24 hours; --expires is the lifetime of the token it gives."""
    issued = service().issue_token(name, expires, description)
    if as_json:
        print_json(issued.to_dict())
        return
    if issued.code is not None:
        code = issued.code
        until = jsonable(code.token_expires_at) if code.token_expires_at else "never"
        click.echo(
            f"recorded seq {issued.event.seq}: enrollment code {code.code_id} for {name}, valid until "
            f"{jsonable(code.expires_at)}, single use. It is not a token: hand it to {name}, who exchanges it for a "
            f"token of their own (expires {until}) with `govern tokens redeem CODE`. Shown once, stored as a hash:",
            err=True,
        )
        click.echo(code.code)
        return
    until = jsonable(issued.token.expires_at) if issued.token.expires_at else "never"
    click.echo(f"recorded seq {issued.event.seq}: token {issued.token.token_id} for {name}, expires {until}", err=True)
    click.echo("It is shown once and stored only as a hash; send it as `Authorization: Bearer <token>`:", err=True)
    click.echo(issued.token.bearer)


@tokens.command("redeem")
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its id as JSON on stdout.")
def tokens_redeem(code: str, as_json: bool) -> None:
    """Exchange an enrollment CODE an admin gave you for your own token (once; the code then is spent). With
    GOVERN_URL set, the server does it (no GOVERN_TOKEN needed: the code authenticates you)."""
    issued = service().redeem(code)
    if as_json:
        print_json(issued.to_dict())
        return
    until = jsonable(issued.token.expires_at) if issued.token.expires_at else "never"
    click.echo(
        f"recorded seq {issued.event.seq}: token {issued.token.token_id} for {issued.token.principal}, expires "
        f"{until}. It is shown once and stored only as a hash; send it as `Authorization: Bearer <token>`:",
        err=True,
    )
    click.echo(issued.token.bearer)


@tokens.command("revoke")
@click.argument("token_id")
@click.option("--reason", default="", help="Why, for the record.")
def tokens_revoke(token_id: str, reason: str) -> None:
    """Make a token (or an enrollment code not yet used) unusable from now on, whatever its expiry."""
    event = service().revoke_token(token_id, reason)
    click.echo(
        f"recorded seq {event.seq}: token {event.payload['token_id']} of {event.payload['principal']} is revoked"
    )


@tokens.command("list")
@click.option("--principal", help="Only this principal's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def tokens_list(principal: str | None, as_json: bool) -> None:
    """Every token ever issued, then every enrollment code, with its state now and who handed it over (issuer:
    for a redeemed token, the admin who issued its code); never a secret."""
    rows = service().tokens(principal)
    if as_json:
        print_json(rows)
        return
    if not rows:
        whose = f" for {principal}" if principal else " yet"
        click.echo(f"No token issued{whose} (govern tokens create NAME).", err=True)
        return
    print_table(
        ["token_id", "kind", "principal", "state", "issued_at", "expires_at", "issuer", "description"],
        [
            [
                r["token_id"],
                "code" if r.get("kind") == "enrollment code" else "token",
                r["principal"],
                r["state"],
                r["issued_at"],
                r["expires_at"],
                r.get("issuer") or r["issued_by"],
                r["description"],
            ]
            for r in rows
        ],
    )
