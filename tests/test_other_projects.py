"""govern works on any DVC project that follows DVC's conventions, not just the demo."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import commit_all, git, run_cli, tracking_uri
from support.tracking import mlflow_client

from govern.storage.duckdb_log import Ledger

INGEST = """
import sys
from pathlib import Path
from sklearn.datasets import load_wine

frame = load_wine(as_frame=True).frame
Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
frame.to_csv(sys.argv[1], index=False, lineterminator="\\n")
"""

FIT = """
import pickle, sys
from pathlib import Path
import pandas as pd, yaml
from sklearn.tree import DecisionTreeClassifier

hyper = yaml.safe_load(open("config/hyper.yaml"))["tree"]
frame = pd.read_csv(sys.argv[1])
model = DecisionTreeClassifier(max_depth=hyper["depth"], random_state=hyper["seed"])
model.fit(frame.drop(columns="target"), frame["target"])
Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
pickle.dump(model, open(sys.argv[2], "wb"), protocol=5)
"""

SCORE = """
import pickle, sys
from pathlib import Path
import pandas as pd, yaml

frame = pd.read_csv(sys.argv[1])
model = pickle.load(open(sys.argv[2], "rb"))
accuracy = float((model.predict(frame.drop(columns="target")) == frame["target"]).mean())
Path(sys.argv[3]).parent.mkdir(parents=True, exist_ok=True)
Path(sys.argv[3]).write_text(yaml.safe_dump({"fit": {"accuracy": round(accuracy, 6)}}))
"""

DVC_YAML = """
stages:
  ingest:
    desc: UCI wine recognition data, as bundled with scikit-learn
    cmd: python src/ingest.py warehouse/wine.csv
    deps: [src/ingest.py]
    outs: [warehouse/wine.csv]
  fit:
    cmd: python src/fit.py warehouse/wine.csv artifacts/tree.pkl
    deps: [src/fit.py, warehouse/wine.csv]
    params:
      - config/hyper.yaml:
          - tree.depth
          - tree.seed
    outs: [artifacts/tree.pkl]
  score:
    cmd: python src/score.py warehouse/wine.csv artifacts/tree.pkl reports/scores.yaml
    deps: [src/score.py, warehouse/wine.csv, artifacts/tree.pkl]
    outs:
      - reports/scores.yaml:
          cache: false
metrics:
  - reports/scores.yaml
artifacts:
  wine-tree:
    path: artifacts/tree.pkl
    type: model
    desc: Decision tree on the wine data
    labels: [wine]
"""


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def new_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, files)
    result = run_cli("init", cwd=root)
    assert result.exit_code == 0, result.output
    commit_all(root, "a project")
    return root


@pytest.fixture
def wine_project(tmp_path: Path, mlflow_store_template: Path) -> Path:
    files = {
        "src/ingest.py": INGEST,
        "src/fit.py": FIT,
        "src/score.py": SCORE,
        "dvc.yaml": DVC_YAML,
        "config/hyper.yaml": "tree:\n  depth: 3\n  seed: 7\n",
        "govern.toml": 'ledger = "governance/events.duckdb"\n\n[mlflow]\nexperiment = "wine"\n',
    }
    return new_project(tmp_path / "wine", files)


def test_a_different_project_is_reproduced_and_registered(wine_project: Path) -> None:
    result = run_cli("repro", "--commit", cwd=wine_project)
    assert result.exit_code == 0, result.output

    ledger = Ledger(wine_project / "governance" / "events.duckdb")
    events = ledger.read()
    expected = ["dataset.snapshotted", "training.completed", "model.registered", "training.locked"]
    assert [e.type for e in events] == expected
    snapshot, training, registered, locked = events
    assert locked.payload["commit"] == git(wine_project, "rev-parse", "HEAD"), "the commit `--commit` made"
    assert snapshot.payload["path"] == "warehouse/wine.csv"
    assert snapshot.payload["source"] == "UCI wine recognition data, as bundled with scikit-learn"
    assert snapshot.payload["rows"] == 178
    assert training.payload["params"] == {"config/hyper.yaml:tree.depth": 3, "config/hyper.yaml:tree.seed": 7}
    assert 0.9 < training.payload["metrics"]["fit.accuracy"] <= 1.0
    assert registered.subject == "model:wine-tree@1"

    client = mlflow_client(tracking_uri(wine_project))
    run = client.get_run(training.payload["mlflow"]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "wine"
    assert run.data.params["config/hyper.yaml:tree.depth"] == "3"
    assert client.get_model_version("wine-tree", "1").tags["govern.event_id"] == training.event_id
    assert git(wine_project, "status", "--porcelain") == ""


@pytest.mark.slow  # `govern repro` runs DVC's reproduction (and MLflow's mirror)
def test_a_failing_stage_records_training_failed_with_its_output(tmp_path: Path) -> None:
    files = {
        "dvc.yaml": """
            stages:
              prepare:
                cmd: python -c "print('prepared')" > prepared.txt
                outs: [prepared.txt]
              boom:
                cmd: python -c "import sys; print('about to fail'); sys.exit(3)"
                deps: [prepared.txt]
                outs: [never.txt]
        """,
    }
    project = new_project(tmp_path / "failing", files)

    result = run_cli("repro", cwd=project)

    assert result.exit_code == 1
    assert "Stage 'boom' failed" in result.output and "training.failed, seq 1" in result.output
    assert "Traceback" not in result.output
    [failed] = Ledger(project / "audit" / "ledger.duckdb").read()
    assert failed.type == "training.failed"
    assert failed.payload["stage"] == "boom"
    assert "about to fail" in failed.payload["output_tail"]
    assert failed.git_commit == git(project, "rev-parse", "HEAD")


@pytest.mark.slow  # `govern repro` runs DVC's reproduction
def test_a_stage_whose_script_is_missing_fails_clearly(tmp_path: Path) -> None:
    project = new_project(
        tmp_path / "missing",
        {"dvc.yaml": "stages:\n  train:\n    cmd: python nowhere/train.py\n    outs: [model.bin]\n"},
    )
    result = run_cli("repro", cwd=project)
    assert result.exit_code == 1
    assert "Stage 'train' failed" in result.output
    failed = Ledger(project / "audit" / "ledger.duckdb").read()[0]
    assert "nowhere/train.py" in failed.payload["output_tail"]
