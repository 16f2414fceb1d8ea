"""The controller over HTTP (issue 14), on the bench's history, through a real `govern serve`.

H1  deployments and retirements recorded by 16 clients at once: writes/s over the run, and each write's latency
H2  the production question over HTTP (`GET /api/v1/apps/{app}/production?at=`), one client: p95, beside B7
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.figures import p95, stats

CLIENTS = 16
MODEL = "breast-cancer-classifier"


def measure(
    project: Path, env: dict[str, str], base: Path, writes: int, probes: list[tuple[str, datetime]]
) -> dict[str, Any]:
    """H1 with CLIENTS x `writes` writes, H2 over `probes` (app, instant), each answered by the bench history."""
    tokens = {name: token(project, env, name, role) for name, role in (("cd", "deployer"), ("aud", "auditor"))}
    with served(project, env, base / "http-server.log") as port:
        began = time.perf_counter()
        latencies = concurrent_writes(port, tokens["cd"], writes)
        elapsed = time.perf_counter() - began
        answers = []
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for app, at in probes:
            path = f"/api/v1/apps/{quote(app)}/production?at={quote(at.strftime('%Y-%m-%dT%H:%M:%SZ'))}"
            started = time.perf_counter()
            status, answer = request(connection, "GET", path, tokens["aud"])
            answers.append(time.perf_counter() - started)
            if status != 200 or answer.get("version") is None:
                raise RuntimeError(f"H2: {path} answered {status} {answer}")
        connection.close()
    return {
        "H1": {
            "govern": {
                "writes/s": len(latencies) / elapsed,
                "one write": {"p95": p95(latencies), **stats(latencies)},
            },
            "peer": None,
            "peer_name": "-",
            "target": f"- (reported: {CLIENTS} clients x {writes} writes, each a deployment or a retirement)",
            "met": True,
        },
        "H2": {
            "govern": {"p95": p95(answers), **stats(answers)},
            "peer": None,
            "peer_name": "B7 is the same question in-process",
            "target": "- (reported: p95 over HTTP, a token checked per request)",
            "met": True,
        },
    }


def token(project: Path, env: dict[str, str], name: str, role: str, extra: list[str] | None = None) -> str:
    """A principal with `role` (and `extra` options: a consumer's --app), granted in the checkout (as the first
    admin is), and a new token of it."""
    govern = [sys.executable, "-m", "govern"]
    subprocess.run([*govern, "principals", "add", name, "--role", role, *(extra or [])], cwd=project, env=env,
                   check=True, capture_output=True)  # fmt: skip
    made = subprocess.run([*govern, "tokens", "create", name, "--json"], cwd=project, env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    issued = json.loads(made.stdout)
    if "code" in issued:  # a ledger a server has signed in is a team's: an enrollment code, redeemed by its holder
        redeemed = subprocess.run([*govern, "tokens", "redeem", issued["code"], "--json"], cwd=project, env=env,
                                  check=True, capture_output=True, text=True)  # fmt: skip
        issued = json.loads(redeemed.stdout)
    return issued["token"]


class served:  # noqa: N801 - used as `with served(...)`, like open()
    """A `govern serve` on a free port of 127.0.0.1, stopped (and waited for) however the block ends."""

    def __init__(self, project: Path, env: dict[str, str], log: Path) -> None:
        self.project, self.env, self.log = project, env, log

    def __enter__(self) -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "govern", "serve", "--port", str(port)],
                cwd=self.project,
                env=self.env,
                stdout=sink,
                stderr=sink,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"govern serve exited {self.process.returncode}: see {self.log}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    connection.close()
                    return port
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"govern serve did not answer /health within 60 s: see {self.log}")

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def request(connection: http.client.HTTPConnection, method: str, path: str, bearer: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    connection.request(method, path, body=data, headers=headers)
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read() or b"null")


def concurrent_writes(port: int, bearer: str, writes: int) -> list[float]:
    """CLIENTS threads, each with its own keep-alive connection and app, alternate deploying version 1 (which holds
    `production`) and retiring it, `writes` times: every write is a new fact and is accepted."""
    latencies: list[float] = []
    failures: list[str] = []
    start = threading.Barrier(CLIENTS)

    def client(number: int) -> None:
        app = f"http-{number:02d}"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start.wait()
        for write in range(writes):
            if write % 2 == 0:
                path, body = "/api/v1/deployments", {"model": MODEL, "version": "1", "app": app, "env": "production"}
            else:
                path, body = "/api/v1/retirements", {"app": app, "env": "production"}
            began = time.perf_counter()
            status, answer = request(connection, "POST", path, bearer, body)
            latencies.append(time.perf_counter() - began)
            if status != 201:
                failures.append(f"{app} write {write}: {status} {answer}")
                return
        connection.close()

    threads = [threading.Thread(target=client, args=(number,)) for number in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"H1: {len(failures)} client(s) refused, first: {failures[0]}")
    return latencies
