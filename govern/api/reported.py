"""Record the facts a training reported: a server job's `govern repro --facts-out` (and, later, a remote
`govern repro` posting its facts).

The process that reported them ran code its requester controls, so a report is a claim, checked as strictly as
anything sent over the network before one byte reaches the ledger: only `dataset.snapshotted`,
`training.completed` and `training.failed`; every payload exactly its fact's fields, each of its type; the
commit the one that was asked for; a training whose MLflow mirror is left to the server; snapshots and the
training that uses them consistent with each other and with the ledger; sizes bounded. The events are then
appended in one transaction under the requester's name, the model files the training names are taken into the
project's DVC cache after both their digests are checked, and the outbox registers them in MLflow from the
server (`govern.api.mirror`). A refused report records nothing and says what was refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from govern.api.context import Project
from govern.api.job_files import ReportRefused, open_inside, read_inside
from govern.api.results import RecordedTraining
from govern.envelope import TIMESTAMP_FORMAT, PendingEvent, canonical_json, to_utc
from govern.events import DatasetSnapshotted, Fact, TrainingCompleted, TrainingFailed
from govern.readmodel import trainings as training_reads
from govern.redaction import redact

if typing.TYPE_CHECKING:
    from govern.attribution import Actor
    from govern.storage.contract import Reader

REPORT_FORMAT = "govern.reported-training/1"
REPORTED_TYPES: dict[str, type[Fact]] = {
    DatasetSnapshotted.type: DatasetSnapshotted,
    TrainingCompleted.type: TrainingCompleted,
    TrainingFailed.type: TrainingFailed,
}
ENVELOPE = frozenset({"event_id", "type", "schema_version", "occurred_at", "git_commit", "payload"})
MAX_REPORT_BYTES = 16 << 20
MAX_EVENTS = 1000
MAX_PAYLOAD_BYTES = 4 << 20
EVENT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_FACTS = frozenset({"commit", "branch", "remote_url", "dirty", "allow_dirty", "dirty_paths"})
MLFLOW_REPORTED = frozenset({"status", "error", "tracking_uri"})
SERVER_MIRRORS = "reported by a job: the server mirrors it"
UNCHANGED = frozenset({"unchanged", "not-run"})


def known_snapshots(project: Project) -> dict[str, Any]:
    """The dataset snapshots the ledger records, as `govern repro --known-snapshots` reads them (the latest per
    path and md5): an unchanged dataset is not snapshotted again by a job that cannot read the ledger."""
    if not project.ledger.exists():
        return {"snapshots": []}
    rows = training_reads.known_snapshots(project.ledger)
    latest = {(row.path, row.md5): (row.event_id, row.extracted_at) for row in rows}
    return {
        "snapshots": [
            {"path": path, "md5": md5, "event_id": event_id, "extracted_at": at}
            for (path, md5), (event_id, at) in latest.items()
        ]
    }


def read_report(folder: Path, name: str) -> dict[str, Any] | None:
    """The report a job wrote at `folder/name`, or None when there is none. Opened without following links and
    only as a regular file of bounded size: the job's code could have put anything there."""
    data = read_inside(folder, name, MAX_REPORT_BYTES)
    return None if data is None else parse_report(data)


def parse_report(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_REPORT_BYTES:
        raise ReportRefused(f"the report is larger than {MAX_REPORT_BYTES >> 20} MiB")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ReportRefused("the report repeats a key in one object")
        return dict(pairs)

    def no_constant(name: str) -> Any:
        raise ReportRefused(f"the report holds {name}, which JSON has no spelling for")

    try:
        report = json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError) as error:
        if isinstance(error, ReportRefused):
            raise
        raise ReportRefused(f"the report is not JSON ({type(error).__name__})") from None
    if not isinstance(report, dict):
        raise ReportRefused("the report is not a JSON object")
    return report


