"""The admin's pages: principals and their roles (grant, revoke; proposals of approver and admin confirmed, declined
or withdrawn), and tokens (issue, revoke).

Every form calls the use case `govern principals` and `govern tokens` call (`govern.api.access`), with the signed-in
admin as the actor, then redirects (Post/Redirect/Get). What the server issues for another principal is an
enrollment code (team mode: the server always is), for them to exchange for a token of their own; a token for
oneself is a token. Either secret is shown once: the POST that issues it hands it to the page that shows it in a
short-lived cookie, encrypted and authenticated (Fernet) with a key derived from the server's session key and the
admin's session, scoped to that page; the page shows it and deletes the cookie. It never appears in a URL (nor, so,
in an access log), and the ledger keeps only its hash: reloading the page shows it no more.
"""

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from govern import access
from govern.adapters import sealing
from govern.web.pages import Link, Signed, Web, cookie_options

NAV: list[Link] = [
    Link("Roles", "/admin/principals", "grant"),
    Link("Tokens", "/admin/tokens", "issue_token"),
]

ISSUED_COOKIE = "govern_issued"
ISSUED_PATH = "/admin/tokens/issued"
ISSUED_LIFETIME = 60  # seconds the secret waits for the page that shows it (the redirect follows at once)


def routes(web: Web) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    for pages in (_principals, _tokens):
        pages(router, web)  # in this order: the order the application tries them
    return router


