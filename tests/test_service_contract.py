"""One interface, two implementations (issue 27): `api.local.LocalGovernance` (the use cases on this machine's
project) and `client.HttpGovernance` (the same through `govern serve`) take the interface's arguments, and give
the same answers to the same questions, here and over HTTP."""

from __future__ import annotations

import inspect
import shutil
from datetime import UTC, datetime, timedelta
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
    registered = _registered(project)
    deployer.deploy("churn", "2", app="scoring", env="dev", at=registered + timedelta(milliseconds=1))
    here, there = _local(project), _remote(server, tokens["aud"])
    moment = registered + timedelta(milliseconds=2)
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
    early = datetime(1, 1, 1, tzinfo=UTC)  # a trial found years before 1000 sent as `1-01-01...` over HTTP
    assert _shown(there.production_answer("scoring", "dev", early)) == _shown(
        here.production_answer("scoring", "dev", early)
    )
    assert _shown(there.audit_log(since=early)) == _shown(here.audit_log(since=early))
    local_report, remote_report = here.gather("churn", "2"), there.gather("churn", "2")
    for report in (local_report, remote_report):
        report["report"].pop("generated_at")
        report["production"].pop("now")
    for section in _shown(local_report):
        assert _shown(remote_report)[section] == _shown(local_report)[section], section
    local_status, remote_status = _shown(here.status()), _shown(there.status())
    assert remote_status["ledger"]["head_hash"] == local_status["ledger"]["head_hash"]
    for section in ("models", "deployments"):
        assert remote_status[section] == local_status[section], section


@pytest.mark.slow
def test_every_write_records_the_same_facts_here_and_over_http(project: Path, server: str) -> None:
    """The same writes on two copies of one project, one here and one through the server: the same facts in the
    same order (who recorded them differs: a self-asserted identity here, an authenticated principal there). The
    writes team mode keeps for authenticated people (requests, approvals) are refused here by design."""
    from support.server import tokens_for

    twin = project.parent / "twin"
    shutil.copytree(project, twin, symlinks=True)
    tokens = tokens_for(project, "dep")
    t = _registered(project)
    steps = [
        ("dep", "deploy", ("churn", "1"), {"app": "scoring", "env": "dev", "at": t + timedelta(milliseconds=1)}),
        ("dep", "deploy", ("churn", "2"), {"app": "scoring", "env": "dev", "at": t + timedelta(milliseconds=2)}),
        ("dep", "retire", (), {"app": "scoring", "env": "dev", "at": t + timedelta(milliseconds=3)}),
    ]
    for who, operation, args, kwargs in steps:
        local = _shown(getattr(_local(twin), operation)(*args, **kwargs))
        remote = _shown(getattr(_remote(server, tokens[who]), operation)(*args, **kwargs))
        assert _facts(remote) == _facts(local), operation


def _registered(root: Path) -> datetime:
    """When the last version of the project was registered: deployments are dated after it (and before now)."""
    events = _local(root).history("churn")
    latest = max(event.occurred_at for event in events)
    return latest if latest.tzinfo else latest.replace(tzinfo=UTC)


def _facts(answer: Any) -> Any:
    """What a write recorded, without who recorded it and when it was written."""
    events = answer.get("events") if isinstance(answer, dict) and "events" in answer else [answer.get("event", answer)]
    keep = ("type", "subject", "occurred_at", "payload")  # seq: the served copy holds its tokens' events too
    shown = [{k: event[k] for k in keep if k in event} for event in events]
    for event in shown:  # event ids are drawn at random: each copy links its own
        event["payload"] = {k: v for k, v in event["payload"].items() if not k.endswith("event_id")}
    return shown


def test_the_results_a_write_route_returns_are_json_ready_as_they_are() -> None:
    """The remote path shapes a write's result twice: the server's `to_dict` (sent as it is, no second walk) and
    the client's rebuild; that holds only while `to_dict` leaves nothing for `jsonable` to convert."""
    import json

    from govern.api.results import Outcome, Requested
    from govern.envelope import PendingEvent, utc_now
    from govern.events import DeploymentStarted
    from govern.presentation import jsonable
    from govern.storage.memory_log import MemoryLedger

    [event] = MemoryLedger().append(
        [PendingEvent(DeploymentStarted("scoring", "dev", "churn", "1"), actor="x", occurred_at=utc_now())]
    )
    for result in (event, Outcome([event], ["a warning"], ["churn@v1.0.0"]), Requested(event)):
        shaped = result.to_dict()
        assert jsonable(shaped) == shaped
        assert json.loads(json.dumps(shaped, allow_nan=False)) == shaped


def test_an_event_before_the_year_1000_comes_back_from_its_wire_form() -> None:
    """The client rebuilds events from `RecordedEvent.to_dict()`, whose instants keep the hashing spelling
    (`1-01-01T...` for the year 1, which `datetime.fromisoformat` refuses): a deployment dated so over HTTP
    failed in the client after the server had recorded it."""
    from govern.envelope import PendingEvent, RecordedEvent, envelope_hash, parse_timestamp
    from govern.events import DeploymentStarted
    from govern.storage.memory_log import MemoryLedger

    early = datetime(1, 1, 1, 9, 30, tzinfo=UTC)
    [event] = MemoryLedger().append(
        [PendingEvent(DeploymentStarted("scoring", "dev", "churn", "1"), actor="x", occurred_at=early)]
    )
    shaped = event.to_dict()
    assert shaped["occurred_at"] == "1-01-01T09:30:00.000000Z"
    back = RecordedEvent.from_dict(shaped)
    assert back.occurred_at == early
    assert back.to_dict() == shaped
    fields = {k: getattr(back, k) for k in ("seq", "event_id", "type", "schema_version", "occurred_at")}
    fields |= {k: getattr(back, k) for k in ("recorded_at", "actor", "subject", "git_commit", "payload_json")}
    assert envelope_hash(**fields, prev_hash=back.prev_hash, authn=back.authn) == event.hash
    assert parse_timestamp("2026-03-01T09:30:00.000001Z") == datetime(2026, 3, 1, 9, 30, 0, 1, tzinfo=UTC)
