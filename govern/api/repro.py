"""`govern repro`: reproduce the DVC pipeline, mirror it into MLflow, record it in the ledger.

The order is deliberate. The pipeline runs first; then the MLflow run is
created, tagged with the training's event id chosen up front; then every
fact of the run (dataset snapshots, the training, the registered model
versions) is appended in one ledger transaction. If MLflow cannot be
reached, the training is still recorded, marked as not mirrored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from govern import environment, lineage, tabular
from govern.adapters import blas
from govern.adapters import dvc as dvc_adapter
from govern.adapters import git as git_adapter
from govern.adapters import mlflow as mlflow_adapter
from govern.api.context import Project
from govern.api.mirror import after_write
from govern.api.registration import Run, registered_already, registration_events, training_run
from govern.api.results import Reported, ReproOutcome
from govern.envelope import PendingEvent, format_timestamp, new_event_id, to_utc
from govern.errors import DirtyWorktree, MirrorError, ProjectError, StageFailed
from govern.events import DatasetSnapshotted, TrainingCompleted, TrainingFailed
from govern.hashing import digest
from govern.pipeline import Pipeline, StageRun
from govern.readmodel import trainings
from govern.redaction import redact
from govern.storage import LedgerStore

ProgressCallback = Callable[[str, str, StageRun | None], None]


@dataclass(frozen=True)
class Built:
    """The events of one finished reproduction, ready to append."""

    snapshots: list[PendingEvent]
    training: PendingEvent
    registrations: list[PendingEvent]
    models: list[dict[str, Any]]
    metrics: dict[str, Any]
    params: dict[str, Any]
    mirror_error: str | None
    run_id: str | None

    @property
    def events(self) -> list[PendingEvent]:
        return [*self.snapshots, self.training, *self.registrations]


def start_run(project: Project, targets: Sequence[str], allow_dirty: bool) -> Run:
    return Run(project, git_adapter.state(project.root), allow_dirty, list(targets))


def check_worktree(run: Run, pipeline: Pipeline) -> None:
    """Refuse uncommitted changes to tracked files, other than what a reproduction rewrites itself."""
    run.dirty[:] = _relevant_changes(run.state.dirty_paths, pipeline)
    if run.dirty and not run.allow_dirty:
        shown = ", ".join(run.dirty[:5]) + (f" and {len(run.dirty) - 5} more" if len(run.dirty) > 5 else "")
        raise DirtyWorktree(
            f"Uncommitted changes to tracked files ({shown}): commit them so the training points at a "
            "commit, or pass --allow-dirty to record the run as dirty"
        )


def reproduce(
    run: Run,
    on_progress: ProgressCallback | None,
    *,
    check: bool = True,
    grid: dict[str, Any] | None = None,
) -> tuple[Pipeline, list[StageRun]]:
    """Run the pipeline; a failing stage is recorded as `training.failed` and re-raised."""
    try:
        return dvc_adapter.reproduce(
            run.project.root,
            run.targets,
            on_progress=on_progress,
            before=(lambda pipeline: check_worktree(run, pipeline)) if check else None,
            on_run=lambda _stage: _prefetch(run.project.config.tracking_uri),
        )
    except StageFailed as failure:
        recorded = run.project.ledger.append([failed_event(run, failure, grid)])[0]
        raise StageFailed(
            failure.stage, f"{failure} (recorded as training.failed, seq {recorded.seq})", failure.output_tail
        ) from None


def failed_event(run: Run, failure: StageFailed, grid: dict[str, Any] | None = None) -> PendingEvent:
    """The `training.failed` fact of a reproduction a stage stopped."""
    return PendingEvent(
        TrainingFailed(
            git=run.git_facts,
            targets=run.targets,
            stage=failure.stage,
            error=str(failure),
            output_tail=failure.output_tail,
            stages=[],
            environment=environment.describe(),
            duration_s=run.elapsed(),
            grid=grid,
        ),
        actor=run.project.actor,
        occurred_at=run.project.clock(),
        git_commit=run.state.commit,
    )


def _prefetch(tracking_uri: str) -> None:
    """A stage is about to run: open MLflow and describe the numeric libraries while it works."""
    mlflow_adapter.prefetch(tracking_uri)
    blas.prefetch()


def lock_state(run: Run, pipeline: Pipeline) -> tuple[dict[str, Any], str]:
    """The lock entries per stage and the sha256 of the lock files' bytes."""
    locks, lock_bytes = dvc_adapter.read_locks(run.project.root, pipeline)
    if not locks:
        raise ProjectError("The pipeline has no dvc.lock after reproducing: does dvc.yaml define any stage?")
    return locks, hashlib.sha256(lock_bytes.encode("utf-8")).hexdigest()


