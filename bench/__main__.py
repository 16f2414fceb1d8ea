"""govern's benchmarks, side by side with GTO, MLflow and DVC, measured in the same run.

    python -m bench [--events N] [--repeat R] [--gto-tags T] [--out DIR] [--skip-repro] [--http-writes W]

Builds a synthetic history on top of a real reproduction of the demo (so
reports and point queries hit real trainings and registrations), runs each
measurement R times, and writes bench/results.json and BENCHMARKS.md
(median, min, max, the peer's numbers from the same run, ratio, target).
Not part of the pass/fail suite; tests/test_bench_smoke.py runs it tiny.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.figures import p95, stats

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMO_FILES = (
    "pipelines",
    "dvc.yaml",
    "params.yaml",
    "dvc.lock",
    "metrics.json",
    "pyproject.toml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "data/raw/.gitignore",
    "data/prepared/.gitignore",
    "models/.gitignore",
    "audit/README.md",
    "audit/queries",
)
MODEL = "breast-cancer-classifier"


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOVERN_", "MLFLOW_", "GIT_"))}
    # Processes are timed as a user's run them: with Python's bytecode cache. A shell that sets
    # PYTHONDONTWRITEBYTECODE would have every govern process compile govern's modules from source (about 30 ms
    # of each B1 run), while the peers' installed packages come compiled by pip.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text("[user]\n\tname = Bench\n\temail = bench@example.com\n")
    env.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
    )
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done


def timed(action: Callable[[], Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


# ---------------------------------------------------------------- the synthetic history


def make_project(base: Path, env: dict[str, str]) -> Path:
    project = base / "demo"
    for name in DEMO_FILES:
        source, target = REPO / name, project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    run(["git", "init", "-q", "-b", "main"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-q", "-m", "demo"], project, env)
    run([sys.executable, "-m", "govern", "repro"], project, env)
    # Inline: a background mirror still running (or waiting for the ledger during the fill) would compete with
    # the measurements, and every later write would start another while the registry stayed pending.
    inline = {**env, "GOVERN_REGISTRY_MIRROR": "inline"}
    for args in (["--to", "staging"], ["--to", "production"]):
        run([sys.executable, "-m", "govern", "promote", MODEL, "1", *args, "--reason", "bench"], project, inline)
    return project


SYNTHETIC_START = datetime(2020, 1, 1, tzinfo=UTC)
APPS = 500


def deployed_at(k: int) -> tuple[str, datetime]:
    """The k-th synthetic deployment: its app, and an instant inside its 30-second window."""
    return f"app-{k % APPS}", SYNTHETIC_START + timedelta(minutes=10 * k, seconds=10)


def fill(ledger_path: Path, total: int, first: int = 0) -> dict[str, Any]:
    """Append synthetic events until the ledger holds `total`, in batches of 100,000.

    Nine in ten are dataset snapshots; one in ten a deployment window (start and end) of one of
    500 apps, so about 18% of the ledger is deployment events: a deployment-heavy history.
    `first` continues a history filled before (times keep increasing, as govern requires per app).
    """
    from govern.envelope import PendingEvent
    from govern.events import DatasetSnapshotted, DeploymentEnded, DeploymentStarted
    from govern.storage.duckdb_log import Ledger

    ledger = Ledger(ledger_path, lock_timeout=600)
    have = ledger.head()[0]
    batch, appended, seconds = [], 0, 0.0
    i = first
    while have + appended + len(batch) < total:
        moment = SYNTHETIC_START + timedelta(minutes=i)
        if i % 10 == 0:
            app = deployed_at(i // 10)[0]
            started = PendingEvent(DeploymentStarted(app, "production", MODEL, "1"), actor="bench", occurred_at=moment)
            ended = DeploymentEnded(app, "production", MODEL, "1", "retired", started.event_id)
            batch += [started, PendingEvent(ended, actor="bench", occurred_at=moment + timedelta(seconds=30))]
        else:
            fact = DatasetSnapshotted(
                f"data/part-{i}.csv", f"{i:032x}", None, i, "bench", "2020-01-01T00:00:00.000000Z", "stage-run"
            )
            batch.append(PendingEvent(fact, actor="bench", occurred_at=moment))
        i += 1
        if len(batch) >= 100_000 or have + appended + len(batch) >= total:
            seconds += timed(lambda b=batch: ledger.append(b), 1)[0]
            appended += len(batch)
            batch = []
    return {
        "appended": appended,
        "seconds": seconds,
        "events_per_s": appended / seconds if seconds else 0.0,
        "next": i,
        "deployments": (i + 9) // 10,  # deployments 0 .. this - 1 exist (one every ten steps)
    }


def gto_history(base: Path, env: dict[str, str], tags: int) -> Path:
    """The same kind of history as GTO would keep it: registration and assignment tags in a git repository."""
    repo = base / "gto"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo, env)
    (repo / "dvc.yaml").write_text(f"artifacts:\n  {MODEL}:\n    path: model.pkl\n    type: model\n")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "artifact"], repo, env)
    # One commit per version (GTO allows one version per commit), a registration and two assignments each.
    steps, stamp = [], 1_600_000_000
    for n in range(0, tags, 3):
        version = n // 3 + 1
        steps.append(f'git commit -q --allow-empty -m "v{version}"')
        for k, name in enumerate((f"{MODEL}@v{version}.0.0", f"{MODEL}#staging#{n + 2}", f"{MODEL}#prod#{n + 3}")):
            steps.append(f'GIT_COMMITTER_DATE="{stamp + n + k} +0000" git tag -a "{name}" -m bench')
    script = base / "gto-tags.sh"
    script.write_text("set -e\n" + "\n".join(steps) + "\n")
    run(["sh", str(script)], repo, env)
    return repo


# ---------------------------------------------------------------- the measurements


def measure(
    events: int,
    repeat: int,
    gto_tags: int,
    skip_repro: bool,
    keep: bool = False,
    b7_events: int | None = None,
    postgres: str | None = None,
    http_writes: int = 25,
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="govern-bench-"))
    print(f"bench: working in {base}", file=sys.stderr)
    env = environment(base / "home")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the rows' other processes too (environment() says why)
    os.environ.update(
        {k: env[k] for k in ("HOME", "GIT_CONFIG_GLOBAL", "DVC_NO_ANALYTICS", "MLFLOW_DISABLE_TELEMETRY")}
    )
    project = make_project(base, env)
    ledger_path = project / "audit" / "ledger.duckdb"
    filled = fill(ledger_path, events)
    b7_events = max(events, b7_events or events)
    results: dict[str, Any] = {"events": events, "b7_events": b7_events, "repeat": repeat, "rows": {}}
    govern = [sys.executable, "-m", "govern"]
    # The question is asked about the last synthetic deployment: the answer is a window, found late in the ledger.
    probe_app, probe_at = deployed_at(filled["deployments"] - 1)
    at = probe_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = json.loads(
        run([*govern, "audit", "production", "--app", probe_app, "--at", at, "--json"], project, env).stdout
    )
    assert answer["version"] == "1", answer  # the benchmark measures a real answer, not an empty one

    def cli(*args: str) -> Callable[[], Any]:
        return lambda: run([*govern, *args], project, env)

    # B1: which version served app X at T, as a whole process, against GTO on 1,500 promotion tags.
    gto_repo = gto_history(base, env, gto_tags)
    gto = str(BIN / "gto")
    b1 = timed(cli("audit", "production", "--app", probe_app, "--at", at, "--json"), repeat)
    b1_gto = timed(lambda: run([gto, "history", MODEL, "--json"], gto_repo, env), repeat)
    results["rows"]["B1"] = {
        "govern": stats(b1),
        "peer": stats(b1_gto),
        "peer_name": f"gto history --json ({gto_tags} tags)",
        "target": "govern >= 20x faster than GTO; <= 0.3 s at 1,000,000 events",
        "met": statistics.median(b1_gto) / statistics.median(b1) >= 20
        and (events < 1_000_000 or statistics.median(b1) <= 0.3),
    }

    # B2: audit verify against the hashing floor (hashlib over the same bytes in one Python loop).
    b2 = timed(cli("audit", "verify"), repeat)
    from govern.storage.chain import HASHED_TEXT_SQL
    from govern.storage.duckdb_log import Ledger

    _, rows = Ledger(ledger_path).query(f"SELECT {HASHED_TEXT_SQL} FROM stored_events ORDER BY seq")
    blobs = [row[0].encode() for row in rows]
    b2_floor = timed(lambda: [hashlib.sha256(b).hexdigest() for b in blobs], repeat)
    results["rows"]["B2"] = {
        "govern": stats(b2),
        "peer": stats(b2_floor),
        "peer_name": "hashlib loop (floor)",
        "target": "<= 1 s at 1,000,000 events",
        "met": statistics.median(b2) <= 1.0,
    }

    # B3: batch append throughput against DuckDB's bulk insert without hashing; one event through the CLI.
    import duckdb

    exported = _parquet(ledger_path, base)
    con = duckdb.connect(str(base / "bulk.duckdb"))
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{exported}') LIMIT 0")
    started = time.perf_counter()
    con.execute(f"INSERT INTO events SELECT * FROM read_parquet('{exported}')")
    bulk_rate = events / (time.perf_counter() - started)
    con.close()
    single = timed(
        lambda: run([*govern, "deploy", MODEL, "1", "--app", f"bench-{time.perf_counter_ns()}"], project, env), repeat
    )
    results["rows"]["B3"] = {
        "govern": {"batch events/s": filled["events_per_s"], "one event via the CLI": stats(single)},
        "peer": {"batch events/s": bulk_rate},
        "peer_name": "DuckDB bulk insert, no hashing",
        "target": "batch >= 100,000 events/s; one event via the CLI <= 0.3 s",
        "met": filled["events_per_s"] >= 100_000 and statistics.median(single) <= 0.3,
    }

    # B4: cold start.
    b4 = {
        name: stats(timed(lambda c=command: run(c, project, env), repeat))
        for name, command in {
            "govern --help": [*govern, "--help"],
            "govern audit log -n 10": [*govern, "audit", "log", "-n", "10"],
            "mlflow --help": [str(BIN / "mlflow"), "--help"],
            "gto --help": [gto, "--help"],
            "dvc --help": [str(BIN / "dvc"), "--help"],
        }.items()
    }
    results["rows"]["B4"] = {
        "govern": {k: v for k, v in b4.items() if k.startswith("govern")},
        "peer": {k: v for k, v in b4.items() if not k.startswith("govern")},
        "peer_name": "mlflow / gto / dvc --help",
        "target": "<= 0.25 s",
        "met": all(v["median"] <= 0.25 for k, v in b4.items() if k.startswith("govern")),
    }

    # B5: govern repro against dvc repro, nothing to do and one changed parameter.
    if not skip_repro:
        noop = timed(cli("repro"), repeat)
        dvc_noop = timed(lambda: run([str(BIN / "dvc"), "repro", "-q"], project, env), repeat)
        changed, dvc_changed = [], []
        params = project / "params.yaml"
        for i in range(repeat):
            for offset, command, sink in (
                (1, [*govern, "repro", "--allow-dirty"], changed),
                (2, [str(BIN / "dvc"), "repro", "-q"], dvc_changed),
            ):
                params.write_text(re.sub(r"max_iter: \d+", f"max_iter: {1000 + 10 * i + offset}", params.read_text()))
                sink.extend(timed(lambda c=command: run(c, project, env), 1))
                run(["git", "checkout", "-q", "params.yaml"], project, env)
        overhead = statistics.median(changed) - statistics.median(dvc_changed)
        results["rows"]["B5"] = {
            "govern": {"no-op": stats(noop), "changed": stats(changed)},
            "peer": {"no-op": stats(dvc_noop), "changed": stats(dvc_changed)},
            "peer_name": "dvc repro",
            "overhead_s": overhead,
            "target": "no-op <= 1.2x dvc; changed: overhead <= 3 s",
            "met": statistics.median(noop) <= 1.2 * statistics.median(dvc_noop) and overhead <= 3,
        }

    # B6: one report.
    b6 = timed(cli("audit", "report", MODEL, "1", "-o", str(base / "report.html")), repeat)
    results["rows"]["B6"] = {
        "govern": stats(b6),
        "peer": None,
        "peer_name": "-",
        "target": "<= 1 s at 1,000,000 events",
        "met": statistics.median(b6) <= 1.0,
    }

    # B8: a promotion as a process, against `gto assign` (both write the fact and a git tag). govern's MLflow
    # alias follows in a background `govern mirror`, waited for between samples (untimed) so it does not
    # compete with the next one; the inline variant shows what waiting for MLflow would cost.
    b8 = promotions(project, env, repeat, inline=False)
    b8_inline = promotions(project, env, max(1, repeat // 2), inline=True)
    b8_gto = gto_assignments(gto_repo, env, repeat)
    results["rows"]["B8"] = {
        "govern": {"promote (alias in the background)": stats(b8), "promote --inline alias": stats(b8_inline)},
        "peer": stats(b8_gto),
        "peer_name": "gto assign",
        "target": "promote answers <= 1 s",
        "met": statistics.median(b8) <= 1.0,
    }

    # H1-H2: the controller over HTTP on the same history (bench/over_http.py).
    from bench import over_http

    count = max(100, repeat * 40)
    probes = [deployed_at(k * (filled["deployments"] - 1) // (count - 1)) for k in range(count)]
    results["rows"].update(over_http.measure(project, env, base, http_writes, probes))

    # W1: every page of every role over HTTP, signed in (bench/web_pages.py).
    from bench import web_pages

    results["rows"].update(web_pages.measure(project, env, base, repeat, probe_app))

    # P0-P9: the PostgreSQL ledger beside the file, on the same history (bench/postgres.py).
    if postgres:
        from bench import postgres as postgres_bench

        results["rows"].update(
            postgres_bench.measure(
                project, ledger_path, env, base, repeat, (probe_app, at), filled["deployments"], postgres
            )
        )

    # B7: the production question in-process, p95 over many instants.
    from govern.readmodel import deployments as queries

    # B7 on a larger ledger: the same history, continued.
    if b7_events > events:
        filled = fill(ledger_path, b7_events, first=filled["next"])
    # Instants spread over the whole history, each inside a window of its app (every question has an answer).
    count = max(100, repeat * 40)
    probes = [deployed_at(k * (filled["deployments"] - 1) // (count - 1)) for k in range(count)]
    with Ledger(ledger_path).reader() as reader:  # one connection, as a long-lived service would hold it
        b7 = [timed(lambda a=app, t=t: queries.production_at(reader, a, "production", t), 1)[0] for app, t in probes]
        assert all(queries.production_at(reader, app, "production", t) for app, t in probes[:10])
    results["rows"]["B7"] = {
        "govern": {"p95": p95(b7), **stats(b7)},
        "peer": None,
        "peer_name": "-",
        "target": "p95 <= 5 ms at 10,000,000 events",
        "met": p95(b7) <= 0.005,
    }
    results["machine"] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return results


def second_version(project: Path, env: dict[str, str]) -> str:
    """A version besides 1 to move `staging` to and fro (B5 registers some; with --skip-repro, train one)."""
    govern = [sys.executable, "-m", "govern"]
    versions = json.loads(run([*govern, "status", "--json"], project, env).stdout)["models"][0]["versions"]
    others = [v["version"] for v in versions if v["version"] != "1" and v["deprecated_at"] is None]
    if others:
        return others[-1]
    params = project / "params.yaml"
    params.write_text(re.sub(r"max_iter: \d+", "max_iter: 1999", params.read_text()))
    run([*govern, "repro", "--allow-dirty"], project, env)
    run(["git", "checkout", "-q", "params.yaml"], project, env)
    return second_version(project, env)


def promotions(project: Path, env: dict[str, str], repeat: int, *, inline: bool) -> list[float]:
    """`govern promote` timed as a process, `staging` moving between two versions; each sample's mirror
    settles before the next."""
    env = {**env, "GOVERN_REGISTRY_MIRROR": "inline" if inline else "background"}
    govern = [sys.executable, "-m", "govern"]
    versions = (second_version(project, env), "1")
    state = json.loads(run([*govern, "status", "--json"], project, env).stdout)["models"][0]["versions"]
    if any(v["version"] == versions[0] and "staging" in v["stages"] for v in state):
        versions = versions[::-1]  # start with the version that does not hold the stage
    samples = []
    for i in range(repeat):
        version = versions[i % 2]
        command = [*govern, "promote", MODEL, version, "--to", "staging", "--force", "--reason", f"bench {i}"]
        samples += timed(lambda c=command: run(c, project, env), 1)
        wait_for_mirrors(project, env)
    return samples


def wait_for_mirrors(project: Path, env: dict[str, str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(run([sys.executable, "-m", "govern", "status", "--json"], project, env).stdout)
        if not status["pending_mirrors"]["registry"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the registry mirror did not settle in {timeout:.0f} s: see {project}/audit/mirror.log")


def gto_assignments(repo: Path, env: dict[str, str], repeat: int) -> list[float]:
    """`gto assign` of the newest version, alternating stages (`--force`: a stage it already holds again)."""
    gto = str(BIN / "gto")
    version = json.loads(run([gto, "show", MODEL, "--json"], repo, env).stdout)
    newest = max((v["version"] for v in version), key=lambda v: tuple(int(x) for x in v.lstrip("v").split(".")))
    return [
        timed(
            lambda s=("staging", "prod")[i % 2]: run(
                [gto, "assign", MODEL, "--version", newest, "--stage", s, "--force", "-m", "bench"], repo, env
            ),
            1,
        )[0]
        for i in range(repeat)
    ]


def _parquet(ledger_path: Path, base: Path) -> Path:
    import duckdb

    target = base / "events.parquet"
    con = duckdb.connect(str(ledger_path), read_only=True)
    con.execute(f"COPY (SELECT * FROM events) TO '{target}' (FORMAT parquet)")
    con.close()
    return target


def markdown(results: dict[str, Any]) -> str:
    def seconds(value: float) -> str:
        return f"{value * 1000:.2f} ms" if value < 0.1 else f"{value:.3f} s"

    def cell(value: Any) -> str:
        if isinstance(value, dict) and "median" in value:
            shown = f"{seconds(value['median'])} (min {seconds(value['min'])}, max {seconds(value['max'])})"
            return f"p95 {seconds(value['p95'])}, median {shown}" if "p95" in value else shown
        if isinstance(value, dict):
            return "<br>".join(f"{k}: {cell(v)}" for k, v in value.items())
        if isinstance(value, float):
            return f"{value:,.0f}" if value > 100 else f"{value:.3f}"
        if isinstance(value, int):
            return f"{value:,}"
        return "-" if value is None else str(value)

    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench --events {results['events']} --b7-events {results['b7_events']} "
        f"--repeat {results['repeat']}` on "
        f"{results['machine']['platform']}, Python {results['machine']['python']}, {results['machine']['cpus']} CPUs. "
        f"Peers are measured in the same run. B1-B6 ran on a ledger of {results['events']:,} events, B7 on "
        f"{results['b7_events']:,} (the same history, continued).",
        "",
        "| id | govern | peer | peer measured | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row_id, row in results["rows"].items():
        lines.append(
            f"| {row_id} | {cell(row['govern'])} | {cell(row['peer'])} | {row['peer_name']} | {row['target']} | "
            f"{'yes' if row['met'] else '**no**'} |"
        )
    notes = Path(__file__).with_name("notes.md")  # the analysis (profiles, before/after) kept by hand
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="ledger size (default 1,000,000)")
    parser.add_argument(
        "--b7-events", type=int, default=10_000_000, help="ledger size for B7, the in-process query (default 10M)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement")
    parser.add_argument("--gto-tags", type=int, default=1500, help="GTO tags in the peer's history")
    parser.add_argument("--skip-repro", action="store_true", help="leave out B5 (the DVC pipeline comparison)")
    parser.add_argument("--keep", action="store_true", help="keep the generated project and ledger (path on stderr)")
    parser.add_argument("--out", type=Path, default=REPO, help="where BENCHMARKS.md and bench/results.json go")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL maintenance database to create the P rows' database in ('' leaves them out)",
    )
    parser.add_argument(
        "--http-writes", type=int, default=25, help="writes per client of H1, 16 clients over HTTP (default 25)"
    )
    args = parser.parse_args(argv)
    results = measure(
        args.events,
        args.repeat,
        args.gto_tags,
        args.skip_repro,
        args.keep,
        args.b7_events,
        args.postgres or None,
        args.http_writes,
    )
    (args.out / "bench").mkdir(parents=True, exist_ok=True)
    (args.out / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "BENCHMARKS.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
