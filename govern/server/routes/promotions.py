"""Promotions: requests for one, their approval or rejection (four eyes), and a direct promotion."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from govern.api import approvals, lifecycle
from govern.presentation import jsonable
from govern.server.deps import Caller, authorised
from govern.server.http import API
from govern.server.models import (
    Decision,
    DirectPromotion,
    Event,
    Outcome,
    PromotionRequest,
    PromotionRequestState,
    Requested,
    answered_as,
)

router = APIRouter()


@router.get(f"{API}/promotion-requests", operation_id="requests", responses=answered_as(list[PromotionRequestState]))
def promotion_requests(
    caller: Annotated[Caller, authorised("requests", hold="read")],
    state: Annotated[str, Query(description="pending, approved, rejected or all")] = "pending",
    model: str | None = None,
) -> Any:
    return jsonable(approvals.requests(caller.project, None if state == "all" else state, model))


@router.post(
    f"{API}/promotion-requests",
    operation_id="request_promotion",
    status_code=201,
    responses=answered_as(Requested, 201),
)
def request_promotion(
    body: PromotionRequest,
    caller: Annotated[Caller, authorised("request_promotion", hold="write")],
) -> Any:
    requested = approvals.request_promotion(
        caller.project, body.model, body.version, body.to_stage, body.reason, force=body.force
    )
    return requested.to_dict()


@router.post(
    f"{API}/promotion-requests/{{request}}/approval",
    operation_id="approve",
    status_code=201,
    responses=answered_as(Outcome, 201),
)
def approve(
    request: Annotated[int, PathParam(ge=1, le=2**62)],
    body: Decision,
    caller: Annotated[Caller, authorised("approve", hold="write")],
) -> Any:
    return approvals.approve(caller.project, request, body.reason).to_dict()


@router.post(
    f"{API}/promotion-requests/{{request}}/rejection",
    operation_id="reject",
    status_code=201,
    responses=answered_as(Event, 201),
)
def reject(
    request: Annotated[int, PathParam(ge=1, le=2**62)],
    body: Decision,
    caller: Annotated[Caller, authorised("reject", hold="write")],
) -> Any:
    own_only = not caller.principal.has("approver")
    event = approvals.reject(caller.project, request, body.reason, requester_only=own_only)
    return event.to_dict()


@router.post(f"{API}/promotions", operation_id="promote", status_code=201, responses=answered_as(Outcome, 201))
def promote(body: DirectPromotion, caller: Annotated[Caller, authorised("promote", hold="write")]) -> Any:
    outcome = lifecycle.promote(caller.project, body.model, body.version, body.to_stage, body.reason, force=body.force)
    return outcome.to_dict()
