"""The everyday git workflow of the README, end to end (issue 26): commit the code, train, commit the lock,
verify, request, approve, promote to production through the `reproduction.verified` gate, no --force.

The training commit has no lock for the new model (or a stale one); the lock commit that follows it does. A CI
verdict counts for the version whose model file its lock holds, wherever that lock was committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import commit_all, git, ok, run_cli

from govern.events import PendingEvent, ReproductionVerified, utc_now
from govern.ledger import Ledger

M = "breast-cancer-classifier"
GATED = '\n[tool.govern.registry]\ngates = { production = ["reproduction.verified"] }\n'


def ledger_of(project: Path) -> Ledger:
    return Ledger(project / "audit" / "ledger.duckdb")


def as_person(project: Path, name: str, email: str) -> None:
    git(project, "config", "user.name", name)
    git(project, "config", "user.email", email)


def request_and_approve(project: Path, version: str, stage: str) -> str:
    as_person(project, "Sam Scientist", "sam@example.com")
    asked = json.loads(ok(project, "request-promotion", M, version, "--to", stage, "--reason", "better", "--json"))
    as_person(project, "Pat Approver", "pat@example.com")
    result = run_cli("approve", str(asked["request"]), "--reason", "evidence reviewed", cwd=project)
    return result.output if result.exit_code == 0 else f"REFUSED {result.exit_code}: {result.output}"


def test_the_readme_workflow_reaches_production_through_the_verified_gate(
    reproduced_demo: Path, isolated_env: dict[str, str]
) -> None:
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + GATED)
    params = reproduced_demo / "params.yaml"
    params.write_text(params.read_text().replace("  C: 1.0", "  C: 0.5"))
    training_commit = commit_all(reproduced_demo, "C = 0.5, and a gate on production")
    ok(reproduced_demo, "repro")  # the training: at a commit whose dvc.lock is the previous version's
    [version] = [e.payload["version"] for e in ledger_of(reproduced_demo).read(types=["model.registered"])][1:]
    git(reproduced_demo, "add", "dvc.lock", "metrics.json")  # what the stages wrote that git tracks
    git(reproduced_demo, "commit", "-q", "-m", "the lock of the new model")
    lock_commit = git(reproduced_demo, "rev-parse", "HEAD")
    assert lock_commit != training_commit

    verified = subprocess.run(
        [sys.executable, "-m", "govern", "ci", "verify", "--json"],
        cwd=reproduced_demo, env=isolated_env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["match"] in ("exact", "equivalent")

    assert "model.promoted" in request_and_approve(reproduced_demo, version, "staging")
    printed = request_and_approve(reproduced_demo, version, "production")

    assert "model.promoted" in printed, printed
    promoted = ledger_of(reproduced_demo).read(types=["model.promotion_approved"])[-1]
    assert ("reproduction.verified", True) in [(g["gate"], g["passed"]) for g in promoted.payload["gates"]]
    assert not any(e.payload.get("forced") for e in ledger_of(reproduced_demo).read(types=["model.promoted"]))


def test_a_verdict_about_another_model_file_does_not_pass_the_gate(reproduced_demo: Path) -> None:
    """A verdict at the version's own training commit whose lock gave the model path other bytes (the stale lock
    of the previous version) is not about this version."""
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + GATED)
    params = reproduced_demo / "params.yaml"
    params.write_text(params.read_text().replace("  C: 1.0", "  C: 0.5"))
    training_commit = commit_all(reproduced_demo, "C = 0.5")
    ok(reproduced_demo, "repro")
    first, second = ledger_of(reproduced_demo).read(types=["model.registered"])
    about_first = ReproductionVerified(
        training_commit,
        "exact",
        [{"path": first.payload["path"], "md5": first.payload["md5"]}],
        [],
        {},
        {},
        1.0,
        {"system": "test"},
        dvc_lock_sha256="f" * 64,
    )
    ledger_of(reproduced_demo).append(
        [PendingEvent(about_first, actor="ci", occurred_at=utc_now(), git_commit=training_commit)]
    )
    version = second.payload["version"]
    assert "model.promoted" in request_and_approve(reproduced_demo, version, "staging")

    printed = request_and_approve(reproduced_demo, version, "production")

    assert printed.startswith("REFUSED 1"), printed
    assert "reproduction.verified (seen: no reproduction recorded)" in printed
    evidence = json.loads(ok(reproduced_demo, "audit", "report", M, first.payload["version"], "--format", "json"))
    assert [run["seq"] for run in evidence["reproductions"]["runs"]], "the verdict is the first version's evidence"


def test_ci_verify_in_a_fresh_clone_holding_anchors_prints_the_verdict_and_starts_no_chain(
    reproduced_demo: Path, tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    """The new user's CI runner: a clone with `govern-anchor/N` tags and no ledger. `ci verify` used to record
    `exact (seq 1)` into a new chain there, after which `audit verify` failed on the anchors."""
    ok(reproduced_demo, "audit", "anchor")
    clone = tmp_path / "runner"
    git(tmp_path, "clone", "-q", str(reproduced_demo), str(clone))
    assert git(clone, "tag", "-l", "govern-anchor/*"), "the anchors came with the clone"

    verified = subprocess.run(
        [sys.executable, "-m", "govern", "ci", "verify", "--json"],
        cwd=clone, env=isolated_env, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert verified.returncode == 0, verified.stdout + verified.stderr
    verdict = json.loads(verified.stdout)
    assert verdict["match"] in ("exact", "equivalent") and verdict["recorded"] is False
    assert verdict["event_seq"] is None and "`ci verify` starts none" in verdict["not_recorded"]
    assert "the verdict is not recorded: there is no ledger at" in verified.stderr
    assert not (clone / "audit" / "ledger.duckdb").exists(), "no chain was started"


def test_ci_verify_against_a_ledger_off_the_anchors_runs_nothing_and_records_nothing(
    reproduced_demo: Path, tmp_path: Path
) -> None:
    ok(reproduced_demo, "audit", "anchor")
    stranger = tmp_path / "another.duckdb"
    verdict = ReproductionVerified("c" * 40, "exact", [], [], {}, {}, 1.0, {})
    Ledger(stranger).append([PendingEvent(verdict, actor="x", occurred_at=utc_now())])
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('ledger = "audit/ledger.duckdb"', f'ledger = "{stranger}"'))
    commit_all(reproduced_demo, "another ledger")

    result = run_cli("ci", "verify", cwd=reproduced_demo)

    assert result.exit_code == 3, result.output
    assert "but this repository's newest anchor is seq" in result.output and "nothing was written" in result.output
    assert Ledger(stranger).head()[0] == 1
