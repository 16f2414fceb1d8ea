"""The operators' probes: liveness (answered at the door) and readiness (the ledger can be read). Not in the
OpenAPI document."""

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from govern.errors import GovernError
from govern.server.deps import State
from govern.server.http import problem

log = logging.getLogger("govern.server")
router = APIRouter()


@router.get("/health", include_in_schema=False)
def health() -> dict[str, str]:
    """Answered at the door (`admission.Gate`), before any limit and off the thread pool; this route only
    documents it."""
    return {"status": "ok"}


@router.get("/ready", include_in_schema=False)
def ready(state: State) -> JSONResponse:
    """Whether the ledger can be read, within the request's wait for it (`server.lock_wait`)."""
    try:
        store = state.ledger()
        head = store.head() if store.exists() else None
    except GovernError as error:
        log.error("govern serve: not ready: %s", error)  # the detail is the operator's, not the caller's
        return problem(503, "not-ready", "The ledger cannot be read: the server's log says why", "/ready")
    return JSONResponse({"status": "ready", "head_seq": head[0] if head else None})
