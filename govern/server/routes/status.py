"""Who is asking, and the project's status."""

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from govern.presentation import jsonable
from govern.server.deps import Caller, authorised
from govern.server.http import API
from govern.server.models import Status, WhoAmI, answered_as

router = APIRouter()


@router.get(f"{API}/whoami", operation_id="whoami", response_model=WhoAmI, response_class=JSONResponse)
async def whoami(caller: Annotated[Caller, authorised("whoami")]) -> dict[str, Any]:
    """The principal as the door authenticated it: no ledger, no worker thread."""
    principal = caller.principal
    return {"principal": principal.name, "roles": principal.roles, "token_id": principal.token_id}


@router.get(f"{API}/status", operation_id="status", responses=answered_as(Status))
def status(caller: Annotated[Caller, authorised("status")]) -> Any:
    from govern.api import status as status_api

    return jsonable(status_api.status(caller.project))
