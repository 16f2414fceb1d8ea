"""`govern repro --grid`: every combination of parameter values, the best one registered.

Each combination is written into the params file (as `dvc exp run
--set-param` does), reproduced through DVC (its run-cache makes repeated
combinations free), mirrored as a child of one MLflow parent run and recorded
as `training.completed` with a shared grid id. The best combination by the
configured metric is recorded as `experiment.selected`, and only its model
is registered. Afterwards the params files, lock files and git-tracked
outputs get their exact bytes back and DVC checks the cached outputs out
again, so the worktree is as it was; `--apply-best` then writes the winning
values into the params file for the user to commit.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from govern import lineage
from govern.adapters import dvc as dvc_adapter
from govern.adapters import mlflow as mlflow_adapter
from govern.api import repro as repro_api
from govern.api.context import Project
from govern.api.mirror import after_write
from govern.api.repro import ProgressCallback
from govern.api.results import GridAxis, GridOutcome
from govern.envelope import PendingEvent, RecordedEvent, new_event_id
from govern.errors import InvalidInput, MirrorError
from govern.events import ExperimentSelected
from govern.pipeline import Pipeline

DEFAULT_PARAMS_FILE = "params.yaml"


def parse_axis(spec: str) -> GridAxis:
    """`[FILE:]KEY=V1,V2,...`; values are read as YAML scalars (1 -> int, 0.1 -> float, true -> bool)."""
    target, sep, values = spec.partition("=")
    if not sep or not target or not values:
        raise InvalidInput(f"--grid {spec!r} is not KEY=V1,V2,... (for example train.C=0.1,1,10)")
    file, colon, key = target.rpartition(":")
    file = file if colon else DEFAULT_PARAMS_FILE
    return GridAxis(file, key, tuple(_scalar(value.strip()) for value in values.split(",")))


def _scalar(text: str) -> Any:
    """A command-line value as the params file would hold it: bool, int, float or string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def grid_search(
    project: Project,
    specs: Sequence[str],
    *,
    metric: str | None = None,
    direction: str | None = None,
    apply_best: bool = False,
    allow_dirty: bool = False,
    on_progress: ProgressCallback | None = None,
    on_combination: Any = None,
) -> GridOutcome:
    """Run the grid, record every child, select and register the best. See the module docstring."""
    axes = [parse_axis(spec) for spec in specs]
    if len({(a.file, a.key) for a in axes}) != len(axes):
        raise InvalidInput("A parameter appears in two --grid options: give each one once, with all its values")
    run = repro_api.start_run(project, (), allow_dirty)
    cfg, root = run.project.config, run.project.root
    metric = metric or cfg.selection_metric
    direction = direction or cfg.selection_direction
    if not metric:
        raise InvalidInput(
            "No metric to select the best combination by: pass --metric NAME or set metric in [tool.govern.selection]"
        )
    if direction not in ("maximize", "minimize"):
        raise InvalidInput(f"--direction must be maximize or minimize, not {direction!r}")
    _check_keys_exist(root, axes)
    pipeline = dvc_adapter.load_pipeline(root)
    _check_metric_exists(root, pipeline, metric)
    repro_api.check_worktree(run, pipeline)

    combinations = [
        {f"{a.file}:{a.key}" if a.file != DEFAULT_PARAMS_FILE else a.key: v for a, v in zip(axes, values, strict=True)}
        for values in itertools.product(*(a.values for a in axes))
    ]
    grid_id = new_event_id()
    warnings: list[str] = []
    parent_run_id = _start_parent(run, grid_id, len(combinations), warnings)
    saved = _save(root, pipeline, axes)
    scratch = Path(tempfile.mkdtemp(prefix="govern-grid-"))
    trainings: list[RecordedEvent] = []
    candidates: list[dict[str, Any]] = []
    model_copies: dict[str, list[dict[str, Any]]] = {}
    try:
        for index, combination in enumerate(combinations):
            if on_combination:
                on_combination(index, len(combinations), combination)
            _apply(root, axes, combination)
            grid = {"id": grid_id, "index": index, "size": len(combinations), "params": combination}
            training, candidate, models = _train_one(run, grid, metric, parent_run_id, on_progress, warnings)
            trainings.append(training)
            candidates.append(candidate)
            model_copies[training.event_id] = _keep_models(root, models, scratch / str(index))
    finally:
        warnings.extend(_restore(root, saved))

    winner = _best(candidates, direction)
    winner_training = next(t for t in trainings if t.event_id == winner["event_id"])
    versions, registration_error = _register_winner(run, winner_training, model_copies[winner["event_id"]], winner)
    if registration_error:
        warnings.append(registration_error)
    reused = repro_api.registered_already(run.project.ledger, winner_training.payload["models"])
    warnings.extend(
        f"{name}: the winner's file is version {version} already; not registered again"
        for name, version in reused.items()
    )
    selection = PendingEvent(
        ExperimentSelected(
            grid_id=grid_id,
            metric=metric,
            direction=direction,
            winner_event_id=winner["event_id"],
            winner_params=winner["params"],
            winner_value=winner["value"],
            candidates=candidates,
            mlflow_parent_run_id=parent_run_id,
        ),
        actor=run.project.actor,
        occurred_at=run.project.clock(),
        git_commit=run.state.commit,
    )
    registrations = repro_api.registration_events(
        run, winner["event_id"], winner["mlflow_run_id"] or "", winner_training.payload["models"], versions
    )
    recorded = run.project.ledger.append([selection, *registrations])
    shutil.rmtree(scratch, ignore_errors=True)
    _finish_parent(run, parent_run_id, grid_id, winner, metric, warnings)
    if apply_best:
        _apply(root, axes, winner["params"])
    warnings.extend(after_write(run.project))
    return GridOutcome(grid_id, trainings, recorded[0], recorded[1:], winner, apply_best, warnings)


