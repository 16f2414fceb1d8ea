"""The scientist's pages: models and their versions, two versions side by side, trainings started and watched,
promotion requests.

Each page presents an operation of `access.POLICY` and calls the same use case as the CLI and the API: `status`
(models and versions), `report` (a version, a comparison: `govern.api.report`), `trainings` and `training`
(`govern.api.jobs`), and the forms `request_training`, `cancel_training` and `request_promotion`. Other roles that
may read the same facts (an approver, an auditor) may open these pages too, as they may call the API; the
navigation links them for those who may start trainings and request promotions, whose workflow they are.
"""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from govern import access
from govern.errors import GovernError
from govern.web.pages import Link, Signed, Web

if TYPE_CHECKING:
    from govern.readmodel.versions import ModelVersionRow

NAV: list[Link] = [
    Link("Models", "/models", "status"),
    Link("Trainings", "/trainings", "trainings"),
]

VERSIONS_SHOWN = 50  # per model on the models page, newest first
JOBS_SHOWN = 50  # trainings on the trainings page, newest first
REFRESH_SECONDS = 2  # how often a running training's page looks again (without JavaScript: reloads)


def routes(web: Web) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    web.templates.filters.setdefault("instant", _instant)
    for pages in (_versions, _compare, _trainings):
        pages(router, web)  # in this order: the order the application tries them
    return router


def _versions(router: APIRouter, web: Web) -> None:
    """The models and their versions, a version's page, and a request to promote it."""

    @router.get("/models")
    def models(request: Request, signed: Annotated[Signed, web.page("status")]) -> Response:
        """Every model with its versions (newest first), their stages and deprecations, the metrics across versions
        as the report's chart, and the promotion requests waiting for an approver."""
        from markupsafe import Markup

        from govern import charts
        from govern.api import approvals, report, status

        project = signed.project()
        store = project.ledger
        found: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        if store.exists():
            with store.reader() as reader:
                found = status.model_versions(reader)
            pending = approvals.requests(project, "pending")
        for model in found:
            versions = model["versions"]
            model["total"] = len(versions)
            model["versions"] = versions[::-1][:VERSIONS_SHOWN]
            history = report.metrics_across_versions(project, model["model"])
            newest = history["versions"][-1]["version"] if history["versions"] else ""
            svg = charts.metric_history(history["versions"], history["metrics"], newest)
            model["chart"] = Markup(charts.for_page(svg))  # noqa: S704 - built by govern.charts, every text escaped
            model["charted"] = len(history["versions"])
        return web.render(
            request,
            "scientist_models.html.j2",
            signed,
            title="Models",
            models=found,
            pending=pending,
            may_request=access.allowed(signed.principal, "request_promotion"),
        )

    @router.get("/models/{model}/versions/{version}")
    def version(
        request: Request,
        model: str,
        version: str,
        signed: Annotated[Signed, web.page("report")],
        done: int | None = None,
    ) -> Response:
        """One version: its stages, training (params, metrics, MLflow run), data and code; the promotion form."""
        return _version_page(web, request, signed, model, version, done=done)

    @router.post("/models/{model}/versions/{version}/promotion-request")
    def request_promotion(
        request: Request, model: str, version: str, signed: Annotated[Signed, web.form("request_promotion")]
    ) -> Response:
        from govern.api import approvals

        try:
            stage, reason = signed.text("to_stage", limit=200), signed.text("reason")
            requested = approvals.request_promotion(signed.project(writing=True), model, version, stage, reason)
        except GovernError as refused:  # a gate, a stage skipped, an empty reason: said beside the form
            typed = (signed.typed("to_stage"), signed.typed("reason"))
            return _version_page(web, request, signed, model, version, refused=refused, typed=typed)
        return _see(f"/models/{_part(model)}/versions/{_part(version)}?done={requested.request_id}")


def _compare(router: APIRouter, web: Web) -> None:
    """Versions of a model side by side."""

    @router.get("/models/{model}/compare")
    def compare(
        request: Request,
        model: str,
        signed: Annotated[Signed, web.page("report")],
        a: str | None = None,
        b: str | None = None,
    ) -> Response:
        """Two versions side by side (by default the two newest): params, metrics, datasets with their extraction
        dates, code commits and the files that changed."""
        from govern.api import report, status
        from govern.readmodel.versions import version_facts

        project = signed.project()
        store = project.ledger
        with store.reader() as reader:
            found = [m for m in status.model_versions(reader) if m["model"] == model] if store.exists() else []
            if not found:
                version_facts(reader, model, b or a or "")  # NotFound names the registered models
        newest = [v["version"] for v in found[0]["versions"]][::-1]
        second = b or newest[0]
        first = a or next((v for v in newest if v != second), second)
        compared = report.compare(project, model, first, second)
        choices = newest[:VERSIONS_SHOWN] + [v for v in (first, second) if v not in newest[:VERSIONS_SHOWN]]
        return web.render(
            request,
            "scientist_compare.html.j2",
            signed,
            title=f"{model}: version {first} and version {second}",
            model=model,
            versions=list(dict.fromkeys(choices)),
            first=first,
            second=second,
            c=compared,
        )


