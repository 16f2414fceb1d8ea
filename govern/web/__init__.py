"""The role-based web pages `govern serve` serves beside its API: server-rendered (Jinja2), no JavaScript needed.

`add_pages` mounts them on the API's FastAPI application; each role's pages live in a module of their own and
call the same use cases as the CLI and the API, checked against the same role table (`access.POLICY`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from govern.web.pages import Web
from govern.web.sessions import SessionKeys

WEB_PREFIXES = ("/api/", "/health", "/ready")


def is_page(path: str) -> bool:
    """Whether a path belongs to the pages (answered in HTML) rather than to the API or the operators."""
    return not path.startswith(WEB_PREFIXES)


def add_pages(app: Any, root: Path, secret: str) -> Web:
    """Mount the sign-in, the role pages and their static files on `app`; return what renders their errors."""
    from govern.web import account, admin, approver, auditor, consumer, scientist

    modules = (scientist, approver, consumer, auditor, admin)
    web = Web(root, SessionKeys(secret), [link for module in modules for link in module.NAV])
    app.include_router(account.routes(web))
    for module in modules:
        app.include_router(module.routes(web))
    return web