def _train_one(
    run: repro_api.Run,
    grid: dict[str, Any],
    metric: str,
    parent_run_id: str | None,
    on_progress: ProgressCallback | None,
    warnings: list[str],
) -> tuple[RecordedEvent, dict[str, Any], Any]:
    """One combination, trained and recorded (not registered): its training event, its candidate entry for the
    selection, and its model files."""
    pipeline, stage_runs = repro_api.reproduce(run, on_progress, check=False, grid=grid)
    locks, lock_sha256 = repro_api.lock_state(run, pipeline)
    built = repro_api.build_training(
        run, pipeline, stage_runs, locks, lock_sha256, grid=grid, parent_run_id=parent_run_id, register=False
    )
    if metric not in built.metrics:
        raise InvalidInput(
            f"Metric {metric!r} is not among the pipeline's metrics ({', '.join(built.metrics) or 'none'}): "
            "pass --metric with one of them"
        )
    if built.mirror_error:
        warnings.append(built.mirror_error)
    recorded = run.project.ledger.append([*built.snapshots, built.training])
    training = next(e for e in recorded if e.event_id == built.training.event_id)
    candidate = {
        "event_id": training.event_id,
        "params": grid["params"],
        "value": built.metrics[metric],
        "mlflow_run_id": built.run_id,
    }
    return training, candidate, built.models


def _check_metric_exists(root: Path, pipeline: Pipeline, metric: str) -> None:
    """Refuse a selection metric the pipeline does not write, before the first combination trains."""
    if not pipeline.metrics_files:
        raise InvalidInput(
            f"--metric {metric}: the pipeline declares no metrics file (a `metrics:` entry in dvc.yaml) to select by"
        )
    known = lineage.metrics_of(root, pipeline)
    if known and metric not in known:
        names = ", ".join(known)
        raise InvalidInput(f"Metric {metric!r} is not among the pipeline's metrics ({names}): pass --metric with one")


def _check_keys_exist(root: Path, axes: list[GridAxis]) -> None:
    for axis in axes:
        node: Any = dvc_adapter.read_params(root, axis.file)
        for part in axis.key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise InvalidInput(f"--grid {axis.key}: {axis.file} has no parameter {axis.key!r}")
            node = node[part]


