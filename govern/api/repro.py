"""`govern repro`: reproduce the DVC pipeline, mirror it into MLflow, record it in the ledger.

The order is deliberate. The pipeline runs first; then the MLflow run is
created, tagged with the training's event id chosen up front; then every
fact of the run (dataset snapshots, the training, the registered model
versions) is appended in one ledger transaction. If MLflow cannot be
reached, the training is still recorded, marked as not mirrored.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from govern import config as config_module
from govern import environment, lineage, tabular
from govern.adapters import dvc as dvc_adapter
from govern.adapters import git as git_adapter
from govern.adapters import mlflow as mlflow_adapter
from govern.config import Config
from govern.errors import DirtyWorktree, MirrorError, ProjectError, StageFailed
from govern.events import (
    DatasetSnapshotted,
    ModelRegistered,
    PendingEvent,
    RecordedEvent,
    TrainingCompleted,
    TrainingFailed,
    format_timestamp,
    new_event_id,
    to_utc,
    utc_now,
)
from govern.hashing import digest
from govern.ledger import Ledger
from govern.pipeline import Pipeline, StageRun

ProgressCallback = Callable[[str, str, StageRun | None], None]

FIND_TRAINING_BY_LOCK = """
SELECT seq FROM events
WHERE type = 'training.completed' AND payload->>'$.dvc_lock_sha256' = ?
ORDER BY seq DESC LIMIT 1
"""

FIND_SNAPSHOTS = """
SELECT payload->>'$.path' AS path, payload->>'$.md5' AS md5, event_id, payload->>'$.extracted_at' AS extracted_at
FROM events
WHERE type = 'dataset.snapshotted' AND payload->>'$.path' IN (SELECT unnest(?))
ORDER BY seq
"""


@dataclass(frozen=True)
class ReproOutcome:
    """What `repro` did: recorded a training, or found it already recorded."""

    status: str  # "recorded" or "up-to-date"
    stage_runs: list[StageRun]
    events: list[RecordedEvent] = field(default_factory=list)
    existing_seq: int | None = None
    mirror_error: str | None = None
    committed: str | None = None

    @property
    def training(self) -> RecordedEvent | None:
        return next((e for e in self.events if e.type == TrainingCompleted.type), None)

    def to_dict(self) -> dict[str, Any]:
        training = self.training
        return {
            "status": self.status,
            "stages": [{"name": r.name, "status": r.status, "duration_s": r.duration_s} for r in self.stage_runs],
            "events": [
                {"seq": e.seq, "type": e.type, "subject": e.subject, "event_id": e.event_id} for e in self.events
            ],
            "training_seq": training.seq if training else self.existing_seq,
            "mlflow_run_id": (training.payload.get("mlflow") or {}).get("run_id") if training else None,
            "mirror_error": self.mirror_error,
            "committed": self.committed,
        }


def repro(
    targets: Sequence[str] = (),
    *,
    allow_dirty: bool = False,
    commit: bool = False,
    start: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> ReproOutcome:
    """Reproduce the pipeline and record what happened. See the module docstring."""
    root = config_module.find_root(start)
    cfg = config_module.load(root)
    ledger = Ledger(cfg.ledger, lock_timeout=cfg.lock_timeout)
    state = git_adapter.state(root)
    actor = environment.actor(lambda: git_adapter.identity(root))
    clock, started_at = time.perf_counter(), utc_now()
    dirty: list[str] = []

    def check_worktree(pipeline: Pipeline) -> None:
        dirty.extend(_relevant_changes(state.dirty_paths, pipeline))
        if dirty and not allow_dirty:
            shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
            raise DirtyWorktree(
                f"Uncommitted changes to tracked files ({shown}): commit them so the training points at a "
                "commit, or pass --allow-dirty to record the run as dirty"
            )

    git_facts = {
        "commit": state.commit,
        "branch": state.branch,
        "remote_url": state.remote_url,
        "dirty": False,
        "allow_dirty": allow_dirty,
        "dirty_paths": [],
    }
    try:
        pipeline, runs = dvc_adapter.reproduce(root, targets, on_progress=on_progress, before=check_worktree)
    except StageFailed as failure:
        git_facts.update(dirty=bool(dirty), dirty_paths=dirty)
        event = PendingEvent(
            TrainingFailed(
                git=git_facts,
                targets=list(targets),
                stage=failure.stage,
                error=str(failure),
                output_tail=failure.output_tail,
                stages=[],
                environment=environment.describe(),
                duration_s=round(time.perf_counter() - clock, 6),
            ),
            actor=actor,
            occurred_at=utc_now(),
            git_commit=state.commit,
        )
        recorded = ledger.append([event])[0]
        raise StageFailed(
            failure.stage, f"{failure} (recorded as training.failed, seq {recorded.seq})", failure.output_tail
        ) from None
    git_facts.update(dirty=bool(dirty), dirty_paths=dirty)

    locks, lock_bytes = dvc_adapter.read_locks(root, pipeline)
    if not locks:
        raise ProjectError("The pipeline has no dvc.lock after reproducing: does dvc.yaml define any stage?")
    lock_sha256 = hashlib.sha256(lock_bytes.encode("utf-8")).hexdigest()
    nothing_ran = all(run.status == "unchanged" for run in runs)
    if nothing_ran and ledger.path.exists():
        _, rows = ledger.query(FIND_TRAINING_BY_LOCK, [lock_sha256])
        if rows:
            committed = _commit_lock(root, pipeline, rows[0][0], None) if commit else None
            return ReproOutcome(status="up-to-date", stage_runs=runs, existing_seq=rows[0][0], committed=committed)

    training_id = new_event_id()
    ended_at = utc_now()
    digests: dict[str, Any] = {}
    stages = lineage.stage_records(root, pipeline, locks, runs, digests)
    models = lineage.model_records(root, pipeline, locks, digests)
    snapshots, dataset_refs = _datasets(root, pipeline, locks, runs, digests, ledger, actor, state.commit)
    md5s = lineage.output_md5s(locks)
    for path in lineage.training_inputs(pipeline, locks, models):
        if path not in {ref["path"] for ref in dataset_refs}:
            dataset_refs.append(_dataset_ref(root, path, md5s.get(path), "training", digests))
    params = lineage.params_of(locks)
    metrics = lineage.metrics_of(root, pipeline)
    env = environment.describe()

    mirror_error = None
    mirrored = None
    try:
        mirrored = mlflow_adapter.mirror_training(
            _training_run(
                cfg,
                training_id,
                actor,
                started_at,
                ended_at,
                git_facts,
                params,
                metrics,
                dataset_refs,
                models,
                root,
                lock_sha256,
            )
        )
        mlflow_facts: dict[str, Any] = {
            "status": "mirrored",
            "tracking_uri": _redacted(cfg.tracking_uri),
            "experiment": cfg.experiment,
            "experiment_id": mirrored.experiment_id,
            "run_id": mirrored.run_id,
            "model_versions": [{"model": v.model, "version": v.version} for v in mirrored.versions],
        }
    except MirrorError as error:
        mirror_error = str(error)
        mlflow_facts = {"status": "failed", "tracking_uri": _redacted(cfg.tracking_uri), "error": mirror_error}

    training = PendingEvent(
        TrainingCompleted(
            git=git_facts,
            dvc_lock_sha256=lock_sha256,
            targets=list(targets),
            stages=stages,
            params=params,
            metrics=metrics,
            outputs=[out for stage in stages for out in stage["outs"]],
            datasets=dataset_refs,
            models=models,
            environment=env,
            duration_s=round(time.perf_counter() - clock, 6),
            run_cache_hit=any(run.status == "restored" for run in runs),
            mlflow=mlflow_facts,
        ),
        actor=actor,
        occurred_at=ended_at,
        git_commit=state.commit,
        event_id=training_id,
    )
    registrations = []
    if mirrored is not None:
        by_name = {model["name"]: model for model in models}
        for version in mirrored.versions:
            model = by_name[version.model]
            registrations.append(
                PendingEvent(
                    ModelRegistered(
                        model=version.model,
                        version=version.version,
                        path=model["path"],
                        md5=model["md5"],
                        sha256=model["sha256"],
                        training_event_id=training_id,
                        mlflow_run_id=mirrored.run_id,
                        tracking_uri=_redacted(cfg.tracking_uri),
                        source_uri=version.source_uri,
                        desc=model["desc"],
                        labels=model["labels"],
                    ),
                    actor=actor,
                    occurred_at=utc_now(),
                    git_commit=state.commit,
                )
            )
    recorded = ledger.append([*snapshots, training, *registrations])
    training_seq = next(e.seq for e in recorded if e.event_id == training_id)
    committed = _commit_lock(root, pipeline, training_seq, training_id) if commit else None
    return ReproOutcome(
        status="recorded", stage_runs=runs, events=recorded, mirror_error=mirror_error, committed=committed
    )


def _relevant_changes(paths: Sequence[str], pipeline: Pipeline) -> list[str]:
    """Changes a reproduction may make itself (dvc.lock, DVC outputs) are not dirt."""
    outputs = pipeline.output_paths
    return [
        path
        for path in paths
        if Path(path).name != "dvc.lock"
        and not any(path == out or path.startswith(out.rstrip("/") + "/") for out in outputs)
    ]


def _datasets(
    root: Path,
    pipeline: Pipeline,
    locks: dict[str, Any],
    runs: list[StageRun],
    digests: dict[str, Any],
    ledger: Ledger,
    actor: str,
    commit: str,
) -> tuple[list[PendingEvent], list[dict[str, Any]]]:
    """New snapshot events for changed source data, and references to every dataset used."""
    candidates = lineage.dataset_candidates(root, pipeline, locks)
    known: dict[tuple[str, str | None], tuple[str, str]] = {}
    if candidates and ledger.path.exists():
        _, rows = ledger.query(FIND_SNAPSHOTS, [[c.path for c in candidates]])
        known = {(path, md5): (event_id, extracted_at) for path, md5, event_id, extracted_at in rows}
    ran_at = {run.name: run.started_at for run in runs if run.status == "ran"}
    events, refs = [], []
    for candidate in candidates:
        ref = _dataset_ref(root, candidate.path, candidate.md5, "source", digests)
        previous = known.get((candidate.path, candidate.md5))
        if previous is not None and candidate.stage not in ran_at:
            refs.append({**ref, "snapshot_event_id": previous[0], "extracted_at": previous[1]})
            continue
        extracted_at, basis = _extraction_time(root, candidate, ran_at)
        found = digests.get(candidate.path)
        shape = tabular.shape(root / candidate.path)
        fact = DatasetSnapshotted(
            path=candidate.path,
            md5=candidate.md5,
            sha256=found.sha256 if found else None,
            size=found.size if found else None,
            nfiles=found.nfiles if found else None,
            source=candidate.source,
            extracted_at=format_timestamp(extracted_at),
            extracted_at_basis=basis,
            stage=candidate.stage,
            rows=shape.rows if shape else None,
            columns=shape.columns if shape else None,
        )
        event = PendingEvent(fact, actor=actor, occurred_at=extracted_at, git_commit=commit)
        events.append(event)
        refs.append({**ref, "snapshot_event_id": event.event_id, "extracted_at": fact.extracted_at})
    return events, refs


def _dataset_ref(root: Path, path: str, md5: str | None, role: str, digests: dict[str, Any]) -> dict[str, Any]:
    if path not in digests:
        digests[path] = digest(root / path)
    found = digests[path]
    shape = tabular.shape(root / path)
    return {
        "path": path,
        "role": role,
        "md5": md5,
        "sha256": found.sha256 if found else None,
        "size": found.size if found else None,
        "rows": shape.rows if shape else None,
        "columns": shape.columns if shape else None,
    }


def _extraction_time(
    root: Path, candidate: lineage.DatasetCandidate, ran_at: dict[str, datetime]
) -> tuple[datetime, str]:
    """When the data was pulled: the stage's run, the `.dvc` file's commit, or the file's mtime."""
    if candidate.stage in ran_at:
        return ran_at[candidate.stage], "stage-run"
    if candidate.stage is None:
        committed = git_adapter.last_commit_time(root, f"{candidate.path}.dvc")
        if committed is not None:
            return to_utc(committed), "dvc-file-commit"
    target = root / candidate.path
    mtime = target.stat().st_mtime if target.exists() else time.time()
    return to_utc(datetime.fromtimestamp(mtime)), "file-mtime"


