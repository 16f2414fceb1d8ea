"""Promotion requests, the four-eyes rule by identity, and promotion gates (issue 14), from the command line.

The same rules over HTTP, with authenticated principals, are in tests/test_server.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ACTOR, commit_all, git, ok, run_cli, trained_version
from support.copies import Prepared, prepared
from support.projects import project_at

from govern.envelope import PendingEvent, utc_now
from govern.events import ReproductionVerified
from govern.storage.duckdb_log import Ledger

M = "churn"
TRAINER = "Tess Trainer <tess@example.com>"


def build_project(root: Path) -> Path:
    """Versions 1 and 2 of `churn`, trained by Tess; gates on production; MLflow unreachable."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "govern.toml").write_text(
        "[registry]\n"
        "gto_tags = false\n"
        'gates = { production = ["validation.f1 >= 0.9", "reproduction.verified"] }\n'
        "[mlflow]\n"
        'tracking_uri = "sqlite:////nonexistent/mlflow.db"\n'
    )
    commit_all(root, "start")
    ledger = root / "audit" / "ledger.duckdb"
    trained_version(ledger, M, "1", TRAINER, {"validation.f1": 0.93}, commit="a" * 40)
    trained_version(ledger, M, "2", TRAINER, {"validation.f1": 0.85}, commit="b" * 40)
    return root


