"""`govern principals` and `govern tokens`: who may act, as ledger facts (checking a bearer token is
`govern.api.authentication`).

Granting, revoking and issuing are appended like any other fact, in one transaction with the check that
allows them, so the state they are decided on cannot change meanwhile. Run locally, the actor is the git or CI
identity (whoever may write the ledger may manage it: the first admin is made this way); through the server
it is the authenticated admin.

Separation of duties for admins (issue 25):
- nobody grants, revokes or links an identity for themselves (a local identity is "themselves" when it is
  linked to the principal, or is the principal's name);
- with `two_admin_grants` (on in team mode), approver and admin are granted by two admins: one proposes
  (`access.grant_proposed`), another confirms (`access.granted` naming the proposal); before any admin exists the
  operator grants them directly ("bootstrap"); while fewer than two admins hold the role, an operator's local
  action (self-asserted, "break-glass") may stand for one of the two, never both, and once two admins hold it
  only admins the server authenticated propose and confirm, and two admins always remain;
- an admin may not hold approver too (`access.CONFLICTS`);
- in team mode a token issued for another principal is an enrollment code: single use, valid 24 hours,
  exchanged by that principal for a token the issuer never sees; the token's issuer stays the code's issuer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from govern import access, attribution
from govern.api.authentication import InvalidCode, Unauthenticated, token_table
from govern.api.context import Project, text_argument
from govern.api.results import Issued
from govern.envelope import PendingEvent, RecordedEvent, format_timestamp, to_utc
from govern.errors import Forbidden, InvalidInput, NotFound, PolicyViolation, StateConflict
from govern.events import (
    EnrollmentCodeIssued,
    IdentityLinked,
    RoleGrantDeclined,
    RoleGranted,
    RoleGrantProposed,
    RoleGrantWithdrawn,
    RoleRevoked,
    TokenIssued,
    TokenRevoked,
)
from govern.readmodel import access as access_reads
from govern.readmodel.access import GrantRow, HeldRoleRow, ProposalRow, StoredCodeRow, StoredTokenRow
from govern.readmodel.reader import Reader
from govern.readmodel.rows import naive_utc
from govern.storage import LedgerStore

log = logging.getLogger("govern.server")

# A digest no secret has: an unknown code is checked against it, so it costs what a known one costs.
_NO_DIGEST = "0" * 64


def _stamp(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


# ---------------------------------------------------------------- the rules an admin's act is checked against


def two_admin_grants(project: Project, reader: Reader) -> bool:
    """Do approver and admin take two admins here? As configured, else in team mode."""
    from govern.api import duties

    configured = project.config.two_admin_grants
    if configured is False and not project.actor.authenticated and access_reads.server_key_registered(reader):
        # a checkout's setting lowers the bar for the server's authenticated admins only: a self-asserted writer's
        # own checkout, pointed at a ledger a server signed in, said `two_admin_grants = false` and granted approver
        return True
    return configured if configured is not None else duties.team_mode(project, reader)


def _held(reader: Reader, principal: str) -> list[str]:
    return access_reads.held_roles(reader, principal)


def _admins(reader: Reader) -> int:
    return access_reads.admin_count(reader)


def _shown(actor: attribution.Actor) -> str:
    return attribution.shown(actor.name, actor.authn)


def _links(reader: Reader) -> dict[str, list[str]]:
    return access_reads.identity_links(reader)


def _is_principal(actor: attribution.Actor, principal: str, links: dict[str, list[str]]) -> bool:
    """Is `actor` the person `principal` names? Authenticated: the same principal. Self-asserted (a local git or
    CI identity): linked to the principal (`govern principals link`), or the principal's own name as its name or
    email; a wrong match only refuses more."""
    if actor.authenticated:
        return (actor.authn.principal or attribution.principal_of(actor.name)) == principal
    if f"principal:{principal}" in access.identity_keys(actor.name, links):
        return True
    found = access.GIT_IDENTITY.match(actor.name)
    names = [found.group(1), found.group(2)] if found else [actor.name]
    return any(name.strip().lower() == principal for name in names)


def _refuse_self(actor: attribution.Actor, principal: str, links: dict[str, list[str]], doing: str) -> None:
    if _is_principal(actor, principal, links):
        raise Forbidden(
            f"Nobody {doing} for themselves, whatever their roles: {_shown(actor)} is {principal}; another admin "
            "must do it"
        )


def _refuse_conflict(reader: Reader, principal: str, role: str) -> None:
    found = access.conflict(role, _held(reader, principal))
    if found is not None:
        other, why = found
        raise PolicyViolation(
            f"{principal} holds the role {other} and cannot hold {role} too: {why}. Revoke {other} first, or choose "
            "another principal"
        )


def _refuse_local_privileged(project: Project, admins: int, doing: str) -> None:
    """In team mode an operator's local (self-asserted) hand counts for one of the two admins only while fewer
    than two admins hold the role; after that it would let one writer mint approvers and admins."""
    if admins >= 2:
        raise Forbidden(
            f"In team mode, with {admins} admins, {doing} is for admins the server authenticated: "
            f"{_shown(project.actor)} is a local identity. Run it with GOVERN_URL and GOVERN_TOKEN set (an admin's "
            "own token), or on the admin's pages"
        )


def _admin_now(reader: Reader, actor: attribution.Actor, doing: str) -> None:
    principal = actor.authn.principal or attribution.principal_of(actor.name)
    if principal is None or "admin" not in _held(reader, principal):
        raise Forbidden(f"{_shown(actor)} is no admin: only an admin {doing}")


def _token_of(actor: str | None) -> str | None:
    found = attribution.TOKEN_ACTOR.match(actor or "")
    return found.group(2) if found else None


def _one_pair_of_hands(
    reader: Reader, one: str, other: str, links: dict[str, list[str]], tokens: bool = True
) -> str | None:
    """Why `one` and `other` are the same hands, if they are: the same person, or (with `tokens`) one acting with a
    token the other issued (the token's issuer followed through codes and self-made tokens, `token_issuers`)."""
    from govern.api import duties

    if access.same_person(one, other, links):
        return "the same person"
    for actor, rival in ((one, other), (other, one)) if tokens else ():
        issuer = duties.token_issuer(reader, _token_of(actor))
        if issuer and access.same_person(issuer, rival, links):
            return f"{_principal_or(actor)}'s token was issued by {_principal_or(rival)}"
    return None


def _principal_or(actor: str) -> str:
    return attribution.principal_of(actor) or actor


def _as_principal(name: str) -> str:
    """A principal in the form `access.same_person` compares (any token: only the name counts)."""
    return f"{name} (token 000000000000)"


# ---------------------------------------------------------------- grants: direct, proposed, confirmed


def grant(project: Project, principal: str, role: str, apps: Sequence[str] = (), reason: str = "") -> RecordedEvent:
    """Give `principal` a role (a consumer, for `apps`); granting it again with other apps replaces them. Where
    approver and admin take two admins, this records the proposal (`access.grant_proposed`) for a second admin to
    confirm (`confirm_grant`): the event returned says which."""
    name = access.check_principal_name(principal)
    limited = access.check_role(role, tuple(apps))
    why = text_argument(reason, "--reason") if reason else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        apps = access_reads.active_grant_apps(reader, name, role)
        if apps is not None and tuple(apps) == limited:
            held = f" for {', '.join(limited)}" if limited else ""
            raise StateConflict(f"{name} holds the role {role} already{held}")
        two = role in access.PRIVILEGED and two_admin_grants(project, reader)
        admins = _admins(reader)
        bootstrap = two and admins == 0
        if not (bootstrap and role == "admin"):  # the very first admin may be whoever sets the project up
            _refuse_self(project.actor, name, _links(reader), "grants a role")
        _refuse_conflict(reader, name, role)
        if not two or bootstrap:
            basis = "bootstrap" if bootstrap else "direct"
            fact: Any = RoleGranted(principal=name, role=role, apps=list(limited), reason=why, basis=basis)
            return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock())]
        break_glass = _may_propose(project, reader, admins)
        pending = access_reads.pending_proposals_of(reader, name, role)
        if pending:
            raise StateConflict(
                f"{role} for {name} was proposed already (proposal {pending[0].proposal_seq}, by "
                f"{_principal_or(pending[0].proposed_by)}): another admin confirms it with `govern principals "
                f"confirm {pending[0].proposal_seq}`, or declines it"
            )
        fact = RoleGrantProposed(principal=name, role=role, apps=list(limited), reason=why, break_glass=break_glass)
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock())]

    return _access_changed(project.ledger, project.ledger.transact(decide))[0]


