"""The server records what a training job reports only after checking it as strictly as input from the network
(`govern.api.reported`): the job ran code its requester controls, so its report is a claim."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import snapshot_event
from support.sandbox import governed_project

from govern.api import reported
from govern.api.context import open_project
from govern.api.repro import REPORT_FORMAT, REPORTED_NOT_MIRRORED, reported_event
from govern.envelope import PendingEvent, utc_now
from govern.events import DatasetSnapshotted, RoleGranted, TokenIssued, TrainingCompleted
from govern.storage import open_store

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REQUESTER = "sci (token 0a1b2c3d4e5f)"
MD5, SHA = "a" * 32, "b" * 64


@pytest.fixture(params=["file", "postgresql"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A governed project on a DuckDB file, or on PostgreSQL, with one event recorded."""
    settings = ""
    if request.param == "postgresql":
        settings = f'ledger = "{request.getfixturevalue("pg_database")}"\n'
    root = governed_project(tmp_path / "project", "")
    if settings:
        (root / "govern.toml").write_text(settings + (root / "govern.toml").read_text())
    open_project(root).ledger.append([snapshot_event(1)])
    return root


def a_report(commit: str = COMMIT, models: list[dict[str, Any]] | None = None, status: str = "ran") -> dict:
    """What `govern repro --facts-out` writes for one training that snapshotted its source data."""
    snapshot = PendingEvent(
        DatasetSnapshotted(
            path="data/raw.csv", md5=MD5, sha256=SHA, size=10, source="the source", extracted_at=
            "2026-01-01T00:00:00.000000Z", extracted_at_basis="stage-run", stage="extract", rows=2, columns=["x"],
        ),
        actor="(reported by a job)", occurred_at=utc_now(), git_commit=commit,
    )  # fmt: skip
    training = PendingEvent(
        TrainingCompleted(
            git={"commit": commit, "branch": None, "remote_url": "/srv/x", "dirty": False, "allow_dirty": False,
                 "dirty_paths": []},
            dvc_lock_sha256="c" * 64,
            targets=[],
            stages=[{"name": "train", "cmd": "python train.py", "deps": [], "outs": [], "params": {},
                     "status": status, "started_at": None, "duration_s": 0.5}],
            params={"train": {"C": 1.0}},
            metrics={"metrics.json": {"f1": 0.9}},
            outputs=[],
            datasets=[{"path": "data/raw.csv", "role": "source", "md5": MD5, "sha256": SHA, "size": 10, "rows": 2,
                       "columns": ["x"], "snapshot_event_id": snapshot.event_id,
                       "extracted_at": "2026-01-01T00:00:00.000000Z"}],
            models=models or [],
            environment={"python": "3.11.7"},
            duration_s=1.5,
            run_cache_hit=False,
            mlflow={"status": "pending", "error": REPORTED_NOT_MIRRORED},
        ),
        actor="(reported by a job)", occurred_at=utc_now(), git_commit=commit,
    )  # fmt: skip
    return {"format": REPORT_FORMAT, "events": [reported_event(snapshot), reported_event(training)]}


def refused(project: Path, report: Any, workspace: Path | None = None) -> str:
    ledger = open_project(project).ledger
    before = ledger.head()
    with pytest.raises(reported.ReportRefused) as error:
        reported.record_reported_training(open_project(project), report, REQUESTER, COMMIT, workspace)
    assert open_project(project).ledger.head() == before, "a refused report records nothing"
    return str(error.value)


