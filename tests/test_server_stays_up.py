"""A server that stays up (issue 25, item 6 and finding 5), against a real `govern serve` on 127.0.0.1.

One client without a valid token used to stall the server: every worker thread waited for the ledger's turn to
check its token, and /health with them. Here, fake tokens and busy readers together leave /health and another
principal's requests answering within two seconds; limits answer 429 and 503 at once with Retry-After; no body is read
before its sender is known; auditor SQL stops at its limits; deep JSON is a 422; X-Forwarded-For counts only from a
trusted proxy; a known token id takes as long to refuse as an unknown one; and nothing refused reaches the ledger.
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, start_server, wait_for
from support.server import call, tokens_for

from govern import storage
from govern.storage.duckdb_log import Ledger

pytestmark = pytest.mark.slow

FAKE = "gvn_000000000000_" + "A" * 43  # well formed, of no ledger
LONG_QUERY = "SELECT sum(hash(i)) FROM range(5000000000) t(i)"  # the review's: about 30 s on its machine
LONGER_QUERY = "SELECT sum(hash(i)) FROM range(50000000000) t(i)"  # minutes, on any machine
HERE = Path(__file__).resolve().parent


def settings(project: Path, text: str) -> None:
    """Add settings to the project's govern.toml (before its server starts); keys of `[server]`, which the project
    declares already (its signing key's path), go into that table."""
    path = project / "govern.toml"
    current = path.read_text()
    if text.startswith("\n[server]\n") and "\n[server]\n" in "\n" + current:
        added = text.removeprefix("\n[server]\n")
        current = current.replace("[server]\n", "[server]\n" + added, 1)
        path.write_text(current)
        return
    path.write_text(current + text)


@pytest.fixture(params=["file", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def on_postgresql(project: Path, url: str) -> None:
    """Move the project's ledger to PostgreSQL (its events copied, the file removed), as the team setup has it."""
    file = project / "audit" / "ledger.duckdb"
    storage.copy(Ledger(file), storage.open_store(url))
    for leftover in file.parent.glob("ledger.duckdb*"):
        leftover.unlink()
    (project / "govern.toml").write_text(f'ledger = "{url}"\n' + (project / "govern.toml").read_text())


@contextmanager
def serving(project: Path, env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    process, base = start_server(project, env, log)
    try:
        yield process, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a request held open by a failed test keeps it from ending
            process.kill()
            process.wait()


def events_in(project: Path) -> int:
    from govern import config

    store = storage.open_store(config.configured_ledger(project))
    try:
        head = store.head()
    finally:
        store.close()
    return head[0] if head else 0


def timed(base: str, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[float, int, Any]:
    started = time.monotonic()
    status, answer, _ = call(base, method, path, token, body)
    return time.monotonic() - started, status, answer


def rss(pid: int) -> int:
    """The resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Held:
    """A request whose headers are sent and whose chunked body never ends: it stays in flight (admitted, counted
    against its principal's and the server's limits) until closed."""

    def __init__(self, base: str, path: str, token: str | None, kind: str = "application/json") -> None:
        host, port = base.removeprefix("http://").split(":")
        self.socket = socket.create_connection((host, int(port)), timeout=10)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: {kind}\r\nTransfer-Encoding: chunked\r\n"
        head += "\r\n"
        self.socket.sendall(head.encode() + b"1\r\n{\r\n")

    def answer(self, timeout: float = 5.0) -> bytes:
        """What the server answered so far (waiting up to `timeout` for its first bytes)."""
        self.socket.settimeout(timeout)
        try:
            return self.socket.recv(65536)
        except TimeoutError:
            return b""

    def close(self) -> None:
        self.socket.close()


def test_fake_tokens_and_busy_readers_never_stall_health_or_a_legitimate_request(
    project: Path, backend: str, request: pytest.FixtureRequest, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """100 clients with a well-formed fake token and 100 authenticated readers, each on its own connection, for 60 s:
    /health, another principal's whoami and its deployments answer within two seconds throughout. The fake tokens
    are refused from the token table (401, no ledger read); the readers get their reads or 429 beyond their limit.

    Two seconds, not one: on 2 cores other tenants kept at a load of 3 to 4, the slowest of about a hundred
    deployments under the flood took 1.09 s (CI, both backends), while a stall (a request waiting for the token
    table or the ledger) waits out the 5 s budget and answers 503: two seconds still catches it."""
    if backend == "postgresql":
        on_postgresql(project, request.getfixturevalue("pg_database"))
    made = tokens_for(project, "aud", "dep")
    before = events_in(project)
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        load = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "support" / "load_clients.py"),
                base,
                "60",
                f"100:/api/v1/whoami:{FAKE}",
                f"100:/api/v1/events?limit=5:{made['aud']}",
            ],  # fmt: skip
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.nice(10),  # the attackers' own CPU is theirs, not the server's (2 shared cores)
        )
        slowest: dict[str, float] = {"health": 0.0, "whoami": 0.0, "deploy": 0.0}
        failures: list[str] = []
        deployed = 0
        time.sleep(2)  # the clients connected and busy
        deadline = time.monotonic() + 56
        while time.monotonic() < deadline:
            for name, method, path, token, body in (
                ("health", "GET", "/health", None, None),
                ("whoami", "GET", "/api/v1/whoami", made["dep"], None),
            ):
                took, status, answer = timed(base, method, path, token, body)
                slowest[name] = max(slowest[name], took)
                if status != 200:
                    failures.append(f"{name}: {status} {answer}")
            if deployed < 20 and random.random() < 0.4:
                version = "1" if deployed % 2 == 0 else "2"
                body = {"model": "churn", "version": version, "app": "busy", "env": "dev"}
                took, status, answer = timed(base, "POST", "/api/v1/deployments", made["dep"], body)
                slowest["deploy"] = max(slowest["deploy"], took)
                if status != 201:
                    failures.append(f"deploy: {status} {answer}")
                deployed += 1
            time.sleep(0.2)
        counts = json.loads(load.communicate(timeout=120)[0])
    fake, readers = counts["0:/api/v1/whoami"], counts["1:/api/v1/events?limit=5"]
    assert failures == [], failures
    assert max(slowest.values()) < 2.0 and deployed >= 10, (slowest, deployed, counts)
    assert fake.get("401", 0) > 5000 and set(fake) == {"401"}, f"the fake tokens were refused, every one: {fake}"
    assert readers.get("200", 0) > 500 and set(readers) <= {"200", "429"}, f"the readers read: {readers}"
    assert events_in(project) == before + 2 * deployed - 1, "only the deployments were written (the first ends none)"
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_known_and_unknown_token_ids_take_the_same_time(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """A wrong secret with a known id was answered in 12.9 ms, an unknown id in 21.4 (median): an attacker could
    tell which ids exist. Now both are refused from the token table in the same steps. Interleaved samples on one
    keep-alive connection each; their medians must be within a millisecond or a fifth of each other."""
    import http.client

    settings(project, "\n[server]\nrefusal_pause = 0\n")  # the authentication's own time, not the pause after it
    known = tokens_for(project, "aud")["aud"].split("_")[1]
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        times: dict[str, list[float]] = {"known": [], "unknown": []}

        def refused(token_id: str) -> float:
            secret = "".join(random.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=43))
            started = time.perf_counter()
            connection.request("GET", "/api/v1/whoami", headers={"Authorization": f"Bearer gvn_{token_id}_{secret}"})
            answer = connection.getresponse()
            answer.read()
            took = time.perf_counter() - started
            assert answer.status == 401
            return took

        for _ in range(50):  # warm up both paths
            refused(known), refused(f"{random.getrandbits(48):012x}")
        for _ in range(600):
            for kind in random.sample(["known", "unknown"], 2):
                token_id = known if kind == "known" else f"{random.getrandbits(48):012x}"
                times[kind].append(refused(token_id))
        connection.close()
    known_median, unknown_median = statistics.median(times["known"]), statistics.median(times["unknown"])
    bound = max(0.001, 0.2 * min(known_median, unknown_median))
    assert abs(known_median - unknown_median) < bound, (known_median, unknown_median)


def test_unauthenticated_chunked_bodies_are_never_buffered(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """60 sockets sending chunked bodies of 16 MiB to /predict without a token took the server from 223 MB to
    1.1 GB: the body was buffered before the token was looked at. Now each is answered 401 as soon as its headers
    are in, and the server's memory stays where it was."""
    with serving(project, isolated_env, tmp_path / "server.log") as (process, base):
        before = rss(process.pid)
        answered: list[float] = []
        peak = [before]
        guard = threading.Lock()

        def flood() -> None:
            held = Held(base, "/api/v1/apps/scoring/predict", None, kind="text/csv")
            started = time.monotonic()
            first = held.answer(timeout=10)
            took = time.monotonic() - started
            chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
            try:
                for _ in range(256):  # 16 MiB, if the server still listened
                    held.socket.sendall(chunk)
            except OSError:
                pass
            held.close()
            with guard:
                answered.append(took if first.startswith(b"HTTP/1.1 401") else float("inf"))

        def watch(until: float) -> None:
            while time.monotonic() < until:
                peak[0] = max(peak[0], rss(process.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, args=(time.monotonic() + 15,))
        watcher.start()
        threads = [threading.Thread(target=flood) for _ in range(60)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        watcher.join()
        assert call(base, "GET", "/health")[0] == 200
    assert len(answered) == 60 and max(answered) < 2.0, sorted(answered)[-5:]
    assert peak[0] - before < 64 << 20, f"the server grew by {(peak[0] - before) >> 20} MiB"


def test_forms_posted_without_a_session_are_sent_to_sign_in_before_their_body_is_read(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """The pages' forms are authenticated by their session cookie before their body is read (the CSRF token is in
    the body, so it is checked after, for a signed-in session only); without one, the browser is sent to sign in."""
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        held = Held(base, "/apps/scoring/predict", None, kind="multipart/form-data; boundary=x")
        first = held.answer()
        held.close()
        assert first.startswith(b"HTTP/1.1 303"), first[:200]
        assert b"location: /sign-in?next=%2fapps%2fscoring%2fpredict" in first.lower()


def test_one_principal_over_its_limit_gets_429_and_the_server_503_when_full(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    settings(project, "\n[server]\nmax_requests = 3\nmax_requests_per_principal = 2\n")
    made = tokens_for(project, "aud", "dep", "sci")
    before = events_in(project)
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        held = [Held(base, "/api/v1/sql", made["aud"]), Held(base, "/api/v1/sql", made["aud"])]
        time.sleep(0.5)
        status, problem, headers = call(base, "GET", "/api/v1/whoami", made["aud"])
        assert status == 429 and headers["retry-after"] == "1"
        assert problem["type"] == "urn:govern:problem:too-many-requests"
        assert problem["detail"] == (
            "aud has 2 requests in progress, the most this server takes from one caller at once: wait for them to "
            "finish, then retry"
        )
        assert call(base, "GET", "/api/v1/whoami", made["dep"])[0] == 200, "another principal is served"
        held.append(Held(base, "/api/v1/deployments", made["dep"]))
        time.sleep(0.5)
        status, problem, headers = call(base, "GET", "/api/v1/whoami", made["sci"])
        assert (
            status == 503
            and headers["retry-after"] == "2"
            and problem["detail"]
            == ("The server is answering 3 requests, the most it takes at once: retry in a moment")
        )
        assert call(base, "GET", "/health")[0] == 200, "/health is answered before any limit"
        assert call(base, "GET", "/api/v1/whoami", FAKE)[0] == 401, "a bad token is refused before any limit too"
        for request in held:
            request.close()
        time.sleep(0.5)
        assert call(base, "GET", "/api/v1/whoami", made["sci"])[0] == 200, "room again once they ended"
    assert events_in(project) == before, "nothing refused was written"


def test_predictions_are_capped_per_consumer_and_in_total(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """24 concurrent predictions of one consumer started 24 model processes. Here a consumer may run one at a time
    and the server two: the rest are refused at once, before their rows are read."""
    settings(project, "\n[server]\nmax_predictions = 2\nmax_predictions_per_principal = 1\n")
    for name in ("con2", "con3"):
        assert run_cli("principals", "add", name, "--role", "consumer", "--app", "scoring", cwd=project).exit_code == 0
    made = tokens_for(project, "con", "con2", "con3")
    path = "/api/v1/apps/scoring/predict?env=dev"
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        held = [Held(base, path, made["con"], kind="text/csv")]
        time.sleep(0.5)
        status, problem, headers = call(base, "POST", path, made["con"], {"rows": [{"x": 1}]})
        assert status == 429 and headers["retry-after"] == "1"
        assert problem["detail"] == (
            "con has 1 prediction running, the most one consumer may run at once: wait for them to finish, then retry"
        )
        assert call(base, "GET", "/api/v1/apps/scoring/production?env=dev", made["con"])[0] in (200, 404), (
            "its other requests are served"
        )
        held.append(Held(base, path, made["con2"], kind="text/csv"))
        time.sleep(0.5)
        status, problem, headers = call(base, "POST", path, made["con3"], {"rows": [{"x": 1}]})
        assert status == 503 and problem["detail"] == (
            "2 predictions running, the most this server runs at once: retry in a moment"
        )
        for request in held:
            request.close()


def test_deep_or_malformed_json_is_a_422_and_writes_nothing(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """Deep JSON to predict answered 500 RecursionError. Every JSON body's nesting is measured before any parser
    recurses into it: too deep is a 422 naming the limit, and malformed JSON is a 422 too."""
    made = tokens_for(project, "con", "dep")
    before = events_in(project)
    deep = b'{"rows": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    targets = (("/api/v1/apps/scoring/predict?env=dev", made["con"]), ("/api/v1/deployments", made["dep"]))
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        for path, token in targets:
            answer = urllib.request.Request(base + path, data=deep, method="POST")
            answer.add_header("Content-Type", "application/json")
            answer.add_header("Authorization", f"Bearer {token}")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(answer, timeout=30)
            problem = json.loads(refused.value.read())
            assert refused.value.code == 422 and problem["detail"] == (
                "The JSON body nests 100002 levels deep, more than the 32 this server reads: send the documented "
                "shape (see /api/v1/openapi.json)"
            )
        for path, token in targets:
            malformed = urllib.request.Request(base + path, data=b'{"rows": [', method="POST")
            malformed.add_header("Content-Type", "application/json")
            malformed.add_header("Authorization", f"Bearer {token}")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(malformed, timeout=30)
            assert refused.value.code == 422, path
        assert call(base, "GET", "/health")[0] == 200
    assert events_in(project) == before
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """Any client's X-Forwarded-For was logged as its address (uvicorn believes 127.0.0.1 by default). The access
    log shows the socket's peer unless the peer is a configured proxy; the same for X-Forwarded-Proto (a session
    cookie is Secure only when a trusted proxy says the browser came over TLS)."""

    def visit(base: str) -> str:
        request = urllib.request.Request(base + "/sign-in")
        request.add_header("X-Forwarded-For", "203.0.113.9")
        request.add_header("X-Forwarded-Proto", "https")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.headers.get("Set-Cookie", "")

    log = tmp_path / "untrusted.log"
    with serving(project, isolated_env, log) as (_, base):
        cookie = visit(base)
    assert "203.0.113.9" not in log.read_text() and "127.0.0.1:" in log.read_text().split("GET /sign-in")[0][-40:]
    assert "secure" not in cookie.lower()

    settings(project, '\n[server]\ntrusted_proxies = ["127.0.0.1"]\n')
    log = tmp_path / "trusted.log"
    with serving(project, isolated_env, log) as (_, base):
        cookie = visit(base)
    assert '203.0.113.9:0 - "GET /sign-in' in log.read_text()
    assert "secure" in cookie.lower()


def test_an_auditor_query_is_stopped_at_its_timeout_while_others_are_served(
    project: Path, backend: str, request: pytest.FixtureRequest, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """A query of a minute and more is interrupted at the configured timeout (3 s here), with a 422 that says so;
    a result over the row limit is refused with what to do; /health and another principal answer meanwhile."""
    if backend == "postgresql":
        on_postgresql(project, request.getfixturevalue("pg_database"))
    settings(project, "\n[audit]\ntimeout = 3\n")
    made = tokens_for(project, "aud", "dep")
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        outcome: dict[str, Any] = {}

        def audit() -> None:
            outcome["answer"] = timed(base, "POST", "/api/v1/sql", made["aud"], {"statement": LONG_QUERY})

        auditor = threading.Thread(target=audit)
        auditor.start()
        time.sleep(0.5)
        while auditor.is_alive():
            assert timed(base, "GET", "/health")[0] < 1.0
            took, status, _ = timed(base, "GET", "/api/v1/whoami", made["dep"])
            assert status == 200 and took < 1.0
            time.sleep(0.3)
        took, status, problem = outcome["answer"]
        assert status == 422 and 2.5 < took < 10, (took, problem)
        assert problem["detail"].startswith("The query ran longer than 3 s and was stopped: narrow it")
        too_many = {"statement": "SELECT i, repeat('x', 100) FROM range(2000000) t(i)"}
        status, problem, _ = call(base, "POST", "/api/v1/sql", made["aud"], too_many)
        assert status == 422 and problem["detail"].startswith(
            "The result has more than 100000 rows: add LIMIT or aggregate"
        )
        counted = {"statement": "SELECT count(*) AS n FROM events"}
        assert call(base, "POST", "/api/v1/sql", made["aud"], counted)[0] == 200


def test_an_auditor_query_stops_at_the_default_timeout_of_30_seconds(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    made = tokens_for(project, "aud")
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        request = urllib.request.Request(base + "/api/v1/sql", data=json.dumps({"statement": LONGER_QUERY}).encode())
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {made['aud']}")
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=90)
        took, status, problem = time.monotonic() - started, refused.value.code, json.loads(refused.value.read())
    assert status == 422 and 29 < took < 45, (took, problem)
    assert problem["detail"].startswith("The query ran longer than 30 s and was stopped")


def test_a_ledger_held_by_another_process_is_a_503_with_retry_after_not_a_stuck_thread(
    project: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """Another process holds the ledger file (a long write, a backup): requests that need it give up after
    `lock_wait` (1 s here) with 503 and Retry-After; a token is still checked from the token table, /health answers;
    once the file is free, everything is served again."""
    settings(project, "\n[server]\nlock_wait = 1\n")
    made = tokens_for(project, "aud", "dep")
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        assert call(base, "GET", "/api/v1/whoami", made["aud"])[0] == 200
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(20)",
                str(project / "audit" / "ledger.duckdb"),
            ],  # fmt: skip
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            took, status, problem = timed(base, "GET", "/api/v1/events?limit=3", made["aud"])
            assert status == 503 and took < 4 and "locked by another govern process" in problem["detail"], problem
            status, _, headers = call(base, "GET", "/api/v1/events?limit=3", made["aud"])
            assert status == 503 and headers["retry-after"] == "2"
            took, status, _ = timed(base, "GET", "/api/v1/whoami", made["dep"])
            assert status == 200 and took < 1.0, "the token table answers; whoami needs no ledger"
            assert timed(base, "GET", "/health")[:2][1] == 200
            assert call(base, "GET", "/ready")[0] == 503
        finally:
            holder.kill()
            holder.wait()
        assert call(base, "GET", "/api/v1/events?limit=3", made["aud"])[0] == 200
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_a_token_issued_elsewhere_works_at_once_and_a_revocation_holds_at_the_next_request(
    project: Path, backend: str, request: pytest.FixtureRequest, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """The token table is read again when the ledger changed: a token another process issued works at its first
    request, one it revoked is refused at the next (on PostgreSQL, within `token_refresh`: 1 s)."""
    if backend == "postgresql":
        on_postgresql(project, request.getfixturevalue("pg_database"))
    with serving(project, isolated_env, tmp_path / "server.log") as (_, base):
        assert call(base, "GET", "/api/v1/whoami", FAKE)[0] == 401  # the table is read
        token = tokens_for(project, "aud")["aud"]
        if backend == "postgresql":
            time.sleep(1.2)
        assert call(base, "GET", "/api/v1/whoami", token)[0] == 200
        assert run_cli("tokens", "revoke", token.split("_")[1], cwd=project).exit_code == 0
        if backend == "postgresql":
            time.sleep(1.2)
            # within `token_refresh`; on a loaded machine the table's read may wait its turn, and the snapshot
            # answers meanwhile, never older than `token_staleness` (5 s)
            wait_for(lambda: call(base, "GET", "/api/v1/whoami", token)[0] == 401, "the revocation to hold", 5)
        status, problem, _ = call(base, "GET", "/api/v1/whoami", token)
        assert status == 401 and "was revoked at" in problem["detail"]
