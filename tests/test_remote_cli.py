"""The remote CLI: with GOVERN_URL and GOVERN_TOKEN, govern commands ask the server and print what they print
locally, with the same exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import grant_role, run_cli
from support.server import call, tokens_for

from govern.storage.duckdb_log import Ledger

pytestmark = pytest.mark.slow

READS = [
    ["status"],
    ["status", "--json"],
    ["audit", "log"],
    ["audit", "log", "--type", "model.promoted", "--json"],
    ["audit", "windows"],
    ["audit", "windows", "--json"],
    ["audit", "production", "--app", "scoring", "--env", "dev", "--at", "{now}"],
    ["audit", "history", "churn", "1"],
    ["audit", "history", "churn", "--json"],
    ["audit", "sql", "SELECT type, count(*) AS n FROM events GROUP BY 1 ORDER BY 1"],
    ["audit", "run"],
    ["audit", "run", "promotions_of_model", "--param", "model=churn", "--json"],
    ["audit", "report", "churn", "1", "--format", "md"],
    ["audit", "verify"],
    ["requests", "--state", "all"],
    ["principals", "list"],
    ["principals", "list", "--json"],
    ["principals", "identities"],
    ["tokens", "list", "--json"],
]

REFUSALS = [
    ["deploy", "churn", "9", "--app", "scoring", "--env", "dev"],
    ["audit", "production", "--app", "scoring", "--env", "nowhere", "--at", "{now}"],
    ["audit", "history", "nosuchmodel"],
    ["audit", "sql", "DELETE FROM events"],
    ["audit", "run", "no_such_query"],
    ["approve", "9999", "--reason", "x"],
    ["request-promotion", "churn", "1", "--to", "prod", "--reason", "x"],
]


@pytest.fixture
def remote(project: Path, server: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A token for a principal holding every role, then some history made through the server with it (a promotion,
    a deployment, a request: in team mode the server is where people act)."""
    for role in ("auditor", "approver", "deployer", "scientist"):  # never admin too (access.CONFLICTS)
        grant_role(project, "ops", role)
    made = tokens_for(project, "ops", "sci")
    token = made["ops"]
    promotion = {"model": "churn", "version": "1", "to_stage": "staging", "reason": "candidate"}
    assert call(server, "POST", "/api/v1/promotions", token, promotion)[0] == 201
    deployment = {"model": "churn", "version": "1", "app": "scoring", "env": "dev"}
    assert call(server, "POST", "/api/v1/deployments", token, deployment)[0] == 201
    request = {"model": "churn", "version": "2", "to_stage": "staging", "reason": "next"}
    assert call(server, "POST", "/api/v1/promotion-requests", made["sci"], request)[0] == 201
    elsewhere = project.parent / "elsewhere"  # not a checkout: a remote command needs none
    elsewhere.mkdir()
    return {"project": project, "server": server, "token": token, "elsewhere": elsewhere, "monkeypatch": monkeypatch}


