"""An app's questions: which version served it when, and its inference records (a consumer's own apps only)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from govern.api import audit as audit_api
from govern.errors import NotFound
from govern.presentation import jsonable
from govern.server.deps import Caller, authorised, instant, scoped
from govern.server.http import API
from govern.server.models import Inference, Production, answered_as

router = APIRouter()


@router.get(f"{API}/apps/{{app}}/production", operation_id="production", responses=answered_as(Production))
def production(
    app_name: Annotated[str, PathParam(alias="app")],
    caller: Annotated[Caller, authorised("production", hold="read")],
    env: str = "production",
    at: Annotated[str | None, Query(description="ISO 8601 with Z or an offset; default now")] = None,
) -> Any:
    limited = scoped(caller.principal, "production", app_name)
    project = caller.project
    try:
        return jsonable(audit_api.production_answer(project, app_name, env, instant(at, "at") or project.clock()))
    except NotFound:
        if not limited:
            raise
        raise NotFound(f"Nothing is recorded for {app_name}/{env}") from None  # no other apps' names


@router.get(f"{API}/apps/{{app}}/inferences", operation_id="inferences", responses=answered_as(list[Inference]))
def inferences(
    app_name: Annotated[str, PathParam(alias="app")],
    caller: Annotated[Caller, authorised("inferences", hold="read")],
    env: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="The newest N records; default 50")] = 50,
) -> Any:
    """The app's inference records, newest first: a consumer's own batches, or every batch for an auditor."""
    from govern.api.predict import inferences as records

    limited = scoped(caller.principal, "inferences", app_name)
    mine = caller.principal.name if limited else None
    return jsonable(records(caller.project, app_name, principal=mine, env=env, limit=limit))
