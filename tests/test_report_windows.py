"""The report's production section reads a version's own deployment events (deployment_index), not the
production_windows view: these tests hold its queries to the view, which stays the definition of a window."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import ACTOR

from govern.envelope import PendingEvent
from govern.events import DeploymentEnded, DeploymentStarted
from govern.readmodel.reports import (
    LATEST_START_SQL,
    LATEST_WINDOWS_SQL,
    SLOT_SUMMARY_SQL,
    TIMELINE_SQL,
    TIMELINE_WINDOWS,
)
from govern.storage.duckdb_log import Ledger

M = "churn"
VERSIONS = ("1", "2", "3")

# What the section showed when it read the view (the queries before this change), kept as the reference.
VIEW_SUMMARY = """
SELECT app, env, count(*) AS windows, min(started_at) AS first_start,
       CASE WHEN bool_or(ended_at IS NULL) THEN NULL ELSE max(ended_at) END AS last_end,
       bool_or(ended_at IS NULL) AS serving, sum(epoch(duration)) AS closed_s, max(start_seq) AS last_start_seq
FROM production_windows WHERE model = $model AND version = $version
GROUP BY app, env ORDER BY last_start_seq DESC
"""

VIEW_LATEST = """
SELECT * FROM (
    SELECT app, env, started_at, ended_at, epoch(duration) AS duration_s, deployed_by, ended_by, end_reason,
           start_seq, end_seq
    FROM production_windows WHERE model = $model AND version = $version
    ORDER BY start_seq DESC LIMIT $shown
) ORDER BY app, env, start_seq
"""

VIEW_TIMELINE = f"""
SELECT app, env, model, version, started_at, ended_at, start_seq FROM (
    SELECT *, row_number() OVER (PARTITION BY app, env ORDER BY start_seq DESC) AS recency
    FROM production_windows WHERE (app, env) IN (SELECT unnest($apps), unnest($envs))
) WHERE recency <= {TIMELINE_WINDOWS}
ORDER BY app, env, start_seq
"""


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """A history as `govern deploy` and `govern retire` write it: in each app/env, a deployment of another version
    first ends the serving one ("replaced"), a retirement ends it ("retired"); some slots still serve at the end."""
    found = Ledger(tmp_path_factory.mktemp("windows") / "ledger.duckdb")
    rng = random.Random(7)
    slots = [(f"app-{i}", env) for i in range(12) for env in ("staging", "production")]
    serving: dict[tuple[str, str], PendingEvent] = {}
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    events: list[PendingEvent] = []
    for _ in range(900):
        moment += timedelta(seconds=rng.randint(1, 3600), microseconds=rng.randint(0, 999_999))
        app, env = rng.choice(slots)
        current = serving.pop((app, env), None)
        retire = current is not None and rng.random() < 0.3
        if current is not None:
            fact = current.fact
            ended = DeploymentEnded(
                app, env, fact.model, fact.version, "retired" if retire else "replaced", current.event_id
            )
            events.append(PendingEvent(ended, actor=f"ops-{rng.randint(1, 3)}", occurred_at=moment))
        if not retire:
            started = PendingEvent(
                DeploymentStarted(app, env, M, rng.choice(VERSIONS)), actor=ACTOR, occurred_at=moment
            )
            events.append(started)
            serving[(app, env)] = started
    found.append(events)
    assert serving, "the history must leave some windows open"
    return found


def _rows(ledger: Ledger, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The definition's answer, as plain records: what the report's typed rows are compared with."""
    with ledger.reader() as reader:
        names, rows = reader.query(sql, params)
    return [dict(zip(names, row, strict=True)) for row in rows]


@pytest.mark.parametrize("version", VERSIONS)
def test_summary_per_slot_matches_the_production_windows_view(ledger: Ledger, version: str) -> None:
    params = {"model": M, "version": version}
    expected = _rows(ledger, VIEW_SUMMARY, params)
    found = _rows(ledger, SLOT_SUMMARY_SQL, params)

    assert len(found) == len(expected) > 0
    assert any(row["serving"] for row in expected) and not all(row["serving"] for row in expected)
    for got, want in zip(found, expected, strict=True):
        assert {k: got[k] for k in want if k != "closed_s"} == {k: v for k, v in want.items() if k != "closed_s"}
        assert got["closed_s"] == pytest.approx(want["closed_s"], abs=1e-6)


@pytest.mark.parametrize("shown", [1, 7, 100])
@pytest.mark.parametrize("version", VERSIONS)
def test_latest_windows_match_the_view(ledger: Ledger, version: str, shown: int) -> None:
    params = {"model": M, "version": version}
    expected = _rows(ledger, VIEW_LATEST, {**params, "shown": shown})
    since = _rows(ledger, LATEST_START_SQL.replace("LIMIT 100", f"LIMIT {shown}"), params)[0]["since"]
    found = _rows(ledger, LATEST_WINDOWS_SQL, {**params, "since": since})

    assert len(expected) == min(shown, _count(ledger, version))
    assert [row["end_reason"] for row in found].count(None) >= (1 if shown == 100 else 0)
    assert found == expected


def test_timeline_of_slots_matches_the_view(ledger: Ledger) -> None:
    lanes = _rows(ledger, SLOT_SUMMARY_SQL, {"model": M, "version": "2"})[:5]
    apps, envs = [lane["app"] for lane in lanes], [lane["env"] for lane in lanes]

    expected = _rows(ledger, VIEW_TIMELINE, {"apps": apps, "envs": envs})
    found = _rows(ledger, TIMELINE_SQL, {"keys": [lane["slot_key"] for lane in lanes], "apps": apps, "envs": envs})

    assert found == expected
    assert {row["version"] for row in found} == set(VERSIONS)  # other versions' windows around this one's


def test_a_version_never_deployed_has_no_slots_and_no_latest_start(ledger: Ledger) -> None:
    params = {"model": M, "version": "never"}
    assert _rows(ledger, SLOT_SUMMARY_SQL, params) == []
    assert _rows(ledger, LATEST_START_SQL, params)[0]["since"] is None


def _count(ledger: Ledger, version: str) -> int:
    sql = "SELECT count(*) AS n FROM deployment_index WHERE version = $version AND type = 'deployment.started'"
    return _rows(ledger, sql, {"version": version})[0]["n"]