def _may_propose(project: Project, reader: Reader, admins: int) -> bool:
    """May the actor propose a privileged grant? An authenticated admin may; in team mode a local identity only
    while fewer than two admins hold the role (break-glass, returned True); in a solo project, where nothing is
    authenticated, whoever writes the ledger."""
    from govern.api import duties

    if project.actor.authenticated:
        _admin_now(reader, project.actor, "proposes a grant of approver or admin")
        return False
    if not duties.team_mode(project, reader):
        return False
    _refuse_local_privileged(project, admins, "proposing approver or admin")
    return True


def confirm_grant(project: Project, proposal: int | str, reason: str = "") -> RecordedEvent:
    """A second admin confirms a proposed grant: the role is held from this event on. Never the proposer, never
    the grantee, never someone acting with a token the proposer issued (or whose token the confirmer issued); in
    team mode an admin the server authenticated, or, while fewer than two admins hold the role, an operator's
    local confirmation of a proposal an authenticated admin made (break-glass)."""
    from govern.api import duties

    seq = proposal_number(proposal)
    why = text_argument(reason, "--reason") if reason else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        found = _pending_proposal(reader, seq)
        name, role = found.principal, found.role
        links = _links(reader)
        proposer = found.proposed_by
        if project.actor.authenticated:
            _admin_now(reader, project.actor, "confirms a grant of approver or admin")
            basis = "break-glass" if found.break_glass else "two admins"
        elif duties.team_mode(project, reader):
            _refuse_local_privileged(project, _admins(reader), "confirming approver or admin")
            proposed = attribution.Authn.from_json(found.proposed_authn) if found.proposed_authn else None
            if found.break_glass or proposed is None or not proposed.authenticated:
                raise Forbidden(
                    f"Proposal {seq} was made by a local identity ({attribution.shown(proposer, proposed)}): a second "
                    "local hand is the same writer of the ledger, not a second admin. An admin confirms it through "
                    "the server (GOVERN_URL and GOVERN_TOKEN, or the admin's pages)"
                )
            basis = "break-glass"
        else:
            basis = "two admins"
        # Where the operator stands for one of the two (break-glass), who issued whose token is no evidence: the
        # operator set the project up and issued the first admin's code; the door closes at two admins.
        same = _one_pair_of_hands(reader, project.actor.name, proposer, links, tokens=basis == "two admins")
        if same is not None or _is_principal(project.actor, _principal_or(proposer), links):
            raise Forbidden(
                f"{_shown(project.actor)} cannot confirm proposal {seq}: it was proposed by {_principal_or(proposer)}"
                f" ({same or 'the same person'}); two admins means two people: another admin must confirm it"
            )
        _refuse_self(project.actor, name, links, "confirms a grant")
        first = attribution.principal_of(proposer)
        if first is not None and not found.break_glass and "admin" not in _held(reader, first):
            raise Forbidden(
                f"Proposal {seq} was made by {first}, who is no admin any more: it cannot be confirmed; decline it, "
                "and an admin proposes again"
            )
        for hands in (project.actor.name, proposer):  # neither admin acts with a token the grantee issued
            issuer = duties.token_issuer(reader, _token_of(hands))
            if issuer and access.same_person(issuer, _as_principal(name), links):
                raise Forbidden(
                    f"{_principal_or(hands)} acts with a token {name} issued: {name} cannot be granted {role} by it; "
                    "another admin must confirm it"
                )
        apps = access_reads.active_grant_apps(reader, name, role)
        if apps is not None and tuple(apps) == tuple(found.apps):
            raise StateConflict(f"{name} holds the role {role} already: decline proposal {seq}")
        _refuse_conflict(reader, name, role)
        fact = RoleGranted(
            principal=name,
            role=role,
            apps=list(found.apps),
            reason=why or found.reason or "",
            proposal_seq=seq,
            proposed_by=proposer,
            basis=basis,
        )
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock())]

    return _access_changed(project.ledger, project.ledger.transact(decide))[0]


