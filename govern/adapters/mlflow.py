"""MLflow through `MlflowClient`: the mirror of what the ledger records.

The only module that imports mlflow, and only inside functions: importing
mlflow costs about two seconds, which commands that do not mirror must not pay.
MLflow is a mirror of the current state; the ledger is the source of truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from govern.errors import MirrorError
from govern.redaction import redact

MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VALUE = 6000
DIGEST_LENGTH = 36  # MLflow's limit on a dataset digest
# Without this tag MLflow 3's UI guesses an experiment's kind and may open govern's runs in its GenAI view.
EXPERIMENT_KIND, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"
T = TypeVar("T")


@dataclass(frozen=True)
class DatasetInput:
    path: str
    md5: str | None
    sha256: str | None
    source: str
    context: str  # "training", "source", ...
    rows: int | None = None
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelArtifact:
    name: str
    path: Path
    md5: str | None
    sha256: str | None
    desc: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingRun:
    tracking_uri: str
    experiment: str
    artifact_location: str | None
    run_name: str
    event_id: str
    actor: str
    started_at: datetime
    ended_at: datetime
    git_commit: str
    git_branch: str | None
    git_remote: str | None
    git_dirty: bool
    source_name: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float | None]
    tags: Mapping[str, str] = field(default_factory=dict)
    datasets: tuple[DatasetInput, ...] = ()
    models: tuple[ModelArtifact, ...] = ()
    parent_run_id: str | None = None
    register: bool = True
    # model name -> the highest version number the ledger records for it: the registry must be past it
    recorded_versions: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisteredVersion:
    model: str
    version: str
    source_uri: str


@dataclass(frozen=True)
class MirroredRun:
    run_id: str
    experiment_id: str
    artifact_uri: str
    versions: tuple[RegisteredVersion, ...]
    reused: bool = False


def _stdout_to_stderr(function: Callable[..., T]) -> Callable[..., T]:
    """MLflow prints "View run ... at: URL" on stdout; govern keeps stdout for its own (JSON) output."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if threading.current_thread() is not threading.main_thread():
            # `sys.stdout` is the process's: swapped from a background thread (a server's mirror), it would take
            # the output of whatever the main thread prints meanwhile, and two overlapping threads restoring it
            # in the wrong order would leave it pointing at stderr for good
            return function(*args, **kwargs)
        with contextlib.redirect_stdout(sys.stderr):
            return function(*args, **kwargs)

    return wrapper


_warming: dict[str, threading.Thread] = {}


def prefetch(tracking_uri: str) -> None:
    """Import MLflow and open its store in the background, once: `govern repro` calls this when DVC starts a
    stage, so the 2-3 s this costs overlap the stage's subprocess instead of following it."""
    if tracking_uri not in _warming:
        _warming[tracking_uri] = threading.Thread(
            target=_warm, args=(tracking_uri,), name="govern-mlflow-prefetch", daemon=False
        )
        _warming[tracking_uri].start()


def _warm(tracking_uri: str) -> None:
    with contextlib.suppress(Exception):  # the mirror itself will meet and report the same problem
        _open_client(tracking_uri)


def _client(tracking_uri: str) -> Any:
    warming = _warming.get(tracking_uri)
    if warming is not None and warming is not threading.current_thread():
        warming.join()
    return _open_client(tracking_uri)


