"""The HTTP edges of the controller: RFC 9457 problem documents, body limits, the signing and redaction wrappers.

Apart from the routes so each reads alone: what a failure looks like on the wire is decided here once.
"""

import logging
import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from govern.errors import InvalidInput
from govern.redaction import scrub

API = "/api/v1"


class UnprocessableBody(InvalidInput):
    """A request body that cannot be taken as sent: malformed or too deeply nested JSON (422 over HTTP)."""

    http_status = 422


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
