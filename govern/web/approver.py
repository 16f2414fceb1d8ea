"""The approver's pages: the queue of promotion requests with their evidence, and the decision on each.

The queue and a request's page present `requests` (`govern.api.approvals.queue` and `approvals.evidence`): the
gates' findings recorded with the request and judged again now, the reproduction verdicts of the training's
commit, what changed in data, code and parameters since the version that holds the stage. The forms present
`approve` and `reject` and call the same use cases as the CLI and the API, which enforce the four-eyes rule by
identity (never the requester, never the trainer) and judge the gates again. Other roles that may read requests
(a scientist, an auditor) may open these pages, as they may call the API; the navigation links them for
approvers, whose workflow they are, and the decision forms are shown to those who may decide.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from govern import access
from govern.errors import GovernError
from govern.web.pages import Link, Signed, Web

NAV: list[Link] = [Link("Approvals", "/approvals", "requests")]

FOUR_EYES = (
    "Four-eyes rule: a request is approved by someone other than who asked for it and who trained the version; "
    "any approver may reject it, and its requester may withdraw it (neither promotes anything). The server compares "
    "people, not tokens: principals and the git identities linked to them (govern principals link). Approving "
    "judges the stage's gates again and records the promotion with the approval, in one transaction; an approval "
    "the server refuses records nothing."
)

RequestNumber = Annotated[int, PathParam(alias="number", ge=1, le=2**62)]


def routes(web: Web) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    web.templates.filters["figure"] = figure

    @router.get("/approvals")
    def queue(request: Request, signed: Annotated[Signed, web.page("requests")]) -> Response:
        """The pending requests, oldest first, each with its evidence at a glance; the latest decisions."""
        from govern.api import approvals

        found = approvals.queue(signed.project())
        return web.render(
            request,
            "approver_queue.html.j2",
            signed,
            title="Promotion requests",
            rule=FOUR_EYES,
            pending=found["pending"],
            total=found["total"],
            decided=found["decided"],
            may_decide=access.allowed(signed.principal, "approve"),
        )

    @router.get("/approvals/{number}")
    def request_page(
        request: Request,
        number: RequestNumber,
        signed: Annotated[Signed, web.page("requests")],
        done: Annotated[str | None, Query(pattern="^(approved|rejected)$")] = None,
    ) -> Response:
        """One request with all its evidence, and the approve and reject forms."""
        return _request_page(web, request, signed, number, done=done)

    @router.post("/approvals/{number}/approval")
    def approve(request: Request, number: RequestNumber, signed: Annotated[Signed, web.form("approve")]) -> Response:
        from govern.api import approvals

        try:
            approvals.approve(signed.project(writing=True), number, signed.text("reason"))
        except GovernError as refused:  # the four-eyes rule, a gate, a request decided meanwhile: said on its page
            return _request_page(web, request, signed, number, refused=refused, reason=signed.typed("reason"))
        return RedirectResponse(f"/approvals/{number}?done=approved", status_code=303)

    @router.post("/approvals/{number}/rejection")
    def reject(request: Request, number: RequestNumber, signed: Annotated[Signed, web.form("reject")]) -> Response:
        from govern.api import approvals

        own_only = not signed.principal.has("approver")  # a scientist withdraws its own requests only
        try:
            approvals.reject(signed.project(writing=True), number, signed.text("reason"), requester_only=own_only)
        except GovernError as refused:
            return _request_page(web, request, signed, number, refused=refused, reason=signed.typed("reason"))
        return RedirectResponse(f"/approvals/{number}?done=rejected", status_code=303)

    return router


def _request_page(
    web: Web,
    request: Request,
    signed: Signed,
    number: int,
    *,
    refused: GovernError | None = None,
    reason: str = "",
    done: str | None = None,
) -> Response:
    from govern.api import approvals

    found = approvals.evidence(signed.project(), number, four_eyes=True)
    row = found["request"]
    is_approver = signed.principal.has("approver")
    mine = access.same_person(signed.principal.actor, row["requested_by"], {})  # a scientist withdraws its own
    return web.render(
        request,
        "approver_request.html.j2",
        signed,
        refused=refused,
        title=f"Request {number}: {row['model']} version {row['version']} to {row['to_stage']}",
        rule=FOUR_EYES,
        e=found,
        r=row,
        reason=reason,
        done=done,
        may_approve=access.allowed(signed.principal, "approve"),
        may_reject=access.allowed(signed.principal, "reject") and (is_approver or mine),
        may_read_versions=access.allowed(signed.principal, "status"),
        may_report=access.allowed(signed.principal, "report"),
        is_approver=is_approver,
    )


def figure(value: Any) -> str:
    """A metric or parameter as the page shows it: numbers to six significant digits, the rest as recorded."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
