"""`govern audit openlineage`: trainings as OpenLineage run events, validated with openlineage-python's models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import run_cli
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    nominal_time_run,
    parent_run,
    schema_dataset,
    source_code_location_job,
)
from openlineage.client.serde import Serde

from govern.storage.duckdb_log import Ledger

RUN_FACETS = {
    "nominalTime": lambda f: nominal_time_run.NominalTimeRunFacet(f["nominalStartTime"], f.get("nominalEndTime")),
    "parent": lambda f: parent_run.ParentRunFacet(
        run=parent_run.Run(runId=f["run"]["runId"]),
        job=parent_run.Job(namespace=f["job"]["namespace"], name=f["job"]["name"]),
    ),
}
JOB_FACETS = {
    "sourceCodeLocation": lambda f: source_code_location_job.SourceCodeLocationJobFacet(
        type=f["type"], url=f["url"], version=f["version"]
    ),
}
DATASET_FACETS = {
    "version": lambda f: dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=f["datasetVersion"]),
    "schema": lambda f: schema_dataset.SchemaDatasetFacet(
        fields=[schema_dataset.SchemaDatasetFacetFields(name=c["name"]) for c in f["fields"]]
    ),
}


def facets(raw: dict[str, Any], builders: dict[str, Any]) -> dict[str, Any]:
    return {name: builders[name](value) for name, value in raw.items()}


def without_facet_producers(value: Any) -> Any:
    """Facets carry their producer; the library stamps its own, so that one key is left out of the comparison."""
    if isinstance(value, dict):
        return {k: without_facet_producers(v) for k, v in value.items() if k != "_producer"}
    if isinstance(value, list):
        return [without_facet_producers(v) for v in value]
    return value


def as_model(event: dict[str, Any]) -> RunEvent:
    """Build openlineage-python's RunEvent from govern's JSON; its validators check UUIDs, times and URIs."""
    return RunEvent(
        eventType=RunState(event["eventType"]),
        eventTime=event["eventTime"],
        run=Run(runId=event["run"]["runId"], facets=facets(event["run"]["facets"], RUN_FACETS)),
        job=Job(
            namespace=event["job"]["namespace"],
            name=event["job"]["name"],
            facets=facets(event["job"]["facets"], JOB_FACETS),
        ),
        inputs=[
            InputDataset(d["namespace"], d["name"], facets=facets(d["facets"], DATASET_FACETS)) for d in event["inputs"]
        ],
        outputs=[
            OutputDataset(d["namespace"], d["name"], facets=facets(d["facets"], DATASET_FACETS))
            for d in event["outputs"]
        ],
        producer=event["producer"],
    )


def test_openlineage_events_validate_and_describe_every_training(three_versions: Path, tmp_path: Path) -> None:
    result = run_cli("audit", "openlineage", "-o", str(tmp_path / "events.jsonl"), cwd=three_versions)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]

    for event in events:
        model = as_model(event)
        serialised = json.loads(Serde.to_json(model))
        assert without_facet_producers(serialised) == without_facet_producers(event), (
            "the model serialises it unchanged"
        )
        assert serialised["schemaURL"] == event["schemaURL"]

    trainings = Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["training.completed"])
    pipeline_runs = [e for e in events if e["job"]["name"] == "pipeline"]
    assert [e["eventType"] for e in pipeline_runs] == ["START", "COMPLETE"] * len(trainings)
    first = [e for e in events if e["job"]["name"] == "train"][:2]
    assert [e["eventType"] for e in first] == ["START", "COMPLETE"]
    assert first[1]["inputs"][0]["name"] == "data/prepared/train.csv"
    assert first[1]["outputs"][0]["name"] == "models/model.pkl"
    lock_md5 = trainings[0].payload["stages"][2]["outs"][0]["md5"]
    assert first[1]["outputs"][0]["facets"]["version"]["datasetVersion"] == lock_md5
    assert first[1]["run"]["facets"]["parent"]["run"]["runId"] == pipeline_runs[0]["run"]["runId"]
    locks = {e.payload["training_event_id"]: e.payload["commit"]
             for e in Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["training.locked"])}  # fmt: skip
    for training, run in zip(trainings, pipeline_runs[::2], strict=True):
        code = run["job"]["facets"]["sourceCodeLocation"]["version"]
        assert code == locks[training.event_id], "the commit whose dvc.lock rebuilds the training's outputs"


def test_since_filters_trainings_and_export_is_repeatable(three_versions: Path) -> None:
    everything = run_cli("audit", "openlineage", cwd=three_versions).stdout
    assert run_cli("audit", "openlineage", cwd=three_versions).stdout == everything
    assert run_cli("audit", "openlineage", "--since", "2999-01-01T00:00:00Z", cwd=three_versions).stdout == ""
