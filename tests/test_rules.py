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
from support.tracking import mlflow_client

from govern.envelope import format_timestamp
from govern.storage.duckdb_log import Ledger

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
    assert f"{M}: the same file (sha256) is version 1 already; not registered again" in result.output
    assert [e.payload["version"] for e in ledger_of(reproduced_demo).read(types=["model.registered"])] == ["1"]
    client = mlflow_client(tracking_uri(reproduced_demo))
    assert [str(v.version) for v in client.search_model_versions(f"name = '{M}'")] == ["1"]


def test_the_same_model_file_trained_at_another_commit_is_the_same_version(reproduced_demo: Path) -> None:
    """Only the evaluation code changed: a new training, recorded and linked to version 1, no version 2."""
    evaluate = reproduced_demo / "pipelines" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# reviewed\n")
    commit_all(reproduced_demo, "a comment in the evaluation")

    output = ok(reproduced_demo, "repro", "--commit")

    assert f"{M}: the same file (sha256) is version 1 already" in output
    trainings = ledger_of(reproduced_demo).read(types=["training.completed"])
    assert len(trainings) == 2
    assert [m.get("registered_version") for m in trainings[-1].payload["models"]] == ["1"]
    assert [e.payload["version"] for e in ledger_of(reproduced_demo).read(types=["model.registered"])] == ["1"]
    client = mlflow_client(tracking_uri(reproduced_demo))
    assert [str(v.version) for v in client.search_model_versions(f"name = '{M}'")] == ["1"]


def test_a_failed_training_a_revert_and_a_rerun_register_no_phantom_version(reproduced_demo: Path) -> None:
    """The new user's sequence: a failing stage deleted the model; the code was put back (another commit); DVC
    restored the model from its cache. The same bytes: nothing new to register, so no version 2."""
    train = reproduced_demo / "pipelines" / "model.py"
    good = train.read_text()
    train.write_text(good.replace('if __name__ == "__main__":', 'if __name__ == "__main__":\n    raise SystemExit(2)'))
    commit_all(reproduced_demo, "a broken training")
    failed = run_cli("repro", cwd=reproduced_demo)
    assert failed.exit_code != 0
    assert not (reproduced_demo / "models" / "model.pkl").exists(), "the failing stage removed its output"
    train.write_text(good)
    commit_all(reproduced_demo, "the training put back")

    output = ok(reproduced_demo, "repro", "--commit")

    assert (reproduced_demo / "models" / "model.pkl").exists()
    assert [e.payload["version"] for e in ledger_of(reproduced_demo).read(types=["model.registered"])] == ["1"], output
    client = mlflow_client(tracking_uri(reproduced_demo))
    assert [str(v.version) for v in client.search_model_versions(f"name = '{M}'")] == ["1"]


def test_a_deprecated_version_retrained_stays_deprecated(reproduced_demo: Path) -> None:
    """Retraining the same file does not launder a deprecation through a new version number."""
    ok(reproduced_demo, "deprecate", M, "1", "--reason", "leakage in the source data")
    evaluate = reproduced_demo / "pipelines" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# reviewed\n")
    commit_all(reproduced_demo, "a comment in the evaluation")
    ok(reproduced_demo, "repro", "--commit")

    assert [e.payload["version"] for e in ledger_of(reproduced_demo).read(types=["model.registered"])] == ["1"]
    message = refused(reproduced_demo, "promote", M, "1", "--to", "staging", "--reason", "retry")
    assert "is deprecated" in message and "use another version" in message


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
    client = mlflow_client(tracking_uri(three_versions))
    assert str(client.get_model_version_by_alias(M, "staging").version) == "3"
    assert json.loads(ok(three_versions, "status", "--json"))["pending_mirrors"]["registry"] == []
    assert "Nothing is pending." in ok(three_versions, "mirror")


def test_a_training_mirrored_later_with_a_registered_file_registers_no_second_version(
    reproduced_demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow was down when the same model file was trained again: `govern mirror` (as the server's outbox does
    for a job's training) links it to version 1 and registers nothing."""
    evaluate = reproduced_demo / "pipelines" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# reviewed\n")
    commit_all(reproduced_demo, "a comment in the evaluation")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    ok(reproduced_demo, "repro")
    assert last_of(reproduced_demo, "training.completed").payload["mlflow"]["status"] == "pending"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    ok(reproduced_demo, "mirror")

    mirrored = last_of(reproduced_demo, "training.mirrored").payload
    assert mirrored["model_versions"] == [] and mirrored["reused_versions"] == [{"model": M, "version": "1"}]
    assert [e.payload["version"] for e in ledger_of(reproduced_demo).read(types=["model.registered"])] == ["1"]
    client = mlflow_client(tracking_uri(reproduced_demo))
    assert [str(v.version) for v in client.search_model_versions(f"name = '{M}'")] == ["1"]