def timeless(text: str) -> str:
    """A report says when it was generated; the two were generated a moment apart."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("Generated "))


def both(remote: dict, *args: str) -> tuple:
    from govern.envelope import format_timestamp, utc_now

    now = format_timestamp(utc_now())
    args = tuple(arg.replace("{now}", now) for arg in args)
    local = run_cli(*args, cwd=remote["project"])
    with remote["monkeypatch"].context() as patch:
        patch.setenv("GOVERN_URL", remote["server"])
        patch.setenv("GOVERN_TOKEN", remote["token"])
        far = run_cli(*args, cwd=remote["elsewhere"])
    return local, far


def test_reads_print_the_same_through_the_server_as_locally(remote: dict) -> None:
    for args in READS:
        local, far = both(remote, *args)
        assert local.exit_code == 0, (args, local.output)
        assert (far.exit_code, timeless(far.stdout)) == (local.exit_code, timeless(local.stdout)), args


def test_refusals_exit_with_the_same_code_and_line_through_the_server(remote: dict) -> None:
    for args in REFUSALS:
        local, far = both(remote, *args)
        assert local.exit_code != 0, args
        assert (far.exit_code, far.output) == (local.exit_code, local.output), args


def test_writes_through_the_server_record_the_principal_and_print_as_locally(remote: dict) -> None:
    local = run_cli("deploy", "churn", "2", "--app", "triage", "--env", "dev", cwd=remote["project"])
    with remote["monkeypatch"].context() as patch:
        patch.setenv("GOVERN_URL", remote["server"])
        patch.setenv("GOVERN_TOKEN", remote["token"])
        far = run_cli("deploy", "churn", "1", "--app", "triage", "--env", "dev", cwd=remote["elsewhere"])
    assert local.exit_code == 0 and far.exit_code == 0, far.output
    shape = [line.split()[3:] for line in far.stdout.splitlines()]
    assert shape == [["deployment.ended", "app:triage/dev"], ["deployment.started", "app:triage/dev"]], far.stdout
    [started] = Ledger(remote["project"] / "audit" / "ledger.duckdb").read(types=["deployment.started"])[-1:]
    assert started.actor.startswith("ops (token ") and started.payload["version"] == "1"
    with remote["monkeypatch"].context() as patch:
        patch.setenv("GOVERN_URL", remote["server"])
        patch.setenv("GOVERN_TOKEN", remote["token"])
        requested = run_cli("requests", "--json", cwd=remote["elsewhere"])
        number = json.loads(requested.stdout)[0]["request_seq"]
        approved = run_cli("approve", str(number), "--reason", "reviewed", cwd=remote["elsewhere"])
        repro = run_cli("repro", cwd=remote["elsewhere"])
        approver = run_cli("promote", "churn", "2", "--to", "production", "--reason", "x", "--approver", "Bob",
                           cwd=remote["elsewhere"])  # fmt: skip
    assert approved.exit_code == 0 and "model.promotion_approved" in approved.stdout, approved.output
    assert repro.exit_code == 1 and "is not inside a git repository" in repro.output, "a training needs a checkout"
    assert approver.exit_code == 2 and "--approver is not accepted by a server" in approver.output


def test_a_bad_token_or_an_unreachable_server_is_one_line(remote: dict) -> None:
    with remote["monkeypatch"].context() as patch:
        patch.setenv("GOVERN_URL", remote["server"])
        patch.setenv("GOVERN_TOKEN", "gvn_000000000000_" + "A" * 43)
        refused = run_cli("status", cwd=remote["elsewhere"])
        patch.setenv("GOVERN_URL", "http://127.0.0.1:9")
        unreachable = run_cli("status", cwd=remote["elsewhere"])
        patch.setenv("GOVERN_URL", "govern.example.com")
        malformed = run_cli("status", cwd=remote["elsewhere"])
    assert refused.exit_code == 1
    assert refused.output == "Error: A valid bearer token is required: `govern tokens create NAME` issues one\n"
    assert unreachable.exit_code == 1 and unreachable.output.startswith(
        "Error: Cannot reach the govern server at http://127.0.0.1:9 ("
    )
    assert malformed.exit_code == 2 and "is not an http(s) URL of a govern server" in malformed.output


def test_a_remote_command_never_writes_over_a_projects_governed_files(remote: dict) -> None:
    root = remote["project"]
    before = (root / "govern.toml").read_bytes(), (root / "audit" / "ledger.duckdb").read_bytes()
    with remote["monkeypatch"].context() as patch:
        patch.setenv("GOVERN_URL", remote["server"])
        patch.setenv("GOVERN_TOKEN", remote["token"])
        config = run_cli("audit", "report", "churn", "1", "-o", str(root / "govern.toml"), cwd=remote["elsewhere"])
        ledger = run_cli("audit", "report", "churn", "1", "-o", str(root / "audit" / "ledger.duckdb"),
                         cwd=remote["elsewhere"])  # fmt: skip
    assert config.exit_code == 2 and "is one of the files this project is governed by" in config.output
    assert ledger.exit_code == 2 and "is the ledger itself" in ledger.output
    assert ((root / "govern.toml").read_bytes(), (root / "audit" / "ledger.duckdb").read_bytes()) == before