def build_training(
    run: Run,
    pipeline: Pipeline,
    runs: list[StageRun],
    locks: dict[str, Any],
    lock_sha256: str,
    *,
    grid: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    register: bool = True,
    known_snapshots: Mapping[tuple[str, str | None], tuple[str, str]] | None = None,
    mirror: bool = True,
) -> Built:
    """Everything one reproduction recorded, mirrored into MLflow (registering models if `register`).

    A job reporting its facts to the server (`report_facts`) passes the snapshots the server knows as
    `known_snapshots` and `mirror=False`: it reads no ledger and writes no MLflow run; the training is
    `mlflow.status` pending, and the server's outbox mirrors it (`govern.api.mirror`)."""
    project, root = run.project, run.project.root
    training_id = new_event_id()
    ended_at = project.clock()
    digests: dict[str, Any] = {}
    stages = lineage.stage_records(root, pipeline, locks, runs, digests)
    models = lineage.model_records(root, pipeline, locks, digests)
    if known_snapshots is None:
        known_snapshots = _known_snapshots(root, pipeline, locks, project.ledger)
    snapshots, dataset_refs = _datasets(
        root, pipeline, locks, runs, digests, known_snapshots, project.actor, run.state.commit
    )
    md5s = lineage.output_md5s(locks)
    for path in lineage.training_inputs(pipeline, locks, models):
        if path not in {ref["path"] for ref in dataset_refs}:
            dataset_refs.append(_dataset_ref(root, path, md5s.get(path), "training", digests))
    params = lineage.params_of(locks)
    metrics = lineage.metrics_of(root, pipeline)
    reused = registered_already(project.ledger, models) if register and mirror else {}
    for model in models:
        if model["name"] in reused:
            model["registered_version"] = reused[model["name"]]
    mirror_error, mirrored = None, None
    if mirror:
        new_models = [model for model in models if model["name"] not in reused]
        plan = training_run(run, training_id, ended_at, params, metrics, dataset_refs, new_models, lock_sha256)
        plan = dataclasses.replace(plan, parent_run_id=parent_run_id, register=register)
        try:
            mirrored = mlflow_adapter.mirror_training(plan)
            mlflow_facts: dict[str, Any] = {
                "status": "mirrored",
                "tracking_uri": redact(project.config.tracking_uri),
                "experiment": project.config.experiment,
                "experiment_id": mirrored.experiment_id,
                "run_id": mirrored.run_id,
                "parent_run_id": parent_run_id,
                "model_versions": [{"model": v.model, "version": v.version} for v in mirrored.versions],
                "reused_versions": [{"model": name, "version": version} for name, version in reused.items()],
            }
        except MirrorError as error:
            mirror_error = str(error)
            mlflow_facts = {
                "status": "pending",
                "tracking_uri": redact(project.config.tracking_uri),
                "error": mirror_error,
            }
    else:
        mlflow_facts = {"status": "pending", "error": REPORTED_NOT_MIRRORED}
    training = PendingEvent(
        TrainingCompleted(
            git=run.git_facts,
            dvc_lock_sha256=lock_sha256,
            targets=run.targets,
            stages=stages,
            params=params,
            metrics=metrics,
            outputs=[out for stage in stages for out in stage["outs"]],
            datasets=dataset_refs,
            models=models,
            environment=environment.describe(),
            duration_s=run.elapsed(),
            run_cache_hit=any(stage_run.status == "restored" for stage_run in runs),
            mlflow=mlflow_facts,
            grid=grid,
        ),
        actor=project.actor,
        occurred_at=ended_at,
        git_commit=run.state.commit,
        event_id=training_id,
    )
    versions = mirrored.versions if mirrored else ()
    registrations = registration_events(run, training_id, mirrored.run_id if mirrored else "", models, versions)
    return Built(
        snapshots, training, registrations, models, metrics, params, mirror_error, mirrored.run_id if mirrored else None
    )


