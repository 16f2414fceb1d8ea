"""The auditor's pages: who served what and when, the event log, the ledger's integrity, lineage reports, and who
held which role when. Read-only: the auditor writes nothing, and these pages have no form that writes.

Every page calls the use case the API calls for the same question (`govern.api.audit`, `integrity`, `access`,
`report`) and shows a bounded answer: the newest windows of one app/env, the newest events of a filter, paged by
seq, never a loop over the ledger in Python.
"""

import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from govern.errors import GovernError, InvalidInput, status_of
from govern.httpkit import DOCUMENT_CSP
from govern.web.pages import Link, Signed, Web

if TYPE_CHECKING:
    from govern.readmodel.deployments import WindowRow

NAV: list[Link] = [
    Link("Timeline", "/audit/timeline", "windows"),
    # The point-in-time question is `production`'s, which a consumer may ask of its own apps on its own page; here
    # it is asked of any app, beside the timeline, so it is offered to those who may read every window.
    Link("Point in time", "/audit/production", "windows"),
    Link("Event log", "/audit/events", "events"),
    Link("Integrity", "/audit/integrity", "anchors"),
    Link("Reports", "/audit/reports", "report"),
    Link("Role history", "/audit/principals", "principals"),
]

TIMELINE_WINDOWS = 40  # windows one timeline shows; older ones a page further
EVENTS_SHOWN = 50  # the event log's default page
PAYLOAD_SHOWN = 4000  # characters of a payload shown in the log (the JSON report and `audit log --json` have all)
GRANTS_SHOWN = 200
REPORT_TYPES = {"html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8", "json": "application/json"}
PALETTE = ("#0b5cad", "#5b3a9e")  # adjacent versions alternate; the open window is green (--ok)
OPEN_COLOUR = "#16652d"


def routes(web: Web) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    for pages in (_timeline, _production, _events, _integrity, _reports, _principals):
        pages(router, web)  # in this order: the order the application tries them
    return router


