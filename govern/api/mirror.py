"""The outbox: trainings recorded while MLflow was unreachable are mirrored later, exactly once.

A training whose mirror failed is recorded with `mlflow.status = "pending"`;
`training.mirrored` (and `model.registered` for its versions) record the
mirror when it happens, so nothing is ever updated. `govern mirror` retries
every pending training, and so does every later govern write (repro,
promote, deprecate, deploy, retire). A half-finished earlier attempt left a
run tagged with the training's event id: that run is completed, not
duplicated.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from govern.adapters import mlflow as mlflow_adapter
from govern.api.context import Project
from govern.api.results import MirrorOutcome
from govern.envelope import PendingEvent, RecordedEvent
from govern.errors import MirrorError
from govern.events import TrainingMirrored
from govern.readmodel.mirrors import pending_trainings
from govern.redaction import redact


def pending_count(project: Project) -> int:
    if not project.ledger.exists():
        return 0
    return len(pending_trainings(project.ledger))


def retry_pending(project: Project) -> MirrorOutcome:
    """Mirror every pending training; stops at the first MLflow failure (it is down again). A training whose model
    file is nowhere to be found stays pending with its reason, and the ones after it are mirrored all the same:
    one lost file must not hold every later version out of MLflow."""
    if not project.ledger.exists():
        return MirrorOutcome()
    rows = pending_trainings(project.ledger)
    recorded: list[RecordedEvent] = []
    stuck: list[str] = []
    for position, row in enumerate(rows):
        payload = json.loads(row.payload)
        try:
            events = _mirror_one(project, row.event_id, payload, row.git_commit, row.occurred_at)
        except ModelFileMissing as error:
            stuck.append(str(error))
            continue
        except MirrorError as error:
            return MirrorOutcome(recorded, len(rows) - position + len(stuck), [*stuck, str(error)])
        recorded.extend(project.ledger.append(events))
    return MirrorOutcome(recorded, len(stuck), stuck)


class ModelFileMissing(MirrorError):
    """A pending training's model file is neither in the workspace nor in DVC's cache: MLflow is not to blame."""


def _mirror_one(project: Project, event_id: str, payload: dict, commit: str, occurred_at) -> list[PendingEvent]:  # noqa: ANN001
    from govern.api import registration

    run = registration.Run(
        project, _state(payload), payload["git"].get("allow_dirty", False), payload.get("targets", [])
    )
    registering = payload.get("grid") is None
    reused = registration.registered_already(project.ledger, payload.get("models", [])) if registering else {}
    models = [m for m in payload.get("models", []) if registering and m["name"] not in reused]
    located = []
    for model in models:
        path = _model_files().local_copy(project.root, model["path"], model.get("md5"), model.get("sha256"))
        if path is None:
            raise ModelFileMissing(
                f"The model file of training {event_id} ({model['path']}, sha256 {model.get('sha256')}) is neither in "
                "the workspace nor in DVC's cache: it cannot be registered"
            )
        located.append({**model, "located": path})
    mirror = registration.training_run(
        run,
        event_id,
        occurred_at,
        payload.get("params", {}),
        payload.get("metrics", {}),
        payload.get("datasets", []),
        payload.get("models", []),
        payload.get("dvc_lock_sha256", ""),
    )
    mirror = _with_paths(mirror, located, register=payload.get("grid") is None)
    mirrored = mlflow_adapter.resume_mirror(mirror)
    events = [
        PendingEvent(
            TrainingMirrored(
                training_event_id=event_id,
                run_id=mirrored.run_id,
                experiment_id=mirrored.experiment_id,
                tracking_uri=redact(project.config.tracking_uri),
                model_versions=[{"model": v.model, "version": v.version} for v in mirrored.versions],
                reused_run=mirrored.reused,
                reused_versions=[{"model": name, "version": version} for name, version in reused.items()],
            ),
            actor=project.actor,
            occurred_at=project.clock(),
            git_commit=commit,
        )
    ]
    events.extend(registration.registration_events(run, event_id, mirrored.run_id, models, mirrored.versions))
    return events


def _model_files():  # noqa: ANN202
    """Imported on use: finding model files needs the DVC adapter, which every write would otherwise load."""
    from govern.api import model_files

    return model_files


def _state(payload: dict):  # noqa: ANN202
    from govern.adapters.git import GitState

    git = payload["git"]
    return GitState(git["commit"], git.get("branch"), git.get("remote_url"), tuple(git.get("dirty_paths") or ()))


def _with_paths(mirror: mlflow_adapter.TrainingRun, located: list[dict], register: bool) -> mlflow_adapter.TrainingRun:
    import dataclasses

    return dataclasses.replace(
        mirror,
        register=register,
        models=tuple(
            mlflow_adapter.ModelArtifact(
                m["name"], m["located"], m.get("md5"), m.get("sha256"), m.get("desc"), tuple(m.get("labels", []))
            )
            for m in located
        ),
    )


def after_write(project: Project, on_progress: Callable[[str], None] | None = None) -> list[str]:
    """What every governance write does last: retry pending mirrors, anchor if configured. Returns warnings.

    `on_progress` hears about each step that waits for MLflow, so a command never sits silent for seconds.
    """
    from govern.api import registry_mirror

    warnings = []
    if count := pending_count(project):
        if on_progress:
            on_progress(f"mirroring {count} pending training(s) into MLflow ...")
        outcome = retry_pending(project)
        if outcome.events:
            warnings.append(f"mirrored {len(outcome.events)} pending event(s) into MLflow")
        warnings.extend(f"{outcome.pending} training(s) still wait for MLflow: {e}" for e in outcome.errors)
    warnings.extend(registry_mirror.request(project, on_progress))
    if project.config.auto_anchor:
        from govern.api.integrity import anchor

        try:
            event = anchor(project=project)
            warnings.append(f"anchored the ledger at seq {event.seq}")
        except Exception as error:  # noqa: BLE001 - an anchor failure must not undo the write that happened
            warnings.append(f"could not anchor the ledger: {error}")
    return warnings
