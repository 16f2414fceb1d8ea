"""Predictions: a consumer's rows scored by the version serving its app, CSV in and out or JSON in and out."""

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from govern.errors import InvalidInput
from govern.presentation import jsonable
from govern.server.deps import Caller, authorised, scoped
from govern.server.http import API, Problem, UnprocessableBody
from govern.server.models import Predicted, PredictRows

PREDICT_TIMEOUT = 120.0  # seconds an inference entry point may run for one request

router = APIRouter()


@router.post(
    f"{API}/apps/{{app}}/predict",
    operation_id="predict",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": PredictRows.model_json_schema()},
            },
        }
    },
    responses={
        200: {
            "model": Predicted,  # application/json
            "content": {"text/csv": {"schema": {"type": "string", "description": "The rows sent, with predictions"}}},
            "description": "CSV in, CSV out; JSON in, JSON out",
        },
        504: {"model": Problem, "description": "The model's entry point ran out of time"},
    },
)
async def predict(
    request: Request,
    app_name: Annotated[str, PathParam(alias="app")],
    caller: Annotated[Caller, authorised("predict", writes=True)],
    env: str = "production",
) -> Any:
    from starlette.concurrency import run_in_threadpool

    scoped(caller.principal, "predict", app_name)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("text/csv", "application/json"):
        raise InvalidInput(f"Send the rows as text/csv or application/json, not {kind or 'no content type'}")
    body = await request.body()
    return await run_in_threadpool(_predict, caller, app_name, env, kind, body)


def _predict(caller: Caller, app: str, env: str, kind: str, body: bytes) -> Response:
    """Score the rows with the serving version's entry point (`predict.predict_sent`), answer in the format sent."""
    from govern import tabular
    from govern.api.predict import predict_sent

    rows = body if kind == "text/csv" else tabular.csv_bytes(_rows(body))
    done = predict_sent(
        caller.project,
        rows,
        app=app,
        env=env,
        label=f"upload ({kind}, {len(body)} bytes)",
        timeout=PREDICT_TIMEOUT,
        as_records=kind != "text/csv",
    )
    if kind == "text/csv":
        return Response(done.csv, media_type="text/csv", headers=done.headers())
    answer = {**done.prediction.to_dict(), "output": None, "predictions": done.records}
    return JSONResponse(jsonable(answer), headers=done.headers())


def _rows(body: bytes) -> list[dict[str, Any]]:
    """The rows of a JSON body (its nesting was measured at the door: `admission.Gate`): malformed JSON is a 422,
    as for every JSON body; JSON of another shape a 400, as before."""
    import json

    shape = 'Send {"rows": [{"column": value, ...}, ...]} (at least one row), or text/csv'
    try:
        parsed = json.loads(body or b"null")
    except (ValueError, RecursionError):
        raise UnprocessableBody(f"The body is not valid JSON: {shape[0].lower()}{shape[1:]}") from None
    try:
        return PredictRows.model_validate(parsed).rows
    except ValueError:
        raise InvalidInput(shape) from None
