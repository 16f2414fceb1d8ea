"""Promotions, deprecations, deployments and point-in-time answers, on a demo with three versions."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import commit_all, ok, run_cli, tracking_uri
from support.tracking import mlflow_client

from govern.storage.duckdb_log import Ledger

M = "breast-cancer-classifier"
MICRO = timedelta(microseconds=1)
MILLI = timedelta(milliseconds=1)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def head(project: Path) -> tuple[int, str] | None:
    return Ledger(project / "audit" / "ledger.duckdb").head()


def production(project: Path, app: str, at: datetime | str) -> dict:
    moment = at if isinstance(at, str) else iso(at)
    return json.loads(ok(project, "audit", "production", "--app", app, "--at", moment, "--json"))


def after_last_event(project: Path) -> datetime:
    """An instant just after the ledger's newest event: deployments are dated when the versions could serve."""
    [last] = Ledger(project / "audit" / "ledger.duckdb").read(limit=1)
    return last.occurred_at.replace(tzinfo=UTC) + MILLI


def play_scenario(project: Path) -> dict[str, datetime]:
    """Three versions through the stages, two apps, a replacement, a retirement; returns the instants used.

    A deployment dated T needs its version in production at T, so each instant follows the promotion
    before it (T1 < T1h < T4 < T2 in one app, T3 with microseconds), all of them within seconds of now.
    """
    times: dict[str, datetime] = {}
    ok(project, "promote", M, "1", "--to", "staging", "--reason", "validation passed")
    ok(project, "promote", M, "1", "--to", "production", "--reason", "go live", "--approver", "Bob <bob@example.com>")
    times["T1"] = after_last_event(project)
    times["T1h"] = times["T1"] + 10 * MILLI
    ok(project, "deploy", M, "1", "--app", "scoring", "--at", iso(times["T1"]))
    ok(project, "deploy", M, "1", "--app", "triage", "--at", iso(times["T1h"]))
    ok(project, "promote", M, "2", "--to", "staging", "--reason", "better recall")
    ok(project, "promote", M, "2", "--to", "production", "--reason", "approved by committee")
    times["T2"] = after_last_event(project)
    ok(project, "deploy", M, "2", "--app", "scoring", "--at", iso(times["T2"]))
    times["T4"] = times["T2"] + 10 * MILLI
    ok(project, "retire", "--app", "triage", "--at", times["T4"].astimezone(timezone(timedelta(hours=1))).isoformat())
    ok(project, "promote", M, "3", "--to", "staging", "--reason", "candidate")
    ok(project, "promote", M, "3", "--to", "production", "--reason", "best so far")
    times["T3"] = (after_last_event(project) + timedelta(seconds=1)).replace(microsecond=123456)
    ok(project, "deploy", M, "3", "--app", "scoring", "--at", iso(times["T3"]))
    return times


@pytest.fixture
def scenario(three_versions: Path) -> Path:
    three_versions.joinpath(".times.json").write_text(
        json.dumps({name: iso(moment) for name, moment in play_scenario(three_versions).items()})
    )
    return three_versions


def times_of(scenario: Path) -> dict[str, datetime]:
    return {
        name: datetime.fromisoformat(text) for name, text in json.loads((scenario / ".times.json").read_text()).items()
    }


def test_production_answers_are_right_at_every_boundary(scenario: Path) -> None:
    t = times_of(scenario)

    def served(app: str, at: datetime) -> str | None:
        return production(scenario, app, at)["version"]

    assert served("scoring", t["T1"] - MICRO) is None
    assert served("scoring", t["T1"]) == "1", "a window includes its start"
    assert served("scoring", t["T1"] + (t["T2"] - t["T1"]) / 2) == "1"
    assert served("scoring", t["T2"] - MICRO) == "1"
    assert served("scoring", t["T2"]) == "2", "at the replacement instant the successor serves"
    assert served("scoring", t["T3"] - MICRO) == "2"
    assert served("scoring", t["T3"]) == "3"
    assert served("scoring", max(datetime.now(UTC), t["T3"])) == "3"
    assert served("triage", t["T1h"] - MICRO) is None
    assert served("triage", t["T1h"]) == "1"
    assert served("triage", t["T4"] - MICRO) == "1"
    assert served("triage", t["T4"]) is None, "a window excludes its end"