def _open_client(tracking_uri: str) -> Any:
    _refuse_a_store_that_cannot_exist(tracking_uri)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Its tqdm bar ("Downloading artifacts") would land in the output of `govern predict`.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow retries an unreachable server for minutes by default; govern reports it sooner.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # MLflow prints "View run ... at: URL" when a run ends, the URL with its password where the tracking URI
    # has one: govern says where runs are itself, redacted
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _refuse_a_store_that_cannot_exist(tracking_uri: str) -> None:
    """An SQLite store whose folder does not exist can never be opened (SQLite creates files, not folders): said
    at once, before MLflow's 2 s import, so that a mirror of a misconfigured project fails in a fraction of that."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    if str(path) not in ("", ":memory:") and not path.parent.is_dir():
        raise MirrorError(
            f"MLflow's tracking store {redact(tracking_uri)} cannot be opened: its folder {path.parent} does not "
            "exist; create it, or set MLFLOW_TRACKING_URI (or [mlflow] tracking_uri) to a store that exists"
        )


@_stdout_to_stderr
def mirror_training(run: TrainingRun) -> MirroredRun:
    """Create one MLflow run for a training and register each model artifact.

    Raises `MirrorError` when MLflow cannot be reached or refuses.
    """
    try:
        return _mirror(run)
    except MirrorError:
        raise
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds; all mean "not mirrored"
        raise MirrorError(
            f"Could not mirror the training into MLflow at {redact(run.tracking_uri)}: {_one_line(error)}"
        ) from None


def _mirror(run: TrainingRun) -> MirroredRun:
    from mlflow.entities import Dataset, InputTag, Metric, Param
    from mlflow.entities import DatasetInput as MlflowDatasetInput

    client = _client(run.tracking_uri)
    experiment_id = _experiment_id(client, run.experiment, run.artifact_location)
    tags = {**_source_tags(run), "govern.event_id": run.event_id}
    if run.parent_run_id:
        tags["mlflow.parentRunId"] = run.parent_run_id
    created = client.create_run(
        experiment_id,
        start_time=_millis(run.started_at),
        tags=tags,
        run_name=run.run_name,
    )
    run_id = created.info.run_id
    timestamp = _millis(run.ended_at)
    params = [Param(key, _param_value(value)) for key, value in sorted(run.params.items())]
    metrics = [
        Metric(key, float(value), timestamp, 0) for key, value in sorted(run.metrics.items()) if value is not None
    ]
    for batch in _chunks(params, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch)
    for batch in _chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch)
    if run.datasets:
        client.log_inputs(
            run_id,
            datasets=[
                MlflowDatasetInput(
                    Dataset(
                        name=dataset.path,
                        digest=(dataset.md5 or dataset.sha256 or "")[:DIGEST_LENGTH],
                        source_type="dvc",
                        source=redact(
                            json.dumps({"uri": dataset.path, "source": dataset.source, "sha256": dataset.sha256})
                        ),
                        schema=json.dumps({"columns": list(dataset.columns)}) if dataset.columns else None,
                        profile=json.dumps({"num_rows": dataset.rows}) if dataset.rows is not None else None,
                    ),
                    tags=[InputTag("mlflow.data.context", dataset.context)],
                )
                for dataset in run.datasets
            ],
        )
    versions = _register_all(client, run, run_id) if run.register else ()
    client.set_terminated(run_id, status="FINISHED", end_time=timestamp)
    artifact_uri = client.get_run(run_id).info.artifact_uri
    return MirroredRun(run_id=run_id, experiment_id=experiment_id, artifact_uri=artifact_uri, versions=versions)


@_stdout_to_stderr
def register_models(run: TrainingRun, run_id: str) -> tuple[RegisteredVersion, ...]:
    """Log the model artifacts of `run` into an existing MLflow run and register them."""
    try:
        return _register_all(_client(run.tracking_uri), run, run_id)
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds; all mean "not registered"
        raise MirrorError(
            f"Could not register the models in MLflow at {redact(run.tracking_uri)}: {_one_line(error)}"
        ) from None


def _register_all(client: Any, run: TrainingRun, run_id: str) -> tuple[RegisteredVersion, ...]:
    for model in run.models:
        _check_registry_continues_ledger(client, run, model.name)
    for model in run.models:
        artifact_path = f"models/{model.name}"
        if model.path.is_dir():
            client.log_artifacts(run_id, str(model.path), artifact_path)
        else:
            client.log_artifact(run_id, str(model.path), artifact_path)
    artifact_uri = client.get_run(run_id).info.artifact_uri
    return tuple(_register(client, run, run_id, artifact_uri, model) for model in run.models)


@_stdout_to_stderr
def start_parent_run(run: TrainingRun) -> tuple[str, str]:
    """The parent run of a grid search; returns (run id, experiment id)."""
    try:
        client = _client(run.tracking_uri)
        experiment_id = _experiment_id(client, run.experiment, run.artifact_location)
        created = client.create_run(
            experiment_id, start_time=_millis(run.started_at), tags=_source_tags(run), run_name=run.run_name
        )
        return created.info.run_id, experiment_id
    except MirrorError:
        raise
    except Exception as error:  # noqa: BLE001
        raise MirrorError(f"Could not create the grid's parent run in MLflow: {_one_line(error)}") from None


@_stdout_to_stderr
def finish_parent_run(
    tracking_uri: str, run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float | None]
) -> None:
    from mlflow.entities import Metric, RunTag

    try:
        client = _client(tracking_uri)
        now = _millis(datetime.now().astimezone())
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items()) if v is not None],
            tags=[RunTag(k, redact(v)) for k, v in sorted(tags.items())],
        )
        client.set_terminated(run_id, status="FINISHED")
    except Exception as error:  # noqa: BLE001
        raise MirrorError(f"Could not finish the grid's parent run in MLflow: {_one_line(error)}") from None


@_stdout_to_stderr
def download_model(tracking_uri: str, run_id: str, name: str, destination: Path) -> Path:
    """The model artifact `models/NAME` of a run, downloaded into `destination`."""
    try:
        local = _client(tracking_uri).download_artifacts(run_id, f"models/{name}", str(destination))
    except Exception as error:  # noqa: BLE001
        raise MirrorError(f"Could not download model {name} of run {run_id} from MLflow: {_one_line(error)}") from None
    return Path(local)


@_stdout_to_stderr
def sync_registry(
    tracking_uri: str,
    model: str,
    holders: Mapping[str, str],
    stages: Sequence[str],
    deprecated: Sequence[str],
    locked: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Make the registered model's aliases say what the ledger says: each stage's alias on the version holding
    it, no alias for a stage nobody holds, each deprecated version tagged, and each newly locked version (and its
    run) tagged `govern.lock_commit`: the commit to check out. Returns the aliases set."""
    try:
        client = _client(tracking_uri)
        for version in deprecated:
            client.set_model_version_tag(model, version, "govern.deprecated", "true")
        for version, commit in (locked or {}).items():
            client.set_model_version_tag(model, version, "govern.lock_commit", commit)
            run_id = client.get_model_version(model, version).run_id
            if run_id:
                client.set_tag(run_id, "govern.lock_commit", commit)
        current = dict(client.get_registered_model(model).aliases or {})
        for stage in stages:
            if stage not in holders and stage in current:
                client.delete_registered_model_alias(model, stage)
        for stage, version in holders.items():
            if str(current.get(stage)) != str(version):
                client.set_registered_model_alias(model, stage, version)
    except Exception as error:  # noqa: BLE001
        raise MirrorError(f"Could not update the MLflow registry of {model}: {_one_line(error)}") from None
    return dict(holders)