def _trainings(router: APIRouter, web: Web) -> None:
    """Trainings: started, followed, cancelled."""

    @router.get("/trainings")
    def trainings(request: Request, signed: Annotated[Signed, web.page("trainings")]) -> Response:
        """The newest trainings with their states, and the form that starts one at a commit."""
        return _trainings_page(web, request, signed)

    @router.post("/trainings")
    def request_training(request: Request, signed: Annotated[Signed, web.form("request_training")]) -> Response:
        from govern.api import jobs

        try:
            commit, targets = signed.text("commit", limit=200), signed.text("targets", required=False, limit=2000)
            job = jobs.request_training(signed.project(writing=True), commit, targets.split())
        except GovernError as refused:  # an unknown commit or stage: said beside the form, what was typed kept
            typed = (signed.typed("commit"), signed.typed("targets"))
            return _trainings_page(web, request, signed, refused=refused, typed=typed)
        web.training_requested()  # the server's job runner looks at once, rather than at its next poll
        return _see(f"/trainings/{job.row.job_id}")

    @router.get("/trainings/{job}")
    def training(request: Request, job: str, signed: Annotated[Signed, web.page("training")]) -> Response:
        """One training: its state and the stages reached, the log's last lines; while it runs, the page follows it
        (a script replaces the progress every few seconds; without JavaScript the page reloads)."""
        from govern.api import jobs, status

        project = signed.project()
        found = jobs.job(project, job)
        registered: list[ModelVersionRow] = []
        if found.row.training_event_id:
            with project.ledger.reader() as reader:
                registered = status.versions_of_training(reader, found.row.training_event_id)
        mine = access.same_person(signed.principal.actor, found.row.requested_by, {})
        return web.render(
            request,
            "scientist_training.html.j2",
            signed,
            title=f"Training {job}",
            job=found,
            registered=registered,
            refresh=REFRESH_SECONDS,
            may_cancel=access.allowed(signed.principal, "cancel_training") and (mine or signed.principal.has("admin")),
        )

    @router.post("/trainings/{job}/cancellation")
    def cancel_training(job: str, signed: Annotated[Signed, web.form("cancel_training")]) -> Response:
        from govern.api import jobs

        own_only = not signed.principal.has("admin")
        jobs.cancel(signed.project(writing=True), job, requester_only=own_only)
        return _see(f"/trainings/{_part(job)}")


def _see(target: str) -> RedirectResponse:
    """Post/Redirect/Get: the browser shows the result's page, and reloading it sends nothing again."""
    return RedirectResponse(target, status_code=303)


def _part(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _instant(value: Any) -> str:
    """Instants as the other pages print them (UTC, to the second), whether the use case gave a datetime or the
    report's ISO 8601 text."""
    from govern.web.pages import _when

    if isinstance(value, str) and value:
        try:
            return _when(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return _when(value)


def _version_page(
    web: Web,
    request: Request,
    signed: Signed,
    model: str,
    version: str,
    *,
    done: int | None = None,
    refused: GovernError | None = None,
    typed: tuple[str, str] = ("", ""),
) -> Response:
    """A version's page; after a refused promotion request, with the refusal and the stage and reason typed."""
    from govern.api import approvals, report
    from govern.api.locks import NOT_LOCKED_HINT

    project = signed.project()
    facts = report.summary(project, model, version)
    pending = [r for r in approvals.requests(project, "pending", model) if r["version"] == version]
    stages = list(project.config.stages)
    held = facts["identity"]["stages_held"]
    reached = [stage for stage in stages if stage in held]
    following = stages.index(reached[-1]) + 1 if reached else 0
    next_stage = stages[following] if following < len(stages) else None
    return web.render(
        request,
        "scientist_version.html.j2",
        signed,
        title=f"{model} version {version}",
        refused=refused,
        model=model,
        version=version,
        facts=facts,
        pending=pending,
        stages=stages,
        next_stage=next_stage,
        chosen_stage=typed[0] if typed[0] in stages else next_stage,
        reason=typed[1],
        done=done,
        may_request=access.allowed(signed.principal, "request_promotion"),
        not_locked_hint=NOT_LOCKED_HINT,
    )


def _trainings_page(
    web: Web,
    request: Request,
    signed: Signed,
    *,
    refused: GovernError | None = None,
    typed: tuple[str, str] = ("main", ""),
) -> Response:
    """The trainings page; after a refused start, with the refusal and the commit and stages typed."""
    from govern.api import jobs

    project = signed.project()
    return web.render(
        request,
        "scientist_trainings.html.j2",
        signed,
        title="Trainings",
        refused=refused,
        jobs=jobs.jobs(project, newest=JOBS_SHOWN),
        total=jobs.count(project),
        commit=typed[0],
        targets=typed[1],
        may_start=access.allowed(signed.principal, "request_training"),
    )