def decline_grant(project: Project, proposal: int | str, reason: str) -> RecordedEvent:
    """Another admin refuses a proposed grant, for a reason; its proposer withdraws it instead."""
    seq = proposal_number(proposal)
    why = text_argument(reason, "--reason")

    def decide(reader: Reader) -> list[PendingEvent]:
        found = _pending_proposal(reader, seq)
        if project.actor.authenticated:
            _admin_now(reader, project.actor, "declines a proposed grant")
        if access.same_person(project.actor.name, found.proposed_by, _links(reader)):
            raise StateConflict(
                f"{_shown(project.actor)} proposed grant {seq}: withdraw it (govern principals withdraw {seq})"
            )
        fact = RoleGrantDeclined(proposal_seq=seq, principal=found.principal, role=found.role, reason=why)
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock())]

    return project.ledger.transact(decide)[0]


def withdraw_grant(project: Project, proposal: int | str, reason: str = "") -> RecordedEvent:
    """The admin who proposed a grant takes it back before anyone confirmed it."""
    seq = proposal_number(proposal)
    why = text_argument(reason, "--reason") if reason else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        found = _pending_proposal(reader, seq)
        if not access.same_person(project.actor.name, found.proposed_by, _links(reader)):
            raise Forbidden(
                f"Only {_principal_or(found.proposed_by)}, who proposed grant {seq}, may withdraw it: another "
                f"admin declines it (govern principals decline {seq} --reason ...)"
            )
        fact = RoleGrantWithdrawn(proposal_seq=seq, principal=found.principal, role=found.role, reason=why)
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock())]

    return project.ledger.transact(decide)[0]


