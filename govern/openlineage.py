"""Trainings as OpenLineage run events: what lineage tools (Marquez, DataHub, ...) ingest.

Each `training.completed` becomes a parent job (the pipeline) with START and
COMPLETE events, and each stage that ran (or was restored from DVC's
run-cache) a child job named after the stage, with its data inputs and
outputs as datasets carrying their DVC md5 as dataset version. Run ids are
UUIDs derived from the event id, so exporting twice gives the same events.
Plain dicts: the `openlineage-python` package validates them in the tests.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from govern import __version__
from govern.envelope import format_timestamp

PRODUCER = f"urn:govern:{__version__}"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
FACET_VERSIONS = {
    "NominalTimeRunFacet": "1-0-1",
    "ParentRunFacet": "1-2-0",
    "SourceCodeLocationJobFacet": "1-1-0",
    "DatasetVersionDatasetFacet": "1-0-1",
    "SchemaDatasetFacet": "1-2-0",
}
NAMESPACE_PREFIX = "govern"


def run_id(event_id: str, stage: str | None = None) -> str:
    return str(uuid.uuid5(uuid.UUID(event_id), stage or "pipeline"))


def training_events(project: str, event: dict[str, Any], lock_commit: str | None = None) -> list[dict[str, Any]]:
    """START/COMPLETE events for one recorded training (as `RecordedEvent.to_dict()` gives it). The job's source
    code version is the lock commit when one is known (checking it out rebuilds the outputs), else the commit the
    training ran at."""
    payload = event["payload"]
    namespace = f"{NAMESPACE_PREFIX}://{project}"
    parent_id = run_id(event["event_id"])
    ended = _parse(event["occurred_at"])
    started = ended - timedelta(seconds=float(payload.get("duration_s") or 0))
    parent_facets = {
        "nominalTime": _facet("NominalTimeRunFacet", nominalStartTime=_iso(started), nominalEndTime=_iso(ended))
    }
    job_facets = {
        "sourceCodeLocation": _facet(
            "SourceCodeLocationJobFacet",
            type="git",
            url=payload["git"].get("remote_url") or f"file:{project}",
            version=lock_commit or payload["git"]["commit"],
        )
    }
    events = [
        _event("START", started, namespace, "pipeline", parent_id, parent_facets, job_facets, [], []),
    ]
    data = {d["path"]: d for d in payload.get("datasets", [])}
    outputs = {o["path"] for o in payload.get("outputs", [])}
    for stage in payload.get("stages", []):
        if stage.get("status") not in ("ran", "restored"):
            continue
        stage_start = _parse(stage["started_at"]) if stage.get("started_at") else started
        stage_end = stage_start + timedelta(seconds=float(stage.get("duration_s") or 0))
        facets = {
            "parent": _facet(
                "ParentRunFacet",
                run={"runId": parent_id, "facets": {}},
                job={"namespace": namespace, "name": "pipeline", "facets": {}},
            )
        }
        inputs = [
            {**_dataset(namespace, d, data), "inputFacets": {}}
            for d in stage.get("deps", [])
            if d["path"] in outputs or d["path"] in data
        ]
        outs = [{**_dataset(namespace, o, data), "outputFacets": {}} for o in stage.get("outs", [])]
        child = run_id(event["event_id"], stage["name"])
        events.append(_event("START", stage_start, namespace, stage["name"], child, facets, {}, inputs, []))
        events.append(_event("COMPLETE", stage_end, namespace, stage["name"], child, facets, {}, inputs, outs))
    events.append(_event("COMPLETE", ended, namespace, "pipeline", parent_id, parent_facets, job_facets, [], []))
    return events


def _event(
    kind: str,
    at: datetime,
    namespace: str,
    job: str,
    run: str,
    run_facets: dict[str, Any],
    job_facets: dict[str, Any],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "eventType": kind,
        "eventTime": _iso(at),
        "run": {"runId": run, "facets": run_facets},
        "job": {"namespace": namespace, "name": job, "facets": job_facets},
        "inputs": inputs,
        "outputs": outputs,
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
    }


def _dataset(namespace: str, item: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    facets: dict[str, Any] = {}
    if item.get("md5"):
        facets["version"] = _facet("DatasetVersionDatasetFacet", datasetVersion=item["md5"])
    known = data.get(item["path"], {})
    if known.get("columns"):
        facets["schema"] = _facet("SchemaDatasetFacet", fields=[{"name": c, "fields": []} for c in known["columns"]])
    return {"namespace": namespace, "name": item["path"], "facets": facets}


def _facet(name: str, **fields: Any) -> dict[str, Any]:
    schema = f"https://openlineage.io/spec/facets/{FACET_VERSIONS[name]}/{name}.json#/$defs/{name}"
    return {"_producer": PRODUCER, "_schemaURL": schema, **fields}


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return format_timestamp(moment)
