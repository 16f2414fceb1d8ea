"""A model's versions: their history, their lineage report, their deprecation."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from govern.api import audit as audit_api
from govern.api import lifecycle
from govern.server.deps import Caller, authorised
from govern.server.http import API
from govern.server.models import Deprecation, Event, LineageReport, Outcome, answered_as

REPORT_TYPES = {"html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8", "json": "application/json"}
REPORT_CONTENT = {  # the report in each format, as the OpenAPI document describes it
    REPORT_TYPES["html"]: {"schema": {"type": "string", "description": "An HTML page"}},
    REPORT_TYPES["md"]: {"schema": {"type": "string", "description": "Markdown"}},
    REPORT_TYPES["json"]: {},  # the model's schema (`LineageReport`)
}

router = APIRouter()


@router.get(f"{API}/models/{{model}}/history", operation_id="history", responses=answered_as(list[Event]))
def history(
    model: str,
    caller: Annotated[Caller, authorised("history", hold="read")],
    version: str | None = None,
) -> Any:
    return [event.to_dict() for event in audit_api.history(caller.project, model, version)]


@router.get(
    f"{API}/models/{{model}}/versions/{{version}}/report",
    operation_id="report",
    response_class=Response,
    responses={200: {"model": LineageReport, "content": REPORT_CONTENT, "description": "The report"}},
)
def report(
    model: str,
    version: str,
    caller: Annotated[Caller, authorised("report")],
    format: Annotated[str, Query(pattern="^(html|md|json)$")] = "html",
    verify_chain: bool = False,
) -> Response:
    from govern.api.report import gather
    from govern.report import content_security_policy, render

    text = render(gather(caller.project, model, version, verify_chain=verify_chain), format)
    policy = {"Content-Security-Policy": content_security_policy(text)} if format == "html" else None
    return Response(text, media_type=REPORT_TYPES[format], headers=policy)


@router.post(
    f"{API}/models/{{model}}/versions/{{version}}/deprecation",
    operation_id="deprecate",
    status_code=201,
    responses=answered_as(Outcome, 201),
)
def deprecate(
    model: str,
    version: str,
    body: Deprecation,
    caller: Annotated[Caller, authorised("deprecate", hold="write")],
) -> Any:
    outcome = lifecycle.deprecate(caller.project, model, version, body.reason, force=body.force)
    return outcome.to_dict()
