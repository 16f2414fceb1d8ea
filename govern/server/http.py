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
    StateConflict,
)

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
MAX_JSON_DEPTH = 32  # nesting of a JSON body: govern's requests need four or five levels
RETRY_AFTER = {429: 1, 503: 2}  # seconds a refused client should wait before asking again


def problem(status: int, kind: str, detail: str, instance: str) -> JSONResponse:
    body = {
        "type": f"urn:govern:problem:{kind}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
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


class RedactTokens(logging.Filter):
    """Access-log lines never carry a bearer token's secret (a token pasted into a URL, `DELETE /tokens/gvn_...`):
    only its id stays, which is what the ledger records too."""

    SECRET = re.compile(r"(gvn_[0-9a-f]{12}_)[A-Za-z0-9_-]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.SECRET.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        return True


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