def _source_tags(run: TrainingRun) -> dict[str, str]:
    """The system tags `create_run` does not set by itself, and govern's own."""
    tags = {
        "mlflow.source.git.commit": run.git_commit,
        "mlflow.source.name": run.source_name,
        "mlflow.source.type": "PROJECT",
        "mlflow.user": run.actor,
        "govern.git.dirty": str(run.git_dirty).lower(),
        **run.tags,
    }
    if run.git_branch:
        tags["mlflow.source.git.branch"] = run.git_branch
    if run.git_remote:
        tags["mlflow.source.git.repoURL"] = run.git_remote
    return {key: redact(value) for key, value in tags.items()}  # a remote's URL, a tag given by a grid


def _check_registry_continues_ledger(client: Any, run: TrainingRun, name: str) -> None:
    """MLflow numbers versions itself: a registry behind the ledger (a new tracking server beside a ledger that
    moved) would hand out a version number the ledger already holds for another training."""
    recorded = run.recorded_versions.get(name)
    if not recorded:
        return
    latest = client.search_model_versions(f"name = '{name}'", max_results=1, order_by=["version_number DESC"])
    registry = int(latest[0].version) if latest else 0
    if registry < recorded:
        raise MirrorError(
            f"MLflow's registry at {redact(run.tracking_uri)} holds model {name!r} up to version "
            f"{registry or 'none'}, but the ledger records version {recorded}: it is not the registry those versions "
            "were registered in, and registering now would reuse a version number. Point tracking_uri at that "
            "registry, or move its data with the ledger (README, Team setup); then run `govern mirror`"
        )


