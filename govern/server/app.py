"""The controller's HTTP API: the CLI's use cases behind authenticated, role-checked routes.

Each route authenticates the bearer token against the ledger, checks `access.POLICY` for its operation, calls
the same use case as the CLI with the principal as actor, and answers with the same JSON as `--json`
(`presentation.jsonable`). Every `GovernError` becomes an RFC 9457 problem carrying the CLI's one-line message,
its HTTP status derived from the error's class.
"""

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from govern import __version__, access
from govern.errors import (
    ConfigError,
    EventConflict,
    GovernError,
    InvalidInput,
    LedgerLocked,
    NotFound,
    PolicyViolation,
    QueryError,
)
from govern.presentation import jsonable

API = "/api/v1"


class Forbidden(GovernError):
    """The authenticated principal's roles do not allow this operation."""


# The HTTP status of each kind of failure; the first class in the error's MRO found here wins.
STATUS: dict[type[GovernError], int] = {
    InvalidInput: 400,
    ConfigError: 400,
    QueryError: 400,
    NotFound: 404,
    PolicyViolation: 409,
    EventConflict: 409,
    LedgerLocked: 503,
    Forbidden: 403,
}


def status_of(error: GovernError) -> int:
    from govern.api.access import Unauthenticated

    if isinstance(error, Unauthenticated):
        return 401
    return next((STATUS[kind] for kind in type(error).__mro__ if kind in STATUS), 500)


def problem(status: int, kind: str, title: str, detail: str, instance: str) -> JSONResponse:
    body = {"type": f"urn:govern:problem:{kind}", "title": title, "status": status, "detail": detail}
    body["instance"] = instance
    headers = {"WWW-Authenticate": 'Bearer realm="govern"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class DeploymentRequest(Strict):
    model: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=50)
    app: str = Field(min_length=1, max_length=200)
    env: str = Field(default="production", min_length=1, max_length=200)
    at: datetime | None = None


class RetirementRequest(Strict):
    app: str = Field(min_length=1, max_length=200)
    env: str = Field(default="production", min_length=1, max_length=200)
    at: datetime | None = None


class GrantRequest(Strict):
    principal: str = Field(min_length=1, max_length=63)
    role: str = Field(min_length=1, max_length=20)
    apps: list[str] = Field(default_factory=list, max_length=100)
    reason: str = Field(default="", max_length=2000)


class TokenRequest(Strict):
    expires: str | None = Field(default=None, max_length=40)
    description: str = Field(default="", max_length=2000)


class RevocationRequest(Strict):
    reason: str = Field(default="", max_length=2000)


