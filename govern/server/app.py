"""The controller's HTTP API: the CLI's use cases behind authenticated, role-checked routes.

Each route authenticates the bearer token against the ledger, checks `access.POLICY` for its operation, calls
the same use case as the CLI with the principal as actor, and answers with the same JSON as `--json`
(`presentation.jsonable`). Every `GovernError` becomes an RFC 9457 problem carrying the CLI's one-line message,
its HTTP status derived from the error's class (`errors.status_of`).

This module composes the application: the routes (one router per resource, `govern.server.routes`, sharing the
dependencies of `govern.server.deps`), the web pages (`govern.web`), the failures' answers
(`govern.server.failures`) and the door and wrappers every request passes (`admission.Gate`, `Signing`,
`NoStore`, `SecurityHeaders`).
"""

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from govern import __version__
from govern.httpkit import NoStore, SecurityHeaders
from govern.server.admission import Gate
from govern.server.deps import ServerState, no_unknown_query
from govern.server.http import API, PROBLEMS, Signing, problems_documented_as_sent

REDEEM_PER_CLIENT, REDEEM_TOTAL = 20, 200  # failed enrollment-code redemptions a minute: from one address, in all
log = logging.getLogger("govern.server")


def create_app(root: Path, session_secret: str | None = None) -> Any:
    """The API and the web pages of the governed project at `root`, against its configured ledger: an ASGI
    application (FastAPI's, behind the body-size limit). Web sessions are signed with `session_secret`
    (default: `GOVERN_SESSION_SECRET`, else a key of this process's own)."""
    import os

    from govern import config
    from govern.api import authentication, keys
    from govern.api.context import open_project
    from govern.server.failures import answer_failures
    from govern.server.jobs import JobRunner
    from govern.server.routes import routers
    from govern.throttle import Throttle
    from govern.web import add_pages, is_page
    from govern.web.sessions import SESSION_COOKIE, new_secret

    root = root.resolve()
    # Every event written while a request is answered (and by the server's own threads) is signed with this key; a
    # key the ledger does not trust is refused here, before anything is served.
    signer = keys.start(open_project(root, actor=keys.server_actor()), activate=False).signer
    runner = JobRunner(root, signer=signer)
    settings = config.load(root).server
    token_table = authentication.token_table()
    token_table.configure(stale_after=settings.token_staleness, refresh_every=settings.token_refresh)
    door_ledger = _opened_once(root)

    app = FastAPI(
        lifespan=_lifespan(settings, token_table, door_ledger, runner),
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

    secret = session_secret or os.environ.get("GOVERN_SESSION_SECRET") or new_secret()
    _guard_secrets(root, secret)
    web = add_pages(app, root, secret)
    web.training_requested = runner.wake
    as_page = answer_failures(app, web)

    redemptions = Throttle(per_client=REDEEM_PER_CLIENT, total=REDEEM_TOTAL, window=60.0)
    app.state.govern = ServerState(root=root, runner=runner, redemptions=redemptions)
    app.state.redemptions = redemptions  # the sign-in page redeems codes too, within the same limits
    for router in routers():
        app.include_router(router)

    async def refused_page(scope: dict, status: int, message: str) -> Response | None:
        """A refusal at the door (`admission.Gate`) as a page where a browser asked for one (401: the way to sign
        in); None for the API's paths, which get a problem document."""
        if not is_page(scope.get("path", "")):
            return None
        return await as_page(Request(scope), status, message)

    def session_of(scope: dict) -> str | None:
        found = web.keys.session(Request(scope).cookies.get(SESSION_COOKIE))
        return found.token_id if found is not None else None

    gate = Gate(app, settings=settings, ledger=door_ledger, session_of=session_of, page=refused_page)
    return SecurityHeaders(Signing(NoStore(gate), signer))


def _lifespan(settings: Any, token_table: Any, door_ledger: Callable[[], Any], runner: Any) -> Any:
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

    return lifespan


def _opened_once(root: Path) -> Callable[[], Any]:
    """The ledger the door reads tokens from: opened once (a PostgreSQL ledger keeps its connection), not per
    request on the event loop."""
    opened: list[Any] = []

    def door_ledger() -> Any:
        if not opened:
            from govern.api.context import open_project

            opened.append(open_project(root, writing=False).ledger)
        return opened[0]

    return door_ledger


def _guard_secrets(root: Path, session_secret: str) -> None:
    """From the start, no ledger of this server records the project's configured secrets or the sessions' key
    (which `from_environment` took out of the environment): `redaction.remember`."""
    from govern import config, redaction
    from govern.api.context import guard_secrets

    guard_secrets(root, config.load(root))
    redaction.remember(redaction.guarded({session_secret: "the web sessions' key (GOVERN_SESSION_SECRET)"}))


def from_environment() -> Any:
    """The factory uvicorn's workers call: the project `govern serve` was started in (GOVERN_PROJECT)."""
    import os

    from govern.server.http import RedactSecrets

    RedactSecrets.install()
    # Read once and removed: the training and inference processes this worker starts never inherit the key
    secret = os.environ.pop("GOVERN_SESSION_SECRET", None)
    return create_app(Path(os.environ["GOVERN_PROJECT"]), session_secret=secret)
