"""`govern ci verify` on the demo: exact, equivalent (with the evidence of each rule) and diverged.

A lock "made on another machine" is simulated on this one by a training whose model file has other bytes
for the same model: the test's copy of the demo pickles with the protocol named in DEMO_PICKLE_PROTOCOL,
so a training with protocol 4 writes another md5 than the protocol-5 reproduction, for identical behaviour.
Nothing here depends on bytes another machine produced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    another_blas_kernel,
    commit_all,
    git,
    isolate,
    pickling_with_protocol_from_the_environment,
    run_cli,
)

from govern.storage.duckdb_log import Ledger

MODEL = "models/model.pkl"
SPLITS = ["data/prepared/validation.csv", "data/prepared/test.csv"]


def govern(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "govern", *args], cwd=project, env=env, capture_output=True, text=True, check=False
    )


def ledger_of(project: Path) -> Ledger:
    return Ledger(project / "audit" / "ledger.duckdb")


def lock_md5(project: Path, path: str = MODEL) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return next(o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == path)


@pytest.fixture(scope="module")
def trained_elsewhere_original(tmp_path_factory: pytest.TempPathFactory, reproduced_demo_original: Path) -> Path:
    """The demo whose committed lock names a model pickled with protocol 4: same model, other bytes."""
    base = tmp_path_factory.mktemp("elsewhere")
    env = isolate(dict(os.environ), base / "home")
    project = base / "demo"
    shutil.copytree(reproduced_demo_original, project, symlinks=True)
    pickling_with_protocol_from_the_environment(project)
    commit_all(project, "pickle protocol from the environment", env=env)
    trained = govern(project, "repro", "--commit", env={**env, "DEMO_PICKLE_PROTOCOL": "4"})
    assert trained.returncode == 0, trained.stderr
    assert git(project, "status", "--porcelain", "--untracked-files=no", env=env) == ""
    return project


@pytest.fixture
def trained_elsewhere(tmp_path: Path, trained_elsewhere_original: Path) -> Path:
    copy = tmp_path / "demo"
    shutil.copytree(trained_elsewhere_original, copy, symlinks=True)
    return copy


def verify_json(project: Path, *args: str) -> tuple[int, dict]:
    result = run_cli("ci", "verify", "--json", *args, cwd=project)
    return result.exit_code, json.loads(result.stdout)


def test_a_lock_whose_model_bytes_differ_but_not_its_predictions_is_equivalent_with_evidence(
    trained_elsewhere: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    result = run_cli("ci", "verify", "--summary", str(summary), cwd=trained_elsewhere)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("equivalent: "), "one line: the outcome"
    [event] = ledger_of(trained_elsewhere).read(types=["reproduction.verified"])
    payload = event.payload
    assert payload["match"] == "equivalent" and payload["strict"] is False
    [model] = payload["differing_outputs"]
    assert (model["path"], model["rule"], model["equivalent"]) == (MODEL, "predictions", True)
    assert model["expected_md5"] == lock_md5(trained_elsewhere) != model["actual_md5"]
    evidence = model["evidence"]
    assert evidence["method"] == "predictions" and evidence["committed_model_from"] == "the workspace"
    assert evidence["data"] == SPLITS
    assert (evidence["rows"], evidence["rows_differing"], evidence["label_changes"]) == (228, 0, 0)
    assert evidence["max_abs_deviation"] == 0.0 and evidence["summary"] == "identical predictions on all 228 rows"
    assert set(evidence["files"]) == set(SPLITS) and evidence["files"][SPLITS[0]]["label_columns"] == ["prediction"]
    training = ledger_of(trained_elsewhere).read(types=["training.completed"])[-1]
    assert payload["training_event_id"] == training.event_id, "compared with the training that wrote the lock"
    assert payload["environment_differences"]["compared"] is True
    assert payload["environment"]["cpu"]["architecture"] and payload["environment"]["numeric_libraries"] is not None

    text = summary.read_text()
    assert text.splitlines()[0].startswith("## govern: ✅ equivalent: ")
    assert f"| `{MODEL}` | predictions | equivalent | {model['expected_md5']} | {model['actual_md5']} |" in text
    assert "identical predictions on all 228 rows (committed model from the workspace)" in text


def test_strict_refuses_an_equivalent_reproduction_and_records_that_it_did(trained_elsewhere: Path) -> None:
    code, verdict = verify_json(trained_elsewhere, "--strict")

    assert code == 1
    assert (verdict["verdict"], verdict["match"], verdict["passed"]) == ("verified", "equivalent", False)
    [event] = ledger_of(trained_elsewhere).read(types=["reproduction.verified"])
    assert event.payload["strict"] is True and event.payload["match"] == "equivalent"


def test_the_committed_model_is_fetched_from_mlflow_when_workspace_and_cache_lack_it(trained_elsewhere: Path) -> None:
    committed = lock_md5(trained_elsewhere)
    (trained_elsewhere / MODEL).unlink()
    shutil.rmtree(trained_elsewhere / ".dvc" / "cache")

    code, verdict = verify_json(trained_elsewhere)

    assert code == 0, verdict
    [model] = verdict["differing_outputs"]
    assert model["expected_md5"] == committed and model["equivalent"] is True
    assert re.fullmatch(r"MLflow \(version 2, run [0-9a-f]{32}\)", model["evidence"]["committed_model_from"])
    assert model["evidence"]["rows_differing"] == 0


def test_without_the_committed_model_file_the_model_is_judged_by_downstream_metrics_and_says_so(
    trained_elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (trained_elsewhere / MODEL).unlink()
    shutil.rmtree(trained_elsewhere / ".dvc" / "cache")
    with socket.socket() as probe:  # an MLflow server that is not there
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{probe.getsockname()[1]}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    code, verdict = verify_json(trained_elsewhere)

    assert code == 0, verdict
    assert verdict["match"] == "equivalent"
    [model] = verdict["differing_outputs"]
    evidence = model["evidence"]
    assert (model["rule"], evidence["method"], model["equivalent"]) == ("predictions", "downstream-metrics", True)
    assert evidence["note"].startswith(
        "not compared by predictions: the committed model file could not be had (not in the workspace; "
        "not in DVC's cache or remote; MLflow: "
    )
    assert evidence["metrics_files"] == ["metrics.json"] and evidence["metrics_compared"] == 10
    assert evidence["summary"] == "every metric identical"


def test_a_model_whose_predictions_change_diverges_even_when_its_metrics_do_not(
    reproduced_demo: Path, tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    """The committed model was fitted with another C; the metrics file committed beside it is this code's."""
    other = tmp_path / "params.yaml"
    other.write_text((reproduced_demo / "params.yaml").read_text().replace("C: 1.0", "C: 1.3"))
    train = [sys.executable, "pipelines/model.py", "train", "--train", "data/prepared/train.csv"]
    subprocess.run([*train, "--params", str(other), "--output", MODEL], cwd=reproduced_demo, check=True)
    subprocess.run(
        [sys.executable, "-m", "dvc", "commit", "-f", "-q"], cwd=reproduced_demo, env=isolated_env, check=True
    )
    commit_all(reproduced_demo, "a model that is not what this commit's code makes")

    summary = tmp_path / "summary.md"
    result = run_cli("ci", "verify", "--json", "--summary", str(summary), cwd=reproduced_demo)

    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert (verdict["verdict"], verdict["match"]) == ("diverged", "diverged")
    assert verdict["metric_deltas"] == {}, "every metric is identical, and the verdict is still diverged"
    [model] = verdict["differing_outputs"]
    assert (model["path"], model["rule"], model["equivalent"]) == (MODEL, "predictions", False)
    evidence = model["evidence"]
    assert evidence["rows_beyond_tolerance"] > 0 and evidence["max_abs_deviation"] > 1e-4
    assert evidence["summary"].startswith(f"{SPLITS[0]}: ") and "rows beyond tolerance" in evidence["summary"]
    [event] = ledger_of(reproduced_demo).read(types=["reproduction.diverged"])
    assert event.payload["differing_outputs"] == verdict["differing_outputs"]
    text = summary.read_text()
    assert text.splitlines()[0] == f"## govern: ❌ diverged: {verdict['commit'][:12]}: {MODEL} (predictions)"
    assert f"| `{MODEL}` | predictions | diverged |" in text


