"""What every answer of `govern serve` carries, the API's and the pages' alike: its security headers and
`Cache-Control: no-store`, as plain ASGI wrappers.

A leaf both `govern.server` (which wraps the application in them) and `govern.web` (whose pages and documents name
the same policies) import, so that the pages never import the server that mounts them.
"""

from collections.abc import Callable
from typing import Any

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
