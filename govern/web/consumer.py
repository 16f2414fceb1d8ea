"""The consumer's pages: its apps only, which version serves each now and since when, predictions for an uploaded
CSV (returned as a download, and recorded), and its own past inference records.

A consumer is limited to the apps its grant names (`principal.roles["consumer"]`); every page and the upload
check the app on the server, as the API does (`access.APP_SCOPED`). The pages present `predict`, the consumer's
operation, so no other role opens them; what they show comes from the same use cases as the API's `production`
(`govern.api.audit.production_answer`), `predict` (`govern.api.predict.predict_sent`, the API's own path: the
serving version's entry point on its verified model file, the batch recorded as `inference.recorded` under the
consumer) and `inferences` (`govern.api.predict.inferences`).
"""

import re
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from govern import access
from govern.errors import Forbidden, GovernError, InvalidInput, NotFound
from govern.web.pages import Link, Signed, Web, secured

NAV: list[Link] = [Link("Your apps", "/apps", "predict")]

APPS_SHOWN = 20  # apps whose serving versions the overview looks up (each a point query per environment)
RECORDS_SHOWN = 20  # the consumer's newest inference records on an app's page
PREDICT_TIMEOUT = 120.0  # seconds, as the API's predictions
UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def routes(web: Web) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/apps")
    def apps(request: Request, signed: Annotated[Signed, web.page("predict")]) -> Response:
        """Each of the consumer's apps with the version serving it in each environment, and since when."""

        names = sorted(signed.principal.roles.get("consumer", ()))
        project = signed.project()
        found = [{"app": app, "slots": _serving(project, app)} for app in names[:APPS_SHOWN]]
        return web.render(
            request,
            "consumer_apps.html.j2",
            signed,
            title="Your apps",
            apps=found,
            more=names[APPS_SHOWN:],
        )

    @router.get("/apps/{app}")
    def app_page(request: Request, app: str, signed: Annotated[Signed, web.page("predict")]) -> Response:
        """One app: what serves it where, the upload form, the consumer's own inference records."""
        _may_use(signed.principal, app)
        return _app_page(web, request, signed, app)

    @router.post("/apps/{app}/predict")
    def predict(request: Request, app: str, signed: Annotated[Signed, web.form("predict")]) -> Response:
        """Score the uploaded CSV with the version serving the chosen environment now: the predictions come back
        as a file to save; the batch is recorded under the consumer. A refusal is said on the app's page."""
        from govern.api.predict import predict_sent

        _may_use(signed.principal, app)
        env = signed.text("env", required=False, limit=200)
        try:
            if not env:
                raise InvalidInput("Choose the environment whose serving version scores the rows")
            rows, name = _upload(signed)
            done = predict_sent(
                signed.project(writing=True),
                rows,
                app=app,
                env=env,
                label=f"upload {name} (text/csv, {len(rows)} bytes)",
                timeout=PREDICT_TIMEOUT,
            )
        except GovernError as refused:
            return _app_page(web, request, signed, app, refused=refused, chosen=env)
        seq = done.prediction.event.seq if done.prediction.event else 0
        download = f"{app}-{done.prediction.env}-predictions-{seq}.csv"
        headers = {**done.headers(), "Content-Disposition": f'attachment; filename="{UNSAFE.sub("_", download)}"'}
        return secured(Response(done.csv, media_type="text/csv; charset=utf-8", headers=headers), request)

    return router


def _may_use(principal: access.Principal, app: str) -> None:
    """A consumer's pages are for its own apps; another app is refused without saying whether it exists."""
    if app not in principal.roles.get("consumer", ()):
        raise Forbidden(f"{principal.name} may not see app {app!r}: a consumer sees its own apps only")


def _serving(project: Any, app: str) -> list[dict[str, Any]]:
    """For each declared environment: the version serving `app` now (None where nothing does)."""
    from govern.api.audit import production_answer

    now = project.clock()
    slots = []
    for env in project.config.environments:
        try:
            answer = production_answer(project, app, env, now)
        except NotFound:  # never deployed there
            answer = None
        slots.append({"env": env, "serving": answer if answer and answer["version"] else None, "answer": answer})
    return slots


def _app_page(
    web: Web,
    request: Request,
    signed: Signed,
    app: str,
    *,
    refused: GovernError | None = None,
    chosen: str = "",
) -> Response:
    from govern.api.predict import inferences, trained_on

    project = signed.project()
    slots = _serving(project, app)
    records = inferences(project, app, principal=signed.principal.name, limit=RECORDS_SHOWN)
    for slot in slots:
        served = slot["serving"]
        slot["trained_on"] = trained_on(project, served["model"], served["version"]) if served else None
    serving = [slot["env"] for slot in slots if slot["serving"]]
    return web.render(
        request,
        "consumer_app.html.j2",
        signed,
        refused=refused,
        title=f"App {app}",
        app=app,
        slots=slots,
        serving=serving,
        chosen=chosen if chosen in serving else (serving[-1] if serving else ""),
        records=records,
        shown=RECORDS_SHOWN,
    )


def _upload(signed: Signed) -> tuple[bytes, str]:
    """The uploaded file's bytes and a safe rendering of its name (for the record)."""
    from starlette.datastructures import UploadFile

    upload = signed.fields.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("Choose a CSV file to upload (the form is sent as multipart/form-data)")
    rows = upload.file.read()
    if not rows.strip():
        sent = f"The file {upload.filename}" if upload.filename else "No file was chosen, or the file"
        raise InvalidInput(f"{sent} is empty: choose a CSV file with a header and rows")
    name = UNSAFE.sub("_", (upload.filename or "rows.csv").rsplit("/", 1)[-1].rsplit("\\", 1)[-1])[:100]
    return rows, name or "rows.csv"