def test_a_stale_lock_diverges_and_names_the_inputs_it_records_otherwise(reproduced_demo: Path, tmp_path: Path) -> None:
    """A parameter changed and committed without reproducing: the lock describes another pipeline."""
    params = reproduced_demo / "params.yaml"
    params.write_text(params.read_text().replace("max_iter: 1000", "max_iter: 2000"))
    commit_all(reproduced_demo, "max_iter 2000, dvc.lock not remade")
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.govern.ci.models]\nrule = "exact"\n')  # not committed
    summary = tmp_path / "summary.md"

    result = run_cli("ci", "verify", "--json", "--summary", str(summary), cwd=reproduced_demo)

    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)
    assert verdict["match"] == "diverged"
    assert verdict["stale_inputs"] == [
        {"stage": "train", "kind": "param", "name": "train.max_iter", "committed": 1000, "actual": 2000}
    ]
    [model] = verdict["differing_outputs"]
    assert model["rule"] == "predictions", "the rules of the verified commit apply, not the uncommitted ones"
    assert model["equivalent"] is True, "the same model: max_iter changes the pickle, not the fit"
    assert verdict["notes"] == [
        f"The comparison rules of commit {verdict['commit'][:12]} apply (pyproject.toml [tool.govern]); the "
        "uncommitted changes to [tool.govern.ci] in your checkout do not, until you commit them"
    ]
    assert f"govern: note: {verdict['notes'][0]}" in result.stderr
    text = summary.read_text()
    assert text.splitlines()[0] == (
        f"## govern: ❌ diverged: {verdict['commit'][:12]}: its dvc.lock is stale (train.max_iter: 1000 -> 2000)"
    )
    assert "| train | `train.max_iter` | param | 1000 | 2000 |" in text and "govern repro --commit" in text


def test_the_verdict_names_the_machine_facts_that_differ_from_the_training(
    reproduced_demo: Path, isolated_env: dict[str, str]
) -> None:
    """Verified in a fresh process whose BLAS kernel was chosen by OPENBLAS_CORETYPE, unlike the training's."""
    kernel = another_blas_kernel()
    result = govern(reproduced_demo, "ci", "verify", "--json", env={**isolated_env, "OPENBLAS_CORETYPE": kernel})

    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["match"] in ("exact", "equivalent"), "a kernel changes bits, never behaviour"
    differences = verdict["environment_differences"]
    assert differences["compared"] is True and differences["not_recorded_at_training"] == []
    facts = {d["fact"]: d for d in differences["differences"]}
    assert facts["threads.env.OPENBLAS_CORETYPE"] == {
        "fact": "threads.env.OPENBLAS_CORETYPE",
        "training": os.environ.get("OPENBLAS_CORETYPE"),
        "verification": kernel,
    }
    assert "host" not in facts and "python" not in facts
    [event] = ledger_of(reproduced_demo).read(types=["reproduction.verified"])
    assert event.payload["environment_differences"] == differences
