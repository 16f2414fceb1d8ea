"""`govern predict`: the version's own inference command on the exact registered model file."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from conftest import ok, run_cli

from govern.storage.duckdb_log import Ledger

M = "breast-cancer-classifier"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_for_an_app_uses_the_deployed_version_and_records_one_event(
    three_versions: Path, tmp_path: Path
) -> None:
    ok(three_versions, "promote", M, "2", "--to", "production", "--reason", "r", "--force")
    ok(three_versions, "deploy", M, "2", "--app", "scoring")
    source = three_versions / "data" / "raw" / "breast_cancer.csv"
    before = len(Ledger(three_versions / "audit" / "ledger.duckdb").read())

    answer = json.loads(
        ok(
            three_versions,
            "predict",
            "--app",
            "scoring",
            "--input",
            str(source),
            "--output",
            str(tmp_path / "p.csv"),
            "--record",
            "--json",
        )
    )

    assert answer["model"] == M and answer["version"] == "2" and answer["rows"] == 569
    events = Ledger(three_versions / "audit" / "ledger.duckdb").read()
    assert len(events) == before + 1
    recorded = events[-1]
    assert recorded.type == "inference.recorded" and recorded.subject == f"model:{M}@2"
    assert recorded.payload["app"] == "scoring" and recorded.payload["env"] == "production"
    assert recorded.payload["rows"] == 569
    assert recorded.payload["input_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert recorded.payload["output_sha256"] == hashlib.sha256((tmp_path / "p.csv").read_bytes()).hexdigest()


def test_predict_uses_the_registered_file_of_an_older_version(three_versions: Path, tmp_path: Path) -> None:
    """The workspace holds version 3's model; version 1's comes from DVC's cache, checked by sha256."""
    source = three_versions / "data" / "raw" / "breast_cancer.csv"
    ok(three_versions, "predict", M, "1", "--input", str(source), "--output", str(tmp_path / "v1.csv"))
    ok(three_versions, "predict", M, "3", "--input", str(source), "--output", str(tmp_path / "v3.csv"))

    registered = {
        e.payload["version"]: e.payload
        for e in Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["model.registered"])
    }
    cached = (
        three_versions / ".dvc" / "cache" / "files" / "md5" / registered["1"]["md5"][:2] / registered["1"]["md5"][2:]
    )
    subprocess.run(
        [
            sys.executable,
            "pipelines/model.py",
            "infer",
            "--model",
            str(cached),
            "--input",
            str(source),
            "--output",
            str(tmp_path / "direct.csv"),
        ],
        cwd=three_versions,
        check=True,
    )
    assert rows(tmp_path / "v1.csv") == rows(tmp_path / "direct.csv")
    assert rows(tmp_path / "v1.csv") != rows(tmp_path / "v3.csv"), "C=1.0 and C=4.0 give different probabilities"
    assert len(Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["inference.recorded"])) == 0


def test_predict_without_a_deployment_or_with_both_forms_is_refused(three_versions: Path, tmp_path: Path) -> None:
    source = str(three_versions / "data" / "raw" / "breast_cancer.csv")
    nothing = run_cli(
        "predict", "--app", "scoring", "--input", source, "--output", str(tmp_path / "x.csv"), cwd=three_versions
    )
    assert (
        nothing.exit_code == 1 and "Unknown app 'scoring': deployments are recorded for nothing yet" in nothing.output
    )
    both = run_cli(
        "predict",
        M,
        "1",
        "--app",
        "scoring",
        "--input",
        source,
        "--output",
        str(tmp_path / "x.csv"),
        cwd=three_versions,
    )
    assert both.exit_code == 2 and "not both" in both.output


def test_a_model_fetched_from_mlflow_prints_no_progress_bar(
    three_versions: Path, tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    """Neither in the workspace nor in DVC's cache: MLflow's artifact store gives the file, quietly."""
    import shutil

    (three_versions / "models" / "model.pkl").unlink()
    shutil.rmtree(three_versions / ".dvc" / "cache")
    source = three_versions / "data" / "raw" / "breast_cancer.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "govern",
            "predict",
            M,
            "2",
            "--input",
            str(source),
            "--output",
            str(tmp_path / "p.csv"),
        ],
        cwd=three_versions,
        env=isolated_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote 569 predictions of {M} version 2 to {tmp_path / 'p.csv'}\n"
    assert "Downloading artifacts" not in done.stderr and "%|" not in done.stderr
