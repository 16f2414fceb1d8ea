"""Every failure as the caller asked for it: an RFC 9457 problem on the API's paths, a page on the pages' (with the
CLI's one-line message either way, its status from the error's class: `errors.status_of`)."""

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from govern.errors import GovernError, problem_kind, status_of
from govern.server.http import API, RETRY_AFTER, problem, validation_detail
from govern.web import is_page


def answer_failures(app: Any, web: Any) -> Callable[[Request, int, str], Awaitable[Response]]:
    """Install the exception handlers of `app`, whose pages' errors `web` (`web.pages.Web`) renders; return how a
    failure on a page is answered, for the refusals at the door (`admission.Gate`)."""

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

    return as_page
