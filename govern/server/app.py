"""The controller's HTTP API: the CLI's use cases behind authenticated, role-checked routes.

Each route authenticates the bearer token against the ledger, checks `access.POLICY` for its operation, calls
the same use case as the CLI with the principal as actor, and answers with the same JSON as `--json`
(`presentation.jsonable`). Every `GovernError` becomes an RFC 9457 problem carrying the CLI's one-line message,
its HTTP status derived from the error's class.
"""

import logging
from contextlib import asynccontextmanager
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from govern import __version__, access
from govern.errors import (
    Forbidden,
    GovernError,
    InvalidInput,
    NotFound,
    problem_kind,
    status_of,
)
from govern.httpkit import NoStore, SecurityHeaders
from govern.presentation import jsonable
from govern.server.admission import PRINCIPAL_KEY, Gate
from govern.server.http import (
    API,
    PROBLEMS,
    RETRY_AFTER,
    Problem,
    Signing,
    UnprocessableBody,
    problem,
    problems_documented_as_sent,
    validation_detail,
)
from govern.server.models import (
    CodeRedemption,
    Decision,
    DeploymentRequest,
    Deprecation,
    DirectPromotion,
    GrantRequest,
    IdentityLink,
    PredictRows,
    PromotionRequest,
    ProposalDecision,
    ProposalDecline,
    QueryRun,
    RetirementRequest,
    SqlRequest,
    TokenRequest,
    TrainingRequest,
    VerdictUpload,
)

REPORT_TYPES = {"html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8", "json": "application/json"}
PREDICT_TIMEOUT = 120.0  # seconds an inference entry point may run for one request
REDEEM_PER_CLIENT, REDEEM_TOTAL = 20, 200  # failed enrollment-code redemptions a minute: from one address, in all
log = logging.getLogger("govern.server")


