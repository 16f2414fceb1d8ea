"""`govern repro --grid`: every combination a child run, the best selected and registered, the worktree untouched."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import commit_all, git, run_cli, tracking_uri
from support.tracking import mlflow_client

from govern.storage.duckdb_log import Ledger

M = "breast-cancer-classifier"


def test_a_2x3_grid_runs_six_children_selects_one_and_leaves_the_worktree_clean(reproduced_demo: Path) -> None:
    params_before = (reproduced_demo / "params.yaml").read_bytes()
    lock_before = (reproduced_demo / "dvc.lock").read_bytes()
    ledger = Ledger(reproduced_demo / "audit" / "ledger.duckdb")
    trainings_before = len(ledger.read(types=["training.completed"]))

    result = run_cli(
        "repro",
        "--grid",
        "train.imputer_strategy=median,mean",
        "--grid",
        "train.C=0.01,1,100",
        "--json",
        cwd=reproduced_demo,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("{"), "nothing but JSON on stdout"
    outcome = json.loads(result.stdout)

    children = ledger.read(types=["training.completed"])[trainings_before:]
    assert len(children) == 6
    assert len({c.payload["grid"]["id"] for c in children}) == 1
    assert sorted(
        (c.payload["params"]["train.imputer_strategy"], c.payload["params"]["train.C"]) for c in children
    ) == sorted((s, c) for s in ("median", "mean") for c in (0.01, 1, 100))
    [selected] = ledger.read(types=["experiment.selected"])
    values = {c.event_id: c.payload["metrics"]["validation.f1"] for c in children}
    assert selected.payload["winner_event_id"] == max(values, key=values.get)
    assert selected.payload["winner_value"] == max(values.values())
    assert len(selected.payload["candidates"]) == 6

    registrations = ledger.read(types=["model.registered"])
    assert [r.payload["version"] for r in registrations] == ["1", "2"], "only the winner is registered"
    assert registrations[-1].payload["training_event_id"] == selected.payload["winner_event_id"]
    assert outcome["registered"] == [{"model": M, "version": "2"}]

    client = mlflow_client(tracking_uri(reproduced_demo))
    parent = selected.payload["mlflow_parent_run_id"]
    experiment = client.get_experiment_by_name("govern-demo")
    child_runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert {r.info.run_id for r in child_runs} == {c.payload["mlflow"]["run_id"] for c in children}
    assert client.get_run(parent).data.tags["govern.grid_id"] == children[0].payload["grid"]["id"]
    winner_run = next(
        c["mlflow_run_id"]
        for c in selected.payload["candidates"]
        if c["event_id"] == selected.payload["winner_event_id"]
    )
    assert client.get_model_version(M, "2").run_id == winner_run

    assert git(reproduced_demo, "status", "--porcelain") == ""
    assert (reproduced_demo / "params.yaml").read_bytes() == params_before
    assert (reproduced_demo / "dvc.lock").read_bytes() == lock_before
    assert run_cli("repro", cwd=reproduced_demo).output.strip().endswith("already recorded (training seq 2).")


def test_apply_best_writes_the_winning_values_into_params_yaml(reproduced_demo: Path) -> None:
    result = run_cli(
        "repro", "--grid", "train.C=0.001,1", "--metric", "validation.accuracy", "--apply-best", cwd=reproduced_demo
    )
    assert result.exit_code == 0, result.output
    params = (reproduced_demo / "params.yaml").read_text()
    assert "C: 1\n" in params, params
    assert git(reproduced_demo, "status", "--porcelain") == "M params.yaml"


def test_grid_refuses_unknown_parameters_and_metrics(reproduced_demo: Path) -> None:
    before = Ledger(reproduced_demo / "audit" / "ledger.duckdb").head()
    unknown = run_cli("repro", "--grid", "train.depth=1,2", "--metric", "validation.f1", cwd=reproduced_demo)
    assert unknown.exit_code == 2 and "params.yaml has no parameter 'train.depth'" in unknown.output
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('metric = "validation.f1"', ""))
    commit_all(reproduced_demo, "no selection metric")
    no_metric = run_cli("repro", "--grid", "train.C=1,2", cwd=reproduced_demo)
    assert no_metric.exit_code == 2 and "No metric to select the best combination by" in no_metric.output
    assert Ledger(reproduced_demo / "audit" / "ledger.duckdb").head() == before
