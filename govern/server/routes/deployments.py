"""Production windows opened and closed: deployments and retirements."""

from typing import Annotated, Any

from fastapi import APIRouter

from govern import access
from govern.api import lifecycle
from govern.presentation import jsonable
from govern.server.deps import Root, authorised, instant
from govern.server.http import API
from govern.server.models import DeploymentRequest, RetirementRequest

router = APIRouter()


@router.post(f"{API}/deployments", operation_id="deploy", status_code=201)
def deploy(
    body: DeploymentRequest, principal: Annotated[access.Principal, authorised("deploy", hold="write")], root: Root
) -> Any:
    outcome = lifecycle.deploy(
        body.model,
        body.version,
        app=body.app,
        env=body.env,
        at=instant(body.at, "at"),
        start=root,
        actor=principal.actor,
    )
    return jsonable(outcome.to_dict())


@router.post(f"{API}/retirements", operation_id="retire", status_code=201)
def retire(
    body: RetirementRequest, principal: Annotated[access.Principal, authorised("retire", hold="write")], root: Root
) -> Any:
    at = instant(body.at, "at")
    outcome = lifecycle.retire(app=body.app, env=body.env, at=at, start=root, actor=principal.actor)
    return jsonable(outcome.to_dict())
