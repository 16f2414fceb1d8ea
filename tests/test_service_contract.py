"""One interface, two implementations (issue 27): `api.local.LocalGovernance` (the use cases on this machine's
project) and `client.HttpGovernance` (the same through `govern serve`) take the interface's arguments, and give
the same answers to the same questions, here and over HTTP."""

from __future__ import annotations

import inspect
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from govern.api.local import LocalGovernance
from govern.api.service import Governance
from govern.client import HttpGovernance

OPERATIONS = sorted(n for n, v in vars(Governance).items() if inspect.isfunction(v) and not n.startswith("_"))


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_both_implementations_take_the_interfaces_arguments(operation: str) -> None:
    wanted = _parameters(getattr(Governance, operation))
    assert _parameters(getattr(LocalGovernance, operation)) == wanted
    assert _parameters(getattr(HttpGovernance, operation)) == wanted


def test_the_interface_covers_every_operation_the_remote_cli_sends() -> None:
    """No command keeps a twin of its own: what the HTTP implementation offers is the interface (and `repro`, whose
    remote form runs the pipeline here and uploads its facts)."""
    offered = {n for n, v in vars(HttpGovernance).items() if inspect.isfunction(v) and not n.startswith("_")}
    assert offered == set(OPERATIONS) | {"repro"}


def _shown(value: Any) -> Any:
    """An answer as it prints in JSON (`presentation.jsonable`), for comparing answers of either implementation."""
    from govern.presentation import jsonable

    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif isinstance(value, list):
        value = [item.to_dict() if hasattr(item, "to_dict") else item for item in value]
    return jsonable(value)


def _local(root: Path, actor: Any = None) -> LocalGovernance:
    from govern.api.context import open_project

    return LocalGovernance(lambda writing: open_project(root, actor=actor, writing=writing))


def _remote(base: str, token: str) -> HttpGovernance:
    from govern.remote import Server

    return HttpGovernance(Server(base, token))


@pytest.mark.slow
def test_every_read_answers_the_same_here_and_over_http(project: Path, server: str) -> None:
    from support.server import tokens_for

    tokens = tokens_for(project, "aud", "dep")
    deployer = _remote(server, tokens["dep"])
    deployer.deploy("churn", "2", app="scoring", env="dev", at=datetime(2026, 1, 5, tzinfo=UTC))
    here, there = _local(project), _remote(server, tokens["aud"])
    moment = datetime(2026, 1, 6, tzinfo=UTC)
    questions: dict[str, tuple[tuple, dict]] = {
        "audit_log": ((), {}),
        "production_answer": (("scoring", "dev", moment), {}),
        "window_records": ((), {"app": "scoring"}),
        "history": (("churn",), {"version": "2"}),
        "sql": (("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type",), {}),
        "named_queries": ((), {}),
        "run_named": (("promotions_of_model", {"model": "churn"}), {}),
        "requests": ((), {"state": "all"}),
        "identities": ((), {}),
        "roles_at": ((), {}),
        "tokens": ((), {}),
        "proposals": ((), {"state": "all"}),
        "grant_history": ((), {}),
    }
    for operation, (args, kwargs) in questions.items():
        local = _shown(getattr(here, operation)(*args, **kwargs))
        remote = _shown(getattr(there, operation)(*args, **kwargs))
        assert remote == local, operation
    assert _shown(there.gather("churn", "2"))["version"] == _shown(here.gather("churn", "2"))["version"]
    local_status, remote_status = here.status(), there.status()
    assert remote_status["events"] == local_status["events"]
    assert _shown(remote_status["models"]) == _shown(local_status["models"])


@pytest.mark.slow
def test_every_write_records_the_same_facts_here_and_over_http(project: Path, server: str) -> None:
    """The same writes on two copies of one project, one here and one through the server: the same facts in the
    same order (who recorded them differs: a self-asserted identity here, an authenticated principal there)."""
    from support.server import tokens_for

    twin = project.parent / "twin"
    shutil.copytree(project, twin, symlinks=True)
    tokens = tokens_for(project, "dep", "sci", "appr")
    steps = [
        ("dep", "deploy", ("churn", "1"), {"app": "scoring", "env": "dev", "at": datetime(2026, 1, 5, tzinfo=UTC)}),
        ("dep", "deploy", ("churn", "2"), {"app": "scoring", "env": "dev", "at": datetime(2026, 1, 6, tzinfo=UTC)}),
        ("dep", "retire", (), {"app": "scoring", "env": "dev", "at": datetime(2026, 1, 7, tzinfo=UTC)}),
        ("sci", "request_promotion", ("churn", "3", "staging", "better"), {}),
    ]
    for who, operation, args, kwargs in steps:
        local = _shown(getattr(_local(twin), operation)(*args, **kwargs))
        remote = _shown(getattr(_remote(server, tokens[who]), operation)(*args, **kwargs))
        assert _facts(remote) == _facts(local), operation


def _facts(answer: Any) -> Any:
    """What a write recorded, without who recorded it and when it was written."""
    events = answer.get("events") if isinstance(answer, dict) and "events" in answer else [answer.get("event", answer)]
    keep = ("seq", "type", "subject", "occurred_at", "payload")
    return [{k: event[k] for k in keep if k in event} for event in events]
