"""README "Team setup"'s PostgreSQL side: the team's databases and roles, and `mlflow server` on PostgreSQL.

The `team` and `mlflow_server` fixtures (tests/conftest.py) are these, per test: tests/test_team_setup.py runs the
recipe, tests/test_server_team.py the server in team mode.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import database_url, free_port, postgres_admin


@contextmanager
def team_databases() -> Iterator[dict[str, str]]:
    """The recipe's databases and roles (names made unique: roles are cluster-wide), dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        "govern_db": f"govern_{suffix}",
        "mlflow_db": f"mlflow_{suffix}",
        "writer": f"govern_writer_{suffix}",
        "auditor": f"govern_auditor_{suffix}",
        "mlflow": f"mlflow_{suffix}",
    }
    admin = postgres_admin()
    admin.execute(f"CREATE ROLE {names['mlflow']} LOGIN")
    admin.execute(f"CREATE DATABASE {names['mlflow_db']} OWNER {names['mlflow']}")
    admin.execute(f"CREATE DATABASE {names['govern_db']}")
    try:
        yield names
    finally:
        for database in (names["govern_db"], names["mlflow_db"]):
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for role in (names["writer"], names["auditor"], names["mlflow"]):
            admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


@contextmanager
def mlflow_on_postgres(team: dict[str, str], tmp_path: Path, isolated_env: dict[str, str]) -> Iterator[str]:
    """`mlflow server --backend-store-uri postgresql+psycopg://...` with artifacts proxied by the server."""
    port = free_port()
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    store = database_url(team["mlflow_db"], team["mlflow"]).replace("postgresql://", "postgresql+psycopg://")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", store,
        "--artifacts-destination", (folder / "artifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
    ]  # fmt: skip
    log = (folder / "server.log").open("ab")
    process = subprocess.Popen(command, env=isolated_env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (folder / "server.log").read_text()[-3000:]
                    raise RuntimeError(f"mlflow server did not start: {tail}") from None
                time.sleep(0.5)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
