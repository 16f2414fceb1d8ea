"""Judging a re-executed commit against its committed dvc.lock (`govern ci verify`): every stage run again, each
output that differs in bytes judged by its declared rule (a model by its predictions on the evaluation split, a
metrics file by its values within tolerance), with the evidence; the outcome exact, equivalent or diverged."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govern import entrypoint, equivalence, lineage, tabular
from govern.adapters import dvc as dvc_adapter
from govern.api import model_files
from govern.equivalence import DIVERGED, Judgement, Rule
from govern.errors import ConfigError, GovernError, InvalidInput, ProjectError, StageFailed
from govern.pipeline import Pipeline
from govern.readmodel import trainings as training_reads
from govern.storage import LedgerStore


@dataclass(frozen=True)
class Verification:
    """One verification in progress: where the checkout is, what rules apply, where committed files may be."""

    checkout: Path
    source: Path
    scratch: Path
    rules: equivalence.Rules
    ledger: LedgerStore
    tracking_uri: str
    has_workspace: bool
    asked_tolerances: dict[str, float]


def judge(work: Verification, commit: str, on_progress: Any, notes: list[str]) -> dict[str, Any]:
    checkout = work.checkout
    pipeline = dvc_adapter.load_pipeline(checkout)
    committed_locks, lock_text = dvc_adapter.read_locks(checkout, pipeline)
    if not committed_locks:
        raise InvalidInput(
            f"Commit {commit[:12]} has no dvc.lock, so nothing is recorded to verify against: run "
            "`govern repro --commit` and verify the commit it makes"
        )
    expected_metrics = lineage.metrics_by_file(checkout, pipeline)
    _check_rules(work, pipeline, _merged(expected_metrics), notes)
    dvc_adapter.pull_if_remote(checkout)
    unrestored = dvc_adapter.checkout(checkout)  # `dvc add` data and cached outputs, from the cache or the remote
    result: dict[str, Any] = {
        "dvc_lock_sha256": hashlib.sha256(lock_text.encode("utf-8")).hexdigest(),
        "match": DIVERGED,
        "outputs": [],
        "differing_outputs": [],
        "stale_inputs": [],
        "metrics": {},
        "metric_deltas": {},
        "failed_stage": None,
        "error": None,
    }
    try:
        pipeline, _ = dvc_adapter.reproduce(checkout, (), on_progress=on_progress, force=True, quiet=True)
    except StageFailed as failure:
        return {**result, "failed_stage": failure.stage, "error": str(failure)}
    except ProjectError as error:
        if "which does not exist" not in str(error):
            raise
        raise ProjectError(
            f"{error}. Commit {commit[:12]}'s data is neither in this project's DVC cache nor in a DVC remote it "
            "configures: `dvc push` it to a remote (`dvc remote add -d NAME URL`, committed in .dvc/config), or "
            "verify where the cache holds it" + (f" (DVC said: {unrestored[0]})" if unrestored else "")
        ) from None
    new_locks, _ = dvc_adapter.read_locks(checkout, pipeline)
    stale = equivalence.stale_inputs(committed_locks, new_locks, pipeline.output_paths)
    actual_metrics = lineage.metrics_by_file(checkout, pipeline)
    deltas = equivalence.metric_deltas(_merged(expected_metrics), _merged(actual_metrics), work.rules.tolerances)
    judge = _Judge(work, pipeline, expected_metrics, actual_metrics, deltas)
    expected, actual = outs(committed_locks), outs(new_locks)
    paths = sorted(set(expected) | set(actual))
    judgements = [judge.output(p, expected.get(p), actual.get(p)) for p in paths if expected.get(p) != actual.get(p)]
    beyond = any(not delta["within"] for delta in deltas.values())
    return {
        **result,
        "match": equivalence.outcome(judgements, failed=beyond or bool(stale)),
        "outputs": [{"path": p, "md5": actual.get(p)} for p in paths],
        "differing_outputs": [j.to_dict() for j in judgements],
        "stale_inputs": stale,
        "metrics": _merged(actual_metrics),
        "metric_deltas": deltas,
    }


def _check_rules(work: Verification, pipeline: Pipeline, metrics: Mapping[str, Any], notes: list[str]) -> None:
    """Refuse, before anything runs, rules that cannot apply: a tolerance for a metric the commit does not
    have (from the command line; from configuration it is a note), `predictions` for something not a model."""
    unknown = sorted(set(work.asked_tolerances) - set(metrics))
    if unknown:
        known = ", ".join(sorted(metrics)) or "none"
        raise InvalidInput(
            f"--tolerance names {', '.join(unknown)}, which no metrics file of this commit has: its metrics are {known}"
        )
    configured = sorted(set(work.rules.tolerances) - set(work.asked_tolerances) - set(metrics))
    if configured:
        notes.append(f"[tool.govern.ci] tolerances name {', '.join(configured)}, which this commit's metrics lack")
    models = {artifact.path for artifact in pipeline.artifacts if artifact.type == "model"}
    for path in sorted(pipeline.output_paths - models):
        rule = work.rules.for_output(path, is_model=False, is_metrics=path in pipeline.metrics_files)
        if rule.rule == "predictions":
            raise ConfigError(
                f"[tool.govern.ci.outputs] gives {path} the predictions rule, which only a `type: model` artifact "
                "can have: use exact, table or downstream-metrics"
            )


def _merged(by_file: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {name: value for values in by_file.values() for name, value in values.items()}


def outs(locks: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    return {item["path"]: item.get("md5") for entry in locks.values() for item in entry.get("outs") or []}


@dataclass(frozen=True)
class _Judge:
    """Applies each differing output's declared rule, gathering the evidence."""

    work: Verification
    pipeline: Pipeline
    expected_metrics: Mapping[str, Mapping[str, Any]]
    actual_metrics: Mapping[str, Mapping[str, Any]]
    deltas: Mapping[str, Mapping[str, Any]]

    def output(self, path: str, expected_md5: str | None, actual_md5: str | None) -> Judgement:
        if expected_md5 is None or actual_md5 is None:
            return equivalence.bytes_differ(path, expected_md5, actual_md5)
        models = {a.path for a in self.pipeline.artifacts if a.type == "model"}
        metrics_file = path in self.pipeline.metrics_files
        rule = self.work.rules.for_output(path, is_model=path in models, is_metrics=metrics_file)
        if rule.rule == equivalence.METRIC_VALUES:
            names = set(self.expected_metrics.get(path, {})) | set(self.actual_metrics.get(path, {}))
            moved = {name: d for name, d in self.deltas.items() if name in names}
            return equivalence.judge_metrics(path, expected_md5, actual_md5, moved, compared=len(names))
        if rule.rule == "predictions":
            return self._predictions(path, expected_md5, actual_md5, rule)
        if rule.rule == "downstream-metrics":
            return self._downstream(path, expected_md5, actual_md5, rule.rule, None)
        if rule.rule == "table":
            return self._table(path, expected_md5, actual_md5, rule)
        return equivalence.bytes_differ(path, expected_md5, actual_md5)

    def _downstream(self, path: str, expected_md5: str, actual_md5: str, rule: str, note: str | None) -> Judgement:
        """Judge by the metrics of the stages downstream of `path`, within the metric tolerances."""
        files = [
            out.path
            for stage in self.pipeline.downstream(path)
            for out in stage.outs
            if out.metric or out.path in self.pipeline.metrics_files
        ]
        names = {name for file in files for name in self.expected_metrics.get(file, {})}
        names |= {name for file in files for name in self.actual_metrics.get(file, {})}
        moved = {name: d for name, d in self.deltas.items() if name in names}
        judged = equivalence.judge_metrics(
            path, expected_md5, actual_md5, moved, rule=rule, note=note, compared=len(names)
        )
        judged.evidence.update(method="downstream-metrics", metrics_files=files)
        return judged

    def _predictions(self, path: str, expected_md5: str, actual_md5: str, rule: Rule) -> Judgement:
        """Run both model files through the model's own entry point on the evaluation split; compare."""
        artifact = next(a for a in self.pipeline.artifacts if a.path == path)
        template = artifact.meta.get("infer")
        data = list(rule.data) or lineage.evaluation_data(self.pipeline, path)
        fallback: str | None = None
        committed: Path | None = None
        source = ""
        if expected_md5.endswith(".dir"):
            fallback = "a directory model is judged by the metrics downstream of it"
        elif not template:
            fallback = f"artifact {artifact.name} declares no meta.infer entry point to run both files with"
        elif not data:
            fallback = (
                "no validation, test or holdout table is read by the stages downstream of the model; "
                "declare [tool.govern.ci.models] data"
            )
        else:
            committed, source = self._committed_file(path, expected_md5)
            if committed is None:
                fallback = f"the committed model file could not be had ({source})"
        if fallback is not None:
            note = f"not compared by predictions: {fallback}"
            return self._downstream(path, expected_md5, actual_md5, rule.rule, note)
        assert committed is not None and template is not None
        try:
            parts = self._predict_both(template, committed, path, data, rule)
        except GovernError as error:
            parts = {" + ".join(data): {"rows": 0, "equivalent": False, "summary": str(error)}}
        evidence = equivalence.merge_table_evidence(parts)
        evidence.update(method="predictions", committed_model_from=source, data=data, atol=rule.atol, rtol=rule.rtol)
        return Judgement(path, expected_md5, actual_md5, rule.rule, evidence["equivalent"], evidence)

    def _predict_both(
        self, template: str, committed: Path, path: str, data: list[str], rule: Rule
    ) -> dict[str, dict[str, Any]]:
        """Both models on the evaluation tables: one run each on the tables concatenated when they share a
        header (the predictions are split back per table), else one run each per table."""
        checkout, out = self.work.checkout, self.work.scratch / "predictions"
        missing = [name for name in data if not (checkout / name).is_file()]
        if missing:
            raise GovernError(f"the evaluation data {', '.join(missing)} does not exist after the reproduction")
        tables = {name: tabular.read_table(checkout / name) for name in data}
        headers = {tuple(table[0]) for table in tables.values() if table is not None}
        if any(table is None for table in tables.values()) or len(headers) != 1:
            return {
                name: _compare_files(*self._run_pair(template, committed, path, checkout / name, out / str(i)), rule)
                for i, name in enumerate(data)
            }
        combined = out / f"evaluation{Path(data[0]).suffix}"
        tabular.write_table(combined, list(next(iter(headers))), [row for t in tables.values() if t for row in t[1]])
        first, second = self._run_pair(template, committed, path, combined, out)
        before, after = tabular.read_table(first), tabular.read_table(second)
        counts = [len(table[1]) for table in tables.values() if table is not None]
        if before is None or after is None or not len(before[1]) == len(after[1]) == sum(counts):
            return {" + ".join(data): _compare_files(first, second, rule)}
        parts, at = {}, 0
        for name, count in zip(data, counts, strict=True):
            rows = slice(at, at + count)
            parts[name] = equivalence.compare_tables((before[0], before[1][rows]), (after[0], after[1][rows]), rule)
            at += count
        return parts

    def _run_pair(self, template: str, committed: Path, path: str, table: Path, out: Path) -> tuple[Path, Path]:
        """The committed and the reproduced model on one table, as two processes at once."""
        targets = (out / f"committed{table.suffix}", out / f"reproduced{table.suffix}")
        models = (committed, self.work.checkout / path)
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = [
                pool.submit(entrypoint.run, self.work.checkout, template, model, table, target)
                for model, target in zip(models, targets, strict=True)
            ]
            for run in runs:
                run.result()
        return targets

    def _table(self, path: str, expected_md5: str, actual_md5: str, rule: Rule) -> Judgement:
        """A CSV/TSV output compared cell by cell with the committed file."""
        committed, source = self._committed_file(path, expected_md5)
        if committed is None:
            evidence = {"summary": f"the committed file could not be had to compare ({source})"}
            return Judgement(path, expected_md5, actual_md5, rule.rule, False, evidence)
        evidence = {**_compare_files(committed, self.work.checkout / path, rule), "committed_file_from": source}
        return Judgement(path, expected_md5, actual_md5, rule.rule, evidence["equivalent"], evidence)

    def _committed_file(self, path: str, md5: str) -> tuple[Path | None, str]:
        """The committed bytes of an output: the caller's workspace, DVC's cache (or remote, already pulled),
        else the file MLflow holds for the model version registered with that md5. (None, why) if none has it."""
        tried = []
        if self.work.has_workspace:
            candidate = self.work.source / path
            if candidate.is_file() and _md5(candidate) == md5:
                return candidate, "the workspace"
            tried.append("not in the workspace")
        cached = dvc_adapter.cached_file(self.work.checkout, md5)
        if cached is not None:
            return cached, "DVC's cache"
        tried.append("not in DVC's cache or remote")
        found, why = self._from_mlflow(path, md5)
        if found is not None:
            return found, why
        tried.append(why)
        return None, "; ".join(tried)

    def _from_mlflow(self, path: str, md5: str) -> tuple[Path | None, str]:
        if not self.work.ledger.exists():
            return None, "no ledger to find a registered version in"
        found = training_reads.registration_of_file(self.work.ledger, path, md5)
        if found is None:
            return None, "no registered model version has that md5"
        uri = os.environ.get("MLFLOW_TRACKING_URI") or found.tracking_uri or self.work.tracking_uri
        scratch = self.work.scratch / "mlflow" / found.version
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            file = model_files.from_mlflow(uri, found.mlflow_run_id, found.model, path, md5, found.sha256, scratch)
        except GovernError as error:
            return None, f"MLflow: {error}"
        return file, f"MLflow (version {found.version}, run {found.mlflow_run_id})"


def _compare_files(committed: Path, reproduced: Path, rule: Rule) -> dict[str, Any]:
    """Tables cell by cell; any other format by its bytes."""
    before, after = tabular.read_table(committed), tabular.read_table(reproduced)
    if before is not None and after is not None:
        return equivalence.compare_tables(before, after, rule)
    same = committed.read_bytes() == reproduced.read_bytes()
    return {
        "rows": 0,
        "equivalent": same,
        "summary": "identical files" if same else "files differ (not CSV/TSV, so compared as bytes)",
    }


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
