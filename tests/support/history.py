"""A project's history for the auditor's pages: versions 4 and 5 of `churn` and the deployments of days since.

`prepare` adds it to a project made by support.server.make_project (tests/test_web_auditor.py, test_web_look.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import grant_role, ok

DATA_SCIENTIST = "Dana Data <dana@example.com>"
COMMIT = "feedc0de" * 5
EXTRACTED = "2026-01-15T06:00:00.000000Z"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def add_version(project: Path, version: str, at: datetime, f1: float) -> None:
    """A training of `churn` on a snapshotted dataset, and its registered version, recorded at `at`."""
    from govern.envelope import PendingEvent
    from govern.events import DatasetSnapshotted, ModelRegistered, TrainingCompleted
    from govern.storage.duckdb_log import Ledger

    ledger = Ledger(project / "audit" / "ledger.duckdb")
    snapshot = DatasetSnapshotted(
        path=f"data/customers-{version}.csv",
        md5="a" * 32,
        sha256="b" * 64,
        size=4096,
        source="crm nightly export",
        extracted_at=EXTRACTED,
        extracted_at_basis="export manifest",
        rows=500,
        columns=["customer", "churned"],
    )
    [snapped] = ledger.append([PendingEvent(snapshot, actor=DATA_SCIENTIST, occurred_at=at, git_commit=COMMIT)])
    dataset = {
        "path": snapshot.path,
        "role": "source",
        "md5": snapshot.md5,
        "sha256": snapshot.sha256,
        "rows": 500,
        "snapshot_event_id": snapped.event_id,
        "extracted_at": EXTRACTED,
    }
    training = TrainingCompleted(
        git={"commit": COMMIT, "branch": "main", "dirty_paths": []},
        dvc_lock_sha256="0" * 64,
        targets=[],
        stages=[],
        params={"trees": 50, "seed": 7},
        metrics={"validation.f1": f1},
        outputs=[],
        datasets=[dataset],
        models=[],
        environment={},
        duration_s=3.0,
        run_cache_hit=False,
    )
    [trained] = ledger.append([PendingEvent(training, actor=DATA_SCIENTIST, occurred_at=at, git_commit=COMMIT)])
    registered = ModelRegistered(
        "churn", version, "models/churn.bin", None, "c" * 64, trained.event_id, "run", "sqlite:///x", "models:/churn/4"
    )
    ledger.append([PendingEvent(registered, actor=DATA_SCIENTIST, occurred_at=at, git_commit=COMMIT)])


def prepare(project: Path) -> dict[str, datetime]:
    """Versions 4 and 5, trained three days ago, and a history of deployments over the days since."""
    now = datetime.now(UTC)
    times = {
        "trained": now - timedelta(days=3),
        "v4": now - timedelta(days=2),
        "v5": now - timedelta(days=1),
        "retired": now - timedelta(hours=12),
        "v4 again": now - timedelta(hours=6),
    }
    add_version(project, "4", times["trained"], 0.93)
    add_version(project, "5", times["trained"] + timedelta(minutes=5), 0.91)
    slot = ("--app", "scoring", "--env", "dev")
    ok(project, "deploy", "churn", "4", *slot, "--at", iso(times["v4"]))
    ok(project, "deploy", "churn", "5", *slot, "--at", iso(times["v5"]))
    ok(project, "retire", *slot, "--at", iso(times["retired"]))
    ok(project, "deploy", "churn", "4", *slot, "--at", iso(times["v4 again"]))
    ok(project, "deploy", "churn", "1", "--app", "triage", "--env", "dev")
    grant_role(project, "temp", "approver", "--reason", "covering a holiday")
    times["temp held"] = datetime.now(UTC)
    ok(project, "principals", "revoke", "temp", "--role", "approver", "--reason", "back from holiday")
    ok(project, "audit", "anchor")
    return times