def proposal_number(proposal: int | str) -> int:
    """A proposal is named by its seq, as `govern principals proposals` shows it."""
    text = str(proposal).strip().removeprefix("#")
    if not text.isdigit() or int(text) < 1 or int(text) > 2**62:
        raise InvalidInput(
            f"{proposal!r} is not a proposal number: give the seq `govern principals proposals` shows, such as 42"
        )
    return int(text)


def _pending_proposal(reader: Reader, seq: int) -> ProposalRow:
    found = access_reads.proposal(reader, seq)
    if found is None:
        raise NotFound(f"No grant proposal {seq}: `govern principals proposals` lists them")
    if found.state != "pending":
        raise StateConflict(
            f"Grant proposal {seq} was {found.state} already, at {format_timestamp(found.decided_at)} by "
            f"{_principal_or(found.decided_by)}"
        )
    return found


def proposals(project: Project, state: str | None = "pending", limit: int = 200) -> list[dict[str, Any]]:
    """Grant proposals, newest first: pending ones by default, or those in `state` ("all" or None: all)."""
    ledger = project.ledger
    state = None if state == "all" else state
    if state is not None and state not in PROPOSAL_STATES:
        raise InvalidInput(f"Unknown state {state!r}: use one of {', '.join(PROPOSAL_STATES)}, or all")
    if not ledger.exists():
        return []
    return [
        asdict(
            replace(
                row,
                proposed_by_shown=attribution.shown(row.proposed_by, row.proposed_authn),
                decided_by_shown=attribution.shown(row.decided_by, row.decided_authn) if row.decided_by else None,
            )
        )
        for row in access_reads.proposals(ledger, state, limit)
    ]


PROPOSAL_STATES = ("pending", "confirmed", "declined", "withdrawn")


