"""Who may do what: principals and their roles, git identities, tokens, grant history, proposals of grants (an
admin's second pair of eyes), and the redemption of an enrollment code (no bearer token: the code is one)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam

from govern.api import access as access_api
from govern.api import authentication
from govern.presentation import jsonable
from govern.server.deps import Caller, State, authorised, instant
from govern.server.http import API, PROBLEMS, problem
from govern.server.models import (
    CodeRedemption,
    Event,
    Grant,
    GrantProposal,
    GrantRecord,
    GrantRequest,
    Identity,
    IdentityLink,
    Issued,
    IssuedToken,
    ProposalDecision,
    ProposalDecline,
    TokenOrCode,
    TokenRequest,
    answered_as,
)

router = APIRouter()
Proposal = Annotated[int, PathParam(ge=1, le=2**62)]


@router.get(f"{API}/principals", operation_id="principals", responses=answered_as(list[Grant]))
def principals(caller: Annotated[Caller, authorised("principals", hold="read")], at: str | None = None) -> Any:
    return jsonable(access_api.roles_at(caller.project, instant(at, "at")))


@router.post(f"{API}/principals", operation_id="grant", status_code=201, responses=answered_as(Event, 201))
def grant(body: GrantRequest, caller: Annotated[Caller, authorised("grant", hold="write")]) -> Any:
    event = access_api.grant(caller.project, body.principal, body.role, body.apps, body.reason)
    return event.to_dict()


@router.delete(f"{API}/principals/{{name}}/roles/{{role}}", operation_id="revoke", responses=answered_as(Event))
def revoke(
    name: str,
    role: str,
    caller: Annotated[Caller, authorised("revoke", hold="write")],
    reason: Annotated[str, Query(max_length=2000)] = "",
) -> Any:
    return access_api.revoke(caller.project, name, role, reason).to_dict()


@router.post(
    f"{API}/principals/{{name}}/identities",
    operation_id="link_identity",
    status_code=201,
    responses=answered_as(Event, 201),
)
def link_identity(
    name: str,
    body: IdentityLink,
    caller: Annotated[Caller, authorised("link_identity", hold="write")],
) -> Any:
    return access_api.link_identity(caller.project, name, body.identity, body.reason).to_dict()


@router.get(f"{API}/identities", operation_id="identities", responses=answered_as(list[Identity]))
def identities(caller: Annotated[Caller, authorised("identities", hold="read")]) -> Any:
    return jsonable(access_api.identities(caller.project))


@router.get(f"{API}/tokens", operation_id="tokens", responses=answered_as(list[TokenOrCode]))
def tokens(
    caller: Annotated[Caller, authorised("tokens", hold="read")],
    of: Annotated[str | None, Query(alias="principal")] = None,
) -> Any:
    return jsonable(access_api.tokens(caller.project, of))


@router.post(
    f"{API}/principals/{{name}}/tokens", operation_id="issue_token", status_code=201, responses=answered_as(Issued, 201)
)
def issue_token(
    name: str,
    body: TokenRequest,
    caller: Annotated[Caller, authorised("issue_token", hold="write")],
) -> Any:
    issued = access_api.issue_token(caller.project, name, body.expires, body.description)
    return jsonable({**issued.to_dict(), "event": issued.event.to_dict()})


@router.delete(f"{API}/tokens/{{token_id}}", operation_id="revoke_token", responses=answered_as(Event))
def revoke_token(
    token_id: str,
    caller: Annotated[Caller, authorised("revoke_token", hold="write")],
    reason: Annotated[str, Query(max_length=2000)] = "",
) -> Any:
    return access_api.revoke_token(caller.project, token_id, reason).to_dict()


@router.get(f"{API}/grants", operation_id="grant_history", responses=answered_as(list[GrantRecord]))
def grant_history(
    caller: Annotated[Caller, authorised("grant_history", hold="read")],
    of: Annotated[str | None, Query(alias="principal", max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Any:
    return jsonable(access_api.grant_history(caller.project, of, limit))


@router.get(f"{API}/grant-proposals", operation_id="grant_proposals", responses=answered_as(list[GrantProposal]))
def grant_proposals(
    caller: Annotated[Caller, authorised("grant_proposals", hold="read")],
    state: Annotated[str, Query(description="pending, confirmed, declined, withdrawn or all")] = "pending",
) -> Any:
    return jsonable(access_api.proposals(caller.project, None if state == "all" else state))


@router.post(
    f"{API}/grant-proposals/{{proposal}}/confirmation",
    operation_id="confirm_grant",
    status_code=201,
    responses=answered_as(Event, 201),
)
def confirm_grant(
    proposal: Proposal,
    body: ProposalDecision,
    caller: Annotated[Caller, authorised("confirm_grant", hold="write")],
) -> Any:
    return access_api.confirm_grant(caller.project, proposal, body.reason).to_dict()


@router.post(
    f"{API}/grant-proposals/{{proposal}}/decline",
    operation_id="decline_grant",
    status_code=201,
    responses=answered_as(Event, 201),
)
def decline_grant(
    proposal: Proposal,
    body: ProposalDecline,
    caller: Annotated[Caller, authorised("decline_grant", hold="write")],
) -> Any:
    return access_api.decline_grant(caller.project, proposal, body.reason).to_dict()


@router.post(
    f"{API}/grant-proposals/{{proposal}}/withdrawal",
    operation_id="withdraw_grant",
    status_code=201,
    responses=answered_as(Event, 201),
)
def withdraw_grant(
    proposal: Proposal,
    body: ProposalDecision,
    caller: Annotated[Caller, authorised("withdraw_grant", hold="write")],
) -> Any:
    return access_api.withdraw_grant(caller.project, proposal, body.reason).to_dict()


@router.post(
    f"{API}/enrollment-codes/redemptions",
    operation_id="redeem_code",
    status_code=201,
    responses={
        **answered_as(IssuedToken, 201),
        429: {**PROBLEMS[400], "description": "Too Many Requests (with Retry-After)"},
    },
)
def redeem_code(request: Request, body: CodeRedemption, server: State) -> Any:
    """No bearer token: the enrollment code authenticates the call, and is spent by it."""
    from govern.throttle import TooManyAttempts

    try:
        issued = server.redemptions.run(
            request.client.host if request.client else "unknown",
            "redeem an enrollment code",
            lambda: access_api.redeem(server.project(writing=True), body.code, through_server=True),
            authentication.REDEMPTION_REFUSALS,
        )
    except TooManyAttempts as error:
        refused = problem(429, "too-many-requests", str(error), request.url.path)
        refused.headers["Retry-After"] = str(error.retry_after)
        return refused
    return jsonable({**issued.to_dict(), "event": issued.event.to_dict()})