def _apply(root: Path, axes: list[GridAxis], combination: dict[str, Any]) -> None:
    for file in {a.file for a in axes}:
        values = {
            a.key: combination[f"{a.file}:{a.key}" if a.file != DEFAULT_PARAMS_FILE else a.key]
            for a in axes
            if a.file == file
        }
        dvc_adapter.set_params(root, file, values)


def _save(root: Path, pipeline: Any, axes: list[GridAxis]) -> dict[str, bytes | None]:
    """The exact bytes of every git-tracked file a grid run may rewrite."""
    paths = {a.file for a in axes} | set(pipeline.lock_files)
    paths |= {out.path for stage in pipeline.stages.values() for out in stage.outs if not out.cache}
    return {path: (root / path).read_bytes() if (root / path).is_file() else None for path in sorted(paths)}


def _restore(root: Path, saved: dict[str, bytes | None]) -> list[str]:
    for path, content in saved.items():
        target = root / path
        if content is None:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(content)
    return [f"outputs not restored from DVC's cache: {problem}" for problem in dvc_adapter.checkout(root)]


def _keep_models(root: Path, models: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """Copies of this combination's model files, in case it wins."""
    kept = []
    for model in models:
        source = root / model["path"]
        target = folder / model["name"] / Path(model["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        kept.append({**model, "copy": target})
    return kept


def _best(candidates: list[dict[str, Any]], direction: str) -> dict[str, Any]:
    scored = [c for c in candidates if c["value"] is not None]
    if not scored:
        raise InvalidInput("No combination produced a value for the selection metric")
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda c: c["value"])  # the first of equals wins: a stable, documented tie-break


def _register_winner(
    run: repro_api.Run, training: RecordedEvent, models: list[dict[str, Any]], winner: dict[str, Any]
) -> tuple[tuple[mlflow_adapter.RegisteredVersion, ...], str | None]:
    payload = training.payload
    reused = repro_api.registered_already(run.project.ledger, payload["models"])
    models = [m for m in models if m["name"] not in reused]
    if not winner["mlflow_run_id"] or not models:
        return (), None
    mirror = repro_api.training_run(
        run,
        training.event_id,
        run.project.clock(),
        payload["params"],
        payload["metrics"],
        [],
        payload["models"],
        payload["dvc_lock_sha256"],
    )
    mirror = dataclasses.replace(
        mirror,
        models=tuple(
            mlflow_adapter.ModelArtifact(m["name"], m["copy"], m["md5"], m["sha256"], m["desc"], tuple(m["labels"]))
            for m in models
        ),
    )
    try:
        return mlflow_adapter.register_models(mirror, winner["mlflow_run_id"]), None
    except MirrorError as error:
        return (), str(error)


def _start_parent(run: repro_api.Run, grid_id: str, size: int, warnings: list[str]) -> str | None:
    mirror = repro_api.training_run(run, grid_id, run.project.clock(), {}, {}, [], [], "")
    mirror = dataclasses.replace(
        mirror, run_name=f"grid-{grid_id[:8]}", tags={"govern.grid_id": grid_id, "govern.grid_size": str(size)}
    )
    try:
        return mlflow_adapter.start_parent_run(mirror)[0]
    except MirrorError as error:
        warnings.append(str(error))
        return None


def _finish_parent(
    run: repro_api.Run, parent: str | None, grid_id: str, winner: dict[str, Any], metric: str, warnings: list[str]
) -> None:
    if parent is None:
        return
    tags = {
        "govern.grid_id": grid_id,
        "govern.best_run_id": winner["mlflow_run_id"] or "",
        "govern.best_metric": metric,
    }
    try:
        mlflow_adapter.finish_parent_run(
            run.project.config.tracking_uri, parent, tags, {f"best.{metric}": winner["value"]}
        )
    except MirrorError as error:
        warnings.append(str(error))