def test_production_json_has_the_documented_shape(scenario: Path) -> None:
    t = times_of(scenario)
    between = (t["T2"] + (t["T3"] - t["T2"]) / 2).astimezone(timezone(timedelta(hours=5))).isoformat()
    answer = production(scenario, "scoring", between)
    assert {"app", "env", "model", "version", "start", "end", "git_commit"} <= set(answer)
    assert answer["app"] == "scoring" and answer["env"] == "production" and answer["model"] == M
    assert answer["start"] == iso(t["T2"]) and answer["end"] == iso(t["T3"])
    assert answer["end"].endswith(".123456Z"), "microseconds survive storage and output"
    trainings = Ledger(scenario / "audit" / "ledger.duckdb").read(types=["training.completed"])
    assert answer["trained_at_commit"] == trainings[1].git_commit and answer["training_seq"] == trainings[1].seq
    [locked] = [
        e for e in Ledger(scenario / "audit" / "ledger.duckdb").read(types=["training.locked"])
        if e.payload["training_event_id"] == trainings[1].event_id
    ]  # fmt: skip
    assert answer["git_commit"] == locked.payload["commit"], "the commit to check out: its dvc.lock rebuilds it"

    nothing = production(scenario, "scoring", "2025-06-01T00:00:00Z")
    assert nothing["app"] == "scoring" and nothing["model"] is None and nothing["version"] is None
    assert nothing["start"] is None and nothing["end"] is None
    human = run_cli("audit", "production", "--app", "scoring", "--at", "2025-06-01T00:00:00Z", cwd=scenario)
    assert human.exit_code == 0 and human.output.startswith("Nothing deployed to scoring/production")


def test_each_window_names_the_commit_that_rebuilds_what_served_as_production_does(scenario: Path) -> None:
    """A spot trial found `audit windows` giving the training's commit where `audit production`, for the same
    window, gave the lock commit (the one whose dvc.lock rebuilds the model): one auditor, two answers."""
    windows = json.loads(ok(scenario, "audit", "windows", "--json"))
    assert windows
    for window in windows:
        answer = production(scenario, window["app"], window["start"])
        assert (answer["version"], answer["start"]) == (window["version"], window["start"])
        assert window["git_commit"] == answer["git_commit"], "the same commit to check out from both commands"
        assert window["trained_at_commit"] == answer["trained_at_commit"]
    assert any(w["git_commit"] != w["trained_at_commit"] for w in windows), "the lock commit follows the training's"


def test_windows_are_derived_half_open_intervals(scenario: Path) -> None:
    t = times_of(scenario)
    windows = json.loads(ok(scenario, "audit", "windows", "--json"))
    rows = [(w["app"], w["version"], w["start"], w["end"]) for w in windows]
    assert rows == [
        ("scoring", "1", iso(t["T1"]), iso(t["T2"])),
        ("scoring", "2", iso(t["T2"]), iso(t["T3"])),
        ("scoring", "3", iso(t["T3"]), None),
        ("triage", "1", iso(t["T1h"]), iso(t["T4"])),
    ]
    assert windows[0]["duration_s"] == (t["T2"] - t["T1"]).total_seconds()
    assert [w["version"] for w in json.loads(ok(scenario, "audit", "windows", "--app", "triage", "--json"))] == ["1"]
    ended = Ledger(scenario / "audit" / "ledger.duckdb").read(types=["deployment.ended"])
    assert [(e.payload["version"], e.payload["reason"]) for e in ended] == [
        ("1", "replaced"),
        ("1", "retired"),
        ("2", "replaced"),
    ]


def test_a_replacement_ends_and_starts_in_one_transaction(scenario: Path) -> None:
    events = Ledger(scenario / "audit" / "ledger.duckdb").read(types=["deployment.started", "deployment.ended"])
    replacement = [e for e in events if e.occurred_at == times_of(scenario)["T2"].replace(tzinfo=None)]
    assert [e.type for e in replacement] == ["deployment.ended", "deployment.started"]
    assert replacement[0].seq + 1 == replacement[1].seq
    assert replacement[0].recorded_at == replacement[1].recorded_at


