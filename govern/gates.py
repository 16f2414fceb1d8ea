"""Promotion gates: what a version must show before it may enter a stage. Pure: parsed from configuration,
judged against facts the caller read from the ledger.

Declared per stage in configuration, for example::

    [registry.gates]
    production = ["validation.f1 >= 0.95", "reproduction.verified"]

A metric gate compares one of the training's recorded metrics (the flattened names `govern repro` records)
with a number; `reproduction.verified` asks that the latest CI verdict about a lock holding the version's model file (at
whatever commit that lock was committed) is exact or equivalent.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from govern.errors import ConfigError

VERIFIED = "reproduction.verified"
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
METRIC_GATE = re.compile(r"^\s*([A-Za-z0-9_][A-Za-z0-9_.:/-]*)\s*(>=|<=|==|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    """One declared condition: `metric OP threshold`, or the reproduction verdict (metric None)."""

    text: str
    metric: str | None = None
    comparison: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Finding:
    """A gate judged for one version: whether it passed and what was seen."""

    gate: str
    passed: bool
    seen: Any

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "seen": self.seen}


def parse(text: Any, where: str) -> Gate:
    if text == VERIFIED:
        return Gate(VERIFIED)
    found = METRIC_GATE.match(text) if isinstance(text, str) else None
    if found is None:
        raise ConfigError(
            f'{where}: {text!r} is not a gate: write a metric comparison such as "validation.f1 >= 0.95", '
            f"or {VERIFIED!r}"
        )
    try:
        threshold = float(found.group(3))
    except ValueError:
        raise ConfigError(f"{where}: {text!r}: {found.group(3)!r} is not a number") from None
    if not math.isfinite(threshold):
        raise ConfigError(f"{where}: {text!r}: the threshold must be a finite number")
    return Gate(text.strip(), found.group(1), found.group(2), threshold)


def parse_table(table: Any, stages: tuple[str, ...], source: str) -> dict[str, tuple[Gate, ...]]:
    """`registry.gates`: stage -> list of gates; the stages must be configured ones."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: `registry.gates` must be a table of stage = [gates]")
    gates: dict[str, tuple[Gate, ...]] = {}
    for stage, texts in table.items():
        if stage not in stages:
            raise ConfigError(
                f"{source}: `registry.gates` names stage {stage!r}, which `registry.stages` does not have "
                f"({', '.join(stages)})"
            )
        if not isinstance(texts, list):
            raise ConfigError(f"{source}: `registry.gates.{stage}` must be a list of gates")
        gates[stage] = tuple(parse(text, f"{source}: `registry.gates.{stage}`") for text in texts)
    return gates


def judge(gates: tuple[Gate, ...], metrics: Mapping[str, Any], verdict: str | None) -> list[Finding]:
    """Each gate against the training's metrics and the latest reproduction verdict of its commit."""
    findings = []
    for gate in gates:
        if gate.metric is None:
            findings.append(Finding(gate.text, verdict == "verified", verdict or "no reproduction recorded"))
            continue
        value = metrics.get(gate.metric)
        if not isinstance(value, int | float) or isinstance(value, bool):
            findings.append(Finding(gate.text, False, f"no metric {gate.metric} recorded"))
            continue
        assert gate.comparison is not None and gate.threshold is not None
        findings.append(Finding(gate.text, COMPARISONS[gate.comparison](float(value), gate.threshold), value))
    return findings


def failures(findings: list[Finding]) -> str:
    """The failed gates as one clause for a message."""
    return "; ".join(f"{f.gate} (seen: {f.seen})" for f in findings if not f.passed)