def revoke(project: Project, principal: str, role: str, reason: str = "") -> RecordedEvent:
    """From now on `principal` may no longer act as `role`. Nobody revokes their own role; the last admin stays,
    and where admin takes two admins to grant, the last two stay (a lone admin would need the break-glass door)."""
    name = access.check_principal_name(principal)
    if role not in access.ROLES:
        raise InvalidInput(f"Unknown role {role!r}: use one of {', '.join(access.ROLES)}")
    why = text_argument(reason, "--reason") if reason else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        if access_reads.active_grant_apps(reader, name, role) is None:
            raise NotFound(f"{name} does not hold the role {role}: `govern principals list` shows who holds what")
        _refuse_self(project.actor, name, _links(reader), "revokes a role")
        if role == "admin":
            admins = _admins(reader)
            if admins == 1:
                raise StateConflict(
                    f"{name} is the last admin: grant admin to someone else first, or no one could manage access"
                )
            if admins == 2 and two_admin_grants(project, reader):
                raise StateConflict(
                    f"{name} is one of the last two admins: granting approver and admin takes two, and one admin "
                    "left alone would reopen the operator's break-glass door; grant admin to a third (proposed and "
                    "confirmed) first"
                )
        return [PendingEvent(RoleRevoked(principal=name, role=role, reason=why), project.actor, project.clock())]

    return _access_changed(project.ledger, project.ledger.transact(decide))[0]


# ---------------------------------------------------------------- tokens and enrollment codes


def issue_token(project: Project, principal: str, expires: str | None = None, description: str = "") -> Issued:
    """A new bearer token for a principal that holds a role now; the ledger keeps only its secret's hash. In team
    mode, for another principal than the one acting, an enrollment code instead: single use, valid 24 hours (never
    longer than the token it gives), exchanged by that principal for a token of their own (`redeem`)."""
    from govern.api import duties

    name = access.check_principal_name(principal)
    now = project.clock()
    until = access.expiry(expires, now)
    token = access.new_token(name, until)
    code = access.new_code(name, now, until)
    note = text_argument(description, "--description") if description else ""
    found: dict[str, bool] = {}

    def decide(reader: Reader) -> list[PendingEvent]:
        if not access_reads.holds_any_role(reader, name):
            raise NotFound(f"{name} holds no role: grant one first (govern principals add {name} --role ROLE)")
        for_self = project.actor.authenticated and _is_principal(project.actor, name, {})
        team = duties.team_mode(project, reader)
        if team and not project.actor.authenticated and set(_held(reader, name)) & set(access.PRIVILEGED):
            # a local writer's code for an approver would let them redeem it and approve as that approver
            _refuse_local_privileged(project, _admins(reader), f"issuing a code for {name}, an approver or admin,")
        if not for_self and team:
            fact: Any = EnrollmentCodeIssued(
                principal=name,
                code_id=code.code_id,
                secret_sha256=access.secret_digest(code.secret),
                expires_at=format_timestamp(code.expires_at),
                token_expires_at=_stamp(until),
                description=note,
            )
            found["code"] = True
        else:
            fact = TokenIssued(
                principal=name,
                token_id=token.token_id,
                secret_sha256=access.secret_digest(token.secret),
                expires_at=_stamp(until),
                description=note,
            )
        return [PendingEvent(fact, actor=project.actor, occurred_at=now)]

    event = _access_changed(project.ledger, project.ledger.transact(decide))[0]
    return Issued(None, event, code) if found.get("code") else Issued(token, event)


