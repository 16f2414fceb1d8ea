"""Signing in and out, the home page, and the pages' static files."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from govern.errors import Forbidden, InvalidInput, NotFound
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

# For every kind of bad token alike (as the API: nothing tells which token ids exist), in a browser's words.
INVALID_TOKEN = (
    "That token is not valid: paste all of it (it starts with gvn_ and has no spaces), or ask an admin for a new one"
)
# Where each role's work starts. The navigation links every page a principal may open (the same role table as the
# API): readers see the auditor's and the scientist's read pages too, but each starts on their own.
START_PAGES = (
    ("consumer", "/apps"),
    ("approver", "/approvals"),
    ("scientist", "/models"),
    ("auditor", "/audit/timeline"),
    ("admin", "/admin/principals"),
)
CODE_PREFIX = "gvc_"


def redeem_code(web: Web, request: Request, code: str) -> Any:
    """Exchange an enrollment code pasted into the sign-in form for a token (the API's redemption, within its
    limits on failures per address and in all: `TooManyAttempts`); the token's `IssuedToken`."""
    from govern.api import access as access_api
    from govern.api import authentication
    from govern.api.context import open_project

    issued = request.app.state.redemptions.run(
        request.client.host if request.client else "unknown",
        "redeem an enrollment code",
        lambda: access_api.redeem(open_project(web.root), code, through_server=True),
        authentication.REDEMPTION_REFUSALS,
    )
    assert issued.token is not None
    return issued.token


STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


def routes(web: Web) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    for pages in (_home, _sign_in, _account):
        pages(router, web)  # in this order: the order the application tries them
    return router


def _home(router: APIRouter, web: Web) -> None:
    """The front door: each role's start page, or the way to sign in."""

    @router.get("/")
    def home(request: Request) -> Response:
        """Each role starts on its main page (of several roles, the first in `START_PAGES`' order); a principal
        with none of those roles on the first page it may open."""
        from govern.errors import GovernError

        try:
            principal, _ = web.principal(request)
        except GovernError:
            return RedirectResponse("/sign-in", status_code=303)
        start = next((page for role, page in START_PAGES if principal.has(role)), None)
        links = web.links(principal)
        return RedirectResponse(start or (links[0].href if links else "/account"), status_code=303)


def _sign_in(router: APIRouter, web: Web) -> None:
    """Signing in with a token or an enrollment code."""

    @router.get("/sign-in")
    def sign_in_page(
        request: Request,
        next: str = "/",
        signed_out: Annotated[str | None, Query(alias="signed-out")] = None,
        ended: str | None = None,
    ) -> Response:
        """The sign-in form; after signing out (`?signed-out`), or after a session ended (`?ended`: expired, or its
        token revoked), the form says so."""
        nonce, cookie = nonce_of(request, web.keys)
        response = web.render(
            request,
            "sign_in.html.j2",
            None,
            title="Sign in",
            form_csrf=web.keys.csrf_token(nonce),
            next=safe_next(next),
            error=None,
            signed_out=signed_out is not None,
            ended=ended is not None and signed_out is None,
        )
        if cookie:
            response.set_cookie(NONCE_COOKIE, cookie, **cookie_options(request))
        return response

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from govern.api.authentication import InvalidToken, Unauthenticated, authenticate
        from govern.throttle import TooManyAttempts
        from govern.web.pages import _form

        fields = await _form(request)
        nonce = web.keys.nonce(request.cookies.get(NONCE_COOKIE))
        target = safe_next(_text(fields.get("next")))
        if not web.keys.csrf_matches(nonce, _text(fields.get("csrf"))):
            raise Forbidden("The sign-in form was sent without its security token: reload the page and sign in again")
        token = _text(fields.get("token")).strip()
        redeemed = None
        try:
            if not token:
                raise InvalidInput("Paste your token into the field: it starts with gvn_")
            if token.startswith(CODE_PREFIX):  # an enrollment code: exchanged here for a token, shown once
                redeemed = await run_in_threadpool(redeem_code, web, request, token)
                token = redeemed.bearer
            principal = await run_in_threadpool(authenticate, web.ledger(), token)
        except TooManyAttempts as error:
            refused = web.render(
                request, "error.html.j2", None, status=429, title="Too many attempts", message=str(error)
            )
            refused.headers["Retry-After"] = str(error.retry_after)
            return refused
        except (Unauthenticated, InvalidInput) as error:
            assert nonce is not None
            return web.render(
                request,
                "sign_in.html.j2",
                None,
                status=401 if isinstance(error, Unauthenticated) else 400,
                title="Sign in",
                form_csrf=web.keys.csrf_token(nonce),
                next=target,
                error=INVALID_TOKEN if isinstance(error, InvalidToken) else str(error),
                signed_out=False,
                ended=False,
            )
        assert principal.token_id is not None
        if redeemed is not None:  # the new token, shown this once (this response is never stored: NoStore)
            response = web.render(
                request, "redeemed.html.j2", None, title="Your token", token=redeemed, bearer=token, next=target
            )
        else:
            response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            web.keys.session_cookie(principal.token_id),
            max_age=int(web.keys.lifetime.total_seconds()),
            **cookie_options(request),
        )
        response.delete_cookie(NONCE_COOKIE, path="/")
        return response


def _account(router: APIRouter, web: Web) -> None:
    """Signing out, the account page, and the static files."""

    @router.post("/sign-out")
    def sign_out(signed: Annotated[Signed, web.form("whoami")]) -> Response:
        response = RedirectResponse("/sign-in?signed-out", status_code=303)
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


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
