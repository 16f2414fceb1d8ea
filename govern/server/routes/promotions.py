"""Promotions: requests for one, their approval or rejection (four eyes), and a direct promotion."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from govern import access
from govern.api import approvals, lifecycle
from govern.presentation import jsonable
from govern.server.deps import Root, authorised, ledger
from govern.server.http import API
from govern.server.models import Decision, DirectPromotion, PromotionRequest

router = APIRouter()


@router.get(f"{API}/promotion-requests", operation_id="requests")
def promotion_requests(
    principal: Annotated[access.Principal, authorised("requests", hold="read")],
    root: Root,
    state: Annotated[str, Query(description="pending, approved, rejected or all")] = "pending",
    model: str | None = None,
) -> Any:
    return jsonable(approvals.requests(ledger(root), None if state == "all" else state, model))


@router.post(f"{API}/promotion-requests", operation_id="request_promotion", status_code=201)
def request_promotion(
    body: PromotionRequest,
    principal: Annotated[access.Principal, authorised("request_promotion", hold="write")],
    root: Root,
) -> Any:
    requested = approvals.request_promotion(
        body.model, body.version, body.to_stage, body.reason, root, principal.actor, force=body.force
    )
    return jsonable(requested.to_dict())


@router.post(f"{API}/promotion-requests/{{request}}/approval", operation_id="approve", status_code=201)
def approve(
    request: Annotated[int, PathParam(ge=1, le=2**62)],
    body: Decision,
    principal: Annotated[access.Principal, authorised("approve", hold="write")],
    root: Root,
) -> Any:
    return jsonable(approvals.approve(request, body.reason, root, principal.actor).to_dict())


@router.post(f"{API}/promotion-requests/{{request}}/rejection", operation_id="reject", status_code=201)
def reject(
    request: Annotated[int, PathParam(ge=1, le=2**62)],
    body: Decision,
    principal: Annotated[access.Principal, authorised("reject", hold="write")],
    root: Root,
) -> Any:
    own_only = not principal.has("approver")
    event = approvals.reject(request, body.reason, root, principal.actor, requester_only=own_only)
    return jsonable(event.to_dict())


@router.post(f"{API}/promotions", operation_id="promote", status_code=201)
def promote(
    body: DirectPromotion, principal: Annotated[access.Principal, authorised("promote", hold="write")], root: Root
) -> Any:
    outcome = lifecycle.promote(
        body.model, body.version, body.to_stage, body.reason, force=body.force, start=root, actor=principal.actor
    )
    return jsonable(outcome.to_dict())
