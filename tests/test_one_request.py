"""What one write over HTTP costs the server (issue 27): the configuration loaded once, the project's root found
once, no git process (the anchor rule reads git's ref files), a handful of ledger queries. Counted, not timed:
each counter wraps the real function and calls it."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.server import tokens_for

from govern import config as config_module
from govern.server.app import create_app


def counted(monkeypatch: pytest.MonkeyPatch, counts: Counter, owner: Any, name: str, key: str) -> None:
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts[key] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_a_deployment_over_http_loads_the_configuration_once_and_runs_no_git(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    token = tokens_for(project, "dep")["dep"]
    counts: Counter = Counter()
    counted(monkeypatch, counts, config_module, "load", "configuration loaded")
    counted(monkeypatch, counts, config_module, "find_root", "root found")
    real_popen = subprocess.Popen.__init__

    def popen(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        counts["process " + str(args[0] if isinstance(args, list | tuple) else args)] += 1
        real_popen(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(project)) as client:
        first = client.post(
            "/api/v1/deployments",
            json={"model": "churn", "version": "1", "app": "scoring", "env": "dev"},
            headers=headers,
        )
        assert first.status_code == 201, first.text
        counts.clear()  # the first write of a process reads the anchors once
        second = client.post(
            "/api/v1/deployments",
            json={"model": "churn", "version": "2", "app": "scoring", "env": "dev"},
            headers=headers,
        )
        assert second.status_code == 201, second.text
    assert counts == {"configuration loaded": 1, "root found": 1}, "no git process, no second load"


def test_a_new_anchor_is_seen_by_the_next_write(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ref files are the cache's key: an anchor made after the server started is checked at the next write."""
    from govern.adapters import git as git_adapter
    from govern.api import anchors

    before = anchors.anchors(project)
    subprocess.run(
        ["git", "-C", str(project), "tag", "-a", "govern-anchor/999", "-m", '{"seq": 999, "hash": "x"}'],
        check=True,
        capture_output=True,
    )
    assert [a.seq for a in anchors.anchors(project)] == [*[a.seq for a in before], 999]
    assert git_adapter.tag_refs(project, anchors.TAG_PREFIX) is not None, "read from the files, not from git"