def record_reported_training(
    project: Project,
    report: Mapping[str, Any],
    actor: Actor | str,
    expected_commit: str,
    workspace: Path | None = None,
) -> RecordedTraining:
    """Validate `report` (see the module docstring), take the model files it names from `workspace` into the DVC
    cache (checked against their md5 and sha256), and append its events under `actor` in one transaction. A
    completed training whose stages were all unchanged, and whose dvc.lock the ledger already records a training
    of, is up to date: nothing is appended, the recorded training is named. Raises ReportRefused."""
    pending, training = _validated(report, actor, expected_commit, project)
    collected: list[str] = []
    warnings: list[str] = []
    if workspace is not None and isinstance(training.fact, TrainingCompleted):
        collected, skipped = collect_models(project.root, workspace, training.fact.models)
        warnings += skipped
    existing: list[str] = []

    def decide(reader: Reader) -> list[PendingEvent]:
        _check_against_ledger(reader, pending, training)
        fact = training.fact
        if isinstance(fact, TrainingCompleted) and all(s.get("status") in UNCHANGED for s in fact.stages):
            found = training_reads.training_of_lock(reader, fact.dvc_lock_sha256)
            if found is not None:
                existing.append(found)
                return []
        return pending

    recorded = project.ledger.transact(decide)
    if existing:
        return RecordedTraining("up-to-date", [], existing[0], collected, warnings)
    if isinstance(training.fact, TrainingFailed):
        return RecordedTraining("failed", recorded, None, collected, warnings)
    from govern.api.mirror import after_write

    warnings += after_write(project)
    return RecordedTraining("recorded", recorded, training.event_id, collected, warnings)


# ---------------------------------------------------------------- validation


def _validated(
    report: Mapping[str, Any], actor: Actor | str, commit: str, project: Project
) -> tuple[list[PendingEvent], PendingEvent]:
    if set(report) != {"format", "events"} or report.get("format") != REPORT_FORMAT:
        raise ReportRefused(f"the report is not a {REPORT_FORMAT} report (it has {', '.join(sorted(report))})")
    events = report["events"]
    if not isinstance(events, list) or not events:
        raise ReportRefused("the report lists no events")
    if len(events) > MAX_EVENTS:
        raise ReportRefused(f"the report lists {len(events)} events, more than {MAX_EVENTS}")
    pending = [_event(item, index, actor, commit) for index, item in enumerate(events)]
    ids = [event.event_id for event in pending]
    if len(set(ids)) != len(ids):
        raise ReportRefused("the report uses one event id twice")
    trainings = [e for e in pending if isinstance(e.fact, TrainingCompleted | TrainingFailed)]
    if len(trainings) != 1 or pending[-1] is not trainings[0]:
        raise ReportRefused("a report holds exactly one training.completed or training.failed, last")
    training = trainings[0]
    snapshots = pending[:-1]
    if isinstance(training.fact, TrainingFailed):
        if snapshots:
            raise ReportRefused("a failed training reports no dataset snapshots")
        return pending, training
    fact = training.fact
    assert isinstance(fact, TrainingCompleted)
    _check_training(fact)
    referenced = {
        ref["snapshot_event_id"]: ref for ref in fact.datasets if isinstance(ref.get("snapshot_event_id"), str)
    }
    for snapshot in snapshots:
        shot = snapshot.fact
        assert isinstance(shot, DatasetSnapshotted)
        _relative(shot.path, "dataset.snapshotted path")
        ref = referenced.get(snapshot.event_id)
        if ref is None or ref.get("path") != shot.path or ref.get("md5") != shot.md5:
            raise ReportRefused(
                f"the snapshot of {shot.path} ({snapshot.event_id}) is not the one the training says it used"
            )
    mlflow = {"status": "pending", "tracking_uri": redact(project.config.tracking_uri), "error": SERVER_MIRRORS}
    training = dataclasses.replace(training, fact=dataclasses.replace(fact, mlflow=mlflow))
    return [*snapshots, training], training


