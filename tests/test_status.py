"""`govern status`: the current state on one screen, derived from the ledger, as text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ok, run_cli

from govern.envelope import PendingEvent, utc_now
from govern.events import ReproductionVerified
from govern.storage.duckdb_log import Ledger

M = "breast-cancer-classifier"


def test_status_shows_versions_stages_deployments_verification_and_anchor(three_versions: Path) -> None:
    p = three_versions
    ok(p, "promote", M, "2", "--to", "staging", "--reason", "r")
    ok(p, "promote", M, "2", "--to", "production", "--reason", "r")
    ok(p, "deploy", M, "2", "--app", "scoring")
    ok(p, "deploy", M, "2", "--app", "triage")
    ok(p, "retire", "--app", "triage")
    ok(p, "deprecate", M, "1", "--reason", "superseded")
    ledger = Ledger(p / "audit" / "ledger.duckdb")
    commit = ledger.read(types=["training.completed"])[-1].git_commit
    ledger.append(
        [
            PendingEvent(
                ReproductionVerified(
                    commit=commit, match="equivalent", outputs=[], differing_outputs=[], metrics={},
                    metric_deltas={}, duration_s=1.0, ci={"system": "local"},
                ),
                actor="ci:runner",
                occurred_at=utc_now(),
                git_commit=commit,
            )
        ]
    )  # fmt: skip
    ok(p, "audit", "anchor")

    state = json.loads(ok(p, "status", "--json"))

    [model] = state["models"]
    versions = {v["version"]: v for v in model["versions"]}
    assert model["model"] == M and list(versions) == ["1", "2", "3"]
    assert versions["2"]["stages"] == ["production", "staging"] and versions["2"]["deprecated_at"] is None
    assert versions["1"]["deprecation_reason"] == "superseded" and versions["3"]["stages"] == []
    slots = {f"{d['app']}/{d['env']}": d for d in state["deployments"]}
    assert slots["scoring/production"]["serving"] is True and slots["scoring/production"]["version"] == "2"
    assert slots["triage/production"]["serving"] is False and slots["triage/production"]["version"] is None
    assert state["pending_mirrors"] == {"trainings": [], "registry": []}
    assert state["last_verification"]["match"] == "equivalent" and state["last_verification"]["commit"] == commit
    head = ledger.head()
    assert state["newest_anchor"]["seq"] == head[0] and state["newest_anchor"]["events_since"] == 0
    assert state["ledger"]["head_seq"] == head[0] and state["ledger"]["events"] == head[0]

    text = ok(p, "status")
    lock = versions["2"]["lock_commit"]
    assert lock and all(v["lock_commit"] for v in versions.values()), "repro --commit locked each version"
    assert f"version 2    registered {versions['2']['registered_at']}  lock {lock[:12]}  stages: production" in text
    assert "NOT LOCKED" not in text
    assert "DEPRECATED" in text and "superseded" in text
    assert "scoring/production" in text and f"{M} version 2 since" in text
    assert "triage/production" in text and "nothing serves (retired" in text
    assert "nothing pending" in text
    assert f"verified (equivalent): commit {commit[:12]}" in text
    assert f"newest anchor govern-anchor/{head[0]}" in text


def test_status_of_a_new_project_says_nothing_is_recorded_yet_and_succeeds(tmp_path: Path) -> None:
    from conftest import git

    git(tmp_path, "init", "-q")
    result = run_cli("status", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "nothing recorded yet (govern repro records the first training)" in result.output
    assert "none registered yet" in result.output and "none recorded yet (govern deploy)" in result.output
    state = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
    assert state["ledger"]["events"] == 0 and state["ledger"]["head_seq"] is None and state["deployments"] == []
    assert not (tmp_path / "audit" / "ledger.duckdb").exists(), "reading created no ledger"


def test_status_of_a_lost_ledger_where_anchors_exist_is_an_error(tmp_path: Path) -> None:
    from conftest import commit_all, git, snapshot_event
    from support.projects import project_at

    from govern.api import integrity
    from govern.storage.duckdb_log import Ledger

    git(tmp_path, "init", "-q")
    (tmp_path / "README").write_text("x\n")
    commit_all(tmp_path, "start")
    Ledger(tmp_path / "audit" / "ledger.duckdb").append([snapshot_event(1)])
    integrity.anchor(project_at(tmp_path))
    for lost in (tmp_path / "audit").iterdir():
        lost.unlink()
    result = run_cli("status", cwd=tmp_path)
    assert result.exit_code == 1 and "is missing, but this repository holds anchors up to seq 2" in result.output


def test_status_lists_slots_in_natural_order_and_one_screen_of_them(tmp_path: Path) -> None:
    from conftest import git

    from govern.envelope import PendingEvent, utc_now
    from govern.events import DeploymentStarted
    from govern.storage.duckdb_log import Ledger

    git(tmp_path, "init", "-q")
    ledger = Ledger(tmp_path / "audit" / "ledger.duckdb")
    starts = [DeploymentStarted(app=f"c{i}", env="production", model="m", version="1") for i in range(40)]
    ledger.append([PendingEvent(fact, actor="cd", occurred_at=utc_now()) for fact in starts])
    text = run_cli("status", cwd=tmp_path).output
    shown = [line.split()[0] for line in text.splitlines() if line.startswith("  c")]
    assert shown == [f"c{i}/production" for i in range(25)], "c2 before c10, 25 at most"
    assert "... and 15 more (govern status --json, or govern audit windows)" in text
    state = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
    assert [s["app"] for s in state["deployments"]] == [f"c{i}" for i in range(40)]
