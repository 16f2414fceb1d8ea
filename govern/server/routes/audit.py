"""The auditor's questions: production windows, the event log, the chain's integrity and its anchors, SQL and the
reviewed named queries."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from govern import access
from govern.api import audit as audit_api
from govern.api import integrity
from govern.presentation import jsonable
from govern.server.deps import Root, authorised, instant
from govern.server.http import API
from govern.server.models import AnchorTag, NamedQuery, QueryAnswer, QueryRun, SqlRequest

router = APIRouter()
# Documented, not sent through the model: a row's values are any JSON, which the model's serialisation would write
# otherwise than the answer always has (a NaN as null, where the answer refuses it)
ANSWERED_AS_QUERY: dict[int | str, dict[str, Any]] = {200: {"model": QueryAnswer, "description": "Successful Response"}}


@router.get(f"{API}/windows", operation_id="windows")
def windows(
    principal: Annotated[access.Principal, authorised("windows", hold="read")],
    root: Root,
    app_name: Annotated[str | None, Query(alias="app")] = None,
    model: str | None = None,
) -> Any:
    return jsonable(audit_api.window_records(app=app_name, model=model, start=root))


@router.get(f"{API}/events", operation_id="events")
def events(
    principal: Annotated[access.Principal, authorised("events", hold="read")],
    root: Root,
    event_type: Annotated[list[str] | None, Query(alias="type")] = None,
    since: Annotated[str | None, Query(description="ISO 8601 with Z or an offset")] = None,
    limit: Annotated[int | None, Query(ge=0, description="Only the newest N; default every event")] = None,
) -> Any:
    found = audit_api.audit_log(types=event_type or (), since=instant(since, "since"), limit=limit, start=root)
    return jsonable([event.to_dict() for event in found])


@router.get(f"{API}/verify", operation_id="verify")
def verify(principal: Annotated[access.Principal, authorised("verify")], root: Root) -> Any:
    return jsonable(integrity.verify(root).to_dict())


@router.post(f"{API}/sql", operation_id="sql", responses=ANSWERED_AS_QUERY)
def sql(body: SqlRequest, principal: Annotated[access.Principal, authorised("sql")], root: Root) -> Any:
    found = audit_api.sql(body.statement, body.params, root)
    return jsonable({"columns": found.columns, "rows": found.records()})


@router.get(
    f"{API}/queries", operation_id="named_queries", response_model=list[NamedQuery], response_class=JSONResponse
)
def named_queries(principal: Annotated[access.Principal, authorised("named_queries", hold="read")], root: Root) -> Any:
    return [{"name": name, "description": text} for name, text in audit_api.named_queries(root).items()]


@router.post(f"{API}/queries/{{name}}", operation_id="run_query", responses=ANSWERED_AS_QUERY)
def run_query(
    name: str, body: QueryRun, principal: Annotated[access.Principal, authorised("run_query")], root: Root
) -> Any:
    found = audit_api.run_named(name, body.params, root)
    return jsonable({"columns": found.columns, "rows": found.records()})


@router.get(f"{API}/anchors", operation_id="anchors", response_model=list[AnchorTag], response_class=JSONResponse)
def anchors(principal: Annotated[access.Principal, authorised("anchors", hold="read")], root: Root) -> Any:
    return [{"tag": a.tag, "seq": a.seq, "hash": a.hash} for a in integrity.anchors(root)]


@router.post(f"{API}/anchors", operation_id="anchor", status_code=201)
def anchor(principal: Annotated[access.Principal, authorised("anchor")], root: Root) -> Any:
    from govern.api.context import open_project

    return jsonable(integrity.anchor(project=open_project(root, principal.actor)).to_dict())