def test_a_report_that_grants_a_role_or_issues_a_token_is_refused_and_nothing_is_recorded(project: Path) -> None:
    for forged in (
        RoleGranted(principal="mallory", role="admin", reason="evil"),
        TokenIssued(principal="mallory", token_id="00d199502a68", secret_sha256=SHA, expires_at=None),
    ):
        report = a_report()
        event = PendingEvent(forged, actor="alice (token 00d199502a68)", occurred_at=utc_now(), git_commit=COMMIT)
        report["events"].insert(0, reported_event(event))

        said = refused(project, report)

        assert f"is a '{forged.type}': a training reports only dataset.snapshotted, training.completed" in said
    types = {e.type for e in open_project(project).ledger.read()}
    assert not types & {"access.granted", "token.issued"}


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def change(report: dict) -> None:
        *parents, last = path.split(".")
        node: Any = report
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_set("events.1.payload.secret_bonus", 1), "unknown secret_bonus"),
        (_set("events.1.payload.metrics", KeyError), "missing metrics"),
        (_set("events.1.payload.metrics", "high"), "metrics is not a"),
        (_set("events.1.payload.duration_s", float("nan")), "duration_s is not a"),
        (_set("events.1.git_commit", "f" * 40), "is of commit 'ffff"),
        (_set("events.1.payload.git.commit", "f" * 40), "git.commit is 'ffff"),
        (_set("events.1.payload.git.dirty", True), "the checkout was dirty"),
        (_set("events.1.payload.git.actor", "alice"), "git holds"),
        (_set("events.1.payload.mlflow", {"status": "mirrored", "run_id": "x"}), "a job mirrors nothing"),
        (_set("events.1.schema_version", 2), "schema version 2"),
        (_set("events.1.schema_version", True), "schema version True"),
        (_set("events.1.event_id", "not-an-id"), "no event id of govern's form"),
        (_set("events.1.occurred_at", "yesterday"), "no time of govern's form"),
        (_set("events.1.actor", "alice (token 00d199502a68)"), "it has actor, event_id"),
        (_set("events.0.payload.md5", "d" * 32), "is not the one the training says it used"),
        (_set("events.0.payload.path", "../../etc/passwd"), "is not a path inside the checkout"),
        (_set("events.1.payload.models", [{"name": "m", "path": "/etc/shadow", "md5": MD5, "sha256": SHA}]),
         "is not a path inside the checkout"),
        (_set("events.1.payload.grid", {"params": {}}), "a job runs no grid search"),
        (lambda r: r["events"].reverse(), "exactly one training.completed or training.failed, last"),
        (lambda r: r["events"].append(copy.deepcopy(r["events"][1]) | {"event_id": str(uuid.uuid4())}),
         "exactly one training.completed"),
        (lambda r: r["events"].__setitem__(0, r["events"][1] | {"event_id": r["events"][0]["event_id"]}),
         "exactly one training.completed"),
        (lambda r: r["events"][0].__setitem__("event_id", r["events"][1]["event_id"]), "one event id twice"),
        (_set("signed_by", "the server"), "is not a govern.reported-training/1 report"),
        (_set("events", []), "lists no events"),
        (_set("events", [{}] * (reported.MAX_EVENTS + 1)), f"more than {reported.MAX_EVENTS}"),
    ],
)  # fmt: skip
def test_a_report_that_is_not_exactly_a_trainings_facts_is_refused_saying_why(
    tmp_path: Path, change: Callable[[dict], None], said: str
) -> None:
    root = governed_project(tmp_path / "project")
    report = a_report()
    change(report)
    assert said in refused(root, report)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b'{"format": 1, "format": 2}', "repeats a key"),
        (b'{"format": NaN}', "NaN, which JSON has no spelling for"),
        (b"\xff\xfe", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (b" " * (reported.MAX_REPORT_BYTES + 1), "larger than 16 MiB"),
    ],
)
def test_a_report_file_that_is_not_one_json_object_of_bounded_size_is_refused(data: bytes, said: str) -> None:
    with pytest.raises(reported.ReportRefused) as error:
        reported.parse_report(data)
    assert said in str(error.value)


def test_a_report_naming_a_snapshot_or_an_event_id_the_ledger_does_not_agree_with_is_refused(tmp_path: Path) -> None:
    root = governed_project(tmp_path / "project")
    ledger = open_project(root).ledger
    [existing] = ledger.append([snapshot_event(7)])

    report = a_report()
    report["events"].pop(0)  # the training names a snapshot nobody recorded
    assert "which the ledger does not record with that path and md5" in refused(root, report)

    report = a_report()
    report["events"][1]["payload"]["datasets"][0]["snapshot_event_id"] = existing.event_id
    report["events"].pop(0)  # a recorded snapshot, but of another path
    assert "which the ledger does not record with that path and md5" in refused(root, report)

    report = a_report()
    report["events"][0]["event_id"] = existing.event_id
    report["events"][1]["payload"]["datasets"][0]["snapshot_event_id"] = existing.event_id
    assert f"reuses event id {existing.event_id}, which the ledger already has" in refused(root, report)


