"""The MLflow outbox, against a real `mlflow server` process on 127.0.0.1 that goes down and comes back."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import commit_all, run_cli
from support.tracking import mlflow_client

from govern.adapters import mlflow as mlflow_adapter
from govern.storage.duckdb_log import Ledger

M = "breast-cancer-classifier"


class MlflowServer:
    """A real tracking server with a SQLite backend and proxied artifacts, which can be stopped and restarted."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", (self.folder / "artifacts").as_uri(),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
            if self.process.poll() is not None:
                break
        raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


@pytest.fixture
def server(
    tmp_path: Path, isolated_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, reproduced_demo: Path
) -> Iterator[MlflowServer]:
    """The demo's tracking store behind a server: the registry the ledger's versions were numbered in."""
    import shutil

    running = MlflowServer(tmp_path / "mlflow-server", isolated_env)
    running.folder.mkdir(parents=True)
    shutil.copy2(reproduced_demo / "mlflow.db", running.folder / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", running.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    yield running
    running.stop()


def change_param(project: Path, value: str) -> None:
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0", f"C: {value}"))
    commit_all(project, f"C={value}")


def runs_of(uri: str, event_id: str) -> list[str]:
    return mlflow_adapter.find_runs_by_event(uri, "govern-demo", event_id)


def test_a_training_recorded_while_mlflow_is_down_is_mirrored_once_it_is_back(
    reproduced_demo: Path, server: MlflowServer
) -> None:
    change_param(reproduced_demo, "0.5")
    down = run_cli("repro", cwd=reproduced_demo)
    assert down.exit_code == 0, down.output
    assert "its MLflow mirror is pending" in down.output
    ledger = Ledger(reproduced_demo / "audit" / "ledger.duckdb")
    training = ledger.read(types=["training.completed"])[-1]
    assert training.payload["mlflow"]["status"] == "pending"
    still_down = run_cli("mirror", cwd=reproduced_demo)
    assert still_down.exit_code == 1 and "1 training(s) still pending" in still_down.output

    server.start()
    back = run_cli("mirror", "--json", cwd=reproduced_demo)
    assert back.exit_code == 0, back.output
    assert back.stdout.startswith("{"), back.stdout[:500]
    types = [e["type"] for e in json.loads(back.stdout)["events"]]
    assert types == ["training.mirrored", "model.registered"]
    [run_id] = runs_of(server.uri, training.event_id)
    client = mlflow_client(server.uri)
    assert client.get_run(run_id).data.params["train.C"] == "0.5"
    versions = client.search_model_versions(f"name = '{M}'", order_by=["version_number DESC"])
    assert [(v.version, v.run_id) for v in versions][0] == ("2", run_id), "numbered after the ledger's version 1"

    again = run_cli("mirror", cwd=reproduced_demo)
    assert again.exit_code == 0 and "Nothing is pending." in again.output
    assert len(runs_of(server.uri, training.event_id)) == 1
    assert ledger.verify().ok


def test_a_half_finished_mirror_is_completed_not_duplicated(
    reproduced_demo: Path, server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.start()
    change_param(reproduced_demo, "0.5")

    def fail_while_registering(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection reset while registering the model")  # the error path to force

    with monkeypatch.context() as patch:
        patch.setattr(mlflow_adapter, "_register_all", fail_while_registering)
        half = run_cli("repro", cwd=reproduced_demo)
    assert half.exit_code == 0 and "mirror is pending" in half.output
    training = Ledger(reproduced_demo / "audit" / "ledger.duckdb").read(types=["training.completed"])[-1]
    assert len(runs_of(server.uri, training.event_id)) == 1, "the run was created before the failure"

    promoted = run_cli("promote", M, "1", "--to", "staging", "--reason", "any later write retries", cwd=reproduced_demo)
    assert promoted.exit_code == 0, promoted.output
    mirrored = Ledger(reproduced_demo / "audit" / "ledger.duckdb").read(types=["training.mirrored"])
    assert [m.payload["reused_run"] for m in mirrored] == [True]
    assert len(runs_of(server.uri, training.event_id)) == 1
    versions = mlflow_client(server.uri).search_model_versions(f"run_id = '{mirrored[0].payload['run_id']}'")
    assert [v.version for v in versions] == ["2"], "registered once, after the ledger's version 1"


def test_a_registry_behind_the_ledger_is_refused_instead_of_reusing_a_version_number(
    reproduced_demo: Path, mlflow_store_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger moved to a team's new tracking server: MLflow would number the next version 1 again."""
    import shutil

    original = f"sqlite:///{reproduced_demo / 'mlflow.db'}"
    fresh = reproduced_demo.parent / "fresh-mlflow.db"
    shutil.copy2(mlflow_store_template, fresh)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{fresh}")
    change_param(reproduced_demo, "0.5")

    result = run_cli("repro", cwd=reproduced_demo)
    assert result.exit_code == 0, result.output
    assert "holds model 'breast-cancer-classifier' up to version none, but the ledger records version 1" in (
        result.output
    )
    ledger = Ledger(reproduced_demo / "audit" / "ledger.duckdb")
    versions = "SELECT version FROM model_versions ORDER BY seq"
    assert ledger.query(versions)[1] == [("1",)], "no second version 1 was recorded"
    assert mlflow_client(f"sqlite:///{fresh}").search_model_versions(f"name = '{M}'") == []

    again = run_cli("mirror", cwd=reproduced_demo)
    assert again.exit_code != 0 and "would reuse a version number" in again.output

    monkeypatch.setenv("MLFLOW_TRACKING_URI", original)  # the registry the ledger's versions live in
    assert run_cli("mirror", cwd=reproduced_demo).exit_code == 0
    assert ledger.query(versions)[1] == [("1",), ("2",)]


def test_a_training_whose_model_file_is_lost_does_not_hold_later_ones_out_of_mlflow(
    reproduced_demo: Path, server: MlflowServer
) -> None:
    """A job's directory model was never taken into the cache: every later version waited behind it for ever."""
    change_param(reproduced_demo, "0.5")
    assert run_cli("repro", cwd=reproduced_demo).exit_code == 0
    params = reproduced_demo / "params.yaml"
    params.write_text(params.read_text().replace("C: 0.5", "C: 0.25"))
    commit_all(reproduced_demo, "C=0.25")
    assert run_cli("repro", cwd=reproduced_demo).exit_code == 0
    ledger = Ledger(reproduced_demo / "audit" / "ledger.duckdb")
    lost, kept = ledger.read(types=["training.completed"])[-2:]
    md5 = lost.payload["models"][0]["md5"]
    (reproduced_demo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).unlink()  # and not in the workspace

    server.start()
    result = run_cli("mirror", "--json", cwd=reproduced_demo)

    assert result.exit_code == 1, result.output
    assert f"The model file of training {lost.event_id}" in result.output and "cannot be registered" in result.output
    mirrored = [e.payload["training_event_id"] for e in ledger.read(types=["training.mirrored"])]
    assert kept.event_id in mirrored and lost.event_id not in mirrored, "the later training went through"