def test_promotions_record_who_approved_what_and_why(scenario: Path) -> None:
    promotions = Ledger(scenario / "audit" / "ledger.duckdb").read(types=["model.promoted"])
    first_production = promotions[1].payload
    assert first_production["from_stage"] == "staging" and first_production["to_stage"] == "production"
    assert first_production["approver"] == "Bob <bob@example.com>"
    assert first_production["reason"] == "go live" and first_production["forced"] is False
    assert promotions[0].payload["approver"] == promotions[0].actor, "the approver defaults to the actor"

    client = mlflow_client(tracking_uri(scenario))
    assert str(client.get_model_version_by_alias(M, "production").version) == "3"
    assert str(client.get_model_version_by_alias(M, "staging").version) == "3"


def test_gto_reads_govern_tags_and_agrees(scenario: Path, isolated_env: dict[str, str]) -> None:
    def gto(*args: str) -> object:
        done = subprocess.run(["gto", *args], cwd=scenario, env=isolated_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    shown = gto("show", "--json")
    assert shown[M]["stage"] == {"production": "v3.0.0", "staging": "v3.0.0"}
    assert shown[M]["version"] == "v3.0.0"

    history = gto("history", M, "--json")
    assignments = [
        (h["version"], h["stage"]) for h in sorted(history, key=lambda h: h["timestamp"]) if h["event"] == "assignment"
    ]
    promotions = Ledger(scenario / "audit" / "ledger.duckdb").read(types=["model.promoted"])
    assert assignments == [(f"v{p.payload['version']}.0.0", p.payload["to_stage"]) for p in promotions]
    assert all(p.payload["gto_tag"] == f"{M}#{p.payload['to_stage']}#{i}" for i, p in enumerate(promotions, start=1))


def refused(project: Path, *args: str, exit_code: int = 1) -> str:
    """The command fails with one clear line and leaves the ledger as it was."""
    before = head(project)
    result = run_cli(*args, cwd=project)
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    assert head(project) == before
    return lines[0]


def test_refusals_leave_the_ledger_unchanged(three_versions: Path) -> None:
    p = three_versions
    assert "promote it to 'staging' first, or pass --force" in refused(
        p, "promote", M, "1", "--to", "production", "--reason", "hurry"
    )
    assert "Unknown model 'no-such-model': registered models are breast-cancer-classifier" in refused(
        p, "promote", "no-such-model", "1", "--to", "staging", "--reason", "r"
    )
    assert "has no version '9': its versions are 1, 2, 3" in refused(
        p, "promote", M, "9", "--to", "staging", "--reason", "r"
    )
    assert "Unknown stage 'prod'" in refused(p, "promote", M, "1", "--to", "prod", "--reason", "r", exit_code=2)
    assert "--reason must not be empty" in refused(
        p, "promote", M, "1", "--to", "staging", "--reason", "  ", exit_code=2
    )
    message = refused(p, "deploy", M, "1", "--app", "scoring")
    assert f"run `govern promote {M} 1 --to production --reason ...` first" in message
    assert "has no time zone" in refused(p, "deploy", M, "1", "--app", "x", "--at", "2026-01-01T00:00:00", exit_code=2)
    assert "is in the future" in refused(p, "deploy", M, "1", "--app", "x", "--at", "2999-01-01T00:00:00Z", exit_code=2)
    assert "Nothing was ever deployed to nowhere/production" in refused(p, "retire", "--app", "nowhere")
    assert "not a valid name" in refused(p, "deploy", M, "1", "--app", "a/b", exit_code=2)


def test_force_skips_stages_and_is_recorded(three_versions: Path) -> None:
    ok(three_versions, "promote", M, "2", "--to", "production", "--reason", "hotfix", "--force")
    promoted = Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["model.promoted"])[-1]
    assert promoted.payload["forced"] is True and promoted.payload["from_stage"] is None