def _event(item: Any, index: int, actor: str, commit: str) -> PendingEvent:
    where = f"event {index + 1}"
    if not isinstance(item, dict) or set(item) != ENVELOPE:
        keys = ", ".join(sorted(item)) if isinstance(item, dict) else type(item).__name__
        raise ReportRefused(f"{where} is not {{{', '.join(sorted(ENVELOPE))}}} (it has {keys})")
    kind = item["type"]
    cls = REPORTED_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ReportRefused(
            f"{where} is a {str(kind)[:60]!r}: a training reports only {', '.join(REPORTED_TYPES)} (refused)"
        )
    where = f"{where} ({kind})"
    if isinstance(item["schema_version"], bool) or item["schema_version"] != cls.schema_version:
        raise ReportRefused(
            f"{where} is schema version {item['schema_version']!r}; this server records {cls.schema_version}"
        )
    if not isinstance(item["event_id"], str) or not EVENT_ID.match(item["event_id"]):
        raise ReportRefused(f"{where} has no event id of govern's form (a lowercase UUID)")
    if item["git_commit"] != commit:
        said = str(item["git_commit"])[:40]
        raise ReportRefused(f"{where} is of commit {said!r}, not of {commit[:12]}, the one trained")
    try:
        occurred_at = to_utc(datetime.strptime(item["occurred_at"], TIMESTAMP_FORMAT))
    except (TypeError, ValueError):
        raise ReportRefused(f"{where} has no time of govern's form (YYYY-MM-DDTHH:MM:SS.ffffffZ)") from None
    fact = _fact(cls, item["payload"], where)
    if isinstance(fact, TrainingCompleted | TrainingFailed):
        _check_git(fact.git, commit, where)
    return PendingEvent(fact, actor=actor, occurred_at=occurred_at, git_commit=commit, event_id=item["event_id"])


def _fact(cls: type[Fact], payload: Any, where: str) -> Fact:
    """The fact of `payload`: exactly the class's fields, each of its declared type, no NaN, bounded size."""
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(payload, dict):
        raise ReportRefused(f"{where}: the payload is not an object")
    unknown, missing = sorted(set(payload) - names), sorted(names - set(payload))
    if unknown or missing:
        said = "; ".join(
            [
                *([f"unknown {', '.join(unknown)}"] if unknown else []),
                *([f"missing {', '.join(missing)}"] if missing else []),
            ]
        )
        raise ReportRefused(f"{where}: the payload's fields are not those of {cls.type} ({said})")
    hints = typing.get_type_hints(cls)
    for name in sorted(names):
        if not _conforms(payload[name], hints[name]):
            raise ReportRefused(f"{where}: {name} is not a {_spell(hints[name])}")
    try:
        size = len(canonical_json(payload).encode("utf-8"))
    except ValueError:
        raise ReportRefused(f"{where}: the payload holds a number JSON cannot spell (NaN or infinity)") from None
    if size > MAX_PAYLOAD_BYTES:
        raise ReportRefused(f"{where}: the payload is {size} bytes, more than {MAX_PAYLOAD_BYTES}")
    return cls(**payload)


