"""The controller's door: who is asking, whether there is room for them, and only then their body.

Every request passes here before FastAPI sees it (FastAPI reads and parses a body before a route's dependencies
run, so a check there would come after the bytes). In order:

1. `/health` is answered at once, on the event loop: no limit, no thread, no ledger, so it answers while every
   worker thread is busy.
2. The caller is authenticated from the token table (`api.access.TokenTable`, no ledger wait): an API route by its
   bearer token (a bad one is refused 401 here, before any body byte is read), a page by its session cookie (a
   form posted without a valid session is sent to sign in, its body unread). Only the sign-in form is read
   without knowing who sent it (its token is in it); it keeps the 1 MiB limit.
3. Room: requests in flight per principal (unauthenticated: per client address) and in all, and predictions
   per consumer and in all; over a limit, 429 (the caller's) or 503 (the server's) with Retry-After, at once.
4. The body, within the route's limit (16 MiB for a consumer's rows to its own app's predict, 1 MiB for
   everything else), refused 413 when larger; a JSON body nesting deeper than `MAX_JSON_DEPTH` is refused 422
   before any parser recurses into it.

Every wait for the ledger in the request that follows is bounded by `[tool.govern.server] lock_wait`
(`ledger.wait_at_most`). Nothing refused here reaches the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from govern import access
from govern.api.authentication import Unauthenticated, authenticate, authenticate_session, token_table, unsettled
from govern.config import ServerSettings
from govern.errors import GovernError, LedgerLocked, problem_kind, status_of
from govern.server.http import (
    API,
    MAX_BODY,
    MAX_JSON_DEPTH,
    MAX_PREDICT_BODY,
    MAX_UPLOAD_BODY,
    json_depth,
    problem,
)
from govern.storage.sessions import wait_at_most, waiting_as

log = logging.getLogger("govern.server")
PRINCIPAL_KEY = "govern.principal"  # where the authenticated principal waits for the route's dependency
# The API's paths that need no bearer token: the document, and the redemption of an enrollment code (the code
# authenticates that call; the route throttles it per address, and its body is a small JSON object)
OPEN_API_PATHS = frozenset({f"{API}/openapi.json", f"{API}/enrollment-codes/redemptions"})
# A training's report and its model files (`govern repro` through the server): a scientist's upload, read only once
# they are authenticated, streamed to disk by the route, never buffered here
UPLOAD_ROUTES = frozenset({("POST", f"{API}/trainings/reported")})
PREDICT_ROUTES = frozenset({("POST", f"{API}/apps/{{app}}/predict"), ("POST", "/apps/{app}/predict")})
SIGN_IN = "/sign-in"
REFUSALS_PER_SECOND = 10  # a client's refusals answered at once; past them, each waits `server.refusal_pause`
THREAD_SCAN = 64 << 10  # JSON bodies larger than this are measured in a worker thread, not on the event loop


@dataclass
class Slots:
    """Requests (or predictions) in flight, in all and per key: admitted only while both are under their limits.
    Used on the event loop only, so plain counters suffice."""

    total: int
    per_key: int

    def __post_init__(self) -> None:
        self.in_flight = 0
        self.by_key: Counter[str] = Counter()

    def enter(self, key: str) -> int | None:
        """None when admitted (and counted); else the status to refuse with: 429 for the key, 503 for the total."""
        if self.by_key[key] >= self.per_key:
            return 429
        if self.in_flight >= self.total:
            return 503
        self.in_flight += 1
        self.by_key[key] += 1
        return None

    def leave(self, key: str) -> None:
        self.in_flight -= 1
        self.by_key[key] -= 1
        if self.by_key[key] <= 0:
            del self.by_key[key]


class Gate:
    """The ASGI wrapper doing the above in front of the FastAPI application `app`.

    `ledger` opens the project's ledger (tokens are read from it); `session_of` reads a page's session cookie (the
    token id it names, or None); `page` answers a failure on a page as a page (401: the way to sign in), and None
    for the API's paths."""

    def __init__(
        self,
        app: Any,
        *,
        settings: ServerSettings,
        ledger: Callable[[], Any],
        session_of: Callable[[dict], str | None],
        page: Callable[[dict, int, str], Awaitable[Response | None]],
    ) -> None:
        self.app = app
        self.settings = settings
        self.ledger = ledger
        self.session_of = session_of
        self.page = page
        self._routes: list[tuple[re.Pattern[str], set[str] | None, str]] | None = None
        self._exact: dict[tuple[str, str], str] = {}
        self._reading: dict[str, asyncio.Future[None]] = {}  # the token table being read, per ledger
        self._settling: dict[str, asyncio.Future[bool]] = {}  # read again, patiently, before a refusal
        self._refusals: dict[str, tuple[float, float]] = {}  # per client address: refusals allowed now, and when
        self.requests = Slots(settings.max_requests, settings.max_requests_per_principal)
        self.predictions = Slots(settings.max_predictions, settings.max_predictions_per_principal)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("path") == "/health":
            return await JSONResponse({"status": "ok"})(scope, receive, send)
        with wait_at_most(self.settings.lock_wait):
            await self._admit(scope, receive, send)

    async def _admit(self, scope: dict, receive: Callable, send: Callable) -> None:
        template, params = self._route(scope)
        if template is None:  # no such path or method: the application answers 404 or 405, reading no body
            return await self.app(scope, receive, send)
        method = scope["method"]
        principal: access.Principal | None = None
        try:
            if template.startswith(f"{API}/") and template not in OPEN_API_PATHS:
                principal = await self._bearer(scope)
                scope[PRINCIPAL_KEY] = principal
            elif not template.startswith(f"{API}/") and template not in ("/ready",):
                principal = await self._session(scope)
                if method == "POST" and template != SIGN_IN and principal is None:
                    raise Unauthenticated("Sign in to send this form")  # to the sign-in page, the form unread
        except GovernError as error:  # a bad token (401), the ledger too busy (503), or unreadable
            if not isinstance(error, Unauthenticated | LedgerLocked):
                log.error("govern serve: could not authenticate a request: %s", error)
            return await self._refuse(scope, receive, send, status_of(error), str(error), problem_kind(type(error)))
        key = principal.name if principal is not None else f"the client at {_client(scope)}"
        with waiting_as(key):  # the ledger's turn is shared between callers, one turn each
            await self._within_limits(scope, receive, send, key, principal, method, template, params)

    async def _within_limits(
        self,
        scope: dict,
        receive: Callable,
        send: Callable,
        key: str,
        principal: access.Principal | None,
        method: str,
        template: str,
        params: dict[str, Any],
    ) -> None:
        refused = self.requests.enter(key)
        if refused is not None:
            return await self._refuse(scope, receive, send, refused, self._crowded(refused, key), _kind(refused))
        try:
            predicting = (
                principal is not None
                and (method, template) in PREDICT_ROUTES
                and access.allowed(principal, "predict", params.get("app"))
            )
            if principal is not None and (method, template) in UPLOAD_ROUTES:
                if _header(scope, b"content-length") == "":
                    detail = "Send the training's upload with a Content-Length (it is streamed to disk, never buffered)"
                    return await self._refuse(scope, receive, send, 411, detail, "length-required")
                return await self._with_body(scope, receive, send, MAX_UPLOAD_BODY)
            if not predicting:
                return await self._with_body(scope, receive, send, MAX_BODY)
            assert principal is not None
            refused = self.predictions.enter(principal.name)
            if refused is not None:
                detail = self._too_many_predictions(refused, principal.name)
                return await self._refuse(scope, receive, send, refused, detail, _kind(refused))
            try:
                await self._with_body(scope, receive, send, MAX_PREDICT_BODY)
            finally:
                self.predictions.leave(principal.name)
        finally:
            self.requests.leave(key)

    def _route(self, scope: dict) -> tuple[str | None, dict[str, Any]]:
        """The path template of the application's route that will answer (path and method both match), with its
        path parameters; None where the application answers 404 or 405."""
        if self._routes is None:
            self._routes = list(_flat_routes(self.app.router.routes))
            self._exact = {}  # a path without parameters: found at once (where no earlier route could match it)
            for _pattern, methods, template in self._routes:
                if "{" not in template and not any(p.match(template) for p, _, t in self._routes if t != template):
                    for method in methods or ("*",):
                        self._exact.setdefault((method, template), template)
        path, method = scope.get("path", ""), scope.get("method", "")
        exact = self._exact.get((method, path)) or self._exact.get(("*", path))
        if exact is not None:
            return exact, {}
        for pattern, methods, template in self._routes:
            found = pattern.match(path)
            if found is not None and (methods is None or method in methods):
                return template, found.groupdict()
        return None, {}

    async def _bearer(self, scope: dict) -> access.Principal:
        header = _header(scope, b"authorization")
        scheme, _, value = header.partition(" ")
        bearer = value.strip() if scheme.lower() == "bearer" else None
        return await self._from_tokens(authenticate, bearer)

    async def _session(self, scope: dict) -> access.Principal | None:
        """The principal of a page's session cookie, or None (no cookie, a forged or expired one, a revoked
        token: the page itself says which)."""
        token_id = self.session_of(scope)
        if token_id is None:
            return None
        try:
            return await self._from_tokens(authenticate_session, token_id)
        except Unauthenticated:
            return None

    async def _from_tokens(self, check: Callable[..., access.Principal], given: Any) -> access.Principal:
        """Authenticate on the event loop, from the token table (a dict lookup and a digest: microseconds). Where the
        table may be out of date, it is read again first, by one worker thread for all the requests that notice
        meanwhile (they wait for that read on the event loop, holding no thread; it never waits for the ledger)."""
        ledger = self.ledger()
        table = token_table()
        if not table.current(ledger):
            location = ledger.location
            reading = self._reading.get(location)
            if reading is None or reading.done():
                reading = self._reading[location] = asyncio.ensure_future(run_in_threadpool(table.refresh, ledger))
            await asyncio.shield(reading)
        try:
            return check(ledger, given, read=False)
        except Unauthenticated:
            if table.current(ledger):
                raise
        # refused by a table that may be older than the token (made a moment ago elsewhere, while this process could
        # not read the ledger): one patient read, shared by the requests that notice, before the answer; 503 (retry)
        # where the ledger stays busy, never 401 to a token that may be good
        location = ledger.location
        settling = self._settling.get(location)
        if settling is None or settling.done():
            settling = self._settling[location] = asyncio.ensure_future(run_in_threadpool(table.settle, ledger))
        if not await asyncio.shield(settling):
            raise unsettled(ledger)
        return check(ledger, given, read=False)

    async def _with_body(self, scope: dict, receive: Callable, send: Callable, limit: int) -> None:
        """Hand the request on with its body within `limit`: refused before it is read where its Content-Length says
        it is larger; read here first where it is chunked (up to the limit, so the route never sees more) or JSON
        (whose nesting is measured before any parser sees it)."""
        headers = scope.get("headers") or []
        length = next((value for name, value in headers if name == b"content-length"), None)
        chunked = any(name == b"transfer-encoding" for name, _ in headers)
        kind = _header(scope, b"content-type").split(";")[0].strip().lower()
        is_json = kind == "application/json" or kind.endswith("+json")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                return await self._too_large(scope, receive, send, limit)
            if not is_json or int(length) == 0:
                return await self.app(scope, receive, send)
        elif scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and not chunked:
            return await self.app(scope, receive, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                return await self._too_large(scope, receive, send, limit)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if is_json and body:
            depth = json_depth(body) if len(body) <= THREAD_SCAN else await run_in_threadpool(json_depth, body)
            if depth > MAX_JSON_DEPTH:
                detail = (
                    f"The JSON body nests {depth} levels deep, more than the {MAX_JSON_DEPTH} this server reads: send "
                    f"the documented shape (see {API}/openapi.json)"
                )
                return await self._refuse(scope, receive, send, 422, detail, "unprocessable-body")
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()  # the disconnect, whenever it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Callable, send: Callable, limit: int) -> None:
        size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit / 2**10:g} KiB"
        on_page = await self.page(scope, 413, f"What you sent is larger than {size}, the most this server takes: "
                                  "send a smaller file")  # fmt: skip
        if on_page is not None:
            return await on_page(scope, receive, send)
        detail = f"The request body is larger than {limit} bytes: send a smaller one"
        await problem(413, "too-large", detail, scope.get("path", ""))(scope, receive, send)

    async def _refuse(
        self, scope: dict, receive: Callable, send: Callable, status: int, detail: str, kind: str
    ) -> None:
        """A refusal as the caller understands it: a problem document, or on a page, a page (401: sign in).

        A client refused more than REFUSALS_PER_SECOND times a second (a bad token, a limit) has its refusals answered
        after `server.refusal_pause` (0.5 s): a client that sends them as fast as it can (a fake token on a hundred
        connections, a script ignoring Retry-After) then costs the event loop a fraction of what it would, and
        everyone else's requests keep their place in it; a person who mistyped a token is answered at once. The
        pause holds no thread and no limit's place, and depends on the client's address, never on the token (a
        known id is not told apart by its time)."""
        if status in (401, 429, 503) and self.settings.refusal_pause and self._refused_often(_client(scope)):
            await asyncio.sleep(self.settings.refusal_pause)
        on_page = await self.page(scope, status, detail)
        if on_page is not None:
            if status in (429, 503):
                on_page.headers["Retry-After"] = problem(status, kind, detail, "").headers["Retry-After"]
            return await on_page(scope, receive, send)
        await problem(status, kind, detail, scope.get("path", ""))(scope, receive, send)

    def _refused_often(self, address: str) -> bool:
        """Count a refusal of `address` (a token bucket: REFUSALS_PER_SECOND, bursts of twice as many): True once
        it has been refused more often than that."""
        now = time.monotonic()
        if len(self._refusals) > 10_000:  # addresses seen long ago: forget them rather than grow
            self._refusals.clear()
        allowance, then = self._refusals.get(address, (2.0 * REFUSALS_PER_SECOND, now))
        allowance = min(2.0 * REFUSALS_PER_SECOND, allowance + (now - then) * REFUSALS_PER_SECOND)
        self._refusals[address] = (max(0.0, allowance - 1), now)
        return allowance < 1

    def _crowded(self, status: int, key: str) -> str:
        if status == 429:
            return (
                f"{key} has {_many(self.requests.per_key, 'request')} in progress, the most this server takes from "
                "one caller at once: wait for them to finish, then retry"
            )
        return (
            f"The server is answering {_many(self.requests.total, 'request')}, the most it takes at once: retry in a "
            "moment"
        )

    def _too_many_predictions(self, status: int, name: str) -> str:
        if status == 429:
            return (
                f"{name} has {_many(self.predictions.per_key, 'prediction')} running, the most one consumer may run "
                "at once: wait for them to finish, then retry"
            )
        return (
            f"{_many(self.predictions.total, 'prediction')} running, the most this server runs at once: retry in a "
            "moment"
        )


def _flat_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[re.Pattern[str], set[str] | None, str]]:
    """(path pattern, methods, path template) of every route, those of included routers (with their prefix) too,
    in the order the application tries them."""
    from starlette.routing import compile_path

    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI keeps an included router as one route
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from _flat_routes(included.routes, prefix + str(getattr(context, "prefix", "") or ""))
        elif isinstance(getattr(route, "path", None), str):
            template = prefix + route.path
            pattern, _, _ = compile_path(template)
            yield pattern, getattr(route, "methods", None), template


def _header(scope: dict, name: bytes) -> str:
    found = next((value for key, value in scope.get("headers") or [] if key == name), b"")
    return found.decode("latin-1")


def _client(scope: dict) -> str:
    """The socket peer, or the address a trusted proxy forwarded (uvicorn's proxy headers, only from
    `[tool.govern.server] trusted_proxies`)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _many(count: int, thing: str) -> str:
    return f"{count} {thing}" if count == 1 else f"{count} {thing}s"


def _kind(status: int) -> str:
    return "too-many-requests" if status == 429 else "service-unavailable"