def _principals(router: APIRouter, web: Web) -> None:
    """Principals and their roles: grants, revocations, and the proposals of grants decided."""
    from govern.api import access as access_api

    @router.get("/admin/principals")
    def principals(
        request: Request,
        signed: Annotated[Signed, web.page("grant")],
        done: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        project = signed.project()
        held = access_api.roles_at(project)
        return web.render(
            request,
            "admin_principals.html.j2",
            signed,
            title="Principals and roles",
            held=held,
            names=sorted({g["principal"] for g in held}),
            roles=access.ROLES,
            privileged=sorted(access.PRIVILEGED),
            proposals=access_api.proposals(project),
            me=signed.principal.name,
            done=_recorded(signed, done),
            may_revoke=access.allowed(signed.principal, "revoke"),
            may_confirm=access.allowed(signed.principal, "confirm_grant"),
        )

    def decided(signed: Signed, decide: Any) -> Response:
        event = decide(
            signed.project(writing=True), signed.text("proposal", limit=20), signed.text("reason", required=False)
        )
        return RedirectResponse(f"/admin/principals?done={event.seq}", status_code=303)

    @router.post("/admin/principals/confirm")
    def confirm(signed: Annotated[Signed, web.form("confirm_grant")]) -> Response:
        return decided(signed, access_api.confirm_grant)

    @router.post("/admin/principals/decline")
    def decline(signed: Annotated[Signed, web.form("decline_grant")]) -> Response:
        return decided(signed, access_api.decline_grant)

    @router.post("/admin/principals/withdraw")
    def withdraw(signed: Annotated[Signed, web.form("withdraw_grant")]) -> Response:
        return decided(signed, access_api.withdraw_grant)

    @router.post("/admin/principals/grant")
    def grant(signed: Annotated[Signed, web.form("grant")]) -> Response:
        apps = [app.strip() for app in signed.text("apps", required=False).replace(",", " ").split() if app.strip()]
        event = access_api.grant(
            signed.project(writing=True),
            signed.text("principal", limit=63),
            signed.text("role", limit=40),
            apps,
            signed.text("reason", required=False),
        )
        return RedirectResponse(f"/admin/principals?done={event.seq}", status_code=303)

    @router.post("/admin/principals/revoke")
    def revoke(signed: Annotated[Signed, web.form("revoke")]) -> Response:
        event = access_api.revoke(
            signed.project(writing=True),
            signed.text("principal", limit=63),
            signed.text("role", limit=40),
            signed.text("reason", required=False),
        )
        return RedirectResponse(f"/admin/principals?done={event.seq}", status_code=303)


def _tokens(router: APIRouter, web: Web) -> None:
    """Tokens: issued (the new secret shown once), listed, revoked."""
    from govern.api import access as access_api

    @router.get("/admin/tokens")
    def tokens(
        request: Request,
        signed: Annotated[Signed, web.page("issue_token")],
        done: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        return web.render(
            request,
            "admin_tokens.html.j2",
            signed,
            title="Tokens",
            tokens=list(reversed(access_api.tokens(signed.project()))),
            names=sorted({g["principal"] for g in access_api.roles_at(signed.project())}),
            done=_recorded(signed, done),
            may_revoke=access.allowed(signed.principal, "revoke_token"),
        )

    @router.post("/admin/tokens")
    def issue(request: Request, signed: Annotated[Signed, web.form("issue_token")]) -> Response:
        issued = access_api.issue_token(
            signed.project(writing=True),
            signed.text("principal", limit=63),
            signed.text("expires", required=False, limit=40) or None,
            signed.text("description", required=False),
        )
        if issued.code is not None:  # for someone else: the code they redeem, never their token
            token_id, secret = issued.code.code_id, {"code": issued.code.code}
        else:
            token_id, secret = issued.token.token_id, {"bearer": issued.token.bearer}
        response = RedirectResponse(f"{ISSUED_PATH}/{token_id}", status_code=303)
        sealed = _seal(web, signed, {"id": token_id, **secret})
        response.set_cookie(ISSUED_COOKIE, sealed, max_age=ISSUED_LIFETIME, **_issued_cookie(request))
        return response

    @router.get(ISSUED_PATH + "/{token_id}")
    def issued(request: Request, token_id: str, signed: Annotated[Signed, web.page("issue_token")]) -> Response:
        opened = _open(web, signed, request.cookies.get(ISSUED_COOKIE))
        mine = opened if opened and opened.get("id") == token_id else {}
        bearer, code = mine.get("bearer"), mine.get("code")
        found = [t for t in access_api.tokens(signed.project()) if t["token_id"] == token_id]
        token = found[0] if found else None
        is_code = bool(code) or bool(token and token.get("kind") == "enrollment code")
        what = "Enrollment code" if is_code else "Token"
        response = web.render(
            request,
            "admin_issued.html.j2",
            signed,
            title=f"{what} issued" if bearer or code else what,
            token_id=token_id,
            token=token,
            bearer=bearer,
            code=code,
            is_code=is_code,
        )
        if ISSUED_COOKIE in request.cookies:  # shown once (or stale): gone either way
            response.delete_cookie(ISSUED_COOKIE, **_issued_cookie(request))
        return response

    @router.post("/admin/tokens/revoke")
    def revoke_token(signed: Annotated[Signed, web.form("revoke_token")]) -> Response:
        event = access_api.revoke_token(
            signed.project(writing=True), signed.text("token_id", limit=20), signed.text("reason", required=False)
        )
        return RedirectResponse(f"/admin/tokens?done={event.seq}", status_code=303)


def _recorded(signed: Signed, seq: int | None) -> Any:
    """The event a form just recorded, to confirm it on the page it redirected to (None when not given)."""
    if seq is None:
        return None
    found = signed.project().ledger.read(seqs=[seq])
    return found[0] if found else None


def _issued_cookie(request: Request) -> dict[str, Any]:
    return {**cookie_options(request), "path": ISSUED_PATH}


# ---------------------------------------------------------------- the secret's one trip from the form to its page


def _key(web: Web, signed: Signed) -> str:
    """Derived from the server's session key (through its HMAC) and this session (its CSRF token): another session,
    or another server, opens nothing."""
    return web.keys.csrf_token(f"govern-issued-token/{signed.csrf}")


def _seal(web: Web, signed: Signed, data: dict[str, str]) -> str:
    return sealing.seal(_key(web, signed), json.dumps(data).encode())


def _open(web: Web, signed: Signed, cookie: str | None) -> dict[str, str] | None:
    """What `_seal` sealed for this session, not older than its lifetime; None otherwise."""
    opened = sealing.unseal(_key(web, signed), cookie, ISSUED_LIFETIME) if cookie else None
    try:
        found = json.loads(opened) if opened is not None else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None
