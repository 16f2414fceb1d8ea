"""The HTTP edges of the controller: the status of each failure, RFC 9457 problem documents, body limits.

Apart from the routes so each reads alone: what a failure looks like on the wire is decided here once.
"""

import logging
import re
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from govern.entrypoint import InferenceFailed, InferenceTimedOut
from govern.errors import (
    ConfigError,
    EventConflict,
    Forbidden,
    FourEyesViolation,
    GovernError,
    InvalidInput,
    LedgerLocked,
    NotFound,
    PolicyViolation,
    QueryError,
    QueryLimitExceeded,
    SecretInEvent,
    StateConflict,
    UnverifiableVerdict,
)
from govern.redaction import scrub
from govern.sandbox import SandboxUnavailable

API = "/api/v1"


# The HTTP status of each kind of failure; the first class in the error's MRO found here wins.
STATUS: dict[type[GovernError], int] = {
    StateConflict: 409,
    InvalidInput: 400,
    ConfigError: 400,
    QueryError: 400,
    QueryLimitExceeded: 422,  # understood, but over what an auditor's statement may cost
    NotFound: 404,
    PolicyViolation: 409,
    EventConflict: 409,
    LedgerLocked: 503,
    Forbidden: 403,
    FourEyesViolation: 403,
    InferenceTimedOut: 504,
    InferenceFailed: 422,  # the model's own entry point could not score these rows
    SandboxUnavailable: 503,  # the server cannot confine user code as configured: nothing runs until it can
    UnverifiableVerdict: 422,  # an uploaded verdict about a commit or lock the server cannot confirm
    SecretInEvent: 422,  # an event that would record a configured secret
}


def status_of(error: GovernError) -> int:
    from govern.api.access import Unauthenticated

    if isinstance(error, Unauthenticated):
        return 401
    return next((STATUS[kind] for kind in type(error).__mro__ if kind in STATUS), 500)


class UnprocessableBody(InvalidInput):
    """A request body that cannot be taken as sent: malformed or too deeply nested JSON (422 over HTTP)."""


STATUS[UnprocessableBody] = 422

MAX_BODY = 1 << 20  # bytes: every request body is a small JSON object, but the rows sent for predictions
MAX_PREDICT_BODY = 16 << 20  # the rows a consumer sends to its own app's predict, once authenticated
MAX_UPLOAD_BODY = 4 << 30  # a training's model files, from an authenticated scientist, streamed to disk
MAX_JSON_DEPTH = 32  # nesting of a JSON body: govern's requests need four or five levels
RETRY_AFTER = {429: 1, 503: 2}  # seconds a refused client should wait before asking again


def problem(status: int, kind: str, detail: str, instance: str) -> JSONResponse:
    body = {
        "type": f"urn:govern:problem:{kind}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": scrub(detail),  # an unexpected error's words may quote a connection string
        "instance": instance,
    }
    headers = {"WWW-Authenticate": 'Bearer realm="govern"'} if status == 401 else {}
    if status in RETRY_AFTER:
        headers["Retry-After"] = str(RETRY_AFTER[status])
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers or None)


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _opening in b"[{":
    _STEP[_opening] = 1
for _closing in b"]}":
    _STEP[_closing] = -1


def json_depth(body: bytes) -> int:
    """How deeply `body`'s JSON nests, counted without parsing it (Python's parser recurses, and a body of a
    million `[` makes it fail), in linear time at C speed: escapes dropped, the text between quotes dropped, then
    the brackets left counted. For text that is not JSON the count is at least the depth a parser would reach
    before its first error, which is what matters."""
    from itertools import accumulate

    if body.count(b"[") + body.count(b"{") <= 1:
        return body.count(b"[") + body.count(b"{")
    outside = b"".join(_ESCAPE.sub(b"", body).split(b'"')[0::2])
    brackets = outside.translate(None, delete=_NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


class Problem(BaseModel):
    """RFC 9457 problem details: `detail` is the one-line message the CLI prints for the same failure."""

    type: str
    title: str
    status: int
    detail: str
    instance: str


PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}, "description": HTTPStatus(status).phrase}
    for status in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