def test_a_report_file_is_read_without_following_a_link_the_job_planted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "ledger.duckdb"
    secret.write_text(json.dumps(a_report()))
    (out / "facts.json").symlink_to(secret)
    with pytest.raises(reported.ReportRefused) as error:
        reported.read_report(out, "facts.json")
    assert "is not a plain file" in str(error.value)
    os.mkfifo(out / "fifo.json")
    with pytest.raises(reported.ReportRefused):
        reported.read_report(out, "fifo.json")  # never blocks on a FIFO
    assert reported.read_report(out, "absent.json") is None


def _with_dvc(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, capture_output=True)
    return root


@pytest.mark.slow
def test_a_model_file_that_differs_from_its_digests_or_is_a_link_is_refused_and_never_cached(tmp_path: Path) -> None:
    root = _with_dvc(governed_project(tmp_path / "project"))
    workspace = tmp_path / "workspace"
    (workspace / "models").mkdir(parents=True)
    (workspace / "models" / "model.pkl").write_bytes(b"the trained model")
    md5 = hashlib.md5(b"the trained model").hexdigest()  # noqa: S324 - DVC's content address
    model = {
        "name": "m",
        "path": "models/model.pkl",
        "md5": md5,
        "sha256": SHA,
        "desc": None,
        "labels": [],
        "meta": {},
        "stage": "train",
    }

    assert "does not match the md5 and sha256" in refused(root, a_report(models=[model]), workspace)
    (workspace / "models" / "model.pkl").unlink()
    (workspace / "models" / "model.pkl").symlink_to(root / "audit" / "ledger.duckdb")
    assert "models/model.pkl in the job's workspace is not a plain file" in refused(
        root, a_report(models=[model]), workspace
    )
    (workspace / "models" / "model.pkl").unlink()
    (workspace / "models").rmdir()
    (workspace / "models").symlink_to(root / "audit")
    assert "is not a plain file" in refused(root, a_report(models=[model]), workspace)
    cache = root / ".dvc" / "cache" / "files" / "md5"
    assert not cache.exists() or not any(p.is_file() and not p.name.startswith("tmp") for p in cache.rglob("*"))


@pytest.mark.slow
def test_a_valid_report_is_recorded_under_the_requester_and_its_model_taken_into_the_cache(project: Path) -> None:
    _with_dvc(project)
    workspace = project.parent / "workspace"
    (workspace / "models").mkdir(parents=True)
    data = b"the trained model"
    (workspace / "models" / "model.pkl").write_bytes(data)
    model = {
        "name": "m",
        "path": "models/model.pkl",
        "md5": hashlib.md5(data).hexdigest(),  # noqa: S324
        "sha256": hashlib.sha256(data).hexdigest(),
        "desc": None,
        "labels": [],
        "meta": {},
        "stage": "train",
    }
    report = a_report(models=[model])
    ledger = open_project(project).ledger
    before = ledger.head()[0]

    done = reported.record_reported_training(open_project(project), report, REQUESTER, COMMIT, workspace)

    assert done.status == "recorded" and done.collected == ["models/model.pkl"]
    appended = [e for e in open_store(open_project(project).config.ledger).read() if e.seq > before]
    snapshot, training = appended[:2]
    assert [snapshot.type, training.type] == ["dataset.snapshotted", "training.completed"]
    assert {snapshot.actor, training.actor} == {REQUESTER}, "the requester reported it; the job named no actor"
    assert training.event_id == done.training_event_id == report["events"][1]["event_id"]
    assert training.payload["mlflow"] == {
        "status": "pending", "tracking_uri": "sqlite:////nonexistent/mlflow.db", "error": reported.SERVER_MIRRORS,
    }  # fmt: skip
    assert {e.type for e in appended[2:]} <= {"training.mirrored", "model.registered"}, "the outbox's, if any"
    cached = project / ".dvc" / "cache" / "files" / "md5" / model["md5"][:2] / model["md5"][2:]
    assert cached.read_bytes() == data

    again = a_report(models=[model], status="unchanged")  # the same dvc.lock, every stage unchanged
    head = open_project(project).ledger.head()
    done = reported.record_reported_training(open_project(project), again, REQUESTER, COMMIT, workspace)
    assert done.status == "up-to-date" and done.training_event_id == training.event_id
    assert open_project(project).ledger.head() == head, "an up-to-date training is not recorded twice"
