"""A training as MLflow and the registry see it: the run in progress (`Run`), its MLflow run, and the versions its
model files become (one artifact, one version: bytes registered before are that version again, never a new
one). Shared by a reproduction (`repro`) and by the mirror that catches up on what MLflow missed (`mirror`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from govern import environment
from govern.adapters import mlflow as mlflow_adapter
from govern.adapters.git import GitState
from govern.api.context import Project
from govern.envelope import PendingEvent, utc_now
from govern.events import ModelRegistered
from govern.readmodel import trainings
from govern.readmodel.trainings import FileRegistration
from govern.redaction import redact
from govern.storage import LedgerStore


@dataclass
class Run:
    """One reproduction in progress: the project, its git state and what is known so far."""

    project: Project
    state: GitState
    allow_dirty: bool
    targets: list[str]
    started_at: datetime = field(default_factory=utc_now)
    clock: float = field(default_factory=time.perf_counter)
    dirty: list[str] = field(default_factory=list)

    @property
    def git_facts(self) -> dict[str, Any]:
        return {
            "commit": self.state.commit,
            "branch": self.state.branch,
            "remote_url": self.state.remote_url,
            "dirty": bool(self.dirty),
            "allow_dirty": self.allow_dirty,
            "dirty_paths": list(self.dirty),
        }

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.clock, 6)


def _twins(ledger: LedgerStore, models: Sequence[dict[str, Any]]) -> list[FileRegistration]:
    """Earlier registrations of the same model with the same file (sha256)."""
    digests = [m["sha256"] for m in models if m.get("sha256")]
    if not digests or not ledger.exists():
        return []
    return trainings.registrations_of_files(ledger, [m["name"] for m in models], digests)


def recorded_versions(ledger: LedgerStore, names: Sequence[str]) -> dict[str, int]:
    """Model name -> the highest version number the ledger records (MLflow's registry must already be past it)."""
    if not names or not ledger.exists():
        return {}
    rows = trainings.recorded_versions(ledger, list(names))
    return {model: int(version) for model, version in rows if version is not None}


def registered_already(ledger: LedgerStore, models: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Model name -> the version already registered with the same file (sha256), from whatever commit.

    One artifact is one version: bytes DVC restored from its run-cache, a rerun after a reset, or the same model
    retrained at another commit would otherwise be a new version number with nothing new in it (a phantom). The
    training is recorded and refers to the existing version (its first registration) instead.
    """
    wanted = {(m["name"], m.get("sha256")) for m in models if m.get("sha256")}
    found: dict[str, str] = {}
    for twin in _twins(ledger, models):
        if (twin.model, twin.sha256) in wanted:
            found.setdefault(twin.model, twin.version)
    return found


def registration_events(
    run: Run,
    training_id: str,
    mlflow_run_id: str,
    models: list[dict[str, Any]],
    versions: Sequence[mlflow_adapter.RegisteredVersion],
) -> list[PendingEvent]:
    by_name = {model["name"]: model for model in models}
    twins = _twins(run.project.ledger, [by_name[v.model] for v in versions])
    events = []
    for version in versions:
        model = by_name[version.model]
        same = [t.version for t in twins if t.model == version.model and t.sha256 == model.get("sha256")]
        events.append(
            PendingEvent(
                ModelRegistered(
                    model=version.model,
                    version=version.version,
                    path=model["path"],
                    md5=model.get("md5"),
                    sha256=model.get("sha256"),
                    training_event_id=training_id,
                    mlflow_run_id=mlflow_run_id,
                    tracking_uri=redact(run.project.config.tracking_uri),
                    source_uri=version.source_uri,
                    desc=model.get("desc"),
                    labels=model.get("labels", []),
                    same_artifact_as=same,
                ),
                actor=run.project.actor,
                occurred_at=run.project.clock(),
                git_commit=run.state.commit,
            )
        )
    return events


def training_run(
    run: Run,
    event_id: str,
    ended_at: datetime,
    params: dict[str, Any],
    metrics: dict[str, Any],
    datasets: list[dict[str, Any]],
    models: list[dict[str, Any]],
    lock_sha256: str,
) -> mlflow_adapter.TrainingRun:
    """What the MLflow mirror of one training needs."""
    cfg, root, git_facts = run.project.config, run.project.root, run.git_facts
    local_store = cfg.tracking_uri.startswith("sqlite:") or "://" not in cfg.tracking_uri
    return mlflow_adapter.TrainingRun(
        tracking_uri=cfg.tracking_uri,
        experiment=cfg.experiment,
        artifact_location=(root / "mlartifacts").as_uri() if local_store else None,
        run_name=f"{git_facts['commit'][:8]}-{event_id[:8]}",
        event_id=event_id,
        actor=run.project.actor.name,
        started_at=run.started_at,
        ended_at=ended_at,
        git_commit=git_facts["commit"],
        git_branch=git_facts["branch"],
        git_remote=git_facts["remote_url"],
        git_dirty=git_facts["dirty"],
        source_name="dvc.yaml",
        params=params,
        metrics=metrics,
        tags={"govern.dvc.lock_sha256": lock_sha256, "govern.ci": str(environment.ci_identity() is not None).lower()},
        datasets=tuple(
            mlflow_adapter.DatasetInput(
                path=d["path"],
                md5=d["md5"],
                sha256=d["sha256"],
                source=d["path"],
                context=d["role"],
                rows=d["rows"],
                columns=tuple(d["columns"]) if d["columns"] else None,
            )
            for d in datasets
        ),
        recorded_versions=recorded_versions(run.project.ledger, [m["name"] for m in models]),
        models=tuple(
            mlflow_adapter.ModelArtifact(
                name=m["name"],
                path=root / m["path"],
                md5=m["md5"],
                sha256=m["sha256"],
                desc=m["desc"],
                labels=tuple(m["labels"]),
            )
            for m in models
        ),
    )