def _training_run(
    cfg: Config,
    event_id: str,
    actor: str,
    started_at: datetime,
    ended_at: datetime,
    git_facts: dict[str, Any],
    params: dict[str, Any],
    metrics: dict[str, Any],
    datasets: list[dict[str, Any]],
    models: list[dict[str, Any]],
    root: Path,
    lock_sha256: str,
) -> mlflow_adapter.TrainingRun:
    local_store = cfg.tracking_uri.startswith("sqlite:") or "://" not in cfg.tracking_uri
    return mlflow_adapter.TrainingRun(
        tracking_uri=cfg.tracking_uri,
        experiment=cfg.experiment,
        artifact_location=(root / "mlartifacts").as_uri() if local_store else None,
        run_name=f"{git_facts['commit'][:8]}-{event_id[:8]}",
        event_id=event_id,
        actor=actor,
        started_at=started_at,
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


def _commit_lock(root: Path, pipeline: Pipeline, seq: int, event_id: str | None) -> str | None:
    """Commit what a reproduction legitimately changes: lock files, DVC's .gitignore files, uncached outputs."""
    candidates = set(pipeline.lock_files)
    for stage in pipeline.stages.values():
        for out in stage.outs:
            candidates.add(out.path if not out.cache else (Path(out.path).parent / ".gitignore").as_posix())
    changed = git_adapter.uncommitted(root, sorted(candidates))
    if not changed:
        return None
    subject = f"govern: record training {event_id}" if event_id else "govern: commit dvc.lock"
    message = f"{subject}\n\nLedger seq {seq}. Committed by `govern repro --commit`."
    return git_adapter.commit_paths(root, changed, message)


def _redacted(uri: str) -> str:
    return re.sub(r"^(\w+://)[^/@]+@", r"\1", uri)
