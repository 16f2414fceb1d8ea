"""Production windows opened and closed: deployments and retirements."""

from typing import Annotated, Any

from fastapi import APIRouter

from govern.api import lifecycle
from govern.server.deps import Caller, authorised, instant
from govern.server.http import API
from govern.server.models import DeploymentRequest, Outcome, RetirementRequest, answered_as

router = APIRouter()


@router.post(f"{API}/deployments", operation_id="deploy", status_code=201, responses=answered_as(Outcome, 201))
def deploy(body: DeploymentRequest, caller: Annotated[Caller, authorised("deploy", hold="write")]) -> Any:
    outcome = lifecycle.deploy(
        caller.project,
        body.model,
        body.version,
        app=body.app,
        env=body.env,
        at=instant(body.at, "at"),
    )
    return outcome.to_dict()


@router.post(f"{API}/retirements", operation_id="retire", status_code=201, responses=answered_as(Outcome, 201))
def retire(body: RetirementRequest, caller: Annotated[Caller, authorised("retire", hold="write")]) -> Any:
    at = instant(body.at, "at")
    outcome = lifecycle.retire(caller.project, app=body.app, env=body.env, at=at)
    return outcome.to_dict()
