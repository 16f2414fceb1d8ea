"""From a reproduced pipeline to the facts a training event records.

Pure functions over `Pipeline`, `dvc.lock` entries and the files on disk:
which params and metrics a run had, which outputs it wrote (with sha256),
which files are datasets and where each came from.

How govern finds datasets and their extraction time
    A *source stage* is a stage none of whose dependencies is produced by
    another stage or tracked with `dvc add` (a stage that splits a `dvc add`
    file derives from that snapshot; it pulls nothing). Its cached data outputs are snapshots pulled from a source
    system: the source is the stage's `meta.source` in dvc.yaml (else its
    `desc`, else its command) and the extraction time is when that stage ran.
    Files tracked with `dvc add`, `dvc import` or `dvc import-url` that a
    stage depends on are snapshots too: the source is the URL or repository
    the `.dvc` file records (else "dvc add") and the extraction time is the
    commit time of the `.dvc` file. When the data is unchanged since an
    earlier snapshot, that snapshot stands and no new one is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govern import tabular
from govern.adapters.dvc import load_structured, tracked_source
from govern.envelope import finite_or_none
from govern.errors import ProjectError
from govern.hashing import digest
from govern.pipeline import Pipeline, StageRun


@dataclass(frozen=True)
class DatasetCandidate:
    path: str
    stage: str | None
    source: str
    md5: str | None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys: {"train": {"C": 1}} -> {"train.C": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def params_of(locks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every parameter the stages used; keys from files other than params.yaml carry the file name."""
    params: dict[str, Any] = {}
    for entry in locks.values():
        for file, values in (entry.get("params") or {}).items():
            prefix = "" if file == "params.yaml" else f"{file}:"
            params.update(flatten(values or {}, prefix))
    return dict(sorted(params.items()))


def metrics_of(root: Path, pipeline: Pipeline) -> dict[str, Any]:
    """Numeric values of every metrics file, flattened; files in other directories keep their path."""
    merged: dict[str, Any] = {}
    for values in metrics_by_file(root, pipeline).values():
        merged.update(values)
    return dict(sorted(merged.items()))


