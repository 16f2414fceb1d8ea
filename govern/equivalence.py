"""When is a reproduced output as good as the committed one? The rules, and the three outcomes.

A reproduction on another machine can write other bytes for the same
behaviour: a floating-point fit differs in its last bits between CPUs and
BLAS kernels. So each output whose bytes differ from the committed
`dvc.lock` is judged by the rule declared for it:

exact
    The bytes must match; any difference diverges. The default for data.
predictions
    The default for `type: model` artifacts: both model files run through
    the model's own inference entry point on the pipeline's evaluation data,
    and the predictions are compared, label columns exactly and numbers
    within `atol + rtol * |committed|` (numpy's `isclose`).
downstream-metrics
    The model is judged by the metrics of the stages downstream of it,
    within the metric tolerances. `predictions` falls back to it, saying so,
    when the committed model file cannot be had.
table
    A CSV/TSV output compared cell by cell, as predictions are.
metric-values
    Metrics files: every metric within its tolerance (exact by default).

Outcomes: `exact` (every output's hash equals the lock), `equivalent` (the
outputs that differ are each judged equivalent by their rule) or
`diverged` (anything else). Everything here is pure: reading files, running
models and recording events belong to the callers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

EXACT, EQUIVALENT, DIVERGED = "exact", "equivalent", "diverged"
RULES = ("exact", "predictions", "downstream-metrics", "table")
METRIC_VALUES = "metric-values"
DEFAULT_ATOL = 1e-9
DEFAULT_RTOL = 1e-7

_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Rule:
    """How one output whose bytes differ is judged; `data` and `label_columns` serve `predictions`."""

    rule: str
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    data: tuple[str, ...] = ()
    label_columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Rules:
    """The comparison rules a project declares: per-output overrides, the rule for models, metric tolerances."""

    outputs: Mapping[str, Rule] = field(default_factory=dict)
    models: Rule = field(default_factory=lambda: Rule("predictions"))
    tolerances: Mapping[str, float] = field(default_factory=dict)

    def for_output(self, path: str, *, is_model: bool, is_metrics: bool) -> Rule:
        """The declared rule for `path`: its exact entry, else the first glob that matches, else the default."""
        declared = self.outputs.get(path)
        if declared is None:
            declared = next((rule for pattern, rule in self.outputs.items() if fnmatchcase(path, pattern)), None)
        if declared is not None:
            return declared
        if is_metrics:
            return Rule(METRIC_VALUES)
        return self.models if is_model else Rule(EXACT)


@dataclass(frozen=True)
class Judgement:
    """One output that differs in bytes from the committed lock, and what its rule made of it."""

    path: str
    expected_md5: str | None
    actual_md5: str | None
    rule: str
    equivalent: bool
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "expected_md5": self.expected_md5,
            "actual_md5": self.actual_md5,
            "rule": self.rule,
            "equivalent": self.equivalent,
            "evidence": self.evidence,
        }


def outcome(judgements: Sequence[Judgement], *, failed: bool = False) -> str:
    """exact when nothing differs, equivalent when every difference was judged so, diverged otherwise."""
    if failed:
        return DIVERGED
    if not judgements:
        return EXACT
    return EQUIVALENT if all(j.equivalent for j in judgements) else DIVERGED


def bytes_differ(path: str, expected_md5: str | None, actual_md5: str | None) -> Judgement:
    """The `exact` rule: a difference in bytes (or a missing output) diverges."""
    if expected_md5 is None or actual_md5 is None:
        missing = "the reproduction did not write it" if actual_md5 is None else "the committed lock does not list it"
        return Judgement(path, expected_md5, actual_md5, EXACT, False, {"summary": f"missing: {missing}"})
    return Judgement(path, expected_md5, actual_md5, EXACT, False, {"summary": "bytes differ"})


def stale_inputs(
    committed: Mapping[str, Mapping[str, Any]], reproduced: Mapping[str, Mapping[str, Any]], produced: set[str]
) -> list[dict[str, Any]]:
    """The inputs a committed lock records otherwise than the commit holds them: a stale dvc.lock.

    Inputs are each stage's command, params and the dependencies no stage
    produces (code, source data). A lock not re-made after one of them changed
    describes another pipeline, whatever its outputs look like. Dependencies
    that other stages produce are left to the outputs' own rules.
    """
    found: list[dict[str, Any]] = []
    for stage in sorted(set(committed) | set(reproduced)):
        old, new = committed.get(stage), reproduced.get(stage)
        if old is None or new is None:
            found.append(_stale(stage, "stage", stage, old is not None, new is not None))
            continue
        if old.get("cmd") != new.get("cmd"):
            found.append(_stale(stage, "command", stage, old.get("cmd"), new.get("cmd")))
        for file in sorted(set(old.get("params") or {}) | set(new.get("params") or {})):
            before, after = (old.get("params") or {}).get(file) or {}, (new.get("params") or {}).get(file) or {}
            prefix = "" if file == "params.yaml" else f"{file}:"
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    found.append(_stale(stage, "param", prefix + key, before.get(key), after.get(key)))
        inputs_before, inputs_after = _inputs(old, produced), _inputs(new, produced)
        for path in sorted(set(inputs_before) | set(inputs_after)):
            if inputs_before.get(path) != inputs_after.get(path):
                found.append(_stale(stage, "dependency", path, inputs_before.get(path), inputs_after.get(path)))
    return found


def _inputs(entry: Mapping[str, Any], produced: set[str]) -> dict[str, Any]:
    return {
        dep["path"]: dep.get("md5")
        for dep in entry.get("deps") or []
        if not any(dep["path"] == out or dep["path"].startswith(out.rstrip("/") + "/") for out in produced)
    }


def _stale(stage: str, kind: str, name: str, committed: Any, actual: Any) -> dict[str, Any]:
    return {"stage": stage, "kind": kind, "name": name, "committed": committed, "actual": actual}


def stale_text(stale: Sequence[Mapping[str, Any]]) -> str:
    """`train.max_iter: 1000 -> 2000, pipelines/model.py` for a headline."""
    shown = [
        f"{s['name']}: {s['committed']} -> {s['actual']}" if s["kind"] == "param" else s["name"] for s in stale[:3]
    ]
    more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
    return ", ".join(shown) + more


def metric_deltas(
    expected: Mapping[str, Any], actual: Mapping[str, Any], tolerances: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """Every metric whose value changed or went missing, with its delta, tolerance and whether it is within."""
    deltas: dict[str, dict[str, Any]] = {}
    for name in sorted(set(expected) | set(actual)):
        was, now = expected.get(name), actual.get(name)
        if was == now:
            continue
        delta = None if was is None or now is None else now - was
        tolerance = float(tolerances.get(name, 0.0))
        within = delta is not None and abs(delta) <= tolerance
        deltas[name] = {"expected": was, "actual": now, "delta": delta, "tolerance": tolerance, "within": within}
    return deltas


def judge_metrics(
    path: str,
    expected_md5: str | None,
    actual_md5: str | None,
    deltas: Mapping[str, Mapping[str, Any]],
    *,
    rule: str = METRIC_VALUES,
    note: str | None = None,
    compared: int | None = None,
) -> Judgement:
    """Equivalent when every metric that moved stayed within its tolerance (and there was something to compare)."""
    beyond = sorted(name for name, d in deltas.items() if not d["within"])
    evidence: dict[str, Any] = {"metrics": dict(deltas), "beyond_tolerance": beyond}
    if compared is not None:
        evidence["metrics_compared"] = compared
    if note:
        evidence["note"] = note
    if compared == 0:
        evidence["summary"] = "no downstream metric to judge by"
        return Judgement(path, expected_md5, actual_md5, rule, False, evidence)
    if beyond:
        worst = beyond[0]
        evidence["summary"] = f"{len(beyond)} metric(s) beyond tolerance ({worst}: {_delta_text(deltas[worst])})"
    elif deltas:
        evidence["summary"] = f"{len(deltas)} metric(s) moved, all within tolerance"
    else:
        evidence["summary"] = "every metric identical"
    return Judgement(path, expected_md5, actual_md5, rule, not beyond, evidence)


def _delta_text(delta: Mapping[str, Any]) -> str:
    if delta["delta"] is None:
        return f"{delta['expected']} -> {delta['actual']}"
    return f"{delta['expected']} -> {delta['actual']}, delta {delta['delta']:+.6g} > {delta['tolerance']:g}"


Table = tuple[list[str], list[list[str]]]


def compare_tables(committed: Table, reproduced: Table, rule: Rule) -> dict[str, Any]:
    """Cell-by-cell comparison of two tables with the same rows in the same order.

    Label columns (declared, or by default the columns whose committed values
    are all integers or text) must match exactly: a changed class diverges.
    Other numeric cells match within `atol + rtol * |committed|`. Returns the
    evidence, with `equivalent` and a one-line `summary`.
    """
    header, rows = committed
    new_header, new_rows = reproduced
    evidence: dict[str, Any] = {"atol": rule.atol, "rtol": rule.rtol, "rows": len(rows), "columns": list(header)}
    if header != new_header:
        evidence.update(equivalent=False, summary=f"columns differ: {header} -> {new_header}")
        return evidence
    if len(rows) != len(new_rows):
        evidence.update(equivalent=False, summary=f"row count differs: {len(rows)} -> {len(new_rows)}")
        return evidence
    labels = list(rule.label_columns) if rule.label_columns is not None else _label_columns(header, rows)
    label_index = {header.index(name) for name in labels if name in header}
    differing = beyond = label_changes = 0
    max_abs = max_rel = 0.0
    worst: dict[str, Any] | None = None
    for number, (old, new) in enumerate(zip(rows, new_rows, strict=True)):
        row_differs = row_beyond = False
        for column, (a, b) in enumerate(zip(old, new, strict=False)):
            if a == b:
                continue
            row_differs = True
            if column in label_index:
                label_changes += 1
                row_beyond = True
                continue
            x, y = _number(a), _number(b)
            if x is None or y is None:
                row_beyond = True
                continue
            if math.isnan(x) or math.isnan(y):
                row_beyond = row_beyond or not (math.isnan(x) and math.isnan(y))
                continue
            deviation = abs(x - y)
            relative = deviation / abs(x) if x else (math.inf if deviation else 0.0)
            if deviation > max_abs or worst is None:
                worst = {"row": number + 1, "column": header[column], "committed": a, "reproduced": b}
            max_abs, max_rel = max(max_abs, deviation), max(max_rel, relative)
            if not deviation <= rule.atol + rule.rtol * abs(x):
                row_beyond = True
        differing += row_differs
        beyond += row_beyond
    total = len(rows)
    evidence.update(
        label_columns=sorted(header[i] for i in label_index),
        rows_differing=differing,
        share_differing=round(differing / total, 6) if total else 0.0,
        rows_beyond_tolerance=beyond,
        share_beyond_tolerance=round(beyond / total, 6) if total else 0.0,
        label_changes=label_changes,
        max_abs_deviation=max_abs,
        max_rel_deviation=max_rel if math.isfinite(max_rel) else None,
        largest_deviation=worst,
        equivalent=beyond == 0,
    )
    largest = _largest_text(max_abs, worst)
    if beyond:
        changed = f", {label_changes} label change(s)" if label_changes else ""
        evidence["summary"] = f"{beyond} of {total} rows beyond tolerance{changed}; {largest}"
    elif differing:
        evidence["summary"] = (
            f"{differing} of {total} rows differ in their last digits, all within tolerance ({largest})"
        )
    else:
        evidence["summary"] = f"all {total} rows identical"
    return evidence


def _largest_text(deviation: float, worst: Mapping[str, Any] | None) -> str:
    if worst is None:
        return "no numeric deviation"
    return (
        f"largest deviation {deviation:.3g} at row {worst['row']}, {worst['column']}: "
        f"{worst['committed']} -> {worst['reproduced']}"
    )


def merge_table_evidence(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Several compared files (validation and test splits) as one verdict, keeping each file's evidence."""
    rows = sum(p["rows"] for p in parts.values())
    counts = {key: sum(p.get(key, 0) for p in parts.values()) for key in ("rows_differing", "rows_beyond_tolerance")}
    labels = sum(p.get("label_changes", 0) for p in parts.values())
    max_abs = max((p.get("max_abs_deviation", 0.0) for p in parts.values()), default=0.0)
    equivalent = all(p["equivalent"] for p in parts.values())
    failing = [f"{name}: {p['summary']}" for name, p in parts.items() if not p["equivalent"]]
    if failing:
        summary = "; ".join(failing)
    elif counts["rows_differing"]:
        worst = max(parts.items(), key=lambda item: item[1].get("max_abs_deviation", 0.0))
        largest = _largest_text(max_abs, worst[1].get("largest_deviation"))
        summary = (
            f"{counts['rows_differing']} of {rows} rows differ in their last digits, all within tolerance "
            f"({largest} of {worst[0]})"
        )
    else:
        summary = f"identical predictions on all {rows} rows"
    return {
        "rows": rows,
        **counts,
        "share_differing": round(counts["rows_differing"] / rows, 6) if rows else 0.0,
        "share_beyond_tolerance": round(counts["rows_beyond_tolerance"] / rows, 6) if rows else 0.0,
        "label_changes": labels,
        "max_abs_deviation": max_abs,
        "files": {name: dict(p) for name, p in parts.items()},
        "equivalent": equivalent,
        "summary": summary,
    }


def _label_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns whose committed values are all integers or text: classes, ids, labels."""
    labels = []
    for index, name in enumerate(header):
        values = [row[index] for row in rows if index < len(row) and row[index] != ""]
        if values and all(_INTEGER.fullmatch(v) or _number(v) is None for v in values):
            labels.append(name)
    return labels


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
