"""Rules an auditor can rely on: time-aware gates, deprecation that sticks, one file one version, typed parameters.

The refusals themselves (one line, nothing written) are in tests/test_bad_input.py; these tests show what the
rules allow, what they record, and the messages that name when and where.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import commit_all, ok, run_cli, tracking_uri
from mlflow.tracking import MlflowClient

from govern.envelope import format_timestamp
from govern.ledger import Ledger

M = "breast-cancer-classifier"


def ledger_of(project: Path) -> Ledger:
    return Ledger(project / "audit" / "ledger.duckdb")


def last_of(project: Path, kind: str):  # noqa: ANN201 - a RecordedEvent
    return ledger_of(project).read(types=[kind])[-1]


def refused(project: Path, *args: str, exit_code: int = 1) -> str:
    before = ledger_of(project).head()
    result = run_cli(*args, cwd=project)
    assert result.exit_code == exit_code, result.output
    assert ledger_of(project).head() == before
    [line] = result.output.strip().splitlines()
    return line


def test_a_deployment_dated_before_the_version_held_its_stage_is_refused_naming_when_it_got_it(
    three_versions: Path,
) -> None:
    registered = last_of(three_versions, "model.registered").occurred_at.replace(tzinfo=UTC)  # version 3
    ok(three_versions, "promote", M, "3", "--to", "staging", "--reason", "candidate")
    ok(three_versions, "promote", M, "3", "--to", "production", "--reason", "approved")
    promoted = last_of(three_versions, "model.promoted").occurred_at.replace(tzinfo=UTC)
    between = registered + (promoted - registered) / 2

    message = refused(three_versions, "deploy", M, "3", "--app", "scoring", "--at", format_timestamp(between))

    assert f"did not hold at {format_timestamp(between)}: it got 'production' at {format_timestamp(promoted)}" in (
        message
    )
    after = promoted + timedelta(microseconds=1)
    ok(three_versions, "deploy", M, "3", "--app", "scoring", "--at", format_timestamp(after))
    before = json.loads(
        ok(three_versions, "audit", "production", "--app", "scoring", "--at", format_timestamp(between), "--json")
    )
    assert before["version"] is None, "nothing served before the recorded start"
    earlier = run_cli("audit", "production", "--app", "scoring", "--at", format_timestamp(between), cwd=three_versions)
    assert earlier.exit_code == 0 and earlier.output.startswith("Nothing deployed to scoring/production"), (
        "a known app with nothing in range is an answer, not an error"
    )


def test_a_past_deployment_is_judged_by_the_stage_as_it_stood_then(three_versions: Path) -> None:
    """Version 1 held production, then version 2 took it: a deployment of 1 dated while it held the stage stands."""
    ok(three_versions, "promote", M, "1", "--to", "production", "--reason", "first", "--force")
    held = last_of(three_versions, "model.promoted").occurred_at.replace(tzinfo=UTC) + timedelta(microseconds=1)
    ok(three_versions, "promote", M, "2", "--to", "production", "--reason", "better", "--force")

    ok(three_versions, "deploy", M, "1", "--app", "scoring", "--at", format_timestamp(held))

    message = refused(three_versions, "deploy", M, "1", "--app", "triage")
    assert "which version 1 of breast-cancer-classifier no longer holds (version 2 does)" in message


def test_deprecating_a_serving_version_needs_force_and_then_predictions_need_allow_deprecated(
    three_versions: Path, tmp_path: Path
) -> None:
    ok(three_versions, "promote", M, "1", "--to", "production", "--reason", "r", "--force")
    ok(three_versions, "deploy", M, "1", "--app", "scoring")
    ok(three_versions, "deploy", M, "1", "--app", "triage", "--env", "production")
    assert "serves scoring/production, triage/production" in refused(
        three_versions, "deprecate", M, "1", "--reason", "x"
    )

    forced = run_cli("deprecate", M, "1", "--reason", "bias found", "--force", cwd=three_versions)
    assert forced.exit_code == 0, forced.output
    assert "still serves scoring/production, triage/production" in forced.output
    deprecated = last_of(three_versions, "model.deprecated").payload
    assert deprecated["forced"] is True and deprecated["serving"] == ["scoring/production", "triage/production"]

    source = three_versions / "data" / "raw" / "breast_cancer.csv"
    args = ("predict", "--app", "scoring", "--input", str(source), "--output", str(tmp_path / "p.csv"), "--record")
    assert "--allow-deprecated" in refused(three_versions, *args)
    ok(three_versions, *args, "--allow-deprecated")
    recorded = last_of(three_versions, "inference.recorded").payload
    assert recorded["version"] == "1" and recorded["allowed_deprecated"] is True


def test_the_same_bytes_from_the_same_commit_are_one_version(reproduced_demo: Path) -> None:
    """Outputs removed and the pipeline run again: the same model file, so no second MLflow version."""
    (reproduced_demo / "models" / "model.pkl").unlink()

    result = run_cli("repro", "--allow-dirty", cwd=reproduced_demo)

    assert result.exit_code == 0, result.output
    assert f"{M}: the same file from the same commit is version 1 already; not registered again" in result.output
    assert [e.payload["version"] for e in ledger_of(reproduced_demo).read(types=["model.registered"])] == ["1"]
    client = MlflowClient(tracking_uri=tracking_uri(reproduced_demo))
    assert [str(v.version) for v in client.search_model_versions(f"name = '{M}'")] == ["1"]


def test_a_version_with_the_file_of_a_deprecated_one_is_marked_and_its_promotion_needs_force(
    reproduced_demo: Path,
) -> None:
    """Only the evaluation code changed: a new training, a new version, the same model file as version 1."""
    evaluate = reproduced_demo / "pipelines" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# reviewed\n")
    commit_all(reproduced_demo, "a comment in the evaluation")
    ok(reproduced_demo, "repro", "--commit")
    second = last_of(reproduced_demo, "model.registered").payload
    assert second["version"] == "2" and second["same_artifact_as"] == ["1"]
    history = ok(reproduced_demo, "audit", "history", M, "2")
    assert "same file as version(s) 1" in history

    ok(reproduced_demo, "deprecate", M, "1", "--reason", "leakage in the source data")
    message = refused(reproduced_demo, "promote", M, "2", "--to", "staging", "--reason", "retry")
    assert "is the same model file (sha256) as version 1, deprecated at" in message
    assert "(leakage in the source data)" in message and "--force" in message
    ok(reproduced_demo, "promote", M, "2", "--to", "staging", "--reason", "reviewed: the leak is fixed", "--force")
    assert last_of(reproduced_demo, "model.promoted").payload["forced"] is True


def test_environments_come_from_configuration(three_versions: Path) -> None:
    pyproject = three_versions / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text() + '\n[tool.govern.deploy]\nenvironments = ["staging", "production", "shadow"]\n'
    )
    commit_all(three_versions, "a shadow environment, without a stage gate")
    ok(three_versions, "deploy", M, "2", "--app", "scoring", "--env", "shadow")
    assert last_of(three_versions, "deployment.started").payload["env"] == "shadow"
    message = refused(three_versions, "deploy", M, "2", "--app", "scoring", "--env", "shadw", exit_code=2)
    assert "the environments are staging, production, shadow" in message


def test_named_query_instants_take_any_offset_and_audit_history_shows_stages_approvers_and_reasons(
    three_versions: Path,
) -> None:
    ok(three_versions, "promote", M, "2", "--to", "staging", "--reason", "recall up", "--approver", "Bob <b@x.org>")
    ok(three_versions, "promote", M, "2", "--to", "production", "--reason", "committee")
    ok(three_versions, "deploy", M, "2", "--app", "scoring")
    started = last_of(three_versions, "deployment.started").occurred_at.replace(tzinfo=UTC)
    at = (started + timedelta(microseconds=1)).astimezone(datetime.now().astimezone().tzinfo)
    served = ok(
        three_versions, "audit", "run", "production_at", "--param", "app=scoring", "--param", "env=production",
        "--param", f"at={at.isoformat()}", "--json",
    )  # fmt: skip
    assert [row["version"] for row in json.loads(served)] == ["2"]

    history = ok(three_versions, "audit", "history", M, "2")
    assert "staging -> production; approved by Ada Auditor <ada@example.com>; reason: committee" in history
    assert "no stage -> staging; approved by Bob <b@x.org>; reason: recall up" in history
    assert "version 2 at scoring/production" in history


def test_an_unreachable_mlflow_leaves_the_alias_pending_until_govern_mirror(
    three_versions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    promoted = run_cli("promote", M, "3", "--to", "staging", "--reason", "r", cwd=three_versions)

    assert promoted.exit_code == 0, promoted.output
    assert "the MLflow registry is not updated yet (`govern mirror` retries)" in promoted.output
    state = json.loads(ok(three_versions, "status", "--json"))
    [pending] = state["pending_mirrors"]["registry"]
    assert pending["model"] == M and pending["through_seq"] == last_of(three_versions, "model.promoted").seq
    assert f"the MLflow aliases of {M} wait for events up to seq" in ok(three_versions, "status")

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mirrored = ok(three_versions, "mirror")
    assert "registry.mirrored" in mirrored
    client = MlflowClient(tracking_uri=tracking_uri(three_versions))
    assert str(client.get_model_version_by_alias(M, "staging").version) == "3"
    assert json.loads(ok(three_versions, "status", "--json"))["pending_mirrors"]["registry"] == []
    assert "Nothing is pending." in ok(three_versions, "mirror")