@pytest.fixture(scope="module")
def project_original(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return prepared(tmp_path_factory, build_project)


@pytest.fixture
def project(tmp_path: Path, project_original: Prepared, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of build_project's project, this test's own; aliases mirrored later (MLflow is unreachable)."""
    monkeypatch.setenv("GOVERN_REGISTRY_MIRROR", "background")  # the user's default: the write does not wait
    return project_original.copy_to(tmp_path / "project")


def ledger_of(project: Path) -> Ledger:
    return Ledger(project / "audit" / "ledger.duckdb")


def refused(project: Path, *args: str, exit_code: int = 1) -> str:
    """A refusal: one line, the exit code, nothing appended."""
    before = ledger_of(project).head()
    result = run_cli(*args, cwd=project)
    assert result.exit_code == exit_code, result.output
    assert ledger_of(project).head() == before, "a refused command wrote nothing"
    [line] = result.output.strip().splitlines()
    return line


def as_person(project: Path, name: str, email: str) -> None:
    git(project, "config", "user.name", name)
    git(project, "config", "user.email", email)


def request(project: Path, version: str, stage: str, reason: str = "better recall") -> int:
    answer = json.loads(ok(project, "request-promotion", M, version, "--to", stage, "--reason", reason, "--json"))
    return answer["request"]


def test_an_approved_request_promotes_and_names_who_asked_who_approved_and_why(project: Path) -> None:
    number = request(project, "1", "staging", "ready for shadow traffic")
    assert json.loads(ok(project, "requests", "--json"))[0]["request_seq"] == number
    as_person(project, "Pat Approver", "pat@example.com")

    printed = ok(project, "approve", str(number), "--reason", "metrics reviewed")

    approval, promotion = ledger_of(project).read(types=["model.promotion_approved", "model.promoted"])
    assert approval.payload["request_seq"] == number and approval.payload["reason"] == "metrics reviewed"
    assert promotion.payload["request_seq"] == number and promotion.payload["to_stage"] == "staging"
    assert promotion.payload["approver"] == "Pat Approver <pat@example.com>"
    assert promotion.payload["reason"] == "ready for shadow traffic", "the promotion keeps the requester's reason"
    [requested] = ledger_of(project).read(types=["model.promotion_requested"])
    assert requested.actor == ACTOR and requested.payload["evidence"]["trained_by"] == TRAINER
    assert "model.promoted" in printed
    [row] = json.loads(ok(project, "requests", "--state", "approved", "--json"))
    assert (row["state"], row["decided_by"], row["decision_seq"]) == ("approved", promotion.actor, approval.seq)
    assert json.loads(ok(project, "requests", "--json")) == [], "nothing pending any more"


def test_the_requester_cannot_approve_their_own_request(project: Path) -> None:
    number = request(project, "1", "staging")
    line = refused(project, "approve", str(number), "--reason", "looks fine to me")
    assert line == (
        f"Error: Four-eyes rule: {ACTOR} asked for request {number} and cannot approve it; "
        "another approver must approve it"
    )


def test_the_trainer_cannot_approve_even_under_another_git_name_once_linked(project: Path) -> None:
    number = request(project, "1", "staging")
    as_person(project, "Tess Trainer", "tess@example.com")
    assert "Four-eyes rule: Tess Trainer <tess@example.com> trained version 1 of churn" in refused(
        project, "approve", str(number), "--reason", "mine, but good"
    )
    as_person(project, "T. Trainer", "t.trainer@home.example")  # the self-attested way round it, locally
    ok(project, "principals", "add", "tess", "--role", "scientist")
    ok(project, "principals", "link", "tess", TRAINER)
    ok(project, "principals", "link", "tess", "T. Trainer <t.trainer@home.example>")
    line = refused(project, "approve", str(number), "--reason", "mine, but good")
    assert "Four-eyes rule: T. Trainer <t.trainer@home.example> trained version 1 of churn (as " in line
    identities = json.loads(ok(project, "principals", "identities", "--json"))
    assert [row["identity"] for row in identities] == [TRAINER, "T. Trainer <t.trainer@home.example>"]


def test_a_failing_gate_is_shown_with_the_request_and_refuses_the_approval(project: Path) -> None:
    for version in ("1", "2"):
        as_person(project, "Ada Auditor", "ada@example.com")
        number = request(project, version, "staging")
        as_person(project, "Pat Approver", "pat@example.com")
        ok(project, "approve", str(number), "--reason", "staging has no gates")
    as_person(project, "Sam Scientist", "sam@example.com")
    printed = ok(project, "request-promotion", M, "2", "--to", "production", "--reason", "faster")
    assert "gate validation.f1 >= 0.9: FAILS (0.85)" in printed
    assert "gate reproduction.verified: FAILS (no reproduction recorded)" in printed
    number = json.loads(ok(project, "requests", "--json"))[0]["request_seq"]
    as_person(project, "Pat Approver", "pat@example.com")

    line = refused(project, "approve", str(number), "--reason", "ship it")

    assert line == (
        "Error: Version 2 of churn does not pass the gates of 'production' (govern.toml: `registry.gates`): "
        "validation.f1 >= 0.9 (seen: 0.85); reproduction.verified (seen: no reproduction recorded)"
    )
    ok(project, "reject", str(number), "--reason", "below the bar")
    assert json.loads(ok(project, "requests", "--state", "rejected", "--json"))[0]["decision_reason"] == "below the bar"


def test_gates_pass_once_the_metric_is_high_enough_and_ci_verified_the_commit(project: Path) -> None:
    as_person(project, "Sam Scientist", "sam@example.com")
    first = request(project, "1", "staging")
    as_person(project, "Pat Approver", "pat@example.com")
    ok(project, "approve", str(first), "--reason", "ok")
    verdict = ReproductionVerified("a" * 40, "exact", [], [], {}, {}, 1.0, {"system": "test"})
    ledger_of(project).append([PendingEvent(verdict, actor="ci", occurred_at=utc_now(), git_commit="a" * 40)])
    as_person(project, "Sam Scientist", "sam@example.com")
    second = request(project, "1", "production")
    as_person(project, "Pat Approver", "pat@example.com")

    ok(project, "approve", str(second), "--reason", "gates pass")

    [approval] = ledger_of(project).read(types=["model.promotion_approved"])[-1:]
    assert [(g["gate"], g["passed"]) for g in approval.payload["gates"]] == [
        ("validation.f1 >= 0.9", True),
        ("reproduction.verified", True),
    ]


@pytest.mark.parametrize(
    ("args", "message", "exit_code"),
    [
        (["approve", "99", "--reason", "x"], "No promotion request 99: `govern requests` lists the pending ones", 1),
        (["approve", "first", "--reason", "x"], "'first' is not a request number: `govern requests` lists them", 2),
        (["reject", "0", "--reason", "x"], "'0' is not a request number", 2),
        (["request-promotion", M, "1", "--to", "prod", "--reason", "x"], "Unknown stage 'prod'", 2),
        (["request-promotion", M, "1", "--to", "production", "--reason", "x"], "promote it to 'staging' first", 1),
        (["request-promotion", M, "7", "--to", "staging", "--reason", "x"], "has no version '7'", 1),
        (["request-promotion", M, "1", "--to", "staging", "--reason", " "], "--reason must not be empty", 2),
        (["requests", "--state", "open"], "Unknown request state 'open': use one of pending, approved", 2),
        (["principals", "link", "nobody", TRAINER], "No principal 'nobody': add it first", 1),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(
    project: Path, args: list[str], message: str, exit_code: int
) -> None:
    assert message in refused(project, *args, exit_code=exit_code)


def test_one_open_request_per_version_and_stage_and_a_decided_one_stays_decided(project: Path) -> None:
    number = request(project, "1", "staging")
    line = refused(project, "request-promotion", M, "1", "--to", "staging", "--reason", "again", exit_code=2)
    assert f"Request {number} already asks for version 1 of churn to enter 'staging'" in line
    ok(project, "reject", str(number), "--reason", "withdrawn: wrong data cut")
    line = refused(project, "reject", str(number), "--reason", "twice", exit_code=2)
    assert line.startswith(f"Error: Request {number} was rejected already, by {ACTOR} (seq ")
    assert request(project, "1", "staging") > number, "asking again after a decision is allowed"


def test_a_project_that_requires_approval_refuses_direct_promotion(project: Path) -> None:
    toml = project / "govern.toml"
    toml.write_text(toml.read_text().replace("[registry]\n", "[registry]\nrequire_approval = true\n"))
    line = refused(project, "promote", M, "1", "--to", "staging", "--reason", "quick")
    assert line == (
        "Error: Promotions to 'staging' here need an approved request (govern.toml: `registry.require_approval`): "
        "ask with `govern request-promotion churn 1 --to staging --reason ...` (POST /promotion-requests), and an "
        "approver who neither asked nor trained approves it"
    )


def test_a_linked_identity_belongs_to_one_principal(project: Path) -> None:
    ok(project, "principals", "add", "tess", "--role", "scientist")
    ok(project, "principals", "add", "tom", "--role", "scientist")
    ok(project, "principals", "link", "tess", TRAINER)
    line = refused(project, "principals", "link", "tom", "tess trainer <TESS@example.com>", exit_code=2)
    assert line == "Error: tess trainer <TESS@example.com> is linked to tess already: one identity names one person"
    assert "is not a git identity" in refused(project, "principals", "link", "tom", "tom", exit_code=2)


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ('{ production = ["f1 >> 0.9"] }', "'f1 >> 0.9' is not a gate"),
        ('{ prod = ["f1 >= 0.9"] }', "`registry.gates` names stage 'prod', which `registry.stages` does not have"),
        ('{ production = "f1 >= 0.9" }', "`registry.gates.production` must be a list of gates"),
        ('{ production = ["f1 >= nan"] }', "'f1 >= nan' is not a gate"),
    ],
)
def test_misdeclared_gates_are_a_configuration_error(project: Path, gates: str, message: str) -> None:
    toml = project / "govern.toml"
    toml.write_text(toml.read_text().split("gates = ")[0] + f"gates = {gates}\n")
    assert message in refused(project, "requests")


def test_an_approver_sees_every_trainer_of_the_model_file_with_their_identitys_strength(project: Path) -> None:
    from govern.api import approvals
    from govern.envelope import PendingEvent, utc_now
    from govern.events import TrainingCompleted

    rerun = TrainingCompleted(
        git={"commit": "c" * 40, "branch": "main", "dirty_paths": []}, dvc_lock_sha256="0" * 64, targets=[],
        stages=[], params={}, metrics={}, outputs=[], datasets=[],
        models=[{"name": M, "path": "model.pkl", "sha256": f"{'1':0>64}"}], environment={}, duration_s=1.0,
        run_cache_hit=True,
    )  # fmt: skip
    rita = "Rita Rerun <rita@example.com>"
    ledger_of(project).append([PendingEvent(rerun, actor=rita, occurred_at=utc_now(), git_commit="c" * 40)])
    number = request(project, "1", "staging")

    shown = approvals.evidence(project_at(project, writing=False), number)["trainers_shown"]

    assert [who.split(" (")[0] for who in shown] == [TRAINER, rita], "both trainings of the file"
    assert all("(self-asserted" in who for who in shown), "a git identity is shown as what it is"
    as_person(project, "Rita Rerun", "rita@example.com")
    assert "Four-eyes rule: Rita Rerun <rita@example.com> trained" in refused(
        project, "approve", str(number), "--reason", "my rerun, but good"
    )
