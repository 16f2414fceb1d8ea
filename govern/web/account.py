"""Signing in and out, the home page, and the pages' static files."""

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from govern.errors import Forbidden, NotFound
from govern.web.pages import (
    STATIC,
    Signed,
    Web,
    cookie_options,
    nonce_of,
    safe_next,
    secured,
)
from govern.web.sessions import NONCE_COOKIE, SESSION_COOKIE

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


def routes(web: Web) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def home(request: Request) -> Response:
        """Each role starts on its main page: the first of the navigation it may open."""
        from govern.errors import GovernError

        try:
            principal, _ = web.principal(request)
        except GovernError:
            return RedirectResponse("/sign-in", status_code=303)
        links = web.links(principal)
        return RedirectResponse(links[0].href if links else "/account", status_code=303)

    @router.get("/sign-in")
    def sign_in_page(request: Request, next: str = "/") -> Response:
        nonce, cookie = nonce_of(request, web.keys)
        response = web.render(
            request,
            "sign_in.html.j2",
            None,
            title="Sign in",
            form_csrf=web.keys.csrf_token(nonce),
            next=safe_next(next),
            error=None,
        )
        if cookie:
            response.set_cookie(NONCE_COOKIE, cookie, **cookie_options(request))
        return response

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from govern.api.access import Unauthenticated, authenticate
        from govern.web.pages import _form

        fields = await _form(request)
        nonce = web.keys.nonce(request.cookies.get(NONCE_COOKIE))
        target = safe_next(_text(fields.get("next")))
        if not web.keys.csrf_matches(nonce, _text(fields.get("csrf"))):
            raise Forbidden("The sign-in form was sent without its security token: reload the page and sign in again")
        token = _text(fields.get("token")).strip()
        try:
            principal = await run_in_threadpool(authenticate, web.ledger(), token)
        except Unauthenticated as error:
            assert nonce is not None
            return web.render(
                request,
                "sign_in.html.j2",
                None,
                status=401,
                title="Sign in",
                form_csrf=web.keys.csrf_token(nonce),
                next=target,
                error=str(error),
            )
        assert principal.token_id is not None
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            web.keys.session_cookie(principal.token_id),
            max_age=int(web.keys.lifetime.total_seconds()),
            **cookie_options(request),
        )
        response.delete_cookie(NONCE_COOKIE, path="/")
        return response

    @router.post("/sign-out")
    def sign_out(signed: Annotated[Signed, web.form("whoami")]) -> Response:
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/account")
    def account(request: Request, signed: Annotated[Signed, web.page("whoami")]) -> Response:
        return web.render(request, "account.html.j2", signed, title="Your account", lifetime=web.keys.lifetime)

    @router.get("/static/{name}")
    def static(request: Request, name: str) -> Response:
        path = STATIC / name
        kind = STATIC_TYPES.get(path.suffix)
        if kind is None or path.parent != STATIC or not path.is_file():
            raise NotFound(f"No file {name!r} among the pages' static files")
        return secured(FileResponse(path, media_type=kind, headers={"Cache-Control": "max-age=3600"}), request)

    return router


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
