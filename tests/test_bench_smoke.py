"""The benchmark suite runs end to end at a tiny size (its numbers are checked in bench/, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # reproduces the demo with DVC and MLflow


def test_bench_runs_at_a_tiny_size_and_writes_both_reports(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--events", "2000", "--b7-events", "3000", "--repeat", "1",
         "--gto-tags", "9", "--skip-repro", "--http-writes", "4", "--out", str(tmp_path)],
        cwd=REPO,
        env=isolated_env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    rows = {"B1", "B2", "B3", "B4", "B6", "B7", "B8", "H1", "H2", "W1", "P0", "P1", "P2", "P7", "P9"}
    assert set(results["rows"]) == rows
    for row in ("P1", "P2"):
        assert results["rows"][row]["govern"]["median"] > 0 and results["rows"][row]["peer"]["median"] > 0
    assert 0 < results["rows"]["P9"]["govern"]["p95"] < 5, "PostgreSQL appends measured with 8 writers"
    assert results["rows"]["B8"]["peer"]["median"] > 0, "gto assign measured in the same run"
    assert results["rows"]["B8"]["govern"]["promote (alias in the background)"]["median"] > 0
    assert (results["events"], results["b7_events"]) == (2000, 3000)
    for row in ("B1", "B2", "B6"):
        assert results["rows"][row]["govern"]["median"] > 0
    assert results["rows"]["B1"]["peer"]["median"] > 0, "GTO measured in the same run"
    assert results["rows"]["B3"]["govern"]["batch events/s"] > 0
    assert 0 < results["rows"]["B7"]["govern"]["p95"] < 1
    assert results["rows"]["H1"]["govern"]["writes/s"] > 0, "16 clients x 4 writes over HTTP, every one accepted"
    assert results["rows"]["H1"]["govern"]["one write"]["p95"] > 0
    assert 0 < results["rows"]["H2"]["govern"]["p95"] < 10
    pages = results["rows"]["W1"]["pages"]
    assert {"/models", "/approvals", "/apps", "/audit/timeline", "/admin/principals"} <= set(pages), pages
    assert all(seconds > 0 for seconds in pages.values())
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| B1 |" in table and "| B7 |" in table
    assert "## Profiles of the targets still missed" in table, "bench/notes.md is appended to every regeneration"
