"""What the API's routes share, as FastAPI dependencies: the server's state, the authenticated principal of an
operation (with the request's ledger session), a consumer's app scope, times read as the CLI reads them, and the
refusal of query parameters no operation takes.

The state is built once by `create_app` and kept on the application (`app.state.govern`); a route asks for the
parts it needs (`Root`, `State`), so the routers are plain modules (`govern.server.routes`).
"""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from govern import access
from govern.errors import Forbidden, InvalidInput
from govern.server.admission import PRINCIPAL_KEY


@dataclass
class ServerState:
    """The project one server answers for, and what its routes share across requests."""

    root: Path
    runner: Any  # `server.jobs.JobRunner`: woken when a training is requested
    redemptions: Any  # `throttle.Throttle` of enrollment codes' redemptions, the sign-in page's too

    def project(self, *, actor: Any = None, session: Any = None, writing: bool = False) -> Any:
        """The composition root of one request (`api.context.Project`): its configuration loaded once, its ledger
        within the request's session where it holds one, the authenticated principal as the actor."""
        from govern.api.context import open_project

        return open_project(self.root, actor=actor, session=session, writing=writing)

    def ledger(self) -> Any:
        """The project's ledger outside any request (the door's token table, startup)."""
        return self.project().ledger


class Caller:
    """An authorised request: who calls (authenticated by the server) and the project it works on (an
    `api.context.Project` with the principal as its actor), built once, on first use: in the handler's worker
    thread, never on the event loop."""

    def __init__(self, principal: access.Principal, build: Callable[[], Any], project: Any = None) -> None:
        self.principal = principal
        self._build = build
        self._project = project

    @property
    def project(self) -> Any:
        if self._project is None:
            self._project = self._build()
        return self._project


async def server_state(request: Request) -> ServerState:
    return request.app.state.govern


async def project_root(request: Request) -> Path:
    return request.app.state.govern.root


State = Annotated[ServerState, Depends(server_state)]
Root = Annotated[Path, Depends(project_root)]

bearer_scheme = HTTPBearer(auto_error=False, description="A token from `govern tokens create NAME`")


def authorised(operation: str, *, hold: str | None = None, writes: bool | None = None) -> Any:
    """The dependency of a route: authenticate, check `access.POLICY`, and build the request's `Caller` (its
    principal and its project). With `hold` ("read" or "write"), the request's ledger work (authentication
    included) shares one ledger connection, or one pooled PostgreSQL connection, until the handler returns
    (`sessions.Session`): only for handlers that do short ledger work, as the session holds the file; model runs,
    fetches and streams go without. `writes` (default: `hold == "write"`) opens the project for writing: the
    anchors checked, the secrets guarded."""
    if operation not in access.POLICY:  # a route without a policy row could never be called: fail at startup
        raise RuntimeError(f"operation {operation!r} has no row in access.POLICY")
    writing = hold == "write" if writes is None else writes

    def check(request: Request, credentials: HTTPAuthorizationCredentials | None, session: Any) -> Caller:
        from govern.api import authentication

        state: ServerState = request.app.state.govern
        principal = request.scope.get(PRINCIPAL_KEY)  # authenticated at the door (`admission.Gate`)
        reading = None
        if principal is None:
            reading = state.project(session=session)
            principal = authentication.authenticate(reading.ledger, credentials.credentials if credentials else None)
        if not access.allowed(principal, operation):
            roles = ", ".join(sorted(principal.roles)) or "no role"
            raise Forbidden(f"{principal.name} ({roles}) may not call {operation}")
        actor = principal.actor
        if reading is not None and not writing:
            return Caller(principal, lambda: None, reading.acting_as(actor))
        return Caller(principal, lambda: state.project(actor=actor, session=session, writing=writing))

    async def within_session(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
    ) -> AsyncIterator[Caller]:
        from starlette.concurrency import run_in_threadpool

        from govern.storage.sessions import Session

        current = Session(write=hold == "write")
        try:
            yield await checked(request, credentials, current)
        finally:
            if current.holds_nothing():
                current.close()  # nothing to let go: no trip through a worker thread
            else:
                await run_in_threadpool(current.close)

    async def checked(request: Request, credentials: HTTPAuthorizationCredentials | None, session: Any) -> Caller:
        """On the event loop where the door authenticated the request (a role check is microseconds; the project
        is built later, in the handler's thread): under a flood, every trip to a worker thread and back waits for
        the loop, so a request makes as few as it can."""
        from starlette.concurrency import run_in_threadpool

        if PRINCIPAL_KEY in request.scope:
            return check(request, credentials, session)
        return await run_in_threadpool(check, request, credentials, session)

    async def alone(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
    ) -> Caller:
        return await checked(request, credentials, None)

    if hold is None:
        return Depends(alone)
    return Depends(within_session, scope="function")


def scoped(principal: access.Principal, operation: str, app_name: str) -> bool:
    """Check a consumer's app; True where the principal is limited to its apps (answers name no others)."""
    if not access.allowed(principal, operation, app_name):
        raise Forbidden(f"{principal.name} may not see app {app_name!r}: a consumer sees its own apps only")
    return not any(role != "consumer" for role in principal.roles)


def instant(text: str | None, name: str) -> datetime | None:
    """Times over HTTP are read as on the command line: ISO 8601 with Z or an offset, nothing else."""
    from govern.timeparse import parse_instant

    return parse_instant(text, name) if text is not None else None


def no_unknown_query(request: Request) -> None:
    """A misspelt query parameter (`?ap=scoring`) is refused, not ignored: it would answer another question."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise InvalidInput(f"Unknown query parameter(s) {', '.join(unknown)}: this operation takes {takes}")


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
