"""The auditor's questions: production windows, the event log, the chain's integrity and its anchors, SQL and the
reviewed named queries."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from govern.api import audit as audit_api
from govern.api import integrity
from govern.presentation import jsonable
from govern.server.deps import Caller, authorised, instant
from govern.server.http import API
from govern.server.models import (
    AnchorTag,
    Event,
    NamedQuery,
    QueryAnswer,
    QueryRun,
    SqlRequest,
    Verification,
    Window,
    answered_as,
)

router = APIRouter()
# Documented, not sent through the model: a row's values are any JSON, which the model's serialisation would write
# otherwise than the answer always has (a NaN as null, where the answer refuses it)
ANSWERED_AS_QUERY = answered_as(QueryAnswer)


@router.get(f"{API}/windows", operation_id="windows", responses=answered_as(list[Window]))
def windows(
    caller: Annotated[Caller, authorised("windows", hold="read")],
    app_name: Annotated[str | None, Query(alias="app")] = None,
    model: str | None = None,
) -> Any:
    return jsonable(audit_api.window_records(caller.project, app=app_name, model=model))


@router.get(f"{API}/events", operation_id="events", responses=answered_as(list[Event]))
def events(
    caller: Annotated[Caller, authorised("events", hold="read")],
    event_type: Annotated[list[str] | None, Query(alias="type")] = None,
    since: Annotated[str | None, Query(description="ISO 8601 with Z or an offset")] = None,
    limit: Annotated[int | None, Query(ge=0, description="Only the newest N; default every event")] = None,
) -> Any:
    found = audit_api.audit_log(caller.project, types=event_type or (), since=instant(since, "since"), limit=limit)
    return [event.to_dict() for event in found]


@router.get(f"{API}/verify", operation_id="verify", responses=answered_as(Verification))
def verify(caller: Annotated[Caller, authorised("verify")]) -> Any:
    return jsonable(integrity.verify(caller.project).to_dict())


@router.post(f"{API}/sql", operation_id="sql", responses=ANSWERED_AS_QUERY)
def sql(body: SqlRequest, caller: Annotated[Caller, authorised("sql")]) -> Any:
    found = audit_api.sql(caller.project, body.statement, body.params)
    return jsonable({"columns": found.columns, "rows": found.records()})


@router.get(
    f"{API}/queries", operation_id="named_queries", response_model=list[NamedQuery], response_class=JSONResponse
)
def named_queries(caller: Annotated[Caller, authorised("named_queries", hold="read")]) -> Any:
    return [{"name": name, "description": text} for name, text in audit_api.named_queries(caller.project).items()]


@router.post(f"{API}/queries/{{name}}", operation_id="run_query", responses=ANSWERED_AS_QUERY)
def run_query(name: str, body: QueryRun, caller: Annotated[Caller, authorised("run_query")]) -> Any:
    found = audit_api.run_named(caller.project, name, body.params)
    return jsonable({"columns": found.columns, "rows": found.records()})


@router.get(f"{API}/anchors", operation_id="anchors", response_model=list[AnchorTag], response_class=JSONResponse)
def anchors(caller: Annotated[Caller, authorised("anchors", hold="read")]) -> Any:
    return [{"tag": a.tag, "seq": a.seq, "hash": a.hash} for a in integrity.anchors(caller.project.root)]


@router.post(f"{API}/anchors", operation_id="anchor", status_code=201, responses=answered_as(Event, 201))
def anchor(caller: Annotated[Caller, authorised("anchor", writes=True)]) -> Any:
    return integrity.anchor(caller.project).to_dict()