def redeem(project: Project, code: str, *, through_server: bool = False) -> Issued:
    """Exchange an enrollment code for a token of the code's principal: once, before the code expires, while the
    principal holds a role. Through the server, the code is what authenticates the exchange: the event names the
    principal with the new token, established by the code (`authn.via`), and the server signs it."""
    if access.parse_bearer(code or "") is not None:
        raise InvalidInput("That is a token, not an enrollment code: use it as it is (GOVERN_TOKEN, or sign in)")
    parsed = access.parse_code(code or "")
    refused = InvalidCode(
        "That is not a valid enrollment code: check it was copied whole (gvc_...), or ask an admin for a new one"
    )
    if parsed is None:
        raise refused
    code_id, secret = parsed
    now = project.clock()
    made: dict[str, access.IssuedToken] = {}

    def decide(reader: Reader) -> list[PendingEvent]:
        row = access_reads.enrollment_code(reader, code_id)
        if not access.secret_matches(secret, row.secret_sha256 if row else _NO_DIGEST) or row is None:
            raise refused
        where = f"The enrollment code {code_id}"
        if row.revoked_at is not None:
            raise Unauthenticated(
                f"{where} was revoked at {format_timestamp(row.revoked_at)}: ask an admin for a new one"
            )
        if row.redeemed_seq is not None:
            raise Unauthenticated(
                f"{where} was used already, at {format_timestamp(row.redeemed_at)}: a code is exchanged once. If "
                "you did not use it, tell an admin now (govern tokens revoke the token it gave)"
            )
        if to_utc(row.expires_at) <= now:
            raise Unauthenticated(
                f"{where} expired at {format_timestamp(row.expires_at)} (a code lives 24 hours): ask an admin for "
                "a new one"
            )
        principal = row.principal
        if not access_reads.holds_any_role(reader, principal):
            raise Unauthenticated(f"{where} is for {principal}, who holds no role any more: ask an admin")
        until = to_utc(row.token_expires_at) if row.token_expires_at is not None else None
        token = access.new_token(principal, until)
        made["token"] = token
        who = (
            attribution.Actor(
                f"{principal} (token {token.token_id})",
                attribution.Authn(attribution.SERVER, f"enrollment code {code_id}", principal),
            )
            if through_server
            else project.actor
        )
        fact = TokenIssued(
            principal=principal,
            token_id=token.token_id,
            secret_sha256=access.secret_digest(token.secret),
            expires_at=_stamp(until),
            description=row.description or "",
            code_id=code_id,
        )
        return [PendingEvent(fact, actor=who, occurred_at=now)]

    event = _access_changed(project.ledger, project.ledger.transact(decide))[0]
    return Issued(made["token"], event)


def revoke_token(project: Project, token_id: str, reason: str = "") -> RecordedEvent:
    """A token (or an enrollment code not yet used) may no longer be used, whatever its expiry."""
    why = text_argument(reason, "--reason") if reason else ""
    bearer = access.parse_bearer(token_id) or access.parse_code(token_id)
    if bearer is not None:  # the whole token or code pasted: its id is enough, and its secret is never echoed
        token_id = bearer[0]
    elif not access.TOKEN_ID.match(token_id):
        raise InvalidInput("Give the token's 12-character id (govern tokens list shows them), or the token itself")

    def decide(reader: Reader) -> list[PendingEvent]:
        found: StoredTokenRow | StoredCodeRow | None = access_reads.access_token(reader, token_id)
        if found is None:
            code = access_reads.enrollment_code(reader, token_id)
            if code is not None and code.redeemed_seq is not None:
                raise StateConflict(
                    f"The enrollment code {token_id} was exchanged already, for token {code.token_id}: revoke "
                    "that token"
                )
            found = code
        if found is None:
            raise NotFound(f"No token {token_id!r}: `govern tokens list` shows their ids")
        if found.revoked_at is not None:
            raise StateConflict(f"Token {token_id} was revoked already, at {format_timestamp(found.revoked_at)}")
        fact = TokenRevoked(principal=found.principal, token_id=token_id, reason=why)
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock())]

    return _access_changed(project.ledger, project.ledger.transact(decide))[0]


def link_identity(project: Project, principal: str, identity: str, reason: str = "") -> RecordedEvent:
    """Record that a git identity (`Name <email>`) is `principal`'s: versions it trained in a checkout count as
    the principal's for the four-eyes rule. One principal per identity; a link is never undone (a wrong link
    only makes the rule stricter). Nobody links an identity to themselves."""
    name = access.check_principal_name(principal)
    who = access.check_identity(identity)
    why = text_argument(reason, "--reason") if reason else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        if not access_reads.ever_granted(reader, name):
            raise NotFound(f"No principal {name!r}: add it first (govern principals add {name} --role ROLE)")
        _refuse_self(project.actor, name, _links(reader), "links an identity")
        owner = access_reads.owner_of_identity(reader, who)
        if owner is not None:
            if owner == name:
                raise StateConflict(f"{who} is linked to {name} already")
            raise StateConflict(f"{who} is linked to {owner} already: one identity names one person")
        return [PendingEvent(IdentityLinked(principal=name, identity=who, reason=why), project.actor, project.clock())]

    return project.ledger.transact(decide)[0]


