"""A verifier's verdict about a training's reproduction (`govern ci verify` posting to the server)."""

from typing import Annotated, Any

from fastapi import APIRouter

from govern.presentation import jsonable
from govern.server.deps import Caller, authorised
from govern.server.http import API
from govern.server.models import ReproductionRecorded, VerdictUpload, answered_as

router = APIRouter()


@router.post(
    f"{API}/reproductions",
    operation_id="record_reproduction",
    status_code=201,
    responses=answered_as(ReproductionRecorded, 201),
)
def record_reproduction(
    body: VerdictUpload, caller: Annotated[Caller, authorised("record_reproduction", writes=True)]
) -> Any:
    from govern.api import ci

    verdict = ci.record_uploaded(caller.project, body.type, body.payload)
    return jsonable({"verdict": verdict.to_dict(), "event": verdict.event.to_dict()})
