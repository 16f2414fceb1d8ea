"""The PostgreSQL ledger beside the DuckDB file, on the same history (issue 13).

P1  `govern audit production` as a process, against the same command on the file
P7  the production question in-process, one fresh answer per question (PostgreSQL's head checked each time)
P9  one-event appends with 8 writer processes at once: latency p95, PostgreSQL and the file
P2  `govern audit verify` (PostgreSQL recomputes every hash), against the file
P0  moving the history: `audit copy` into PostgreSQL, and a machine's first pull of its read model
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

WRITERS = 8
APPENDS = 40
WRITER = """
import json, sys, time
from pathlib import Path
from govern.envelope import PendingEvent, utc_now
from govern.events import DatasetSnapshotted
from govern.storage import open_store

location, start_at, out, worker = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ledger = open_store(location, lock_timeout=120)
ledger.head()  # connected and migrated before the clock starts, as a long-lived writer would be
while time.time() < start_at:
    time.sleep(0.001)
samples = []
for i in range({appends}):
    fact = DatasetSnapshotted(f"w{{worker}}/{{i}}.csv", f"{{i:032x}}", None, i, "bench", "2020-01-01T00:00:00.000000Z",
                              "stage-run")
    started = time.perf_counter()
    ledger.append([PendingEvent(fact, actor="bench", occurred_at=utc_now())])
    samples.append(time.perf_counter() - started)
Path(out).write_text(json.dumps(samples))
"""


def concurrent_appends(location: str, env: dict[str, str], base: Path) -> list[float]:
    """WRITERS processes append APPENDS single events each, all starting at the same instant."""
    start_at = time.time() + 3
    outs = [base / f"writer-{w}-{uuid.uuid4().hex[:6]}.json" for w in range(WRITERS)]
    script = WRITER.format(appends=APPENDS)
    processes = [
        subprocess.Popen([sys.executable, "-c", script, location, str(start_at), str(out), str(w)], env=env)
        for w, out in enumerate(outs)
    ]
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError(f"a bench writer failed on {location}")
    return [sample for out in outs for sample in json.loads(out.read_text())]


def measure(
    project: Path,
    ledger_path: Path,
    env: dict[str, str],
    base: Path,
    repeat: int,
    probe: tuple[str, str],
    deployments: int,
    admin_url: str,
) -> dict[str, Any]:
    import psycopg

    from bench.__main__ import deployed_at, p95, run, stats, timed
    from govern.readmodel import deployments as queries
    from govern.storage import copy
    from govern.storage.duckdb_log import Ledger
    from govern.storage.postgres_log import PostgresLedger

    name = f"govern_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(admin_url, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    rows: dict[str, Any] = {}
    try:
        file = Ledger(ledger_path)
        started = time.perf_counter()
        copied = copy(file, PostgresLedger(url, cache_dir=base / "copy-cache"))
        copy_s = time.perf_counter() - started
        assert copied.ok, copied
        pg_env = {**env, "GOVERN_LEDGER": url, "GOVERN_CACHE_DIR": str(base / "pg-cache")}
        file_env = {**env, "GOVERN_LEDGER": str(ledger_path)}
        govern = [sys.executable, "-m", "govern"]
        app, at = probe
        question = [*govern, "audit", "production", "--app", app, "--at", at, "--json"]
        pull_s = timed(lambda: run(question, project, pg_env), 1)[0]
        assert json.loads(run(question, project, pg_env).stdout)["version"] == "1"
        rows["P0"] = {
            "govern": {"audit copy into PostgreSQL": stats([copy_s]), "first pull of a read model": stats([pull_s])},
            "peer": None,
            "peer_name": "-",
            "target": "- (once per ledger, once per machine)",
            "met": True,
        }

        p1_file, p1_pg = [], []
        for _ in range(repeat):  # interleaved, so both see the same machine
            p1_file += timed(lambda: run(question, project, file_env), 1)
            p1_pg += timed(lambda: run(question, project, pg_env), 1)
        rows["P1"] = _ratio_row(stats(p1_pg), stats(p1_file), "the same command on the file (B1)", 1.5)

        pg = PostgresLedger(url, cache_dir=base / "pg-cache")
        count = max(100, repeat * 40)
        probes = [deployed_at(k * (deployments - 1) // (count - 1)) for k in range(count)]
        p7_file = [timed(lambda a=a, t=t: queries.production_at(file, a, "production", t), 1)[0] for a, t in probes]
        p7_pg = [timed(lambda a=a, t=t: queries.production_at(pg, a, "production", t), 1)[0] for a, t in probes]
        assert all(queries.production_at(pg, a, "production", t) for a, t in probes[:10])
        rows["P7"] = _ratio_row(
            {"p95": p95(p7_pg), **stats(p7_pg)},
            {"p95": p95(p7_file), **stats(p7_file)},
            "the file, a connection per question",
            1.5,
            key="p95",
        )

        p9_pg = concurrent_appends(url, env, base)
        p9_file = concurrent_appends(str(base / "concurrent.duckdb"), env, base)
        rows["P9"] = {
            "govern": {"p95": p95(p9_pg), **stats(p9_pg)},
            "peer": {"p95": p95(p9_file), **stats(p9_file)},
            "peer_name": f"the DuckDB file, {WRITERS} writer processes",
            "target": f"p95 <= 20 ms with {WRITERS} concurrent writers",
            "met": p95(p9_pg) <= 0.020,
        }

        p2_pg = timed(lambda: run([*govern, "audit", "verify"], project, pg_env), repeat)
        p2_file = timed(lambda: run([*govern, "audit", "verify"], project, file_env), repeat)
        rows["P2"] = {
            "govern": stats(p2_pg),
            "peer": stats(p2_file),
            "peer_name": "the file (B2)",
            "target": "- (reported at 1,000,000 events)",
            "met": True,
        }
        pg.close()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return rows


def _ratio_row(
    mine: dict[str, float], theirs: dict[str, float], peer: str, limit: float, key: str = "median"
) -> dict[str, Any]:
    ratio = mine[key] / theirs[key]
    return {
        "govern": mine,
        "peer": theirs,
        "peer_name": f"{peer}; ratio {ratio:.2f}",
        "target": f"<= {limit}x the file at 1,000,000 events",
        "met": ratio <= limit,
    }
