"""The pipeline as govern sees it: stages, outputs, artifacts, and what happened to each stage.

Plain data, filled in by the DVC adapter, read by the use cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class OutputSpec:
    path: str
    stage: str
    cache: bool
    metric: bool
    plot: bool


@dataclass(frozen=True)
class StageSpec:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[OutputSpec, ...]
    meta: dict[str, Any]
    desc: str | None
    dvcfile: str


@dataclass(frozen=True)
class ArtifactSpec:
    name: str
    path: str
    type: str | None
    desc: str | None
    labels: tuple[str, ...]
    meta: dict[str, Any]


@dataclass(frozen=True)
class Pipeline:
    stages: dict[str, StageSpec]
    metrics_files: tuple[str, ...]
    artifacts: tuple[ArtifactSpec, ...]
    lock_files: tuple[str, ...]
    tracked_files: tuple[str, ...] = field(default=())

    @property
    def output_paths(self) -> set[str]:
        return {out.path for stage in self.stages.values() for out in stage.outs}

    def downstream(self, path: str) -> list[StageSpec]:
        """The stages that read `path`, directly or through what they produce from it, in pipeline order."""
        reached, frontier = [], {path}
        changed = True
        while changed:
            changed = False
            for stage in self.stages.values():
                if stage in reached or not any(_within(dep, frontier) for dep in stage.deps):
                    continue
                reached.append(stage)
                frontier |= {out.path for out in stage.outs}
                changed = True
        return [stage for stage in self.stages.values() if stage in reached]

    def producer(self, path: str) -> str | None:
        """The stage whose output is `path` (or contains it)."""
        for stage in self.stages.values():
            for out in stage.outs:
                if path == out.path or path.startswith(out.path.rstrip("/") + "/"):
                    return stage.name
        return None


def _within(path: str, roots: set[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


@dataclass(frozen=True)
class StageRun:
    name: str
    status: str  # "ran", "restored" (from DVC's run-cache) or "unchanged"
    started_at: datetime
    duration_s: float