def _conforms(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if origin is dict:
        _, item = typing.get_args(hint) or (str, Any)
        return isinstance(value, dict) and all(isinstance(k, str) and _conforms(v, item) for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    return False


def _spell(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def _check_git(git: Mapping[str, Any], commit: str, where: str) -> None:
    if set(git) != GIT_FACTS:
        raise ReportRefused(f"{where}: git holds {', '.join(sorted(git))}, not {', '.join(sorted(GIT_FACTS))}")
    if git["commit"] != commit:
        raise ReportRefused(f"{where}: git.commit is {str(git['commit'])[:40]!r}, not {commit[:12]}, the one trained")
    if git["dirty"] is not False or git["allow_dirty"] is not False or git["dirty_paths"] != []:
        raise ReportRefused(f"{where}: the checkout was dirty; a job trains a clean checkout of its commit")


def _check_training(fact: TrainingCompleted) -> None:
    where = "the training"
    if not SHA256.match(fact.dvc_lock_sha256):
        raise ReportRefused(f"{where}: dvc_lock_sha256 is not a sha256")
    if fact.duration_s < 0:
        raise ReportRefused(f"{where}: duration_s is negative")
    if not set(fact.mlflow) <= MLFLOW_REPORTED or fact.mlflow.get("status") != "pending":
        raise ReportRefused(
            f"{where}: mlflow is {json.dumps(fact.mlflow)[:120]}; a job mirrors nothing (status pending, the server "
            "mirrors it)"
        )
    if fact.grid is not None:
        raise ReportRefused(f"{where}: a job runs no grid search")
    for stage in fact.stages:
        if not isinstance(stage.get("name"), str) or not isinstance(stage.get("status"), str):
            raise ReportRefused(f"{where}: a stage has no name or status")
    for model in fact.models:
        if not isinstance(model.get("name"), str) or not model["name"]:
            raise ReportRefused(f"{where}: a model has no name")
        _relative(model.get("path"), f"model {model['name']}'s path")
        md5, sha = model.get("md5"), model.get("sha256")
        if not (md5 is None or (isinstance(md5, str) and MD5.match(md5))):
            raise ReportRefused(f"{where}: model {model['name']}'s md5 is not an md5")
        if not (sha is None or (isinstance(sha, str) and SHA256.match(sha))):
            raise ReportRefused(f"{where}: model {model['name']}'s sha256 is not a sha256")
    for ref in fact.datasets:
        _relative(ref.get("path"), "a dataset's path")
        if "snapshot_event_id" in ref and not (
            isinstance(ref["snapshot_event_id"], str) and EVENT_ID.match(ref["snapshot_event_id"])
        ):
            raise ReportRefused(f"{where}: the dataset {ref['path']} names a snapshot that is not an event id")


def _relative(path: Any, what: str) -> str:
    """A path inside the checkout: relative, no `..`, no empty part."""
    if not isinstance(path, str) or not path or len(path) > 1000:
        raise ReportRefused(f"{what} is not a path")
    parts = PurePosixPath(path).parts
    if path.startswith("/") or "\\" in path or any(p in ("..", ".") for p in parts) or "\0" in path:
        raise ReportRefused(f"{what} {path[:200]!r} is not a path inside the checkout")
    return path


def _check_against_ledger(reader: Reader, pending: Sequence[PendingEvent], training: PendingEvent) -> None:
    """Inside the transaction: no event id is one the ledger has, and every snapshot the training names that the
    report does not carry is one the ledger records, of the same path and md5."""
    ids = [event.event_id for event in pending]
    taken = training_reads.existing_ids(reader, ids)
    if taken:
        raise ReportRefused(f"the report reuses event id {taken[0]}, which the ledger already has")
    fact = training.fact
    if not isinstance(fact, TrainingCompleted):
        return
    carried = set(ids)
    named = {
        ref["snapshot_event_id"]: ref
        for ref in fact.datasets
        if isinstance(ref.get("snapshot_event_id"), str) and ref["snapshot_event_id"] not in carried
    }
    if not named:
        return
    rows = training_reads.snapshots_by_id(reader, list(named))
    found = {row.event_id: (row.path, row.md5) for row in rows}
    for event_id, ref in named.items():
        if found.get(event_id) != (ref.get("path"), ref.get("md5")):
            raise ReportRefused(
                f"the training says it used snapshot {event_id} of {ref.get('path')}, which the ledger does not "
                "record with that path and md5"
            )


# ---------------------------------------------------------------- model files


def collect_models(root: Path, workspace: Path, models: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """Copy each model file the training names from the job's `workspace` into the project's DVC cache, after
    checking its md5 and sha256 against the reported ones (a mismatch refuses the report). Returns (the paths
    taken, warnings for those that could not be: directories, files without digests)."""
    from govern.adapters import dvc as dvc_adapter

    taken, skipped = [], []
    for model in models:
        md5, sha256, path = model.get("md5"), model.get("sha256"), model["path"]
        if not md5 or not sha256 or md5.endswith(".dir"):
            skipped.append(f"the model file {path} was not taken into DVC's cache (a directory, or no digests)")
            continue
        target = dvc_adapter.cache_object_path(root, md5)
        try:
            handle = open_inside(workspace, path)
        except FileNotFoundError:
            raise ReportRefused(f"the model file {path} the training names is not in the job's workspace") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(handle, "rb") as source, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as copy:
            hashes = hashlib.md5(usedforsecurity=False), hashlib.sha256()
            while chunk := source.read(1 << 20):
                for digest in hashes:
                    digest.update(chunk)
                copy.write(chunk)
        if (hashes[0].hexdigest(), hashes[1].hexdigest()) != (md5, sha256):
            os.unlink(copy.name)
            raise ReportRefused(f"the model file {path} does not match the md5 and sha256 the training reports")
        os.chmod(copy.name, 0o444)
        if target.exists():
            os.unlink(copy.name)
        else:
            os.replace(copy.name, target)
        taken.append(path)
    return taken, skipped
