"""What one write over HTTP costs the server (issue 27): the configuration loaded once, the project's root found
once, one git process (the anchor rule's: git's answer is asked at every write, tests/test_anchor_refs.py says
why). Counted, not timed: each counter wraps the real function and calls it. The server's own background threads
(the job runner polls the ledger on a timer, and a loaded machine can make its tick fall inside the counted
request) are not the request's cost and are not counted."""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.server import tokens_for

from govern import config as config_module
from govern.server.app import create_app


def in_background() -> bool:
    return threading.current_thread().name.startswith("govern-")


def counted(monkeypatch: pytest.MonkeyPatch, counts: Counter, owner: Any, name: str, key: str) -> None:
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not in_background():
            counts[key] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_a_deployment_over_http_loads_the_configuration_once_and_asks_git_only_for_the_anchors(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    token = tokens_for(project, "dep")["dep"]
    counts: Counter = Counter()
    counted(monkeypatch, counts, config_module, "load", "configuration loaded")
    counted(monkeypatch, counts, config_module, "find_root", "root found")
    real_popen = subprocess.Popen.__init__

    def popen(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        shown = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
        if not in_background():
            counts["process " + " ".join(a for a in shown[:1] + shown[3:4])] += 1
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
        counts.clear()
        second = client.post(
            "/api/v1/deployments",
            json={"model": "churn", "version": "2", "app": "scoring", "env": "dev"},
            headers=headers,
        )
        assert second.status_code == 201, second.text
    assert counts == {"configuration loaded": 1, "root found": 1, "process git for-each-ref": 1}
