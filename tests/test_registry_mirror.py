"""MLflow's aliases follow the ledger: in the background by default, and after GTO promotions imported by sync."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ok, run_cli, tracking_uri
from support.cli import modules_after
from support.tracking import mlflow_client

from govern.storage.duckdb_log import Ledger

M = "breast-cancer-classifier"


def alias_of(project: Path, alias: str) -> str | None:
    client = mlflow_client(tracking_uri(project))
    aliases = client.get_registered_model(M).aliases or {}
    return str(aliases[alias]) if alias in aliases else None


def wait_until(condition, what: str, timeout: float = 120.0):  # noqa: ANN001, ANN201 - a predicate
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_promote_answers_before_mlflow_and_the_alias_follows_in_the_background(
    three_versions: Path, isolated_env: dict[str, str]
) -> None:
    """Every user's default: the promotion is a ledger append; a detached `govern mirror` sets the alias."""
    env = {**isolated_env, "GOVERN_REGISTRY_MIRROR": "background"}
    command = [sys.executable, "-m", "govern", "promote", M, "2", "--to", "staging", "--reason", "recall"]

    done = subprocess.run(command, cwd=three_versions, env=env, capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stderr
    assert f"model.promoted       model:{M}@2" in done.stdout
    assert "\nthe MLflow aliases follow in the background (log: " in "\n" + done.stderr
    assert "Warning: the MLflow aliases" not in done.stderr, "progress, not a problem"
    promoted = Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["model.promoted"])[-1]
    wait_until(lambda: alias_of(three_versions, "staging") == "2", "the staging alias on version 2")
    mirrored = wait_until(
        lambda: Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["registry.mirrored"]),
        "the registry.mirrored event",
    )
    assert mirrored[-1].payload["through_seq"] == promoted.seq
    assert mirrored[-1].payload["aliases"] == {"staging": "2"}
    state = json.loads(ok(three_versions, "status", "--json"))
    assert state["pending_mirrors"]["registry"] == []
    assert "registry.mirrored" in (three_versions / "audit" / "mirror.log").read_text()


def test_a_background_promotion_never_imports_mlflow_and_an_inline_one_says_what_it_waits_for(
    three_versions: Path, isolated_env: dict[str, str]
) -> None:
    background = {**isolated_env, "GOVERN_REGISTRY_MIRROR": "background"}
    modules, done = modules_after(["promote", M, "1", "--to", "staging", "--reason", "r"], background, three_versions)
    assert done.returncode == 0, done.stderr
    assert {name for name in modules if name.split(".")[0] in ("mlflow", "dvc")} == set()

    inline = {**isolated_env, "GOVERN_REGISTRY_MIRROR": "inline"}
    command = [sys.executable, "-m", "govern", "promote", M, "2", "--to", "staging", "--reason", "recall"]
    done = subprocess.run(command, cwd=three_versions, env=inline, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert f"setting the MLflow aliases of {M} (registry_mirror = inline) ..." in done.stderr
    assert alias_of(three_versions, "staging") == "2", "inline: the alias is set when the command returns"


def test_mirrors_of_one_ledger_wait_for_each_other_so_the_newest_state_lands_last(
    three_versions: Path, isolated_env: dict[str, str]
) -> None:
    """A mirror that read the holders before a newer promotion must not set its aliases after the newer mirror."""
    import fcntl

    inline = {**isolated_env, "GOVERN_REGISTRY_MIRROR": "inline"}
    log = three_versions / "audit" / "mirror.log"
    command = [sys.executable, "-m", "govern", "promote", M, "2", "--to", "staging", "--reason", "recall"]
    with log.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another mirror is running
        waiting = subprocess.Popen(
            command, cwd=three_versions, env=inline, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            wait_until(
                lambda: [
                    e
                    for e in Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["model.promoted"])
                    if e.payload["version"] == "2"
                ],
                "the promotion itself, which does not wait for the mirror",
            )
            time.sleep(1.0)
            assert waiting.poll() is None, "the inline mirror waits for the running one"
            assert Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["registry.mirrored"]) == []
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    _, stderr = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, stderr
    assert alias_of(three_versions, "staging") == "2"


def test_a_promotion_imported_from_gto_moves_the_mlflow_alias(
    three_versions: Path, isolated_env: dict[str, str]
) -> None:
    ok(three_versions, "promote", M, "1", "--to", "production", "--reason", "first", "--force")
    assert alias_of(three_versions, "production") == "1"
    gto = str(Path(sys.executable).parent / "gto")
    for args in (
        ["register", M, "--version", "v3.0.0", "HEAD"],
        ["assign", M, "--version", "v3.0.0", "--stage", "production"],
    ):
        done = subprocess.run([gto, *args], cwd=three_versions, env=isolated_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    result = run_cli("sync", "--json", cwd=three_versions)

    assert result.exit_code == 0, result.output
    [imported] = json.loads(result.stdout)["events"]
    assert imported["payload"]["origin"] == "gto-tag" and imported["payload"]["version"] == "3"
    assert alias_of(three_versions, "production") == "3", "the alias moved as a govern promotion moves it"
    assert Ledger(three_versions / "audit" / "ledger.duckdb").read(types=["registry.mirrored"])[-1].payload[
        "aliases"
    ] == {"production": "3"}


def test_an_unknown_mirror_mode_is_a_configuration_error(three_versions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERN_REGISTRY_MIRROR", "sometimes")
    result = run_cli("promote", M, "1", "--to", "staging", "--reason", "r", cwd=three_versions)
    assert result.exit_code == 1
    assert "GOVERN_REGISTRY_MIRROR) is background or inline, not 'sometimes'" in result.output


def test_mlflow_called_from_a_background_thread_leaves_the_processs_stdout_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found when a test's command printed nothing: a server's (or `as_server`'s) mirror thread swapped the
    process's stdout for stderr while MLflow imported, so the main thread's answer went to stderr, and two such
    threads could leave it there for good. Only the main thread redirects MLflow's chatter."""
    import threading

    from govern.adapters import mlflow as adapter

    entered, release = threading.Event(), threading.Event()

    @adapter._stdout_to_stderr
    def talking_to_mlflow() -> None:
        entered.set()
        release.wait(5)

    worker = threading.Thread(target=talking_to_mlflow)
    worker.start()
    assert entered.wait(5)
    print("the command's answer")
    release.set()
    worker.join(5)
    assert capsys.readouterr().out == "the command's answer\n"


def test_a_store_in_a_folder_that_does_not_exist_is_refused_before_mlflow_is_imported() -> None:
    """SQLite creates files, not folders: such a store can never open, and saying so costs no 2 s MLflow import."""
    code = (
        "import sys\n"
        "from govern.adapters import mlflow as adapter\n"
        "from govern.errors import MirrorError\n"
        "try:\n"
        "    adapter.sync_registry('sqlite:////nonexistent-govern/mlflow.db', 'churn', {}, ['staging'], [])\n"
        "except MirrorError as error:\n"
        "    print(error)\n"
        "print('mlflow imported' if 'mlflow' in sys.modules else 'mlflow not imported')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        "Could not update the MLflow registry of churn: MLflow's tracking store "
        "sqlite:////nonexistent-govern/mlflow.db cannot be opened: its folder /nonexistent-govern does not exist; "
        "create it, or set MLFLOW_TRACKING_URI (or [mlflow] tracking_uri) to a store that exists",
        "mlflow not imported",
    ]
