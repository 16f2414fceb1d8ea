"""Load and faults over HTTP: 16 clients x 60 writes at once against a real `govern serve`, on the ledger file and
on PostgreSQL, with the server killed (SIGKILL) halfway and started again while the clients keep writing.

Each client records deployments of its own app, alternating two versions, so every write is a new fact and a
write the server recorded but could not acknowledge before it died is recognisable on retry (the version
already serves: 409). In the end every app has exactly 60 deployments, every acknowledged event is in the
ledger, the chain verifies, and every event names the authenticated principal and its token.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import commit_all, git, run_cli, start_server, token_for, trained_version, wait_for
from support.server import call

from govern import storage
from govern.storage.duckdb_log import Ledger

pytestmark = pytest.mark.slow

CLIENTS = 16
WRITES = 60  # 960 writes, half before the kill: the suite's 20 minutes on 2 cores hold with it
TRAINER = "Tess Trainer <tess@example.com>"


@pytest.fixture(params=["file", "postgresql"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A project with versions 1 and 2 of `churn`, a deployer and its token, on the ledger the parameter names."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    settings = (
        '[deploy]\nenvironments = ["dev"]\nrequire_stage = {}\n'
        '[registry]\ngto_tags = false\n[mlflow]\ntracking_uri = "sqlite:////nonexistent/mlflow.db"\n'
    )
    (root / "govern.toml").write_text(settings)
    commit_all(root, "start")
    file = root / "audit" / "ledger.duckdb"
    for version in ("1", "2"):
        trained_version(file, "churn", version, TRAINER)
    assert run_cli("principals", "add", "dep", "--role", "deployer", cwd=root).exit_code == 0
    token = token_for(root, "dep")  # on PostgreSQL (team mode): an enrollment code, redeemed
    if request.param == "file":
        yield root, token
        return
    url = request.getfixturevalue("pg_database")
    storage.copy(Ledger(file), storage.open_store(url))
    for leftover in file.parent.glob("ledger.duckdb*"):
        leftover.unlink()
    (root / "govern.toml").write_text(f'ledger = "{url}"\n{settings}')
    yield root, token


def test_sixteen_clients_lose_no_acknowledged_write_when_the_server_is_killed_under_load(
    project: tuple[Path, str], tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    root, token = project
    log = tmp_path / "server.log"
    process, base = start_server(root, isolated_env, log)
    port = int(base.rsplit(":", 1)[1])
    acknowledged: list[str] = []  # event ids the server answered 201 for
    answered = [0]  # writes acknowledged
    unacknowledged: list[str] = []  # apps whose write was recorded, but its answer lost with the server
    failures: list[str] = []
    guard = threading.Lock()

    def client(number: int) -> None:
        app = f"app-{number:02d}"
        for write in range(WRITES):
            body = {"model": "churn", "version": "1" if write % 2 == 0 else "2", "app": app, "env": "dev"}
            deadline = time.monotonic() + 120
            while True:
                try:
                    status, answer, _ = call(base, "POST", "/api/v1/deployments", token, body)
                except (OSError, http.client.HTTPException):
                    # the server is down, or died mid-request, even mid-answer (IncompleteRead is no OSError): the
                    # write may or may not have landed
                    if time.monotonic() > deadline:
                        with guard:
                            failures.append(f"{app} write {write}: no server for 120 s")
                        return
                    time.sleep(0.2)
                    continue
                if status == 503 and time.monotonic() < deadline:
                    time.sleep(0.5)  # the ledger stayed busy past the request's budget: a client retries
                    continue
                with guard:
                    if status == 201:
                        acknowledged.extend(event["event_id"] for event in answer["events"])
                        answered[0] += 1
                    elif status == 409 and "already serves" in answer["detail"]:
                        unacknowledged.append(app)
                    else:
                        failures.append(f"{app} write {write}: {status} {answer}")
                        return
                break

    threads = [threading.Thread(target=client, args=(number,)) for number in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: answered[0] >= CLIENTS * WRITES // 2, "half the writes to be acknowledged", timeout=600)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        process, _ = start_server(root, isolated_env, log, port=port)
        for thread in threads:
            thread.join(timeout=900)
        assert not any(thread.is_alive() for thread in threads), "clients still writing after 15 minutes"
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert failures == []
    store = storage.open_store(storage_location(root))
    started = store.read(types=["deployment.started"])
    per_app: dict[str, int] = {}
    for event in started:
        app = json.loads(event.payload_json)["app"]
        per_app[app] = per_app.get(app, 0) + 1
    assert len(started) == CLIENTS * WRITES, per_app
    assert set(per_app.values()) == {WRITES}
    recorded = {event.event_id for event in store.read()}
    assert set(acknowledged) <= recorded
    token_id = token.split("_")[1]
    assert {event.actor for event in started} == {f"dep (token {token_id})"}
    verified = run_cli("audit", "verify", cwd=root)
    assert verified.exit_code == 0, verified.output
    assert log.read_text().count("Traceback") == 0
    assert log.read_text().count("rewrite history") <= 2  # PostgreSQL's privilege warning: once per server process


def storage_location(root: Path) -> str | Path:
    from govern import config

    return config.configured_ledger(root)