def _timeline(router: APIRouter, web: Web) -> None:
    """The production timeline of one app/env, and one window of it."""
    from govern.api import audit as audit_api

    @router.get("/audit/timeline")
    def timeline(
        request: Request,
        signed: Annotated[Signed, web.page("windows")],
        app: str | None = None,
        env: str | None = None,
        before: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        project = signed.project()
        known = audit_api.slots(project)
        if not app and known:
            app, env = known[0]
        env = env or (audit_api.environments(project) or ["production"])[0]
        found: list[WindowRow] = []
        if app:
            found = audit_api.slot_windows(project, app, env, limit=TIMELINE_WINDOWS, before=before)
        return web.render(
            request,
            "auditor_timeline.html.j2",
            signed,
            title="Production timeline",
            slots=known,
            apps=sorted({a for a, _ in known}),
            envs=_envs(audit_api.environments(project), known),
            app=app,
            env=env,
            windows=found,
            chart=_chart(found),
            older=found[-1].start_seq if len(found) == TIMELINE_WINDOWS else None,
            before=before,
        )

    @router.get("/audit/windows/{seq}")
    def window(request: Request, seq: int, signed: Annotated[Signed, web.page("windows")]) -> Response:
        from govern import access

        found = audit_api.window_at(signed.project(), seq)
        training = audit_api.training_of(signed.project(), found.model, found.version)
        return web.render(
            request,
            "auditor_window.html.j2",
            signed,
            title=f"{found.model} v{found.version} on {found.app}/{found.env}",
            w=found,
            training=training,
            may_report=access.allowed(signed.principal, "report"),
        )


def _production(router: APIRouter, web: Web) -> None:
    """Which version served an app/env at an instant."""
    from govern.api import audit as audit_api

    @router.get("/audit/production")
    def production(
        request: Request,
        signed: Annotated[Signed, web.page("windows")],
        app: str | None = None,
        env: str | None = None,
        at: str | None = None,
    ) -> Response:
        from govern import access
        from govern.errors import Forbidden
        from govern.timeparse import parse_instant

        project = signed.project()
        known = audit_api.slots(project)
        envs = _envs(audit_api.environments(project), known)
        answer, error, status = None, None, 200
        if app or at:
            try:
                if not app:
                    raise InvalidInput("Name the app to ask about")
                if not at:
                    raise InvalidInput("Give the instant to ask about, with its time zone (Z or an offset)")
                if not access.allowed(signed.principal, "production", app):
                    raise Forbidden(f"{signed.principal.name} may not see app {app!r}")
                answer = audit_api.production_answer(project, app, env or envs[0], parse_instant(at, "Instant"))
            except GovernError as failure:
                error, status = str(failure), status_of(failure)
        return web.render(
            request,
            "auditor_production.html.j2",
            signed,
            status=status,
            title="Which version served, when?",
            apps=sorted({a for a, _ in known}),
            envs=envs,
            app=app or "",
            env=env or envs[0],
            at=at or "",
            answer=answer,
            error=error,
        )


def _events(router: APIRouter, web: Web) -> None:
    """The event log, filtered and paged by seq."""
    from govern.api import audit as audit_api

    @router.get("/audit/events")
    def events(
        request: Request,
        signed: Annotated[Signed, web.page("events")],
        event_type: Annotated[list[str] | None, Query(alias="type")] = None,
        since: str | None = None,
        n: str | None = None,
        before: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        from govern.events import FACT_TYPES
        from govern.timeparse import parse_instant

        types = [kind for kind in event_type or [] if kind]
        found, error, status = [], None, 200
        try:
            limit = _count(n, EVENTS_SHOWN)
            moment = parse_instant(since, "Since") if since else None
            found = audit_api.log_page(signed.project(), types=types, since=moment, before=before, limit=limit)
        except GovernError as failure:
            limit, error, status = EVENTS_SHOWN, str(failure), status_of(failure)
        rows = [{**event, "payload": _payload(event["payload"])} for event in found]
        return web.render(
            request,
            "auditor_events.html.j2",
            signed,
            status=status,
            title="Event log",
            known_types=sorted(FACT_TYPES),
            types=types,
            since=since or "",
            n=n or str(EVENTS_SHOWN),
            rows=rows,
            error=error,
            older=_query(types, since, n, rows[-1]["seq"]) if len(rows) == limit and rows else None,
            paged=before is not None,
            newest=_query(types, since, n, None),
        )


def _integrity(router: APIRouter, web: Web) -> None:
    """The ledger's integrity: its anchors, and the whole chain verified on request."""

    @router.get("/audit/integrity")
    def integrity_page(request: Request, signed: Annotated[Signed, web.page("anchors")]) -> Response:
        from govern import access

        return integrity(request, signed, None, may_verify=access.allowed(signed.principal, "verify"))

    @router.get("/audit/verify")
    def verify(request: Request, signed: Annotated[Signed, web.page("verify", hold=False)]) -> Response:
        """The whole chain re-hashed (seconds on a large ledger): without a held connection, which would keep
        the file from the server's other requests for as long."""
        from govern.api import integrity as integrity_api

        return integrity(request, signed, integrity_api.verify(signed.project()), may_verify=True)

    def integrity(request: Request, signed: Signed, verification: Any, *, may_verify: bool) -> Response:
        from govern.api import integrity as integrity_api

        return web.render(
            request,
            "auditor_integrity.html.j2",
            signed,
            title="Integrity of the ledger",
            state=integrity_api.anchor_state(signed.project()),
            verification=verification,
            may_verify=may_verify,
        )


def _reports(router: APIRouter, web: Web) -> None:
    """The lineage reports: the registered versions, each report as a page and as a download."""
    from govern.api import audit as audit_api

    @router.get("/audit/reports")
    def reports(request: Request, signed: Annotated[Signed, web.page("report")]) -> Response:
        return web.render(
            request,
            "auditor_reports.html.j2",
            signed,
            title="Lineage reports",
            versions=audit_api.registered_versions(signed.project()),
        )

    @router.get("/audit/reports/{model}/{version}")
    def report(request: Request, model: str, version: str, signed: Annotated[Signed, web.page("report")]) -> Response:
        from govern.api.report import gather
        from govern.report import render

        text = render(gather(signed.project(), model, version), "html")
        return _document(Response(text, media_type=REPORT_TYPES["html"]), text)

    @router.get("/audit/reports/{model}/{version}/download")
    def download(
        model: str,
        version: str,
        signed: Annotated[Signed, web.page("report")],
        format: Annotated[str, Query(pattern="^(html|md|json)$")] = "html",
    ) -> Response:
        from govern.api.report import gather
        from govern.report import render

        text = render(gather(signed.project(), model, version), format)
        name = f"{_file_part(model)}-v{_file_part(version)}-lineage.{format}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return _document(Response(text, media_type=REPORT_TYPES[format], headers=headers), text)


def _principals(router: APIRouter, web: Web) -> None:
    """Who held which role when, and the history of grants."""

    @router.get("/audit/principals")
    def principals(
        request: Request, signed: Annotated[Signed, web.page("principals")], at: str | None = None
    ) -> Response:
        from govern.api import access as access_api
        from govern.timeparse import parse_instant

        moment: datetime | None = None
        held, error, status = [], None, 200
        try:
            moment = parse_instant(at, "Roles held at") if at else None
            held = access_api.roles_at(signed.project(), moment)
        except GovernError as failure:
            error, status = str(failure), status_of(failure)
        return web.render(
            request,
            "auditor_principals.html.j2",
            signed,
            status=status,
            title="Principals and their roles over time",
            at=at or "",
            moment=moment,
            held=held,
            error=error,
            history=access_api.grant_history(signed.project(), limit=GRANTS_SHOWN),
            shown=GRANTS_SHOWN,
        )


def _envs(declared: list[str], known: list[tuple[str, str]]) -> list[str]:
    """The declared environments first, then any other the ledger's deployments name (declared since removed)."""
    return list(dict.fromkeys([*declared, *sorted({env for _, env in known})])) or ["production"]


def _count(text: str | None, default: int) -> int:
    """The events form's "Newest" field, checked in the form's words (the API's check names the CLI's -n)."""
    from govern.api.audit import LOG_PAGE_LIMIT

    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"Newest: {text!r} is not a number of events") from None
    if not 1 <= value <= LOG_PAGE_LIMIT:
        raise InvalidInput(f"Newest: show between 1 and {LOG_PAGE_LIMIT} events at a time")
    return value


def _query(types: list[str], since: str | None, n: str | None, before: int | None) -> str:
    from urllib.parse import urlencode

    pairs = [("type", kind) for kind in types]
    pairs += [(key, value) for key, value in (("since", since), ("n", n)) if value]
    if before is not None:
        pairs.append(("before", str(before)))
    return "/audit/events" + (f"?{urlencode(pairs)}" if pairs else "")


def _payload(text: str) -> str:
    """The payload as indented JSON for reading; a very long one is cut (the event's own JSON has all of it)."""
    try:
        shown = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        shown = text
    return shown if len(shown) <= PAYLOAD_SHOWN else shown[:PAYLOAD_SHOWN] + "\n… (cut: `govern audit log --json`)"


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "_"


def _document(response: Response, text: str) -> Response:
    """A report served as a document of its own: its own policy (its inline style allowed by hash, nothing else),
    the rest of the security headers set for every answer (`httpkit.SecurityHeaders`)."""
    from govern.report import content_security_policy

    html = response.media_type == REPORT_TYPES["html"]
    response.headers["Content-Security-Policy"] = content_security_policy(text) if html else DOCUMENT_CSP
    return response


def _chart(windows: "list[WindowRow]") -> dict[str, Any] | None:
    """The timeline as SVG geometry (attributes only: the pages' policy allows no inline style): one bar per
    window, oldest left, on a time axis from the first start to the last end (or now, while one is open)."""
    from govern.envelope import utc_now
    from govern.readmodel.rows import naive_utc

    if not windows:
        return None
    ordered = sorted(windows, key=lambda w: w.start_seq)
    now = naive_utc(utc_now())
    first = ordered[0].started_at
    last = max(w.ended_at or now for w in ordered)
    span = max((last - first).total_seconds(), 1e-3)
    width, left, right = 1000.0, 10.0, 990.0
    bars, versions = [], []
    for w in ordered:
        end = w.ended_at or now
        x = left + (right - left) * (w.started_at - first).total_seconds() / span
        length = max((right - left) * (end - w.started_at).total_seconds() / span, 4.0)
        x = min(x, right - length)
        if not versions or versions[-1] != w.version:
            versions.append(w.version)
        bars.append(
            {
                "w": w,
                "x": round(x, 2),
                "width": round(length, 2),
                "fill": OPEN_COLOUR if w.ended_at is None else PALETTE[(len(versions) - 1) % len(PALETTE)],
                "label": f"v{w.version}" if length >= 28 else "",
            }
        )
    return {"width": width, "bars": bars, "first": first, "last": last, "open": ordered[-1].ended_at is None}
