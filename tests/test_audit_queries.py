"""`govern audit sql` and named queries: read-only, one statement, bound parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import run_cli

from govern.envelope import format_timestamp
from govern.storage.duckdb_log import Ledger

M = "breast-cancer-classifier"


@pytest.fixture
def deployed(three_versions: Path) -> Path:
    for args in (
        ("promote", M, "1", "--to", "staging", "--reason", "checked"),
        ("promote", M, "1", "--to", "production", "--reason", "go"),
        ("deploy", M, "1", "--app", "scoring"),
    ):
        assert run_cli(*args, cwd=three_versions).exit_code == 0
    return three_versions


def deployed_at(project: Path) -> datetime:
    [started] = Ledger(project / "audit" / "ledger.duckdb").read(types=["deployment.started"])
    return started.occurred_at.replace(tzinfo=UTC)


def test_sql_reads_the_documented_views(deployed: Path) -> None:
    result = run_cli(
        "audit", "sql", "SELECT model, version, started_at FROM production_windows", "--json", cwd=deployed
    )
    assert result.exit_code == 0, result.output
    started = format_timestamp(deployed_at(deployed))
    assert json.loads(result.stdout) == [{"model": M, "version": "1", "started_at": started}]
    for view in ("events", "trainings", "model_versions", "datasets", "promotions", "production_windows", "inferences"):
        assert run_cli("audit", "sql", f"SELECT count(*) FROM {view}", cwd=deployed).exit_code == 0, view


@pytest.mark.parametrize(
    "statement, message",
    [
        ("DELETE FROM events", "not DELETE"),
        ("UPDATE events SET actor = 'x'", "not UPDATE"),
        ("CREATE TABLE x (a INT)", "not CREATE"),
        ("SELECT 1; DELETE FROM events", "exactly one SQL statement, not 2"),
        ("SELEC nonsense", "does not parse"),
    ],
)
def test_sql_refuses_writes_and_several_statements(deployed: Path, statement: str, message: str) -> None:
    before = Ledger(deployed / "audit" / "ledger.duckdb").head()
    result = run_cli("audit", "sql", statement, cwd=deployed)
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert Ledger(deployed / "audit" / "ledger.duckdb").head() == before


def test_named_queries_bind_their_parameters(deployed: Path) -> None:
    just_after = (deployed_at(deployed) + timedelta(microseconds=1)).astimezone(timezone(timedelta(hours=1)))
    listed = json.loads(run_cli("audit", "run", "--json", cwd=deployed).stdout)
    assert {"production_at", "promotions_of_model", "model_lineage", "inferences_per_month"} <= set(listed)

    served = run_cli(
        "audit",
        "run",
        "production_at",
        "--param",
        "app=scoring",
        "--param",
        "env=production",
        "--param",
        f"at={just_after.isoformat()}",
        "--json",
        cwd=deployed,
    )
    assert [r["version"] for r in json.loads(served.stdout)] == ["1"]

    injected = run_cli(
        "audit", "run", "promotions_of_model", "--param", f"model={M}' OR '1'='1", "--json", cwd=deployed
    )
    assert injected.exit_code == 0 and json.loads(injected.stdout) == []
    lineage = json.loads(
        run_cli(
            "audit", "run", "model_lineage", "--param", f"model={M}", "--param", "version=1", "--json", cwd=deployed
        ).stdout
    )
    raw = next(r for r in lineage if r["dataset"] == "data/raw/breast_cancer.csv")
    assert raw["role"] == "source" and raw["extracted_at"].endswith("Z") and raw["rows"] == 569


def test_unknown_named_query_lists_the_known_ones(deployed: Path) -> None:
    result = run_cli("audit", "run", "nope", cwd=deployed)
    assert result.exit_code == 1 and "No query named 'nope'" in result.output and "production_at" in result.output


def test_the_point_query_agrees_with_the_windows_view_at_every_instant(
    three_versions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """production_at reads one slot of the sorted projection; the production_windows view derives every
    window from scratch. Same answers, before and after the projection is compacted (re-sorted)."""
    import govern.storage.duckdb_log

    # compact every few appends, not every 100,000 rows
    monkeypatch.setattr(govern.storage.duckdb_log, "COMPACT_ROWS", 64)
    import random
    from datetime import UTC, datetime, timedelta

    from govern.envelope import PendingEvent
    from govern.events import DeploymentEnded, DeploymentStarted
    from govern.readmodel.deployments import WINDOW_COLUMNS, WINDOW_JOINS, WindowRow, production_at
    from govern.readmodel.rows import naive_utc, rows_as

    ledger = Ledger(three_versions / "audit" / "ledger.duckdb")
    rng = random.Random(7)
    moment, events, open_start = datetime(2026, 1, 1, tzinfo=UTC), [], {}
    for _ in range(300):
        app = rng.choice(["scoring", "triage", "fraud"])
        moment += timedelta(minutes=rng.choice([0, 1, 5, 60]))  # equal instants included: zero-length windows
        if app in open_start and rng.random() < 0.5:
            started = open_start.pop(app)
            fact = DeploymentEnded(app, "production", M, started.fact.version, "retired", started.event_id)
            events.append(PendingEvent(fact, actor="ops", occurred_at=moment))
            continue
        if app in open_start:
            started = open_start.pop(app)
            fact = DeploymentEnded(app, "production", M, started.fact.version, "replaced", started.event_id)
            events.append(PendingEvent(fact, actor="ops", occurred_at=moment))
        start = PendingEvent(DeploymentStarted(app, "production", M, rng.choice("123")), "ops", moment)
        open_start[app] = start
        events.append(start)
    for chunk in range(0, len(events), 25):
        ledger.append(events[chunk : chunk + 25])
    _, [(compactions,)] = ledger.query("SELECT count(*) FROM govern_compactions WHERE table_name = 'deployment_index'")
    assert compactions >= 4, "the projection was re-sorted several times along the way"
    assert ledger.verify().ok, "compaction changes the order of the projection, never its rows"

    reference = f"""
        SELECT {WINDOW_COLUMNS} FROM production_windows AS w {WINDOW_JOINS}
        WHERE w.app = $app AND w.env = 'production' AND w.started_at <= $at AND (w.ended_at IS NULL OR $at < w.ended_at)
    """
    instants = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(-5, 300 * 30)) for _ in range(400)]
    instants += [e.occurred_at for e in events[::7]]
    answered = 0
    with ledger.reader() as reader:
        for at in instants:
            app = rng.choice(["scoring", "triage", "fraud"])
            expected = rows_as(reader, WindowRow, reference, {"app": app, "at": naive_utc(at)})
            found = production_at(reader, app, "production", at)
            assert found == (expected[0] if expected else None), (app, at)
            answered += bool(found and found.training_seq and found.git_commit)
    assert answered > 100, "most instants fall in a window that names its training"
