"""The admin attacks of the security review (issue 25, finding 4), over HTTP against a real `govern serve`: an admin
granting itself approver, a sock-puppet approver, a token minted for the real approver; the two-admin grant, and
enrollment codes redeemed through the server (and the remote CLI) without a bearer token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import grant_role, run_cli
from support.server import call, tokens_for

from govern.storage.duckdb_log import Ledger

pytestmark = pytest.mark.slow

API = "/api/v1"


def ledger_of(root: Path) -> Ledger:
    return Ledger(root / "audit" / "ledger.duckdb")


def redeem(base: str, code: str) -> tuple[int, dict]:
    status, answer, _ = call(base, "POST", f"{API}/enrollment-codes/redemptions", None, {"code": code})
    return status, answer


def test_the_admin_attacks_of_the_review_are_refused_over_http(project: Path, server: str) -> None:
    """adm, the admin (and a scientist), asks for a promotion; adm2 is the second admin; appr the real approver."""
    grant_role(project, "adm2", "admin")
    assert run_cli("principals", "add", "adm", "--role", "scientist", cwd=project).exit_code == 0
    made = tokens_for(project, "adm", "adm2", "appr", "sci")
    ledger = ledger_of(project)
    before = ledger.head()

    status, problem, _ = call(
        server, "POST", f"{API}/principals", made["adm"], {"principal": "adm", "role": "approver"}
    )
    assert status == 403 and "Nobody grants a role for themselves, whatever their roles" in problem["detail"]
    status, problem, _ = call(
        server, "POST", f"{API}/principals", made["adm2"], {"principal": "adm", "role": "approver"}
    )
    assert status == 409 and "adm holds the role admin and cannot hold approver too" in problem["detail"]
    assert ledger.head() == before, "refused: nothing written"

    status, proposal, _ = call(server, "POST", f"{API}/principals", made["adm"],
                               {"principal": "puppet", "role": "approver", "reason": "a helping hand"})  # fmt: skip
    assert status == 201 and proposal["type"] == "access.grant_proposed", proposal
    status, problem, _ = call(server, "POST", f"{API}/principals/puppet/tokens", made["adm"], {})
    assert status == 404 and "puppet holds no role" in problem["detail"], "pending: nothing to act with"
    status, problem, _ = call(server, "POST", f"{API}/grant-proposals/{proposal['seq']}/confirmation", made["adm"], {})
    assert status == 403 and "two admins means two people" in problem["detail"]
    local = run_cli("principals", "confirm", str(proposal["seq"]), cwd=project)
    assert local.exit_code == 1 and "for admins the server authenticated" in local.output
    status, granted, _ = call(server, "POST", f"{API}/grant-proposals/{proposal['seq']}/confirmation", made["adm2"],
                              {"reason": "checked with the team lead"})  # fmt: skip
    assert status == 201 and granted["payload"]["proposed_by"].startswith("adm (token "), granted

    ask = {"model": "churn", "version": "1", "to_stage": "staging", "reason": "mine"}
    status, asked, _ = call(server, "POST", f"{API}/promotion-requests", made["adm"], ask)
    assert status == 201, asked
    request = asked["request"]
    for name in ("puppet", "appr"):  # a code adm issues, adm redeems: the token is adm's hands
        status, issued, _ = call(server, "POST", f"{API}/principals/{name}/tokens", made["adm"], {})
        assert status == 201 and issued["kind"] == "enrollment code" and "token" not in issued, issued
        status, token = redeem(server, issued["code"])
        assert status == 201 and token["event"]["authn"], token
        assert token["event"]["authn"]["via"] == f"enrollment code {issued['code_id']}"
        before = ledger.head()
        status, problem, _ = call(server, "POST", f"{API}/promotion-requests/{request}/approval", token["token"],
                                  {"reason": "fine by me"})  # fmt: skip
        assert status == 403 and f"{name}'s token {token['token_id']} was issued by adm" in problem["detail"]
        assert ledger.head() == before
    status, approved, _ = call(server, "POST", f"{API}/promotion-requests/{request}/approval", made["appr"],
                               {"reason": "evidence reviewed"})  # fmt: skip
    assert status == 201, approved


def test_a_code_is_redeemed_once_through_the_server_and_the_remote_cli_needs_no_token(
    project: Path,
    server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = tokens_for(project, "adm")
    status, issued, _ = call(server, "POST", f"{API}/principals/sci/tokens", made["adm"], {"expires": "30d"})
    assert status == 201 and issued["code"].startswith("gvc_")
    monkeypatch.setenv("GOVERN_URL", server)
    monkeypatch.delenv("GOVERN_TOKEN", raising=False)
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    redeemed = run_cli("tokens", "redeem", issued["code"], cwd=elsewhere)
    assert redeemed.exit_code == 0 and redeemed.stdout.startswith("gvn_"), redeemed.output
    assert "token" in redeemed.stderr and "for sci" in redeemed.stderr
    whoami = call(server, "GET", f"{API}/whoami", redeemed.stdout.strip())[1]
    assert whoami["principal"] == "sci" and whoami["roles"] == {"scientist": []}
    before = ledger_of(project).head()
    again = run_cli("tokens", "redeem", issued["code"], cwd=elsewhere)
    assert again.exit_code == 1 and again.output.count("\n") == 1 and "was used already" in again.output
    assert ledger_of(project).head() == before

    monkeypatch.setenv("GOVERN_TOKEN", made["adm"])  # the remote twins of the admin's commands
    added = run_cli("principals", "add", "pat", "--role", "approver", cwd=elsewhere)
    assert added.exit_code == 0 and "proposed approver for pat" in added.output, added.output
    proposals = json.loads(run_cli("principals", "proposals", "--json", cwd=elsewhere).stdout)
    assert [(p["principal"], p["state"]) for p in proposals] == [("pat", "pending")]
    own = run_cli("principals", "confirm", str(proposals[0]["proposal_seq"]), cwd=elsewhere)
    assert own.exit_code == 1 and "two admins means two people" in own.output
    withdrawn = run_cli("principals", "withdraw", str(proposals[0]["proposal_seq"]), cwd=elsewhere)
    assert withdrawn.exit_code == 0 and "is withdrawn" in withdrawn.output
    history = json.loads(run_cli("principals", "history", "--principal", "adm", "--json", cwd=elsewhere).stdout)
    assert history[0]["role"] == "admin" and history[0]["basis"] == "bootstrap"


def test_redeeming_is_rate_limited_per_address_and_writes_nothing_when_refused(
    project: Path,
    server: str,
) -> None:
    from govern.server.app import REDEEM_PER_CLIENT

    before = ledger_of(project).head()
    bad = "gvc_" + "0" * 12 + "_" + "A" * 43
    answers = [call(server, "POST", f"{API}/enrollment-codes/redemptions", None, {"code": bad}) for _ in range(25)]
    statuses = [status for status, _, _ in answers]
    assert statuses[:REDEEM_PER_CLIENT] == [401] * REDEEM_PER_CLIENT and set(statuses[REDEEM_PER_CLIENT:]) == {429}
    status, problem, headers = answers[-1]
    assert problem["type"] == "urn:govern:problem:too-many-requests" and int(headers["retry-after"]) >= 1
    assert "Too many failed attempts to redeem an enrollment code from this address" in problem["detail"]
    assert answers[0][1]["detail"].startswith("That is not a valid enrollment code")
    assert ledger_of(project).head() == before