def metrics_by_file(root: Path, pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """`metrics_of`, kept apart per metrics file (a verifier judges each file by its own metrics)."""
    found: dict[str, dict[str, Any]] = {}
    single = len(pipeline.metrics_files) == 1
    for file in pipeline.metrics_files:
        path = root / file
        if not path.is_file():
            continue
        data = load_structured(path)
        prefix = "" if single else f"{Path(file).stem}."
        values = found.setdefault(file, {})
        for key, value in flatten(data if isinstance(data, Mapping) else {}, prefix).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            values[key] = finite_or_none(float(value))
    return found


def stage_records(
    root: Path,
    pipeline: Pipeline,
    locks: Mapping[str, Mapping[str, Any]],
    runs: list[StageRun],
    digests: dict[str, Any],
) -> list[dict[str, Any]]:
    """One record per locked stage: the dvc.lock entry plus what happened and sha256s."""
    by_name = {run.name: run for run in runs}
    records = []
    for name, entry in locks.items():
        if name not in pipeline.stages:
            continue
        run = by_name.get(name)
        records.append(
            {
                "name": name,
                "cmd": entry.get("cmd"),
                "deps": [_file_record(item) for item in entry.get("deps") or []],
                "outs": [_out_record(root, item, digests) for item in entry.get("outs") or []],
                "params": entry.get("params") or {},
                "status": run.status if run else "not-run",
                "started_at": run.started_at.isoformat() if run else None,
                "duration_s": run.duration_s if run else None,
            }
        )
    return records


def _out_record(root: Path, item: Mapping[str, Any], digests: dict[str, Any]) -> dict[str, Any]:
    """An output as dvc.lock has it, plus its sha256 and, for CSV/TSV files, its row count."""
    shape = tabular.shape(root / item["path"])
    record = {**_file_record(item), "sha256": _sha(root, item["path"], digests)}
    if shape is not None:
        record["rows"] = shape.rows
    return record


def _file_record(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: item.get(key) for key in ("path", "md5", "size", "nfiles") if item.get(key) is not None}


def _sha(root: Path, path: str, digests: dict[str, Any]) -> str | None:
    if path not in digests:
        digests[path] = digest(root / path)
    found = digests[path]
    return found.sha256 if found else None


def output_md5s(locks: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Path -> DVC md5 of every output and dependency recorded in the lock files. What the producing stage's
    `outs` say wins over any later stage's `deps` entry of the same path (a stage may rewrite the lock)."""
    md5s: dict[str, str] = {}
    for kind in ("deps", "outs"):
        for entry in locks.values():
            for item in entry.get(kind) or []:
                if item.get("md5"):
                    md5s[item["path"]] = item["md5"]
    return md5s


def dataset_candidates(
    root: Path, pipeline: Pipeline, locks: Mapping[str, Mapping[str, Any]]
) -> list[DatasetCandidate]:
    """The files that are snapshots of a source system (see the module docstring)."""
    md5s = output_md5s(locks)
    produced = pipeline.output_paths
    model_paths = {artifact.path for artifact in pipeline.artifacts}
    tracked = set(pipeline.tracked_files)
    found: dict[str, DatasetCandidate] = {}
    for stage in pipeline.stages.values():
        upstream = [dep for dep in stage.deps if _within(dep, produced) and dep not in tracked]
        reads_tracked = False
        for dep in stage.deps:
            if dep in tracked or _within(dep, tracked):
                reads_tracked = True
                found.setdefault(dep, DatasetCandidate(dep, None, tracked_source(root, dep), md5s.get(dep)))
        if upstream or reads_tracked or stage.name not in locks:
            continue  # it derives from data already recorded (a stage's output, or a `dvc add` file): no extraction
        for out in stage.outs:
            if out.cache and not out.metric and not out.plot and out.path not in model_paths:
                source = str(stage.meta.get("source") or stage.desc or f"stage {stage.name}: {stage.cmd}")
                found.setdefault(out.path, DatasetCandidate(out.path, stage.name, source, md5s.get(out.path)))
    return list(found.values())


def _within(path: str, roots: set[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _model_md5(root: Path, path: str, locked: str | None) -> str | None:
    """A model file's md5 from its bytes (DVC's md5 of a file), not from dvc.lock: a stage may rewrite the lock,
    and what a lock commit rebuilds is judged against this. A directory's `.dir` md5 from the lock only where the
    manifest DVC cached under it lists exactly the directory's files with their md5s; else None (never locked)."""
    import hashlib

    target = root / path
    if target.is_dir():
        return locked if locked and _manifest_holds(root, target, locked) else None
    if not target.is_file():
        return locked
    md5 = hashlib.md5(usedforsecurity=False)
    with target.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            md5.update(chunk)
    return md5.hexdigest()


def _manifest_holds(root: Path, folder: Path, dir_md5: str) -> bool:
    """Does DVC's cached manifest of `dir_md5` hash to it and list exactly `folder`'s files, with their md5s?"""
    import hashlib
    import json

    from govern.adapters import dvc as dvc_adapter

    if not dir_md5.endswith(".dir"):
        return False
    try:
        manifest = dvc_adapter.cache_object_path(root, dir_md5).read_bytes()
        entries = json.loads(manifest)
    except (OSError, ValueError):
        return False
    if hashlib.md5(manifest, usedforsecurity=False).hexdigest() != dir_md5.removesuffix(".dir"):
        return False
    listed = {e.get("relpath"): e.get("md5") for e in entries if isinstance(e, dict)}
    present = {f.relative_to(folder).as_posix(): f for f in folder.rglob("*") if f.is_file()}
    if set(listed) != set(present):
        return False
    for relpath, file in present.items():
        md5 = hashlib.md5(usedforsecurity=False)
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                md5.update(chunk)
        if md5.hexdigest() != listed[relpath]:
            return False
    return True


def model_records(
    root: Path, pipeline: Pipeline, locks: Mapping[str, Mapping[str, Any]], digests: dict[str, Any]
) -> list[dict[str, Any]]:
    """The `type: model` artifacts of dvc.yaml, with their content hashes."""
    md5s = output_md5s(locks)
    records = []
    for artifact in pipeline.artifacts:
        if artifact.type != "model":
            continue
        if not (root / artifact.path).exists():
            raise ProjectError(
                f"Model artifact {artifact.name!r} points at {artifact.path}, which does not exist after the "
                "pipeline ran: fix its path in the artifacts: section of dvc.yaml"
            )
        records.append(
            {
                "name": artifact.name,
                "path": artifact.path,
                "md5": _model_md5(root, artifact.path, md5s.get(artifact.path)),
                "sha256": _sha(root, artifact.path, digests),
                "desc": artifact.desc,
                "labels": list(artifact.labels),
                "meta": artifact.meta,
                "stage": pipeline.producer(artifact.path),
            }
        )
    return records


SPLIT_WORDS = ("train", "validation", "valid", "val", "test", "holdout")
EVALUATION_SPLITS = ("validation", "test", "holdout")


def split_name(path: str) -> str | None:
    """train, validation, test or holdout when a table's file name says so (`test.csv`, `x_val.tsv`)."""
    stem = Path(path).stem.lower()
    if Path(path).suffix.lower() not in (".csv", ".tsv", ".parquet"):
        return None
    for word in SPLIT_WORDS:
        if stem == word or stem.startswith(f"{word}_") or stem.endswith(f"_{word}") or stem.startswith(f"{word}."):
            return {"valid": "validation", "val": "validation"}.get(word, word)
    return None


def evaluation_data(pipeline: Pipeline, model_path: str) -> list[str]:
    """The validation, test or holdout tables that the stages reading the model evaluate it on."""
    data = pipeline.output_paths | set(pipeline.tracked_files)
    found = [
        dep
        for stage in pipeline.downstream(model_path)
        for dep in stage.deps
        if dep != model_path and _within(dep, data) and split_name(dep) in EVALUATION_SPLITS
    ]
    return list(dict.fromkeys(found))


def training_inputs(
    pipeline: Pipeline, locks: Mapping[str, Mapping[str, Any]], models: list[dict[str, Any]]
) -> list[str]:
    """Data files the model-producing stages read: the training datasets."""
    data = pipeline.output_paths | set(pipeline.tracked_files)
    paths: list[str] = []
    for model in models:
        stage = pipeline.stages.get(model["stage"] or "")
        if stage is None:
            continue
        paths.extend(dep for dep in stage.deps if _within(dep, data) and dep != model["path"])
    return list(dict.fromkeys(paths))