def _register(client: Any, run: TrainingRun, run_id: str, artifact_uri: str, model: ModelArtifact) -> RegisteredVersion:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model.name, description=model.desc)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{artifact_uri.rstrip('/')}/models/{model.name}"
    tags = {
        "mlflow.source.git.commit": run.git_commit,
        "govern.event_id": run.event_id,
        # MLflow's open-source registry keeps no creator a client can set; the tag says who trained it
        "govern.actor": run.actor,
        "mlflow.user": run.actor,
    }
    if model.md5:
        tags["govern.dvc.md5"] = model.md5
    if model.sha256:
        tags["govern.sha256"] = model.sha256
    version = client.create_model_version(
        model.name,
        source=source,
        run_id=run_id,
        tags={key: redact(value) for key, value in tags.items()},
        description=model.desc,
    )
    return RegisteredVersion(model=model.name, version=str(version.version), source_uri=source)


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise MirrorError(
                f"The MLflow experiment {name!r} is deleted: restore it (`mlflow experiments restore`) "
                "or configure another experiment name"
            )
        if experiment.tags.get(EXPERIMENT_KIND) is None:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
        return experiment.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location, tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT}
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


@_stdout_to_stderr
def resume_mirror(run: TrainingRun) -> MirroredRun:
    """Finish mirroring a training: reuse the run a half-finished attempt created, or create one.

    Idempotent: the run is found by its `govern.event_id` tag, and models already
    registered from that run are not registered again.
    """
    try:
        client = _client(run.tracking_uri)
        experiment_id = _experiment_id(client, run.experiment, run.artifact_location)
        existing = client.search_runs(
            [experiment_id], filter_string=f"tags.`govern.event_id` = '{run.event_id}'", max_results=1
        )
        if not existing:
            mirrored = _mirror(run)
            return dataclasses.replace(mirrored, reused=False)
        run_id = existing[0].info.run_id
        registered = {v.name for v in client.search_model_versions(f"run_id = '{run_id}'")}
        missing = dataclasses.replace(run, models=tuple(m for m in run.models if m.name not in registered))
        versions = _register_all(client, missing, run_id) if run.register else ()
        previous = tuple(
            RegisteredVersion(v.name, str(v.version), v.source)
            for v in client.search_model_versions(f"run_id = '{run_id}'")
            if v.name in registered
        )
        client.set_terminated(run_id, status="FINISHED")
        return MirroredRun(run_id, experiment_id, existing[0].info.artifact_uri, previous + versions, reused=True)
    except MirrorError:
        raise
    except Exception as error:  # noqa: BLE001
        raise MirrorError(f"Could not mirror into MLflow at {redact(run.tracking_uri)}: {_one_line(error)}") from None


@_stdout_to_stderr
def find_runs_by_event(tracking_uri: str, experiment: str, event_id: str) -> list[str]:
    """Run ids tagged with a govern event id (for tests, and for idempotent retries)."""
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`govern.event_id` = '{event_id}'")
    return [r.info.run_id for r in runs]


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return redact(text)[:MAX_PARAM_VALUE]


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _one_line(error: BaseException) -> str:
    """An MLflow failure as one line without credentials (its messages may quote a store's URI, a request's URL)."""
    text = redact(" ".join(str(error).split()))
    return text[:500] if text else type(error).__name__
