"""`govern ci verify`: re-execute a commit's pipeline and judge it against its committed dvc.lock.

The commit is checked out into a temporary clone sharing the repository's
objects (the caller's checkout is never touched; a bare repository works
too), DVC data is pulled
when a remote is configured, and every stage is re-executed with `--force`,
so DVC's run-cache cannot answer for it. Each output's md5 is compared with
the committed lock; metrics files are judged instead by their values, within
per-metric tolerances (exact by default). The verdict is appended to the
ledger as `reproduction.verified` or `reproduction.diverged`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from govern import config as config_module
from govern import environment, lineage
from govern.adapters import dvc as dvc_adapter
from govern.adapters import git as git_adapter
from govern.errors import GovernError, InvalidInput, StageFailed
from govern.events import PendingEvent, RecordedEvent, ReproductionDiverged, ReproductionVerified, utc_now
from govern.ledger import Ledger


@dataclass(frozen=True)
class Verdict:
    commit: str
    verified: bool
    event: RecordedEvent
    outputs: list[dict[str, Any]] = field(default_factory=list)
    differing: list[dict[str, Any]] = field(default_factory=list)
    metric_deltas: dict[str, Any] = field(default_factory=dict)
    failed_stage: str | None = None
    error: str | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "verdict": "verified" if self.verified else "diverged",
            "event_seq": self.event.seq,
            "outputs": self.outputs,
            "differing_outputs": self.differing,
            "metric_deltas": self.metric_deltas,
            "failed_stage": self.failed_stage,
            "error": self.error,
            "duration_s": self.duration_s,
        }


def ci_context(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Where this verification runs, from the CI system's standard variables."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") == "true":
        url = None
        if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
            url = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return {"system": "github", "run_id": env.get("GITHUB_RUN_ID"), "ref": env.get("GITHUB_REF"), "url": url}
    if env.get("GITLAB_CI") == "true":
        return {
            "system": "gitlab",
            "run_id": env.get("CI_PIPELINE_ID"),
            "ref": env.get("CI_COMMIT_REF_NAME"),
            "url": env.get("CI_PIPELINE_URL"),
        }
    if env.get("GOVERN_CI_SYSTEM"):
        return {
            "system": env["GOVERN_CI_SYSTEM"],
            "run_id": env.get("GOVERN_CI_RUN_ID"),
            "ref": env.get("GOVERN_CI_REF"),
        }
    return {"system": "local", "run_id": None, "ref": None}


def verify(
    rev: str = "HEAD",
    *,
    tolerances: Mapping[str, float] | None = None,
    start: Path | None = None,
    repository: Path | None = None,
    on_progress: Any = None,
) -> Verdict:
    """Re-execute `rev` in a temporary worktree and record the verdict (see the module docstring)."""
    source = repository or config_module.find_root(start)
    commit = git_adapter.resolve(source, rev)
    ledger_path = config_module.ledger_path(start) if repository is None else None
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="govern-verify-") as scratch:
        checkout = Path(scratch) / "checkout"
        git_adapter.checkout_copy(source, checkout, commit)
        cfg = config_module.load(checkout)
        ledger = Ledger(ledger_path or cfg.ledger, lock_timeout=cfg.lock_timeout)
        limits = {**cfg.tolerances, **(tolerances or {})}
        if (source / ".dvc").is_dir():
            dvc_adapter.use_cache_dir(checkout, dvc_adapter.cache_dir(source))
        result = _judge(checkout, commit, limits, on_progress)
    duration = round(time.perf_counter() - clock, 6)
    actor = environment.actor(lambda: None)
    ci = ci_context()
    if result["verified"]:
        fact: Any = ReproductionVerified(
            commit=commit, outputs=result["outputs"], metrics=result["metrics"], duration_s=duration, ci=ci
        )
    else:
        fact = ReproductionDiverged(
            commit=commit,
            differing_outputs=result["differing"],
            metric_deltas=result["deltas"],
            duration_s=duration,
            ci=ci,
            failed_stage=result["failed_stage"],
            error=result["error"],
        )
    event = ledger.append([PendingEvent(fact, actor=actor, occurred_at=utc_now(), git_commit=commit)])[0]
    return Verdict(
        commit,
        result["verified"],
        event,
        result["outputs"],
        result["differing"],
        result["deltas"],
        result["failed_stage"],
        result["error"],
        duration,
    )


def _judge(checkout: Path, commit: str, tolerances: Mapping[str, float], on_progress: Any) -> dict[str, Any]:
    pipeline = dvc_adapter.load_pipeline(checkout)
    committed_locks, _ = dvc_adapter.read_locks(checkout, pipeline)
    if not committed_locks:
        raise InvalidInput(f"Commit {commit[:12]} has no dvc.lock: there is nothing recorded to verify against")
    expected_metrics = lineage.metrics_of(checkout, pipeline)
    dvc_adapter.pull_if_remote(checkout)
    verdict: dict[str, Any] = {
        "outputs": [],
        "differing": [],
        "deltas": {},
        "metrics": {},
        "failed_stage": None,
        "error": None,
    }
    try:
        pipeline, _ = dvc_adapter.reproduce(checkout, (), on_progress=on_progress, force=True)
    except StageFailed as failure:
        verdict.update(verified=False, failed_stage=failure.stage, error=str(failure))
        return verdict
    new_locks, _ = dvc_adapter.read_locks(checkout, pipeline)
    metric_files = set(pipeline.metrics_files)
    expected = _outs(committed_locks)
    actual = _outs(new_locks)
    for path in sorted(set(expected) | set(actual)):
        if path in metric_files:
            continue
        verdict["outputs"].append({"path": path, "md5": actual.get(path)})
        if expected.get(path) != actual.get(path):
            verdict["differing"].append(
                {"path": path, "expected_md5": expected.get(path), "actual_md5": actual.get(path)}
            )
    metrics = lineage.metrics_of(checkout, pipeline)
    verdict["metrics"] = metrics
    for name in sorted(set(expected_metrics) | set(metrics)):
        was, now = expected_metrics.get(name), metrics.get(name)
        delta = None if was is None or now is None else now - was
        tolerance = tolerances.get(name, 0.0)
        if delta is None or abs(delta) > tolerance:
            verdict["deltas"][name] = {"expected": was, "actual": now, "delta": delta, "tolerance": tolerance}
    verdict["verified"] = not verdict["differing"] and not verdict["deltas"]
    return verdict


def _outs(locks: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    return {item["path"]: item.get("md5") for entry in locks.values() for item in entry.get("outs") or []}


def summary(verdict: Verdict) -> str:
    """The Markdown summary CI systems show (GitHub's step summary, a merge-request note)."""
    head = "✅ reproduction verified" if verdict.verified else "❌ reproduction diverged"
    lines = [
        f"## govern: {head}",
        "",
        f"Commit `{verdict.commit}` was re-executed from scratch (`dvc repro --force`) in {verdict.duration_s:.1f} s; "
        f"recorded as `{verdict.event.type}` (ledger seq {verdict.event.seq}).",
        "",
    ]
    if verdict.failed_stage:
        lines += [f"Stage `{verdict.failed_stage}` failed: {verdict.error}", ""]
    if verdict.differing:
        lines += ["| Output | Committed md5 | Reproduced md5 |", "|---|---|---|"]
        lines += [f"| `{d['path']}` | {d['expected_md5']} | {d['actual_md5']} |" for d in verdict.differing]
        lines.append("")
    if verdict.metric_deltas:
        lines += ["| Metric | Committed | Reproduced | Delta | Tolerance |", "|---|---|---|---|---|"]
        lines += [
            f"| {name} | {d['expected']} | {d['actual']} | {d['delta']} | {d['tolerance']} |"
            for name, d in verdict.metric_deltas.items()
        ]
        lines.append("")
    if verdict.verified:
        lines += [
            f"All {len(verdict.outputs)} outputs match the committed `dvc.lock`; metrics are within tolerance.",
            "",
        ]
    return "\n".join(lines)


CI_TARGETS = {"github": ".github/workflows/govern.yml", "gitlab": ".gitlab-ci.yml"}


def ci_init(system: str, install: str | None = None, start: Path | None = None, force: bool = False) -> Path:
    """Write the CI template for `system` into the project."""
    if system not in CI_TARGETS:
        raise InvalidInput(f"Unknown CI system {system!r}: choose {' or '.join(CI_TARGETS)}")
    root = config_module.find_root(start)
    target = root / CI_TARGETS[system]
    if target.exists() and not force:
        raise GovernError(f"{target.relative_to(root)} exists: pass --force to overwrite it")
    default_install = (
        "pip install -c constraints.txt -e ." if (root / "constraints.txt").exists() else "pip install govern"
    )
    text = resources.files("govern").joinpath("templates", "ci", f"{system}.yml").read_text(encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text.replace("{{ install }}", install or default_install), encoding="utf-8")
    return target
