"""Trainings: jobs the server runs (requested, read, followed, cancelled) and trainings run on a scientist's machine,
reported with their model files."""

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from govern.api import jobs as jobs_api
from govern.errors import InvalidInput
from govern.presentation import jsonable
from govern.server.deps import Caller, State, authorised
from govern.server.http import API
from govern.server.models import Event, Job, JobRow, KnownSnapshots, TrainingRecorded, TrainingRequest, answered_as

MAX_TRAINING_FILES = 64  # model files one training's upload may carry
UPLOAD = {  # the body of a reported training, as the OpenAPI document describes it
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["report"],
                "properties": {
                    "report": {"type": "string", "description": "The training's facts (JSON)"},
                    "file": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "The model files the training names, each by its path",
                    },
                },
            }
        }
    },
}

PROGRESS = {  # what a training's progress streams, as the OpenAPI document describes it
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": "`progress` events while the job runs, then one `finished`: each data line a job's JSON",
        }
    }
}

router = APIRouter()


@router.get(f"{API}/trainings", operation_id="trainings", responses=answered_as(list[JobRow]))
def trainings(caller: Annotated[Caller, authorised("trainings", hold="read")], state: str | None = None) -> Any:
    return jsonable(jobs_api.jobs(caller.project, state))


@router.post(f"{API}/trainings", operation_id="request_training", status_code=202, responses=answered_as(Job, 202))
def request_training(
    body: TrainingRequest, caller: Annotated[Caller, authorised("request_training", writes=True)], server: State
) -> Any:
    job = jobs_api.request_training(caller.project, body.commit, body.targets)
    server.runner.wake()
    return jsonable(job.to_dict())


@router.get(f"{API}/trainings/known-snapshots", operation_id="known_snapshots", responses=answered_as(KnownSnapshots))
def known_snapshots(caller: Annotated[Caller, authorised("known_snapshots", hold="read")]) -> Any:
    """The dataset snapshots the ledger records (per path and md5): what a remote `govern repro` needs to know
    so that an unchanged dataset is not snapshotted again."""
    from govern.api import reported

    return jsonable(reported.known_snapshots(caller.project))


@router.post(
    f"{API}/trainings/reported",
    operation_id="record_training",
    status_code=201,
    responses=answered_as(TrainingRecorded, 201),
    openapi_extra={"requestBody": UPLOAD},
)
async def record_training(
    request: Request, caller: Annotated[Caller, authorised("record_training", writes=True)]
) -> Any:
    """A training run on a scientist's machine (`govern repro` with GOVERN_URL): its facts and model files,
    checked as a job's report is, recorded under the authenticated principal (so the trainer is authenticated
    for the four-eyes rule), the model files taken into the server's DVC cache for the MLflow mirror."""
    from starlette.concurrency import run_in_threadpool

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise InvalidInput("Send the training as multipart/form-data: a `report` field and its model files")
    try:
        form = await request.form(max_files=MAX_TRAINING_FILES, max_fields=4)
    except Exception as error:  # noqa: BLE001 - the multipart parser's own errors: the client's input
        raise InvalidInput(f"The upload is not readable multipart/form-data ({error})") from None
    try:
        return await run_in_threadpool(_record_training, caller, form)
    finally:
        await form.close()


@router.get(f"{API}/trainings/{{job}}", operation_id="training", responses=answered_as(Job))
def training(job: str, caller: Annotated[Caller, authorised("training", hold="read")]) -> Any:
    return jsonable(jobs_api.job(caller.project, job).to_dict())


@router.delete(f"{API}/trainings/{{job}}", operation_id="cancel_training", responses=answered_as(Event))
def cancel_training(job: str, caller: Annotated[Caller, authorised("cancel_training", hold="write")]) -> Any:
    own_only = not caller.principal.has("admin")
    return jsonable(jobs_api.cancel(caller.project, job, requester_only=own_only).to_dict())


@router.get(
    f"{API}/trainings/{{job}}/progress",
    operation_id="training_progress",
    response_class=StreamingResponse,
    responses={200: {"content": PROGRESS, "description": "Server-sent events"}},
)
async def training_progress(job: str, caller: Annotated[Caller, authorised("training_progress")]) -> StreamingResponse:
    from starlette.concurrency import run_in_threadpool

    def read() -> Any:
        return jobs_api.job(caller.project, job)

    await run_in_threadpool(read)  # an unknown job is a 404, before the stream starts

    async def stream() -> Any:
        import asyncio
        import json

        sent = None
        while True:
            found = await run_in_threadpool(read)
            current = jsonable(found.to_dict())
            if current != sent:
                kind = "finished" if found.finished else "progress"
                yield f"event: {kind}\ndata: {json.dumps(current)}\n\n"
                sent = current
            if found.finished:
                return
            await asyncio.sleep(1.0)

    return StreamingResponse(stream(), media_type="text/event-stream")


def _record_training(caller: Caller, form: Any) -> Any:
    """Write the uploaded model files into a scratch workspace at the paths the report names, then record the
    report from it (`reported.record_reported_training`)."""
    import json
    import tempfile
    from pathlib import PurePosixPath
    from urllib.parse import unquote

    from govern.api import jobs as jobs_api
    from govern.api import reported

    project = caller.project
    text = form.get("report")
    if not isinstance(text, str):
        raise InvalidInput("The upload has no `report` field: send the training's facts as `report`")
    try:
        report = json.loads(text)
    except ValueError:
        raise InvalidInput("The `report` field is not JSON: send what `govern repro` reported") from None
    training = next(
        (e for e in report.get("events", []) if isinstance(e, dict) and e.get("type") == "training.completed"), None
    ) if isinstance(report, dict) and isinstance(report.get("events"), list) else None  # fmt: skip
    failed = training is None and isinstance(report, dict) and isinstance(report.get("events"), list)
    events = report.get("events") if isinstance(report, dict) else None
    first = events[0] if isinstance(events, list) and events and isinstance(events[0], dict) else {}
    commit = (training or first).get("git_commit") if (training or failed) else None
    if not isinstance(commit, str):
        raise InvalidInput("The report names no commit: send what `govern repro` reported")
    sha = jobs_api.resolve_commit(project.root, commit)  # the commit an auditor checks out: the server must have it
    named = {
        str(m.get("path")) for m in ((training or {}).get("payload") or {}).get("models") or [] if isinstance(m, dict)
    }
    with tempfile.TemporaryDirectory(prefix="govern-upload-") as scratch:
        workspace = Path(scratch)
        for key, value in form.multi_items():
            if key == "report":
                continue
            if key != "file" or isinstance(value, str):
                raise InvalidInput(f"Unknown field {key!r} in the upload: send `report` and the model files as `file`")
            name = unquote(value.filename or "")
            relative = PurePosixPath(name)
            if name not in named or relative.is_absolute() or ".." in relative.parts:
                raise InvalidInput(f"The upload carries {name!r}, which is not a model file the training names")
            target = workspace / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as handle:
                while chunk := value.file.read(1 << 20):
                    handle.write(chunk)
        outcome = reported.record_reported_training(project, report, caller.principal.actor, sha, workspace=workspace)
    found = project.ledger.query("SELECT seq FROM events WHERE event_id = ?", [outcome.training_event_id])[1]
    return jsonable(
        {
            "status": outcome.status,
            "events": [event.to_dict() for event in outcome.events],
            "training_event_id": outcome.training_event_id,
            "training_seq": found[0][0] if found else None,
            "warnings": outcome.warnings,
        }
    )
