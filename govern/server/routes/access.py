"""Who may do what: principals and their roles, git identities, tokens, grant history, proposals of grants (an
admin's second pair of eyes), and the redemption of an enrollment code (no bearer token: the code is one)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam

from govern import access
from govern.api import access as access_api
from govern.api import authentication
from govern.presentation import jsonable
from govern.server.deps import Root, State, authorised, instant, ledger
from govern.server.http import API, PROBLEMS, problem
from govern.server.models import (
    CodeRedemption,
    GrantRequest,
    IdentityLink,
    ProposalDecision,
    ProposalDecline,
    TokenRequest,
)

router = APIRouter()
Proposal = Annotated[int, PathParam(ge=1, le=2**62)]


@router.get(f"{API}/principals", operation_id="principals")
def principals(
    principal: Annotated[access.Principal, authorised("principals", hold="read")], root: Root, at: str | None = None
) -> Any:
    return jsonable(access_api.roles_at(ledger(root), instant(at, "at")))


@router.post(f"{API}/principals", operation_id="grant", status_code=201)
def grant(
    body: GrantRequest, principal: Annotated[access.Principal, authorised("grant", hold="write")], root: Root
) -> Any:
    event = access_api.grant(body.principal, body.role, body.apps, body.reason, root, principal.actor)
    return jsonable(event.to_dict())


@router.delete(f"{API}/principals/{{name}}/roles/{{role}}", operation_id="revoke")
def revoke(
    name: str,
    role: str,
    principal: Annotated[access.Principal, authorised("revoke", hold="write")],
    root: Root,
    reason: Annotated[str, Query(max_length=2000)] = "",
) -> Any:
    return jsonable(access_api.revoke(name, role, reason, root, principal.actor).to_dict())


@router.post(f"{API}/principals/{{name}}/identities", operation_id="link_identity", status_code=201)
def link_identity(
    name: str,
    body: IdentityLink,
    principal: Annotated[access.Principal, authorised("link_identity", hold="write")],
    root: Root,
) -> Any:
    return jsonable(access_api.link_identity(name, body.identity, body.reason, root, principal.actor).to_dict())


@router.get(f"{API}/identities", operation_id="identities")
def identities(principal: Annotated[access.Principal, authorised("identities", hold="read")], root: Root) -> Any:
    return jsonable(access_api.identities(ledger(root)))


@router.get(f"{API}/tokens", operation_id="tokens")
def tokens(
    principal: Annotated[access.Principal, authorised("tokens", hold="read")],
    root: Root,
    of: Annotated[str | None, Query(alias="principal")] = None,
) -> Any:
    return jsonable(access_api.tokens(ledger(root), of))


@router.post(f"{API}/principals/{{name}}/tokens", operation_id="issue_token", status_code=201)
def issue_token(
    name: str,
    body: TokenRequest,
    principal: Annotated[access.Principal, authorised("issue_token", hold="write")],
    root: Root,
) -> Any:
    issued = access_api.issue_token(name, body.expires, body.description, root, principal.actor)
    return jsonable({**issued.to_dict(), "event": issued.event.to_dict()})


@router.delete(f"{API}/tokens/{{token_id}}", operation_id="revoke_token")
def revoke_token(
    token_id: str,
    principal: Annotated[access.Principal, authorised("revoke_token", hold="write")],
    root: Root,
    reason: Annotated[str, Query(max_length=2000)] = "",
) -> Any:
    return jsonable(access_api.revoke_token(token_id, reason, root, principal.actor).to_dict())


@router.get(f"{API}/grants", operation_id="grant_history")
def grant_history(
    principal: Annotated[access.Principal, authorised("grant_history", hold="read")],
    root: Root,
    of: Annotated[str | None, Query(alias="principal", max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Any:
    return jsonable(access_api.grant_history(ledger(root), of, limit))


@router.get(f"{API}/grant-proposals", operation_id="grant_proposals")
def grant_proposals(
    principal: Annotated[access.Principal, authorised("grant_proposals", hold="read")],
    root: Root,
    state: Annotated[str, Query(description="pending, confirmed, declined, withdrawn or all")] = "pending",
) -> Any:
    return jsonable(access_api.proposals(ledger(root), None if state == "all" else state))


@router.post(f"{API}/grant-proposals/{{proposal}}/confirmation", operation_id="confirm_grant", status_code=201)
def confirm_grant(
    proposal: Proposal,
    body: ProposalDecision,
    principal: Annotated[access.Principal, authorised("confirm_grant", hold="write")],
    root: Root,
) -> Any:
    return jsonable(access_api.confirm_grant(proposal, body.reason, root, principal.actor).to_dict())


@router.post(f"{API}/grant-proposals/{{proposal}}/decline", operation_id="decline_grant", status_code=201)
def decline_grant(
    proposal: Proposal,
    body: ProposalDecline,
    principal: Annotated[access.Principal, authorised("decline_grant", hold="write")],
    root: Root,
) -> Any:
    return jsonable(access_api.decline_grant(proposal, body.reason, root, principal.actor).to_dict())


@router.post(f"{API}/grant-proposals/{{proposal}}/withdrawal", operation_id="withdraw_grant", status_code=201)
def withdraw_grant(
    proposal: Proposal,
    body: ProposalDecision,
    principal: Annotated[access.Principal, authorised("withdraw_grant", hold="write")],
    root: Root,
) -> Any:
    return jsonable(access_api.withdraw_grant(proposal, body.reason, root, principal.actor).to_dict())


@router.post(
    f"{API}/enrollment-codes/redemptions",
    operation_id="redeem_code",
    status_code=201,
    responses={429: {**PROBLEMS[400], "description": "Too Many Requests (with Retry-After)"}},
)
def redeem_code(request: Request, body: CodeRedemption, server: State) -> Any:
    """No bearer token: the enrollment code authenticates the call, and is spent by it."""
    from govern.throttle import TooManyAttempts

    try:
        issued = server.redemptions.run(
            request.client.host if request.client else "unknown",
            "redeem an enrollment code",
            lambda: access_api.redeem(body.code, server.root, through_server=True),
            authentication.REDEMPTION_REFUSALS,
        )
    except TooManyAttempts as error:
        refused = problem(429, "too-many-requests", str(error), request.url.path)
        refused.headers["Retry-After"] = str(error.retry_after)
        return refused
    return jsonable({**issued.to_dict(), "event": issued.event.to_dict()})