def create_app(root: Path, session_secret: str | None = None) -> Any:
    """The API and the web pages of the governed project at `root`, against its configured ledger: an ASGI
    application (FastAPI's, behind the body-size limit). Web sessions are signed with `session_secret`
    (default: `GOVERN_SESSION_SECRET`, else a key of this process's own)."""
    import os

    from govern import config
    from govern.api import access as access_api
    from govern.api import approvals, integrity, lifecycle
    from govern.api import audit as audit_api
    from govern.api import jobs as jobs_api
    from govern.api import status as status_api
    from govern.server.jobs import JobRunner
    from govern.web import add_pages, is_page
    from govern.web.sessions import SESSION_COOKIE, new_secret

    root = root.resolve()
    from govern.api import keys

    # Every event written while a request is answered (and by the server's own threads) is signed with this key; a
    # key the ledger does not trust is refused here, before anything is served.
    signer = keys.start(root, activate=False).signer

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

    runner = JobRunner(root, signer=signer)
    settings = config.load(root).server
    token_table = access_api.token_table()
    token_table.configure(stale_after=settings.token_staleness, refresh_every=settings.token_refresh)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        import anyio.to_thread

        # a thread for every request admitted (sync routes run in threads), and a few for the door's own reads
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, settings.max_requests + 8)
        token_table.read_soon(door_ledger())  # the token table read before the first request, by a thread that may wait
        runner.start()  # jobs accepted before a restart are taken again
        yield
        runner.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="govern",
        version=__version__,
        summary="Model governance: lineage, promotions, production windows, audit",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN; the OpenAPI document is served, and works offline
        redoc_url=None,
        responses=PROBLEMS,
        dependencies=[Depends(no_unknown_query)],
    )
    problems_documented_as_sent(app)
    bearer_scheme = HTTPBearer(auto_error=False, description="A token from `govern tokens create NAME`")

    def ledger() -> Any:
        return audit_api.open_ledger(root)

    secret = session_secret or os.environ.get("GOVERN_SESSION_SECRET") or new_secret()
    _guard_secrets(root, secret)
    web = add_pages(app, root, secret)
    web.training_requested = runner.wake

    async def as_page(request: Request, status: int, message: str) -> Response:
        from starlette.concurrency import run_in_threadpool

        from govern.redaction import scrub

        response = await run_in_threadpool(web.error_page, request, status, scrub(message))
        if status in RETRY_AFTER:
            response.headers["Retry-After"] = str(RETRY_AFTER[status])
        return response

    @app.exception_handler(GovernError)
    async def governed(request: Request, error: GovernError) -> Response:
        if is_page(request.url.path):
            return await as_page(request, status_of(error), str(error))
        return problem(status_of(error), problem_kind(type(error)), str(error), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        detail = str(error.detail)
        if is_page(request.url.path):
            if error.status_code == 404:
                detail = f"There is no page {request.url.path}"
            return await as_page(request, error.status_code, detail)
        if error.status_code == 404:
            detail = f"No operation at {request.url.path}: the API is described at {API}/openapi.json"
        elif error.status_code == 405:
            detail = f"{request.method} is not an operation of {request.url.path}: see {API}/openapi.json"
        kind = HTTPStatus(error.status_code).name.lower().replace("_", "-")
        return problem(error.status_code, kind, detail, request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        message = " ".join(str(error).split()) or type(error).__name__
        detail = f"unexpected {type(error).__name__}: {message} (the server's log has the traceback)"
        if is_page(request.url.path):
            return await as_page(request, 500, detail)
        return problem(500, "unexpected", detail, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> Response:
        if is_page(request.url.path):
            from govern.web.pages import page_validation

            return await as_page(request, *page_validation(error.errors()))
        return problem(422, "invalid-request", validation_detail(error.errors()), request.url.path)

    def authorised(operation: str, *, hold: str | None = None) -> Any:
        """The dependency of a route: authenticate, check `access.POLICY`. With `hold` ("read" or "write"), the
        request's ledger work (authentication included) shares one ledger connection, or one pooled PostgreSQL
        connection, until the handler returns (`ledger.Session`): only for handlers that do short ledger work,
        as the session holds the file; model runs, fetches and streams go without."""
        if operation not in access.POLICY:  # a route without a policy row could never be called: fail at startup
            raise RuntimeError(f"operation {operation!r} has no row in access.POLICY")

        def check(request: Request, credentials: HTTPAuthorizationCredentials | None) -> access.Principal:
            principal = request.scope.get(PRINCIPAL_KEY)  # authenticated at the door (`admission.Gate`)
            if principal is None:
                principal = access_api.authenticate(ledger(), credentials.credentials if credentials else None)
            if not access.allowed(principal, operation):
                roles = ", ".join(sorted(principal.roles)) or "no role"
                raise Forbidden(f"{principal.name} ({roles}) may not call {operation}")
            return principal

        async def within_session(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
        ) -> Any:
            from starlette.concurrency import run_in_threadpool

            from govern.ledger import Session, enter_session

            current = Session(write=hold == "write")
            enter_session(current)  # the thread-pool calls of this request (this check, the handler) share it
            try:
                yield await checked(request, credentials)
            finally:
                if current.holds_nothing():
                    current.close()  # nothing to let go: no trip through a worker thread
                else:
                    await run_in_threadpool(current.close)

        async def checked(request: Request, credentials: HTTPAuthorizationCredentials | None) -> access.Principal:
            """On the event loop where the door authenticated the request (a role check is microseconds): under a
            flood, every trip to a worker thread and back waits for the loop, so a request makes as few as it can."""
            from starlette.concurrency import run_in_threadpool

            if PRINCIPAL_KEY in request.scope:
                return check(request, credentials)
            return await run_in_threadpool(check, request, credentials)

        async def alone(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
        ) -> access.Principal:
            return await checked(request, credentials)

        if hold is None:
            return Depends(alone)
        return Depends(within_session, scope="function")

    def scoped(principal: access.Principal, operation: str, app_name: str) -> bool:
        """Check a consumer's app; True where the principal is limited to its apps (answers name no others)."""
        if not access.allowed(principal, operation, app_name):
            raise Forbidden(f"{principal.name} may not see app {app_name!r}: a consumer sees its own apps only")
        return not any(role != "consumer" for role in principal.roles)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        """Answered at the door (`admission.Gate`), before any limit and off the thread pool; this route only
        documents it."""
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    def ready() -> JSONResponse:
        """Whether the ledger can be read, within the request's wait for it (`server.lock_wait`)."""
        try:
            store = ledger()
            head = store.head() if store.exists() else None
        except GovernError as error:
            log.error("govern serve: not ready: %s", error)  # the detail is the operator's, not the caller's
            return problem(503, "not-ready", "The ledger cannot be read: the server's log says why", "/ready")
        return JSONResponse({"status": "ready", "head_seq": head[0] if head else None})

    @app.get(f"{API}/whoami", operation_id="whoami")
    async def whoami(principal: Annotated[access.Principal, authorised("whoami")]) -> dict[str, Any]:
        """The principal as the door authenticated it: no ledger, no worker thread."""
        return {"principal": principal.name, "roles": principal.roles, "token_id": principal.token_id}

    @app.get(f"{API}/status", operation_id="status")
    def status(principal: Annotated[access.Principal, authorised("status")]) -> Any:
        return jsonable(status_api.status(root))

    @app.get(f"{API}/apps/{{app}}/production", operation_id="production")
    def production(
        app_name: Annotated[str, PathParam(alias="app")],
        principal: Annotated[access.Principal, authorised("production", hold="read")],
        env: str = "production",
        at: Annotated[str | None, Query(description="ISO 8601 with Z or an offset; default now")] = None,
    ) -> Any:
        limited = scoped(principal, "production", app_name)
        from govern.events import utc_now

        try:
            return jsonable(audit_api.production_answer(app_name, env, _instant(at, "at") or utc_now(), root))
        except NotFound:
            if not limited:
                raise
            raise NotFound(f"Nothing is recorded for {app_name}/{env}") from None  # no other apps' names

    @app.post(
        f"{API}/apps/{{app}}/predict",
        operation_id="predict",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/json": {"schema": PredictRows.model_json_schema()},
                },
            }
        },
        responses={
            200: {"content": {"text/csv": {}}, "description": "CSV in, CSV out; JSON in, JSON out"},
            504: {"model": Problem, "description": "The model's entry point ran out of time"},
        },
    )
    async def predict(
        request: Request,
        app_name: Annotated[str, PathParam(alias="app")],
        principal: Annotated[access.Principal, authorised("predict")],
        env: str = "production",
    ) -> Any:
        from starlette.concurrency import run_in_threadpool

        scoped(principal, "predict", app_name)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("text/csv", "application/json"):
            raise InvalidInput(f"Send the rows as text/csv or application/json, not {kind or 'no content type'}")
        body = await request.body()
        return await run_in_threadpool(_predict, root, app_name, env, kind, body, principal)

    @app.get(f"{API}/apps/{{app}}/inferences", operation_id="inferences")
    def inferences(
        app_name: Annotated[str, PathParam(alias="app")],
        principal: Annotated[access.Principal, authorised("inferences", hold="read")],
        env: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="The newest N records; default 50")] = 50,
    ) -> Any:
        """The app's inference records, newest first: a consumer's own batches, or every batch for an auditor."""
        from govern.api.predict import inferences as records

        limited = scoped(principal, "inferences", app_name)
        mine = principal.name if limited else None
        return jsonable(records(ledger(), app_name, principal=mine, env=env, limit=limit))

    @app.get(f"{API}/windows", operation_id="windows")
    def windows(
        principal: Annotated[access.Principal, authorised("windows", hold="read")],
        app_name: Annotated[str | None, Query(alias="app")] = None,
        model: str | None = None,
    ) -> Any:
        return jsonable(audit_api.window_records(app=app_name, model=model, start=root))

    @app.get(f"{API}/events", operation_id="events")
    def events(
        principal: Annotated[access.Principal, authorised("events", hold="read")],
        event_type: Annotated[list[str] | None, Query(alias="type")] = None,
        since: Annotated[str | None, Query(description="ISO 8601 with Z or an offset")] = None,
        limit: Annotated[int | None, Query(ge=0, description="Only the newest N; default every event")] = None,
    ) -> Any:
        found = audit_api.audit_log(types=event_type or (), since=_instant(since, "since"), limit=limit, start=root)
        return jsonable([event.to_dict() for event in found])

    @app.get(f"{API}/verify", operation_id="verify")
    def verify(principal: Annotated[access.Principal, authorised("verify")]) -> Any:
        return jsonable(integrity.verify(root).to_dict())

    @app.get(f"{API}/models/{{model}}/history", operation_id="history")
    def history(
        model: str,
        principal: Annotated[access.Principal, authorised("history", hold="read")],
        version: str | None = None,
    ) -> Any:
        return jsonable([event.to_dict() for event in audit_api.history(model, version, root)])

    @app.get(
        f"{API}/models/{{model}}/versions/{{version}}/report",
        operation_id="report",
        response_class=Response,
        responses={200: {"content": {kind: {} for kind in REPORT_TYPES.values()}, "description": "The report"}},
    )
    def report(
        model: str,
        version: str,
        principal: Annotated[access.Principal, authorised("report")],
        format: Annotated[str, Query(pattern="^(html|md|json)$")] = "html",
        verify_chain: bool = False,
    ) -> Response:
        from govern.api.report import gather
        from govern.report import content_security_policy, render

        text = render(gather(model, version, root, verify_chain=verify_chain), format)
        policy = {"Content-Security-Policy": content_security_policy(text)} if format == "html" else None
        return Response(text, media_type=REPORT_TYPES[format], headers=policy)

    @app.post(f"{API}/sql", operation_id="sql")
    def sql(body: SqlRequest, principal: Annotated[access.Principal, authorised("sql")]) -> Any:
        found = audit_api.sql(body.statement, body.params, root)
        return jsonable({"columns": found.columns, "rows": found.records()})

    @app.get(f"{API}/queries", operation_id="named_queries")
    def named_queries(principal: Annotated[access.Principal, authorised("named_queries", hold="read")]) -> Any:
        return [{"name": name, "description": text} for name, text in audit_api.named_queries(root).items()]

    @app.post(f"{API}/queries/{{name}}", operation_id="run_query")
    def run_query(name: str, body: QueryRun, principal: Annotated[access.Principal, authorised("run_query")]) -> Any:
        found = audit_api.run_named(name, body.params, root)
        return jsonable({"columns": found.columns, "rows": found.records()})

    @app.get(f"{API}/anchors", operation_id="anchors")
    def anchors(principal: Annotated[access.Principal, authorised("anchors", hold="read")]) -> Any:
        return [{"tag": a.tag, "seq": a.seq, "hash": a.hash} for a in integrity.anchors(root)]

    @app.post(f"{API}/anchors", operation_id="anchor", status_code=201)
    def anchor(principal: Annotated[access.Principal, authorised("anchor")]) -> Any:
        from govern.api.context import open_project

        return jsonable(integrity.anchor(project=open_project(root, principal.actor)).to_dict())

    @app.post(f"{API}/reproductions", operation_id="record_reproduction", status_code=201)
    def record_reproduction(
        body: VerdictUpload, principal: Annotated[access.Principal, authorised("record_reproduction")]
    ) -> Any:
        from govern.api import ci

        verdict = ci.record_uploaded(body.type, body.payload, root, principal.actor)
        return jsonable({"verdict": verdict.to_dict(), "event": verdict.event.to_dict()})

    @app.get(f"{API}/promotion-requests", operation_id="requests")
    def promotion_requests(
        principal: Annotated[access.Principal, authorised("requests", hold="read")],
        state: Annotated[str, Query(description="pending, approved, rejected or all")] = "pending",
        model: str | None = None,
    ) -> Any:
        return jsonable(approvals.requests(ledger(), None if state == "all" else state, model))

    @app.post(f"{API}/promotion-requests", operation_id="request_promotion", status_code=201)
    def request_promotion(
        body: PromotionRequest, principal: Annotated[access.Principal, authorised("request_promotion", hold="write")]
    ) -> Any:
        requested = approvals.request_promotion(
            body.model, body.version, body.to_stage, body.reason, root, principal.actor, force=body.force
        )
        return jsonable(requested.to_dict())

    @app.post(f"{API}/promotion-requests/{{request}}/approval", operation_id="approve", status_code=201)
    def approve(
        request: Annotated[int, PathParam(ge=1, le=2**62)],
        body: Decision,
        principal: Annotated[access.Principal, authorised("approve", hold="write")],
    ) -> Any:
        return jsonable(approvals.approve(request, body.reason, root, principal.actor).to_dict())

    @app.post(f"{API}/promotion-requests/{{request}}/rejection", operation_id="reject", status_code=201)
    def reject(
        request: Annotated[int, PathParam(ge=1, le=2**62)],
        body: Decision,
        principal: Annotated[access.Principal, authorised("reject", hold="write")],
    ) -> Any:
        own_only = not principal.has("approver")
        event = approvals.reject(request, body.reason, root, principal.actor, requester_only=own_only)
        return jsonable(event.to_dict())

    @app.post(f"{API}/promotions", operation_id="promote", status_code=201)
    def promote(
        body: DirectPromotion, principal: Annotated[access.Principal, authorised("promote", hold="write")]
    ) -> Any:
        outcome = lifecycle.promote(
            body.model, body.version, body.to_stage, body.reason, force=body.force, start=root, actor=principal.actor
        )
        return jsonable(outcome.to_dict())

    @app.post(f"{API}/models/{{model}}/versions/{{version}}/deprecation", operation_id="deprecate", status_code=201)
    def deprecate(
        model: str,
        version: str,
        body: Deprecation,
        principal: Annotated[access.Principal, authorised("deprecate", hold="write")],
    ) -> Any:
        outcome = lifecycle.deprecate(model, version, body.reason, force=body.force, start=root, actor=principal.actor)
        return jsonable(outcome.to_dict())

    @app.get(f"{API}/trainings", operation_id="trainings")
    def trainings(
        principal: Annotated[access.Principal, authorised("trainings", hold="read")], state: str | None = None
    ) -> Any:
        return jsonable(jobs_api.jobs(ledger(), state))

    @app.post(f"{API}/trainings", operation_id="request_training", status_code=202)
    def request_training(
        body: TrainingRequest, principal: Annotated[access.Principal, authorised("request_training")]
    ) -> Any:
        job = jobs_api.request_training(body.commit, body.targets, root, principal.actor)
        runner.wake()
        return jsonable(job.to_dict())

    @app.get(f"{API}/trainings/known-snapshots", operation_id="known_snapshots")
    def known_snapshots(principal: Annotated[access.Principal, authorised("known_snapshots", hold="read")]) -> Any:
        """The dataset snapshots the ledger records (per path and md5): what a remote `govern repro` needs to know
        so that an unchanged dataset is not snapshotted again."""
        from govern.api import reported
        from govern.api.context import open_project

        return jsonable(reported.known_snapshots(open_project(root, principal.actor)))

    @app.post(
        f"{API}/trainings/reported",
        operation_id="record_training",
        status_code=201,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["report"],
                            "properties": {
                                "report": {"type": "string", "description": "The training's facts (JSON)"},
                                "file": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                    "description": "The model files the training names, each by its path",
                                },
                            },
                        }
                    }
                },
            }
        },
    )
    async def record_training(
        request: Request, principal: Annotated[access.Principal, authorised("record_training")]
    ) -> Any:
        """A training run on a scientist's machine (`govern repro` with GOVERN_URL): its facts and model files,
        checked as a job's report is, recorded under the authenticated principal (so the trainer is authenticated
        for the four-eyes rule), the model files taken into the server's DVC cache for the MLflow mirror."""
        from starlette.concurrency import run_in_threadpool

        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise InvalidInput("Send the training as multipart/form-data: a `report` field and its model files")
        try:
            form = await request.form(max_files=MAX_TRAINING_FILES, max_fields=4)
        except Exception as error:  # noqa: BLE001 - the multipart parser's own errors: the client's input
            raise InvalidInput(f"The upload is not readable multipart/form-data ({error})") from None
        try:
            return await run_in_threadpool(_record_training, root, form, principal)
        finally:
            await form.close()

    @app.get(f"{API}/trainings/{{job}}", operation_id="training")
    def training(job: str, principal: Annotated[access.Principal, authorised("training", hold="read")]) -> Any:
        return jsonable(jobs_api.job(ledger(), job).to_dict())

    @app.delete(f"{API}/trainings/{{job}}", operation_id="cancel_training")
    def cancel_training(
        job: str, principal: Annotated[access.Principal, authorised("cancel_training", hold="write")]
    ) -> Any:
        own_only = not principal.has("admin")
        return jsonable(jobs_api.cancel(job, root, principal.actor, requester_only=own_only).to_dict())

    @app.get(
        f"{API}/trainings/{{job}}/progress",
        operation_id="training_progress",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}},
    )
    async def training_progress(
        job: str, principal: Annotated[access.Principal, authorised("training_progress")]
    ) -> StreamingResponse:
        from starlette.concurrency import run_in_threadpool

        def read() -> Any:
            return jobs_api.job(ledger(), job)

        await run_in_threadpool(read)  # an unknown job is a 404, before the stream starts

        async def stream() -> Any:
            import asyncio
            import json

            sent = None
            while True:
                found = await run_in_threadpool(read)
                current = jsonable(found.to_dict())
                if current != sent:
                    kind = "finished" if found.finished else "progress"
                    yield f"event: {kind}\ndata: {json.dumps(current)}\n\n"
                    sent = current
                if found.finished:
                    return
                await asyncio.sleep(1.0)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post(f"{API}/deployments", operation_id="deploy", status_code=201)
    def deploy(
        body: DeploymentRequest, principal: Annotated[access.Principal, authorised("deploy", hold="write")]
    ) -> Any:
        outcome = lifecycle.deploy(
            body.model,
            body.version,
            app=body.app,
            env=body.env,
            at=_instant(body.at, "at"),
            start=root,
            actor=principal.actor,
        )
        return jsonable(outcome.to_dict())

    @app.post(f"{API}/retirements", operation_id="retire", status_code=201)
    def retire(
        body: RetirementRequest, principal: Annotated[access.Principal, authorised("retire", hold="write")]
    ) -> Any:
        at = _instant(body.at, "at")
        outcome = lifecycle.retire(app=body.app, env=body.env, at=at, start=root, actor=principal.actor)
        return jsonable(outcome.to_dict())

    @app.get(f"{API}/principals", operation_id="principals")
    def principals(
        principal: Annotated[access.Principal, authorised("principals", hold="read")], at: str | None = None
    ) -> Any:
        return jsonable(access_api.roles_at(ledger(), _instant(at, "at")))

    @app.post(f"{API}/principals", operation_id="grant", status_code=201)
    def grant(body: GrantRequest, principal: Annotated[access.Principal, authorised("grant", hold="write")]) -> Any:
        event = access_api.grant(body.principal, body.role, body.apps, body.reason, root, principal.actor)
        return jsonable(event.to_dict())

    @app.delete(f"{API}/principals/{{name}}/roles/{{role}}", operation_id="revoke")
    def revoke(
        name: str,
        role: str,
        principal: Annotated[access.Principal, authorised("revoke", hold="write")],
        reason: Annotated[str, Query(max_length=2000)] = "",
    ) -> Any:
        return jsonable(access_api.revoke(name, role, reason, root, principal.actor).to_dict())

    @app.post(f"{API}/principals/{{name}}/identities", operation_id="link_identity", status_code=201)
    def link_identity(
        name: str, body: IdentityLink, principal: Annotated[access.Principal, authorised("link_identity", hold="write")]
    ) -> Any:
        return jsonable(access_api.link_identity(name, body.identity, body.reason, root, principal.actor).to_dict())

    @app.get(f"{API}/identities", operation_id="identities")
    def identities(principal: Annotated[access.Principal, authorised("identities", hold="read")]) -> Any:
        return jsonable(access_api.identities(ledger()))

    @app.get(f"{API}/tokens", operation_id="tokens")
    def tokens(
        principal: Annotated[access.Principal, authorised("tokens", hold="read")],
        of: Annotated[str | None, Query(alias="principal")] = None,
    ) -> Any:
        return jsonable(access_api.tokens(ledger(), of))

    @app.post(f"{API}/principals/{{name}}/tokens", operation_id="issue_token", status_code=201)
    def issue_token(
        name: str, body: TokenRequest, principal: Annotated[access.Principal, authorised("issue_token", hold="write")]
    ) -> Any:
        issued = access_api.issue_token(name, body.expires, body.description, root, principal.actor)
        return jsonable({**issued.to_dict(), "event": issued.event.to_dict()})

    @app.delete(f"{API}/tokens/{{token_id}}", operation_id="revoke_token")
    def revoke_token(
        token_id: str,
        principal: Annotated[access.Principal, authorised("revoke_token", hold="write")],
        reason: Annotated[str, Query(max_length=2000)] = "",
    ) -> Any:
        return jsonable(access_api.revoke_token(token_id, reason, root, principal.actor).to_dict())

    @app.get(f"{API}/grants", operation_id="grant_history")
    def grant_history(
        principal: Annotated[access.Principal, authorised("grant_history", hold="read")],
        of: Annotated[str | None, Query(alias="principal", max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> Any:
        return jsonable(access_api.grant_history(ledger(), of, limit))

    @app.get(f"{API}/grant-proposals", operation_id="grant_proposals")
    def grant_proposals(
        principal: Annotated[access.Principal, authorised("grant_proposals", hold="read")],
        state: Annotated[str, Query(description="pending, confirmed, declined, withdrawn or all")] = "pending",
    ) -> Any:
        return jsonable(access_api.proposals(ledger(), None if state == "all" else state))

    @app.post(f"{API}/grant-proposals/{{proposal}}/confirmation", operation_id="confirm_grant", status_code=201)
    def confirm_grant(
        proposal: Annotated[int, PathParam(ge=1, le=2**62)],
        body: ProposalDecision,
        principal: Annotated[access.Principal, authorised("confirm_grant", hold="write")],
    ) -> Any:
        return jsonable(access_api.confirm_grant(proposal, body.reason, root, principal.actor).to_dict())

    @app.post(f"{API}/grant-proposals/{{proposal}}/decline", operation_id="decline_grant", status_code=201)
    def decline_grant(
        proposal: Annotated[int, PathParam(ge=1, le=2**62)],
        body: ProposalDecline,
        principal: Annotated[access.Principal, authorised("decline_grant", hold="write")],
    ) -> Any:
        return jsonable(access_api.decline_grant(proposal, body.reason, root, principal.actor).to_dict())

    @app.post(f"{API}/grant-proposals/{{proposal}}/withdrawal", operation_id="withdraw_grant", status_code=201)
    def withdraw_grant(
        proposal: Annotated[int, PathParam(ge=1, le=2**62)],
        body: ProposalDecision,
        principal: Annotated[access.Principal, authorised("withdraw_grant", hold="write")],
    ) -> Any:
        return jsonable(access_api.withdraw_grant(proposal, body.reason, root, principal.actor).to_dict())

    from govern.throttle import Throttle, TooManyAttempts

    redemptions = Throttle(per_client=REDEEM_PER_CLIENT, total=REDEEM_TOTAL, window=60.0)
    app.state.redemptions = redemptions  # the sign-in page redeems codes too, within the same limits

    @app.post(
        f"{API}/enrollment-codes/redemptions",
        operation_id="redeem_code",
        status_code=201,
        responses={429: {**PROBLEMS[400], "description": "Too Many Requests (with Retry-After)"}},
    )
    def redeem_code(request: Request, body: CodeRedemption) -> Any:
        """No bearer token: the enrollment code authenticates the call, and is spent by it."""
        try:
            issued = redemptions.run(
                request.client.host if request.client else "unknown",
                "redeem an enrollment code",
                lambda: access_api.redeem(body.code, root, through_server=True),
                access_api.REDEMPTION_REFUSALS,
            )
        except TooManyAttempts as error:
            refused = problem(429, "too-many-requests", str(error), request.url.path)
            refused.headers["Retry-After"] = str(error.retry_after)
            return refused
        return jsonable({**issued.to_dict(), "event": issued.event.to_dict()})

    async def refused_page(scope: dict, status: int, message: str) -> Response | None:
        """A refusal at the door (`admission.Gate`) as a page where a browser asked for one (401: the way to sign
        in); None for the API's paths, which get a problem document."""
        if not is_page(scope.get("path", "")):
            return None
        return await as_page(Request(scope), status, message)

    def session_of(scope: dict) -> str | None:
        found = web.keys.session(Request(scope).cookies.get(SESSION_COOKIE))
        return found.token_id if found is not None else None

    opened: list[Any] = []

    def door_ledger() -> Any:
        """The ledger the door reads tokens from: opened once (a PostgreSQL ledger keeps its connection), not per
        request on the event loop."""
        if not opened:
            opened.append(ledger())
        return opened[0]

    gate = Gate(app, settings=settings, ledger=door_ledger, session_of=session_of, page=refused_page)
    return SecurityHeaders(Signing(NoStore(gate), signer))


def _guard_secrets(root: Path, session_secret: str) -> None:
    """From the start, no ledger of this server records the project's configured secrets or the sessions' key
    (which `from_environment` took out of the environment): `redaction.remember`."""
    from govern import config, redaction
    from govern.api.context import guard_secrets

    guard_secrets(root, config.load(root))
    redaction.remember(redaction.guarded({session_secret: "the web sessions' key (GOVERN_SESSION_SECRET)"}))


def _predict(root: Path, app: str, env: str, kind: str, body: bytes, principal: access.Principal) -> Response:
    """Score the rows with the serving version's entry point (`predict.predict_sent`), answer in the format sent."""
    from govern import tabular
    from govern.api.predict import predict_sent

    rows = body if kind == "text/csv" else tabular.csv_bytes(_rows(body))
    done = predict_sent(
        rows,
        app=app,
        env=env,
        actor=principal.actor,
        label=f"upload ({kind}, {len(body)} bytes)",
        timeout=PREDICT_TIMEOUT,
        start=root,
        as_records=kind != "text/csv",
    )
    if kind == "text/csv":
        return Response(done.csv, media_type="text/csv", headers=done.headers())
    answer = {**done.prediction.to_dict(), "output": None, "predictions": done.records}
    return JSONResponse(jsonable(answer), headers=done.headers())


MAX_TRAINING_FILES = 64  # model files one training's upload may carry


def _record_training(root: Path, form: Any, principal: access.Principal) -> Any:
    """Write the uploaded model files into a scratch workspace at the paths the report names, then record the
    report from it (`reported.record_reported_training`)."""
    import json
    import tempfile
    from pathlib import PurePosixPath
    from urllib.parse import unquote

    from govern.api import jobs as jobs_api
    from govern.api import reported
    from govern.api.context import open_project

    text = form.get("report")
    if not isinstance(text, str):
        raise InvalidInput("The upload has no `report` field: send the training's facts as `report`")
    try:
        report = json.loads(text)
    except ValueError:
        raise InvalidInput("The `report` field is not JSON: send what `govern repro` reported") from None
    training = next(
        (e for e in report.get("events", []) if isinstance(e, dict) and e.get("type") == "training.completed"), None
    ) if isinstance(report, dict) and isinstance(report.get("events"), list) else None  # fmt: skip
    failed = training is None and isinstance(report, dict) and isinstance(report.get("events"), list)
    events = report.get("events") if isinstance(report, dict) else None
    first = events[0] if isinstance(events, list) and events and isinstance(events[0], dict) else {}
    commit = (training or first).get("git_commit") if (training or failed) else None
    if not isinstance(commit, str):
        raise InvalidInput("The report names no commit: send what `govern repro` reported")
    sha = jobs_api.resolve_commit(root, commit)  # the commit an auditor checks out: the server must have it
    named = {
        str(m.get("path")) for m in ((training or {}).get("payload") or {}).get("models") or [] if isinstance(m, dict)
    }
    project = open_project(root, principal.actor)
    with tempfile.TemporaryDirectory(prefix="govern-upload-") as scratch:
        workspace = Path(scratch)
        for key, value in form.multi_items():
            if key == "report":
                continue
            if key != "file" or isinstance(value, str):
                raise InvalidInput(f"Unknown field {key!r} in the upload: send `report` and the model files as `file`")
            name = unquote(value.filename or "")
            relative = PurePosixPath(name)
            if name not in named or relative.is_absolute() or ".." in relative.parts:
                raise InvalidInput(f"The upload carries {name!r}, which is not a model file the training names")
            target = workspace / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as handle:
                while chunk := value.file.read(1 << 20):
                    handle.write(chunk)
        outcome = reported.record_reported_training(project, report, principal.actor, sha, workspace=workspace)
    found = project.ledger.query("SELECT seq FROM events WHERE event_id = ?", [outcome.training_event_id])[1]
    return jsonable(
        {
            "status": outcome.status,
            "events": [event.to_dict() for event in outcome.events],
            "training_event_id": outcome.training_event_id,
            "training_seq": found[0][0] if found else None,
            "warnings": outcome.warnings,
        }
    )


def _rows(body: bytes) -> list[dict[str, Any]]:
    """The rows of a JSON body (its nesting was measured at the door: `admission.Gate`): malformed JSON is a 422,
    as for every JSON body; JSON of another shape a 400, as before."""
    import json

    shape = 'Send {"rows": [{"column": value, ...}, ...]} (at least one row), or text/csv'
    try:
        parsed = json.loads(body or b"null")
    except (ValueError, RecursionError):
        raise UnprocessableBody(f"The body is not valid JSON: {shape[0].lower()}{shape[1:]}") from None
    try:
        return PredictRows.model_validate(parsed).rows
    except ValueError:
        raise InvalidInput(shape) from None


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _instant(text: str | None, name: str) -> datetime | None:
    """Times over HTTP are read as on the command line: ISO 8601 with Z or an offset, nothing else."""
    from govern.timeparse import parse_instant

    return parse_instant(text, name) if text is not None else None


def from_environment() -> Any:
    """The factory uvicorn's workers call: the project `govern serve` was started in (GOVERN_PROJECT)."""
    import os

    from govern.server.http import RedactSecrets

    RedactSecrets.install()
    # Read once and removed: the training and inference processes this worker starts never inherit the key
    secret = os.environ.pop("GOVERN_SESSION_SECRET", None)
    return create_app(Path(os.environ["GOVERN_PROJECT"]), session_secret=secret)