class RedactSecrets(logging.Filter):
    """No log line carries a secret: a bearer token's secret (a token pasted into a URL, `DELETE /tokens/gvn_...`;
    its id stays, which is what the ledger records too), a URI's password, a `PGPASSWORD=...` in a model's stderr,
    a traceback quoting a connection string. On the handlers of the server's log (`install`), so every logger's
    records pass it, whatever their format; the one redaction (`govern.redaction`) on the message, its arguments
    and the formatted traceback, then every configured secret (`scrub`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_scrubbed(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _scrubbed(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True

    @classmethod
    def install(cls) -> None:
        """On every handler uvicorn configured (its error and access logs), and on the handler of last resort that
        writes govern's own warnings (its loggers have no handler of their own)."""
        redacting = cls()
        for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(redacting)
        if logging.lastResort is not None:
            logging.lastResort.addFilter(redacting)


def _scrubbed(value: Any) -> Any:
    """A log record's argument without secrets: text scrubbed; an object (an exception, a path) as its scrubbed text,
    which is what `%s` prints; numbers as they are (`%d` needs one)."""
    if value is None or isinstance(value, int | float):
        return value
    return scrub(value if isinstance(value, str) else str(value))


# The pages' Content-Security-Policy (nothing inline, nothing from elsewhere); any other answer may not be framed,
# sniffed, or run anything if a browser shows it. The lineage report brings its own (`govern.report`).
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DOCUMENT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = ((b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"))  # fmt: skip


class SecurityHeaders:
    """Every answer the server sends, HTML or not, page, report, problem or a refusal before any route (a body too
    large), carries the pages' security headers: never framed (`X-Frame-Options: DENY`, `frame-ancestors`), never
    sniffed into another type (`nosniff`), no referrer outside the site, and a Content-Security-Policy: the one the
    route set (a report's, by the hashes of its own style), else the pages' for HTML and a policy allowing nothing
    for anything else. The one place they are set, outermost, so nothing answers around it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _secured(list(message.get("headers", [])))}
            await send(message)

        await self.app(scope, receive, secured)


def _secured(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {name for name, _ in SECURITY_HEADERS}
    kept = [(k, v) for k, v in headers if k.lower() not in names]
    if not any(k.lower() == b"content-security-policy" for k, _ in kept):
        kind = next((v for k, v in kept if k.lower() == b"content-type"), b"")
        policy = PAGE_CSP if kind.lower().startswith(b"text/html") else DOCUMENT_CSP
        kept.append((b"content-security-policy", policy.encode("ascii")))
    return [*kept, *SECURITY_HEADERS]


class NoStore:
    """`Cache-Control: no-store` on every answer (they carry tokens and audit data): as plain ASGI, since Starlette's
    `@app.middleware("http")` streams each body through a queue of its own (milliseconds on a report page)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def no_store(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, no_store)


def validation_detail(errors: Sequence[Any]) -> str:
    """pydantic's findings as one line a client can act on."""
    if not errors:
        return "The request is not valid"
    kinds = {error.get("type") for error in errors}
    if "json_invalid" in kinds:
        return "The body is not valid JSON: send one JSON object with Content-Type: application/json"
    if kinds & {"model_attributes_type", "dict_type"}:
        return "The body must be a JSON object, sent with Content-Type: application/json"
    missing = [str(error["loc"][-1]) for error in errors if error.get("type") == "missing"]
    if missing:
        return f"Missing field(s): {', '.join(missing)}"
    unknown = [str(error["loc"][-1]) for error in errors if error.get("type") == "extra_forbidden"]
    if unknown:
        return f"Unknown field(s): {', '.join(unknown)}: see {API}/openapi.json"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))


def problems_documented_as_sent(app: Any) -> None:
    """Make `app`'s OpenAPI document say what its errors are: `application/problem+json` with the `Problem`
    schema, for every 4xx and 5xx of every operation (FastAPI files a response model under `application/json`,
    and its own 422 under a validation-error schema this API never sends)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()  # caches it as app.openapi_schema: changed in place, once
            as_sent = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        if str(status).isdigit() and int(status) >= 400:
                            response["content"] = as_sent
            schemas = document.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
        return app.openapi_schema

    app.openapi = openapi


class Signing:
    """ASGI: what a request appends is signed with the server's key (`signing.signing_with`), and only then."""

    def __init__(self, app: Any, signer: Any) -> None:
        self.app, self.signer = app, signer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        from govern.signing import signing_with

        with signing_with(self.signer):
            await self.app(scope, receive, send)
