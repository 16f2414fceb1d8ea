"""The web pages' common ground: who is signed in, what they may see, CSRF on forms, rendering, errors as pages.

Every page and every form names the API operation it presents (`access.POLICY`): the same table decides who may
see it as who may call the operation, on the server, for every request. The navigation shows only the pages the
principal may open, but hiding a link is never the check.

Modules of page routes must not use `from __future__ import annotations`: FastAPI evaluates a route's
`Annotated[Signed, web.page(...)]` in the module's globals, where the local `web` is unknown, and would take the
parameter for a query string (tests/test_web_roles.py fails on any page left without its operation).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from govern import __version__, access
from govern.api.authentication import Unauthenticated
from govern.errors import Forbidden, GovernError, InvalidInput, status_of
from govern.httpkit import PAGE_CSP
from govern.web.sessions import NONCE_COOKIE, SESSION_COOKIE, SessionKeys

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# Content-Security-Policy: nothing inline, nothing from elsewhere (the lineage report, shown as a document of its
# own, has its own inline style and gets a policy of its own). Defined, with the other headers, where every answer
# gets them (`httpkit.SecurityHeaders`).
CSP = PAGE_CSP


class SignInRequired(Unauthenticated):
    """No session, or an expired or forged one: the page sends the browser to sign in."""


@dataclass(frozen=True)
class Link:
    """An entry of the navigation: shown to those who may call `operation`."""

    label: str
    href: str
    operation: str


@dataclass(frozen=True)
class Signed:
    """A signed-in request: the principal, the CSRF token its forms carry, and (for a POST) the form's fields."""

    principal: access.Principal
    csrf: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    root: Path | None = None
    session: Any = None  # the page's `sessions.Session`, where it holds one
    _projects: dict[bool, Any] = field(default_factory=dict, compare=False, repr=False)

    def project(self, *, writing: bool = False) -> Any:
        """The composition root of this page's request (`api.context.Project`, the principal its actor), built
        once: a form that writes opens it for writing (anchors checked, secrets guarded)."""
        if writing not in self._projects:
            from govern.api.context import open_project

            self._projects[writing] = open_project(
                self.root, actor=self.principal.actor, session=self.session, writing=writing
            )
        return self._projects[writing]

    def text(self, name: str, *, required: bool = True, limit: int = 2000) -> str:
        value = self.fields.get(name)
        text = value.strip() if isinstance(value, str) else ""
        if required and not text:
            raise InvalidInput(f"The form's field {name!r} is empty: fill it in")
        if len(text) > limit:
            raise InvalidInput(f"The form's field {name!r} is longer than {limit} characters")
        return text

    def typed(self, name: str, limit: int = 2000) -> str:
        """What was typed into a field, unchecked and cut to `limit`: to fill a refused form in again."""
        value = self.fields.get(name)
        return value[:limit] if isinstance(value, str) else ""