def _access_changed(ledger: LedgerStore, recorded: list[RecordedEvent]) -> list[RecordedEvent]:
    """After a grant, a revocation or a token: this process's token table reads it before the next request."""
    token_table().changed(ledger)
    return recorded


def identities(project: Project) -> list[dict[str, Any]]:
    """Every git identity linked to a principal, oldest first."""
    ledger = project.ledger
    if not ledger.exists():
        return []
    return [asdict(row) for row in access_reads.identities(ledger)]


def roles_at(project: Project, at: datetime | None = None) -> list[dict[str, Any]]:
    """Who held which role at `at` (now by default): the answer to "who could approve on date T", each grant with
    who granted (confirmed) it and who proposed it, with the strength of each identity."""
    from govern.timeparse import not_in_future

    if at is not None:
        not_in_future(at, "--at", "who holds a role later is not known yet")
    ledger = project.ledger
    if not ledger.exists():
        return []
    return _with_shown(access_reads.roles_at(ledger, naive_utc(at or project.clock())))


def _with_shown(rows: Sequence[HeldRoleRow | GrantRow]) -> list[dict[str, Any]]:
    """Each grant as answered: who confirmed and who proposed it shown with their identity's strength, in place
    of the authentication records (JSON text) they are shown from."""
    answered = []
    for row in rows:
        granted = attribution.shown(row.granted_by, row.granted_authn)
        proposed = attribution.shown(row.proposed_by, row.proposed_authn) if row.proposed_by else None
        answer = asdict(replace(row, granted_by_shown=granted, proposed_by_shown=proposed))
        del answer["granted_authn"], answer["proposed_authn"]
        answered.append(answer)
    return answered


def tokens(project: Project, principal: str | None = None) -> list[dict[str, Any]]:
    """Every token ever issued (never its secret), with whether it is active, expired or revoked now and who
    handed it to its principal (`issuer`: the admin who issued the code it was exchanged for); then every
    enrollment code, waiting, redeemed, expired or revoked (`kind` tells them apart)."""
    ledger = project.ledger
    if not ledger.exists():
        return []
    now = naive_utc(project.clock())
    rows = []
    for row in access_reads.tokens(ledger, principal):
        expired = row.expires_at is not None and row.expires_at <= now
        state = "revoked" if row.revoked_at is not None else "expired" if expired else "active"
        rows.append({**asdict(row), "state": state, "kind": "token"})
    return rows + codes(project, principal)


def codes(project: Project, principal: str | None = None) -> list[dict[str, Any]]:
    """Every enrollment code (never its secret) and its state now: waiting, redeemed, expired or revoked."""
    ledger = project.ledger
    if not ledger.exists():
        return []
    now = naive_utc(project.clock())
    rows = []
    for row in access_reads.codes(ledger, principal):
        state = (
            "redeemed"
            if row.redeemed_at is not None
            else "revoked"
            if row.revoked_at is not None
            else "expired"
            if row.expires_at <= now
            else "waiting"
        )
        rows.append(
            {
                "token_id": row.code_id,
                "principal": row.principal,
                "issued_at": row.issued_at,
                "issued_by": row.issued_by,
                "expires_at": row.expires_at,
                "description": row.description,
                "revoked_at": row.revoked_at,
                "revoked_by": row.revoked_by,
                "code_id": row.code_id,
                "issuer": row.issued_by,
                "state": state,
                "kind": "enrollment code",
                "redeemed_at": row.redeemed_at,
                "redeemed_token": row.redeemed_token,
                "token_expires_at": row.token_expires_at,
            }
        )
    return rows


def grant_history(project: Project, principal: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Role grants over time, newest first: each grant with when and by whom it ended (revoked, or replaced by
    a grant of the same role with other apps), who proposed and who confirmed it; at most `limit` of them."""
    if principal is not None:
        access.check_principal_name(principal)
    ledger = project.ledger
    if not ledger.exists():
        return []
    return _with_shown(access_reads.grant_history(ledger, principal, limit))