REPORTED_NOT_MIRRORED = "reported by a job: the server mirrors it"


def repro(
    project: Project,
    targets: Sequence[str] = (),
    *,
    allow_dirty: bool = False,
    commit: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ReproOutcome:
    """Reproduce the pipeline and record what happened. See the module docstring."""
    run = start_run(project, targets, allow_dirty)
    pipeline, runs = reproduce(run, on_progress)
    locks, lock_sha256 = lock_state(run, pipeline)
    ledger, root = run.project.ledger, run.project.root
    if all(stage_run.status == "unchanged" for stage_run in runs) and ledger.exists():
        existing = trainings.by_lock(ledger, lock_sha256)
        if existing is not None:
            committed = _commit_lock(root, pipeline, existing, None) if commit else None
            return ReproOutcome(
                status="up-to-date",
                stage_runs=runs,
                existing_seq=existing,
                committed=committed,
                warnings=_lock_found(run.project, commit) + after_write(run.project),
            )
    built = build_training(run, pipeline, runs, locks, lock_sha256)
    recorded = ledger.append(built.events)
    training_seq = next(e.seq for e in recorded if e.event_id == built.training.event_id)
    committed = _commit_lock(root, pipeline, training_seq, built.training.event_id) if commit else None
    warnings = _lock_found(run.project, commit, built.training.event_id if built.models else None)
    warnings += [] if built.mirror_error else after_write(run.project)
    return ReproOutcome(
        status="recorded",
        stage_runs=runs,
        events=recorded,
        mirror_error=built.mirror_error,
        committed=committed,
        warnings=warnings,
    )


def _lock_found(project: Project, committed: bool, training_event_id: str | None = None) -> list[str]:
    """Record the lock commits this clone now holds (`api.locks`); a line saying so where this training's lock
    is not committed yet: its versions are "not locked" until it is."""
    from govern.api import locks
    from govern.errors import GovernError

    try:
        found = locks.find(project, "repro --commit" if committed else "repro")
    except GovernError as error:
        return [f"could not look for the lock commit: {error}"]
    if training_event_id is None or any(e.payload["training_event_id"] == training_event_id for e in found):
        return []
    if trainings.lock_count(project.ledger, training_event_id):
        return []
    return [f"this training's versions are not locked yet: {locks.NOT_LOCKED_HINT}"]


def _relevant_changes(paths: Sequence[str], pipeline: Pipeline) -> list[str]:
    """Changes a reproduction may make itself (dvc.lock, DVC outputs) are not dirt."""
    outputs = pipeline.output_paths
    return [
        path
        for path in paths
        if Path(path).name != "dvc.lock"
        and not any(path == out or path.startswith(out.rstrip("/") + "/") for out in outputs)
    ]


def _known_snapshots(
    root: Path, pipeline: Pipeline, locks: dict[str, Any], ledger: LedgerStore
) -> dict[tuple[str, str | None], tuple[str, str]]:
    """(path, md5) -> (event id, extracted_at) of the snapshots the ledger records of this pipeline's sources."""
    candidates = lineage.dataset_candidates(root, pipeline, locks)
    if not candidates or not ledger.exists():
        return {}
    rows = trainings.snapshots_of_paths(ledger, [c.path for c in candidates])
    return {(row.path, row.md5): (row.event_id, row.extracted_at) for row in rows}


def _datasets(
    root: Path,
    pipeline: Pipeline,
    locks: dict[str, Any],
    runs: list[StageRun],
    digests: dict[str, Any],
    known: Mapping[tuple[str, str | None], tuple[str, str]],
    actor: str,
    commit: str,
) -> tuple[list[PendingEvent], list[dict[str, Any]]]:
    """New snapshot events for changed source data (not in `known`), and references to every dataset used."""
    candidates = lineage.dataset_candidates(root, pipeline, locks)
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


# ---------------------------------------------------------------- a job's report

REPORT_FORMAT = "govern.reported-training/1"
REPORT_ENVELOPE = ("event_id", "type", "schema_version", "occurred_at", "git_commit", "payload")


class _NoLedger:
    """The ledger of a job that reports its facts: there is none, and asking for it is a bug, said loudly."""

    backend = "none"

    def __getattr__(self, name: str) -> Any:
        raise ProjectError(f"`govern repro --facts-out` reads and writes no ledger (it was asked for {name})")


def reporting(root: Path | None = None) -> Project:
    """The project a training's facts are reported from (`report_facts`): its checkout and configuration, and no
    ledger at all (a job's checkout must not reach one; a remote `govern repro` sends its facts to the server)."""
    from govern import config as config_module

    root = config_module.find_root(root)
    return Project(root, config_module.load(root), _NoLedger(), "(reported by a job)")  # type: ignore[arg-type]


def report_facts(
    project: Project,
    targets: Sequence[str],
    facts_out: Path,
    known_snapshots: Path | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    pull: bool = True,
) -> Reported:
    """Reproduce the pipeline and build its facts exactly as `repro` does, but touch neither the ledger nor MLflow:
    write the pending events to `facts_out` (a training job's report, `govern.api.reported` records it). What repro
    would read from the ledger, the dataset snapshots already recorded, comes from the server in
    `known_snapshots`. A failing stage is reported as `training.failed`, and re-raised. The project is one with
    no ledger (`reporting`)."""
    root = project.root
    run = Run(project, git_adapter.state(root), False, list(targets))
    known = read_known_snapshots(known_snapshots) if known_snapshots is not None else {}
    try:
        pipeline, runs = dvc_adapter.reproduce(
            root, run.targets, on_progress=on_progress, before=lambda p: check_worktree(run, p), pull=pull
        )
    except StageFailed as failure:
        write_report(facts_out, [failed_event(run, failure)])
        raise StageFailed(failure.stage, f"{failure} (reported as training.failed)", failure.output_tail) from None
    locks, lock_sha256 = lock_state(run, pipeline)
    built = build_training(run, pipeline, runs, locks, lock_sha256, known_snapshots=known, mirror=False)
    write_report(facts_out, built.events)
    return Reported(built.events, runs)


def reported_event(event: PendingEvent) -> dict[str, Any]:
    """One pending event as a report carries it (no actor: the server that records it names who acted)."""
    return {
        "event_id": event.event_id,
        "type": event.fact.type,
        "schema_version": event.fact.schema_version,
        "occurred_at": format_timestamp(event.occurred_at),
        "git_commit": event.git_commit,
        "payload": event.fact.to_payload(),
    }


def write_report(path: Path, events: Sequence[PendingEvent]) -> None:
    import json
    import os

    text = json.dumps({"format": REPORT_FORMAT, "events": [reported_event(e) for e in events]}, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def read_known_snapshots(path: Path) -> dict[tuple[str, str | None], tuple[str, str]]:
    """The server's `--known-snapshots` file: {"snapshots": [{path, md5, event_id, extracted_at}, ...]}."""
    import json

    try:
        listed = json.loads(path.read_text(encoding="utf-8"))["snapshots"]
        return {(s["path"], s["md5"]): (s["event_id"], s["extracted_at"]) for s in listed}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ProjectError(f"--known-snapshots {path} is not the server's list of snapshots ({error})") from None