def test_four_eyes_rule_refuses_the_trainer_as_approver(three_versions: Path) -> None:
    pyproject = three_versions / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool.govern.registry]\nfour_eyes = true\n")
    commit_all(three_versions, "four eyes")

    message = refused(three_versions, "promote", M, "1", "--to", "staging", "--reason", "mine")
    assert "Four-eyes rule: Ada Auditor <ada@example.com> trained version 1" in message
    assert "Four-eyes rule" in refused(
        three_versions, "promote", M, "1", "--to", "staging", "--reason", "mine", "--approver", "ada@example.com"
    )
    ok(
        three_versions,
        "promote",
        M,
        "1",
        "--to",
        "staging",
        "--reason",
        "reviewed",
        "--approver",
        "Bob <bob@example.com>",
    )


def test_a_deprecated_version_cannot_be_promoted_or_deployed(
    three_versions: Path, isolated_env: dict[str, str]
) -> None:
    p = three_versions
    ok(p, "promote", M, "2", "--to", "staging", "--reason", "r")
    ok(p, "promote", M, "2", "--to", "production", "--reason", "r")
    ok(p, "deprecate", M, "2", "--reason", "bias found in audit")
    assert "is deprecated" in refused(p, "deploy", M, "2", "--app", "scoring")
    assert "is deprecated" in refused(p, "promote", M, "2", "--to", "staging", "--reason", "again", "--force")
    assert "already deprecated" in refused(p, "deprecate", M, "2", "--reason", "twice", exit_code=2)

    client = mlflow_client(tracking_uri(p))
    version = client.get_model_version(M, "2")
    assert version.aliases == [] and version.tags["govern.deprecated"] == "true"
    done = subprocess.run(["gto", "show", "--json"], cwd=p, env=isolated_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "production" not in json.loads(done.stdout)[M]["stage"]


def test_a_deployment_earlier_than_the_slot_history_is_refused(three_versions: Path) -> None:
    ok(three_versions, "promote", M, "1", "--to", "production", "--reason", "r", "--force")
    deployed = after_last_event(three_versions)
    ok(three_versions, "deploy", M, "1", "--app", "scoring", "--at", iso(deployed))
    message = refused(three_versions, "retire", "--app", "scoring", "--at", iso(deployed - MICRO), exit_code=2)
    assert "history is appended, not rewritten" in message
    assert "already serves scoring/production" in refused(
        three_versions, "deploy", M, "1", "--app", "scoring", exit_code=2
    )


def test_a_deploy_or_retire_without_at_is_dated_under_the_lock_never_before_the_slots_latest_event(
    three_versions: Path,
) -> None:
    """Another writer (or a machine whose clock runs ahead) dated the slot's latest event after this one's now."""
    from govern.envelope import PendingEvent, utc_now
    from govern.events import DeploymentStarted

    ok(three_versions, "promote", M, "1", "--to", "production", "--reason", "r", "--force")
    ledger = Ledger(three_versions / "audit" / "ledger.duckdb")
    ahead = utc_now() + timedelta(milliseconds=300)
    fact = DeploymentStarted(app="scoring", env="production", model=M, version="1")
    ledger.append([PendingEvent(fact, actor="the other machine", occurred_at=ahead)])

    ok(three_versions, "retire", "--app", "scoring")
    [retired] = ledger.read(limit=1)
    assert retired.type == "deployment.ended" and retired.occurred_at == ahead.replace(tzinfo=None)
    ok(three_versions, "deploy", M, "1", "--app", "scoring")
    [started] = ledger.read(limit=1)
    assert started.type == "deployment.started" and started.occurred_at >= ahead.replace(tzinfo=None)
    assert "history is appended, not rewritten" in refused(
        three_versions, "retire", "--app", "scoring", "--at", iso(ahead - MICRO), exit_code=2
    ), "an explicit --at before the slot's latest event is still refused"


def test_history_lists_every_event_of_a_model_in_order(scenario: Path) -> None:
    events = json.loads(ok(scenario, "audit", "history", M, "2", "--json"))
    types = [e["type"] for e in events]
    assert types == [
        "training.completed",
        "model.registered",
        "training.locked",  # its lock commit, found when the version was promoted
        "model.promoted",
        "model.promoted",
        "deployment.started",
        "deployment.ended",
    ]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    everything = json.loads(ok(scenario, "audit", "history", M, "--json"))
    assert len(everything) > len(events) and {e["subject"] for e in everything} >= {f"model:{M}@1", f"model:{M}@3"}