def create_app(root: Path) -> FastAPI:
    """The API of the governed project at `root`, against its configured ledger."""
    from govern.api import access as access_api
    from govern.api import audit as audit_api
    from govern.api import integrity, lifecycle
    from govern.api import status as status_api

    root = root.resolve()
    app = FastAPI(
        title="govern",
        version=__version__,
        summary="Model governance: lineage, promotions, production windows, audit",
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )

    def ledger() -> Any:
        return audit_api.open_ledger(root)

    @app.exception_handler(GovernError)
    async def governed(request: Request, error: GovernError) -> JSONResponse:
        status = status_of(error)
        title = (type(error).__doc__ or type(error).__name__).strip().splitlines()[0]
        return problem(status, _kebab(type(error).__name__), title, str(error), request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        message = " ".join(str(error).split()) or type(error).__name__
        detail = f"unexpected {type(error).__name__}: {message} (the server's log has the traceback)"
        return problem(500, "unexpected", "The server failed", detail, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
        return problem(422, "invalid-request", "The request is not valid", detail, request.url.path)

    def authorised(operation: str) -> Callable[..., access.Principal]:
        if operation not in access.POLICY:  # a route without a policy row could never be called: fail at startup
            raise RuntimeError(f"operation {operation!r} has no row in access.POLICY")

        def check(authorization: Annotated[str | None, Header()] = None) -> access.Principal:
            bearer = authorization[7:] if authorization and authorization[:7].lower() == "bearer " else None
            principal = access_api.authenticate(ledger(), bearer)
            if not access.allowed(principal, operation):
                roles = ", ".join(sorted(principal.roles)) or "no role"
                raise Forbidden(f"{principal.name} ({roles}) may not call {operation}")
            return principal

        return check

    def scoped(principal: access.Principal, operation: str, app_name: str) -> None:
        if not access.allowed(principal, operation, app_name):
            raise Forbidden(f"{principal.name} may not see app {app_name!r}: a consumer sees its own apps only")

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    def ready() -> JSONResponse:
        try:
            store = ledger()
            head = store.head() if store.exists() else None
        except GovernError as error:
            return problem(503, "not-ready", "The ledger cannot be read", str(error), "/ready")
        return JSONResponse({"status": "ready", "ledger": store.location, "head_seq": head[0] if head else None})

    @app.get(f"{API}/whoami", operation_id="whoami")
    def whoami(principal: Annotated[access.Principal, Depends(authorised("whoami"))]) -> dict[str, Any]:
        return {"principal": principal.name, "roles": principal.roles, "token_id": principal.token_id}

    @app.get(f"{API}/status", operation_id="status")
    def status(principal: Annotated[access.Principal, Depends(authorised("status"))]) -> Any:
        return jsonable(status_api.status(root))

    @app.get(f"{API}/apps/{{app_name}}/production", operation_id="production")
    def production(
        app_name: str,
        principal: Annotated[access.Principal, Depends(authorised("production"))],
        env: str = "production",
        at: Annotated[datetime | None, Query(description="ISO 8601 with a zone; default now")] = None,
    ) -> Any:
        scoped(principal, "production", app_name)
        from govern.events import utc_now

        return jsonable(audit_api.production_answer(app_name, env, _aware(at) or utc_now(), root))

    @app.get(f"{API}/windows", operation_id="windows")
    def windows(
        principal: Annotated[access.Principal, Depends(authorised("windows"))],
        app_name: Annotated[str | None, Query(alias="app")] = None,
        model: str | None = None,
    ) -> Any:
        return jsonable(audit_api.window_records(app=app_name, model=model, start=root))

    @app.get(f"{API}/events", operation_id="events")
    def events(
        principal: Annotated[access.Principal, Depends(authorised("events"))],
        event_type: Annotated[list[str] | None, Query(alias="type")] = None,
        since: datetime | None = None,
        limit: Annotated[int | None, Query(ge=0, le=100_000)] = 1000,
    ) -> Any:
        found = audit_api.audit_log(types=event_type or (), since=_aware(since), limit=limit, start=root)
        return jsonable([event.to_dict() for event in found])

    @app.get(f"{API}/verify", operation_id="verify")
    def verify(principal: Annotated[access.Principal, Depends(authorised("verify"))]) -> Any:
        return jsonable(integrity.verify(root).to_dict())

    @app.post(f"{API}/deployments", operation_id="deploy", status_code=201)
    def deploy(body: DeploymentRequest, principal: Annotated[access.Principal, Depends(authorised("deploy"))]) -> Any:
        outcome = lifecycle.deploy(
            body.model, body.version, app=body.app, env=body.env, at=_aware(body.at), start=root, actor=principal.actor
        )
        return jsonable(outcome.to_dict())

    @app.post(f"{API}/retirements", operation_id="retire", status_code=201)
    def retire(body: RetirementRequest, principal: Annotated[access.Principal, Depends(authorised("retire"))]) -> Any:
        outcome = lifecycle.retire(app=body.app, env=body.env, at=_aware(body.at), start=root, actor=principal.actor)
        return jsonable(outcome.to_dict())

    @app.get(f"{API}/principals", operation_id="principals")
    def principals(
        principal: Annotated[access.Principal, Depends(authorised("principals"))], at: datetime | None = None
    ) -> Any:
        return jsonable(access_api.roles_at(ledger(), _aware(at)))

    @app.post(f"{API}/principals", operation_id="grant", status_code=201)
    def grant(body: GrantRequest, principal: Annotated[access.Principal, Depends(authorised("grant"))]) -> Any:
        event = access_api.grant(body.principal, body.role, body.apps, body.reason, root, principal.actor)
        return jsonable(event.to_dict())

    @app.delete(f"{API}/principals/{{name}}/roles/{{role}}", operation_id="revoke")
    def revoke(
        name: str,
        role: str,
        principal: Annotated[access.Principal, Depends(authorised("revoke"))],
        reason: Annotated[str, Query(max_length=2000)] = "",
    ) -> Any:
        return jsonable(access_api.revoke(name, role, reason, root, principal.actor).to_dict())

    @app.get(f"{API}/tokens", operation_id="tokens")
    def tokens(principal: Annotated[access.Principal, Depends(authorised("tokens"))], of: str | None = None) -> Any:
        return jsonable(access_api.tokens(ledger(), of))

    @app.post(f"{API}/principals/{{name}}/tokens", operation_id="issue_token", status_code=201)
    def issue_token(
        name: str, body: TokenRequest, principal: Annotated[access.Principal, Depends(authorised("issue_token"))]
    ) -> Any:
        issued = access_api.issue_token(name, body.expires, body.description, root, principal.actor)
        return jsonable(issued.to_dict())

    @app.delete(f"{API}/tokens/{{token_id}}", operation_id="revoke_token")
    def revoke_token(
        token_id: str,
        principal: Annotated[access.Principal, Depends(authorised("revoke_token"))],
        reason: Annotated[str, Query(max_length=2000)] = "",
    ) -> Any:
        return jsonable(access_api.revoke_token(token_id, reason, root, principal.actor).to_dict())

    return app


def _aware(moment: datetime | None) -> datetime | None:
    """Times over HTTP carry a zone, as on the command line: a naive one is refused."""
    if moment is not None and moment.tzinfo is None:
        raise InvalidInput(f"{moment.isoformat()} has no time zone; add Z for UTC or an offset such as +01:00")
    return moment


def from_environment() -> FastAPI:
    """The factory uvicorn's workers call: the project `govern serve` was started in (GOVERN_PROJECT)."""
    import os

    return create_app(Path(os.environ["GOVERN_PROJECT"]))