class Web:
    """What every page route needs: the project, the session keys, the templates, the ledger."""

    def __init__(self, root: Path, keys: SessionKeys, navigation: list[Link]) -> None:
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        self.root = root
        self.keys = keys
        self.navigation = navigation
        self.training_requested: Callable[[], None] = lambda: None  # the server's job runner sets its wake-up
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["urlpart"] = lambda text: quote(str(text), safe="")

    def ledger(self, session: Any = None) -> Any:
        """The project's ledger for reading (within the page's session, where it holds one)."""
        from govern.api.context import open_project

        return open_project(self.root, session=session, writing=False).ledger

    def principal(self, request: Request, session: Any = None) -> tuple[access.Principal, str]:
        """The signed-in principal and its session nonce, or `SignInRequired`."""
        from govern.api.authentication import authenticate_session

        found = self.keys.session(request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise SignInRequired("Sign in with your token")
        try:
            return authenticate_session(self.ledger(session), found.token_id), found.nonce
        except Unauthenticated as error:
            raise SignInRequired(str(error)) from None

    def page(self, operation: str, *, hold: bool = True) -> Any:
        """The dependency of a page: signed in, and allowed `operation` by `access.POLICY`.

        With `hold` (every page but the whole-chain verification), the session check and the page's questions
        share one ledger connection until the page is rendered (`ledger.Session`, as the API's read routes do):
        opening the ledger file costs 10-20 ms, and its first queries read cold, so a page that opened it for each
        step paid that three or four times."""
        _known(operation)

        def within(request: Request, session: Any) -> Signed:
            principal, nonce = self.principal(request, session)
            _allow(principal, operation)
            return Signed(principal, self.keys.csrf_token(nonce), root=self.root, session=session)

        def signed(request: Request) -> Signed:
            return within(request, None)

        async def within_session(request: Request) -> AsyncIterator[Signed]:
            from starlette.concurrency import run_in_threadpool

            from govern.storage.sessions import Session

            current = Session()  # the thread-pool calls of this request (the check, the route) share it
            try:
                yield await run_in_threadpool(within, request, current)
            finally:
                await run_in_threadpool(current.close)

        check = within_session if hold else signed
        check.operation = operation  # type: ignore[attr-defined]  # what the role-separation test reads
        return Depends(check, scope="function") if hold else Depends(check)

    def form(self, operation: str) -> Any:
        """The dependency of a form's POST: signed in, allowed `operation`, and carrying its session's CSRF token."""
        _known(operation)

        async def check(request: Request) -> Signed:
            from starlette.concurrency import run_in_threadpool

            fields = await _form(request)
            principal, nonce = await run_in_threadpool(self.principal, request)
            if not self.keys.csrf_matches(nonce, _str(fields.get("csrf"))):
                raise Forbidden("The form was sent without its security token: reload the page and send it again")
            _allow(principal, operation)
            return Signed(principal, self.keys.csrf_token(nonce), fields, root=self.root)

        check.operation = operation  # type: ignore[attr-defined]
        return Depends(check)

    def links(self, principal: access.Principal | None) -> list[Link]:
        if principal is None:
            return []
        return [link for link in self.navigation if access.allowed(principal, link.operation)]

    def render(
        self,
        request: Request,
        template: str,
        signed: Signed | None,
        *,
        status: int = 200,
        title: str,
        refused: GovernError | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """The page; with `refused`, the page again after its form was refused: the refusal's one line shown on it
        (`refused` in the template) and its status, so what was typed can be filled in again."""
        principal = signed.principal if signed else None
        if refused is not None:
            status = status_of(refused)
        html = self.templates.get_template(template).render(
            refused=str(refused) if refused is not None else None,
            title=title,
            principal=principal,
            csrf=signed.csrf if signed else "",
            links=self.links(principal),
            path=request.url.path,
            govern_version=__version__,
            **context,
        )
        return secured(HTMLResponse(html, status_code=status), request)

    def error_page(self, request: Request, status: int, message: str) -> Response:
        """A failure on a page, as a page: the same one-line message the CLI and the API give; without a valid
        session, the way to sign in."""
        if status == 401:
            return sign_in_redirect(request)
        signed = None
        try:
            principal, nonce = self.principal(request)
            signed = Signed(principal, self.keys.csrf_token(nonce))
        except GovernError:
            pass
        return self.render(request, "error.html.j2", signed, status=status, title="Not possible", message=message)


def page_validation(errors: Sequence[Any]) -> tuple[int, str]:
    """A page's address that FastAPI refused (a path part or query value of the wrong form), in a browser's words:
    a path part that cannot be is no page (404); a query value, a link to fix (400)."""
    first = errors[0] if errors else {}
    where, name = (tuple(first.get("loc", ())) + ("", ""))[:2]
    value = first.get("input")
    shown = f" {value!r}" if isinstance(value, str | int) and len(str(value)) <= 80 else ""
    if where == "path":
        return 404, f"There is no such page: the {name}{shown} in its address is not one there can be"
    choices = re.fullmatch(r"\^\(([\w|-]+)\)\$", str((first.get("ctx") or {}).get("pattern", "")))
    expected = f": use one of {', '.join(choices.group(1).split('|'))}" if choices else ""
    return 400, f"The address's {name}{shown} is not valid{expected}, or follow a link of the pages instead"


def secured(response: Response, request: Request) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def cookie_options(request: Request) -> dict[str, Any]:
    """`Secure` whenever the browser reached us over TLS (directly, or through a proxy uvicorn trusts)."""
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https", "path": "/"}


def sign_in_redirect(request: Request) -> RedirectResponse:
    """To the sign-in page, and back here after it; a browser that held a session learns that it ended."""
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += f"?{request.url.query}"
    ended = "&ended" if SESSION_COOKIE in request.cookies else ""
    response = RedirectResponse(f"/sign-in?next={quote(target, safe='')}{ended}", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def safe_next(target: str | None) -> str:
    """Only a path of this site: an open redirect would make the sign-in page a phishing tool."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def nonce_of(request: Request, keys: SessionKeys) -> tuple[str, str | None]:
    """The pre-sign-in nonce of this browser, and a new cookie to set if it had none."""
    found = keys.nonce(request.cookies.get(NONCE_COOKIE))
    if found:
        return found, None
    cookie = keys.nonce_cookie()
    nonce = keys.nonce(cookie)
    assert nonce is not None
    return nonce, cookie


def _allow(principal: access.Principal, operation: str) -> None:
    if not access.allowed(principal, operation):
        roles = ", ".join(sorted(principal.roles)) or "no role"
        raise Forbidden(f"{principal.name} ({roles}) may not open this page: it needs the right to {operation}")


def _known(operation: str) -> None:
    if operation not in access.POLICY and operation not in access.ANY_PRINCIPAL:
        raise RuntimeError(f"operation {operation!r} has no row in access.POLICY")


async def _form(request: Request) -> Mapping[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise InvalidInput("Send the form from its page (as application/x-www-form-urlencoded or multipart)")
    return await request.form()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _when(value: Any) -> str:
    """Instants on pages as in the CLI's tables: UTC, to the second."""
    from datetime import datetime

    from govern.timeparse import display

    if value is None:
        return ""
    if isinstance(value, str):  # the JSON form of a result (a report's times): ISO 8601 with Z
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime):
        return display(value).replace("T", " ")[:19] + " UTC"
    return str(value)


PageRoutes = Callable[[Web], Any]
