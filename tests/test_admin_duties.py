"""Separation of duties for admins (issue 25, finding 4): no self-grant, two admins for approver and admin, no admin
who approves, enrollment codes instead of tokens handed over, and the four-eyes rule seeing who issued a token.

The use cases are called in-process with the actors the server passes (`via_server` inside `as_server`, signed
with the project's server key as `govern serve` signs); the operator's local CLI is self-asserted. The attacks
over HTTP, against a real server, are in tests/test_server.py. Rules that live in the ledger's views (proposals,
grants, codes, token issuers) run on the DuckDB file and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import as_server, commit_all, git, run_cli, trained_version, via_server
from support.copies import Prepared, PreparedOnPostgres, prepared, prepared_on_postgres
from support.projects import checkout, project_at

from govern import access, attribution, config
from govern.api import access as access_api
from govern.api import approvals, authentication
from govern.envelope import PendingEvent, format_timestamp, utc_now
from govern.errors import ConfigError, Forbidden, FourEyesViolation, PolicyViolation, StateConflict
from govern.events import EnrollmentCodeIssued
from govern.storage import open_store

M = "churn"
# Each principal acting through the server with a token of its own (ids as the server would record them)
ALICE, BOB, CAROL = via_server("alice", "a11ce0000001"), via_server("bob", "b0b000000001"), via_server("carol")


def make_team(root: Path, ledger: str | None = None, extra: str = "") -> Path:
    """A team's project (a server declared; on PostgreSQL when `ledger` is a URL): approvers pat and abe and the
    scientist sci granted by the operator before any admin existed, then alice, the first admin (both bootstrap);
    alice is a scientist too. One admin: the break-glass door is open."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "govern.toml").write_text(
        (f'ledger = "{ledger}"\n' if ledger else "")
        + '[server]\nurl = "https://govern.example"\n[registry]\ngto_tags = false\n'
        + '[mlflow]\ntracking_uri = "sqlite:////nonexistent/mlflow.db"\n'
        + extra
    )
    commit_all(root, "start")
    for name, role in (("pat", "approver"), ("abe", "approver"), ("sci", "scientist"), ("alice", "admin"),
                       ("alice", "scientist")):  # fmt: skip
        ok(root, "principals", "add", name, "--role", role)
    return root


def with_second_admin(root: Path) -> Path:
    """bob becomes the second admin: alice proposes through the server, the operator confirms here (break-glass,
    the one way while a single admin exists)."""
    with as_server(root):
        proposal = access_api.grant(project_at(root, ALICE), "bob", "admin", reason="a second admin")
    ok(root, "principals", "confirm", str(proposal.seq))
    return root


@pytest.fixture(scope="module")
def team_original(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """The team's project with two admins, on the DuckDB file, built once: each test takes a copy (`team`)."""
    return prepared(tmp_path_factory, lambda root: with_second_admin(make_team(root)))


@pytest.fixture
def team(tmp_path: Path, team_original: Prepared) -> Path:
    return team_original.copy_to(tmp_path / "team")


@pytest.fixture(scope="module")
def team_on_postgresql(
    tmp_path_factory: pytest.TempPathFactory, pg_ledger_template: str
) -> Iterator[PreparedOnPostgres]:
    """The same team on a PostgreSQL ledger, built once: each test takes a copy, its database included."""
    with prepared_on_postgres(
        tmp_path_factory, pg_ledger_template, lambda root, url: with_second_admin(make_team(root, url))
    ) as found:
        yield found


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.slow)])
def any_team(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The team's project on the DuckDB file (a copy of `team_original`), or on a PostgreSQL database of the
    machine's server (a copy of `team_on_postgresql`: the database's URL is in the project)."""
    if request.param == "duckdb":
        return request.getfixturevalue("team_original").copy_to(tmp_path / "team")
    return request.getfixturevalue("team_on_postgresql").copy_to(tmp_path / "team")


def ok(root: Path, *args: str) -> str:
    result = run_cli(*args, cwd=root)
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(root: Path, *args: str) -> str:
    """A command refused in one line, writing nothing."""
    before = head(root)
    result = run_cli(*args, cwd=root)
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert head(root) == before
    return lines[0]


def head(root: Path) -> tuple[int, str] | None:
    return open_store(config_ledger(root)).head()


def config_ledger(root: Path) -> str | Path:
    return config.load(root).ledger


def roles(root: Path, name: str) -> set[str]:
    return {r["role"] for r in access_api.roles_at(project_at(root, writing=False)) if r["principal"] == name}


def redeemed(root: Path, code: str) -> access.IssuedToken:
    with as_server(root):
        return access_api.redeem(project_at(root), code, through_server=True).token


def code_for(root: Path, name: str, by: attribution.Actor = ALICE) -> str:
    with as_server(root):
        issued = access_api.issue_token(project_at(root, by), name)
    assert issued.is_code
    return issued.code.code


# ---------------------------------------------------------------- nobody acts for themselves


def test_nobody_grants_revokes_or_links_an_identity_for_themselves(team: Path) -> None:
    before = head(team)
    with as_server(team):
        for act, match in (
            (lambda: access_api.grant(project_at(team, ALICE), "alice", "auditor"), "grants a role"),
            (lambda: access_api.revoke(project_at(team, ALICE), "alice", "scientist"), "revokes a role"),
            (lambda: access_api.link_identity(project_at(team, ALICE), "alice", "Al <al@example.com>"), "links"),
        ):
            with pytest.raises(Forbidden, match=f"Nobody {match}.* for themselves, whatever their roles"):
                act()
    assert head(team) == before
    with as_server(team):  # another admin may
        access_api.grant(project_at(team, BOB), "alice", "auditor")


def test_a_local_identity_linked_to_a_principal_is_that_principal(team: Path) -> None:
    """The operator's git identity (Ada) linked to sci: locally, Ada is sci, and cannot grant sci a role."""
    with as_server(team):
        access_api.link_identity(project_at(team, ALICE), "sci", "Ada Auditor <ada@example.com>")
    line = refused(team, "principals", "add", "sci", "--role", "auditor")
    assert "Nobody grants a role for themselves" in line and "Ada Auditor <ada@example.com> (self-asserted" in line
    assert "is sci" in line
    ok(team, "principals", "add", "pat", "--role", "auditor")  # anyone else, still


# ---------------------------------------------------------------- the admin attacks of finding 4


def test_an_admin_cannot_grant_itself_approver_nor_hold_it(team: Path) -> None:
    before = head(team)
    with as_server(team), pytest.raises(Forbidden, match="Nobody grants a role for themselves"):
        access_api.grant(project_at(team, ALICE), "alice", "approver", reason="I approve too")
    with as_server(team), pytest.raises(PolicyViolation, match="alice holds the role admin and cannot hold approver"):
        access_api.grant(project_at(team, BOB), "alice", "approver", reason="alice approves too")
    assert head(team) == before and "approver" not in roles(team, "alice")


def test_a_sock_puppet_approver_stays_pending_until_a_second_admin_confirms(team: Path) -> None:
    with as_server(team):
        proposal = access_api.grant(project_at(team, ALICE), "puppet", "approver", reason="a new approver")
    assert proposal.type == "access.grant_proposed" and proposal.actor == "alice (token a11ce0000001)"
    assert roles(team, "puppet") == set(), "a proposal grants nothing"
    before = head(team)
    with as_server(team), pytest.raises(Forbidden, match="proposed by alice .the same person.; two admins means"):
        access_api.confirm_grant(project_at(team, via_server("alice", "a11ce0000002")), proposal.seq)
    line = refused(team, "principals", "confirm", str(proposal.seq))  # the operator: two admins exist
    assert "with 2 admins, confirming approver or admin is for admins the server authenticated" in line
    line = refused(team, "principals", "add", "puppet2", "--role", "approver")
    assert "proposing approver or admin is for admins the server authenticated" in line
    line = refused(team, "tokens", "create", "puppet")
    assert "puppet holds no role" in line, "no role, no token: nothing to act with yet"
    assert head(team) == before

    with as_server(team):
        granted = access_api.confirm_grant(project_at(team, BOB), proposal.seq)
    assert granted.type == "access.granted" and granted.actor == "bob (token b0b000000001)"
    assert granted.payload["proposal_seq"] == proposal.seq and granted.payload["basis"] == "two admins"
    assert granted.payload["proposed_by"] == "alice (token a11ce0000001)"
    assert roles(team, "puppet") == {"approver"}


def test_the_sock_puppet_and_a_token_minted_for_abe_cannot_approve_the_admins_own_request(
    team: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice (admin and scientist) asks; the puppet bob confirmed gets its token from a code alice issued, and a
    code alice issued for abe she redeemed herself: both are alice's hands, refused, naming who issued the token."""
    monkeypatch.setenv("GOVERN_REGISTRY_MIRROR", "inline")  # MLflow cannot exist here: refused at once, pending
    with as_server(team):
        trained_version(team / "audit" / "ledger.duckdb", M, "1", via_server("tess"), commit="a" * 40)
        proposal = access_api.grant(project_at(team, ALICE), "puppet", "approver")
        access_api.confirm_grant(project_at(team, BOB), proposal.seq)
        number = approvals.request_promotion(project_at(team, ALICE), M, "1", "staging", "mine").request_id
    puppet = redeemed(team, code_for(team, "puppet"))
    as_abe = redeemed(team, code_for(team, "abe"))
    before = head(team)
    for who, token in (("puppet", puppet), ("abe", as_abe)):
        with as_server(team), pytest.raises(FourEyesViolation, match=f"{who}'s token {token.token_id} was issued by"):
            approvals.approve(project_at(team, via_server(who, token.token_id)), number, "looks fine")
    assert head(team) == before
    real_abe = redeemed(team, code_for(team, "abe", by=BOB))  # abe's own, from bob's code
    with as_server(team):
        outcome = approvals.approve(project_at(team, via_server("abe", real_abe.token_id)), number, "evidence reviewed")
    assert outcome.events[-1].type == "model.promoted"


def test_one_admin_who_handed_over_both_the_requesters_and_the_approvers_tokens_cannot_have_it_approved(
    team: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The security review: alice alone made a scientist sam, a code for sam and one for the existing approver pat,
    redeemed both, asked as sam and approved as pat. Both tokens are alice's hands: refused; pat's own token, from
    bob's code, approves."""
    monkeypatch.setenv("GOVERN_REGISTRY_MIRROR", "inline")  # MLflow cannot exist here: refused at once, pending
    with as_server(team):
        trained_version(team / "audit" / "ledger.duckdb", M, "1", via_server("tess"), commit="a" * 40)
        access_api.grant(project_at(team, ALICE), "sam", "scientist", reason="sock puppet")
    sam = redeemed(team, code_for(team, "sam"))
    with as_server(team):
        number = approvals.request_promotion(
            project_at(team, via_server("sam", sam.token_id)), M, "1", "staging", "ship it"
        )
    as_pat = redeemed(team, code_for(team, "pat"))
    before = head(team)
    with (
        as_server(team),
        pytest.raises(
            FourEyesViolation,
            match=f"pat's token {as_pat.token_id} was handed over, through the server, by alice, who held or "
            f"handed over the token {sam.token_id} of sam",
        ),
    ):
        approvals.approve(project_at(team, via_server("pat", as_pat.token_id)), number.request_id, "looks fine")
    assert head(team) == before
    real_pat = redeemed(team, code_for(team, "pat", by=BOB))
    with as_server(team):
        outcome = approvals.approve(
            project_at(team, via_server("pat", real_pat.token_id)), number.request_id, "evidence reviewed"
        )
    assert outcome.events[-1].type == "model.promoted"


def test_one_admin_acting_through_a_second_admins_code_cannot_have_her_own_request_approved(
    team: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second review: alice issued a code for bob, the second admin, and redeemed it herself; as bob she made
    sam and a code for him, and with her own token a code for pat. Both approvers' tokens lead back to alice, one
    step further: refused; so is abe, whose code bob's token (alice's hands) issued."""
    monkeypatch.setenv("GOVERN_REGISTRY_MIRROR", "inline")  # MLflow cannot exist here: refused at once, pending
    as_bob = redeemed(team, code_for(team, "bob"))
    bob = via_server("bob", as_bob.token_id)
    with as_server(team):
        trained_version(team / "audit" / "ledger.duckdb", M, "1", via_server("tess"), commit="a" * 40)
        access_api.grant(project_at(team, bob), "sam", "scientist", reason="sock puppet")
    sam = redeemed(team, code_for(team, "sam", by=bob))
    with as_server(team):
        number = approvals.request_promotion(
            project_at(team, via_server("sam", sam.token_id)), M, "1", "staging", "ship it"
        )
    as_pat = redeemed(team, code_for(team, "pat"))
    before = head(team)

    with as_server(team), pytest.raises(FourEyesViolation, match="by alice, who held or handed over the token"):
        approvals.approve(project_at(team, via_server("pat", as_pat.token_id)), number.request_id, "looks fine")

    assert head(team) == before
    through_bob = redeemed(team, code_for(team, "abe", by=bob))
    before = head(team)
    with as_server(team), pytest.raises(FourEyesViolation, match="who held or handed over the token"):
        approvals.approve(project_at(team, via_server("abe", through_bob.token_id)), number.request_id, "looks fine")
    assert head(team) == before


def test_a_local_writer_cannot_issue_a_code_for_an_approver_once_two_admins_exist(team: Path) -> None:
    """With the ledger's writer role alone, a code for the approver pat would be pat's hands: refused, as a local
    grant of approver is; a code for a scientist is not (an approver still decides)."""
    line = refused(team, "tokens", "create", "pat")
    assert "issuing a code for pat, an approver or admin, is for admins the server authenticated" in line
    assert "gvc_" in ok(team, "tokens", "create", "sci")


def test_a_token_an_admin_made_for_itself_keeps_the_issuer_of_the_code_it_was_made_with(team: Path) -> None:
    """alice redeems the code she issued for bob (an admin), then, as bob, makes bob a token of his own: its issuer
    is still alice, so "bob" cannot confirm alice's proposals nor approve what alice asked for."""
    hijacked = redeemed(team, code_for(team, "bob"))
    as_bob = via_server("bob", hijacked.token_id)
    with as_server(team):
        own = access_api.issue_token(project_at(team, as_bob), "bob")
    assert not own.is_code and own.token is not None, "a principal's token for itself is a token"
    laundered = via_server("bob", own.token.token_id)
    with as_server(team):
        proposal = access_api.grant(project_at(team, ALICE), "puppet", "approver")
        with pytest.raises(Forbidden, match="bob's token was issued by alice"):
            access_api.confirm_grant(project_at(team, laundered), proposal.seq)
    [row] = [t for t in access_api.tokens(project_at(team, writing=False)) if t["token_id"] == own.token.token_id]
    assert row["issuer"] == "alice (token a11ce0000001)" and row["issued_by"] == as_bob.name


# ---------------------------------------------------------------- two admins


def test_a_two_admin_grant_end_to_end_on_both_ledgers(any_team: Path) -> None:
    with as_server(any_team):
        proposal = access_api.grant(project_at(any_team, BOB), "carol", "admin", reason="on call")
    listed = json.loads(ok(any_team, "principals", "proposals", "--json"))
    assert [(p["proposal_seq"], p["principal"], p["role"], p["state"]) for p in listed] == [
        (proposal.seq, "carol", "admin", "pending")
    ]
    assert listed[0]["proposed_by_shown"] == "bob (authenticated, token b0b000000001)"
    with as_server(any_team), pytest.raises(StateConflict, match="was proposed already"):
        access_api.grant(project_at(any_team, ALICE), "carol", "admin")
    with as_server(any_team):
        granted = access_api.confirm_grant(project_at(any_team, ALICE), proposal.seq, "agreed")
    assert roles(any_team, "carol") == {"admin"}
    [held] = [r for r in access_api.roles_at(project_at(any_team, writing=False)) if r["principal"] == "carol"]
    assert held["proposal_seq"] == proposal.seq and held["basis"] == "two admins"
    assert held["granted_by_shown"] == "alice (authenticated, token a11ce0000001)"
    assert held["proposed_by_shown"] == "bob (authenticated, token b0b000000001)"
    assert granted.payload["reason"] == "agreed"
    table = ok(any_team, "principals", "list")
    assert "carol" in table and "bob (authenticated, token b0b000000001)" in table
    history = json.loads(ok(any_team, "principals", "history", "--principal", "bob", "--json"))
    assert history[0]["basis"] == "break-glass" and history[0]["proposed_by"] == "alice (token a11ce0000001)"
    assert history[0]["granted_by_shown"] == "Ada Auditor <ada@example.com> (self-asserted, git config)"
    line = refused(any_team, "principals", "confirm", str(proposal.seq))
    assert f"Grant proposal {proposal.seq} was confirmed already" in line


def test_a_proposal_is_declined_by_another_admin_or_withdrawn_by_its_proposer(team: Path) -> None:
    with as_server(team):
        access_api.grant(project_at(team, ALICE), "carol", "admin")  # a third admin, so one may leave
        access_api.confirm_grant(project_at(team, BOB), head(team)[0])
        stale = access_api.grant(project_at(team, CAROL), "erin", "approver")
        access_api.revoke(project_at(team, ALICE), "carol", "admin", "moved to another team")
        with pytest.raises(Forbidden, match="was made by carol, who is no admin any more"):
            access_api.confirm_grant(project_at(team, BOB), stale.seq)
        first = access_api.grant(project_at(team, ALICE), "dora", "approver")
        with pytest.raises(StateConflict, match="withdraw it"):
            access_api.decline_grant(project_at(team, ALICE), first.seq, "changed my mind")
        with pytest.raises(Forbidden, match="Only alice, who proposed grant"):
            access_api.withdraw_grant(project_at(team, BOB), first.seq, "")
        declined = access_api.decline_grant(project_at(team, BOB), first.seq, "dora is not trained yet")
        second = access_api.grant(project_at(team, ALICE), "dora", "approver")
        withdrawn = access_api.withdraw_grant(project_at(team, ALICE), second.seq, "wrong person")
        with pytest.raises(StateConflict, match=f"Grant proposal {second.seq} was withdrawn already"):
            access_api.confirm_grant(project_at(team, BOB), second.seq)
    assert declined.type == "access.grant_declined" and withdrawn.type == "access.grant_withdrawn"
    states = {p["proposal_seq"]: p["state"] for p in access_api.proposals(project_at(team, writing=False), None)}
    assert states[first.seq] == "declined" and states[second.seq] == "withdrawn"
    assert roles(team, "dora") == set()


def test_the_first_admin_is_the_operators_bootstrap_and_says_so(tmp_path: Path) -> None:
    root = make_team(tmp_path / "team")
    [alice] = access_api.grant_history(project_at(root, writing=False), "alice")[1:]
    assert alice["role"] == "admin" and alice["basis"] == "bootstrap" and alice["proposal_seq"] is None
    assert alice["granted_by_shown"] == "Ada Auditor <ada@example.com> (self-asserted, git config)"
    out = run_cli("principals", "add", "zed", "--role", "auditor", cwd=root)
    assert out.exit_code == 0 and "bootstrap" not in out.output, "only privileged grants before any admin"


def test_while_one_admin_exists_the_operator_may_stand_for_one_of_the_two_never_both(tmp_path: Path) -> None:
    root = make_team(tmp_path / "team")
    out = ok(root, "principals", "add", "bob", "--role", "admin", "--reason", "second admin")
    assert "proposed admin for bob (break-glass" in out and roles(root, "bob") == set()
    local = json.loads(ok(root, "principals", "proposals", "--json"))[0]
    assert local["break_glass"] is True
    line = refused(root, "principals", "confirm", str(local["proposal_seq"]))
    assert "a second local hand is the same writer of the ledger, not a second admin" in line
    with as_server(root):
        confirmed = access_api.confirm_grant(project_at(root, ALICE), local["proposal_seq"])
    assert confirmed.payload["basis"] == "break-glass" and roles(root, "bob") == {"admin"}
    line = refused(root, "principals", "revoke", "bob", "--role", "admin")
    assert "one of the last two admins" in line


def test_with_two_admin_grants_off_an_admin_grants_approver_alone(tmp_path: Path) -> None:
    root = make_team(tmp_path / "team", extra="[access]\ntwo_admin_grants = false\n")
    with as_server(root):
        event = access_api.grant(project_at(root, ALICE), "dora", "approver")
    assert event.type == "access.granted" and event.payload["basis"] == "direct"
    (root / "govern.toml").write_text((root / "govern.toml").read_text() + "two_admins = true\n")
    with pytest.raises(ConfigError, match="unknown key.* two_admins .did you mean two_admin_grants"):
        config.load(root)


# ---------------------------------------------------------------- the conflict table


def test_the_conflict_table_refuses_whichever_role_comes_second(team: Path) -> None:
    assert access.CONFLICTS[frozenset({"admin", "approver"})]
    before = head(team)
    with as_server(team), pytest.raises(PolicyViolation, match="pat holds the role approver and cannot hold admin"):
        access_api.grant(project_at(team, ALICE), "pat", "admin")
    assert head(team) == before
    with as_server(team):  # both pending: the second confirmation is refused
        as_admin = access_api.grant(project_at(team, ALICE), "dora", "admin")
        as_approver = access_api.grant(project_at(team, ALICE), "dora", "approver")
        access_api.confirm_grant(project_at(team, BOB), as_approver.seq)
        with pytest.raises(PolicyViolation, match="dora holds the role approver and cannot hold admin too"):
            access_api.confirm_grant(project_at(team, BOB), as_admin.seq)
    assert roles(team, "dora") == {"approver"}


# ---------------------------------------------------------------- enrollment codes


def test_a_token_for_someone_else_is_an_enrollment_code_single_use_on_both_ledgers(any_team: Path) -> None:
    created = run_cli("tokens", "create", "sci", "--json", cwd=any_team)
    issued = json.loads(created.stdout)
    assert issued["kind"] == "enrollment code" and "token" not in issued
    code = issued["code"]
    assert code.startswith("gvc_") and access.parse_bearer(code) is None
    with pytest.raises(authentication.Unauthenticated):
        authentication.authenticate(open_store(config_ledger(any_team)), code.replace("gvc_", "gvn_"))
    secret = access.parse_code(code)[1]
    events = open_store(config_ledger(any_team)).read(types=["token.code_issued"])
    assert secret not in json.dumps([e.payload for e in events])
    assert events[-1].payload["secret_sha256"] == access.secret_digest(secret)

    out = run_cli("tokens", "redeem", code, cwd=any_team)
    assert out.exit_code == 0 and out.stdout.startswith("gvn_")
    principal = authentication.authenticate(open_store(config_ledger(any_team)), out.stdout.strip())
    assert principal.name == "sci" and principal.roles == {"scientist": ()}
    [row] = [t for t in access_api.tokens(project_at(any_team, writing=False)) if t["token_id"] == principal.token_id]
    assert row["code_id"] == issued["code_id"] and row["issuer"] == "Ada Auditor <ada@example.com>"
    line = refused(any_team, "tokens", "redeem", code)
    assert f"The enrollment code {issued['code_id']} was used already" in line and "a code is exchanged once" in line
    states = {t["token_id"]: t["state"] for t in access_api.tokens(project_at(any_team, writing=False))}
    assert states[issued["code_id"]] == "redeemed"


def test_an_expired_revoked_or_mistyped_code_is_refused_in_one_line_and_writes_nothing(team: Path) -> None:
    stale = access.new_code("sci", utc_now() - timedelta(hours=25), None)
    fact = EnrollmentCodeIssued("sci", stale.code_id, access.secret_digest(stale.secret),
                                format_timestamp(stale.expires_at), None)  # fmt: skip
    open_store(config_ledger(team)).append([PendingEvent(fact, "Ada Auditor <ada@example.com>", utc_now())])
    line = refused(team, "tokens", "redeem", stale.code)
    assert f"The enrollment code {stale.code_id} expired at" in line and "a code lives 24 hours" in line

    revoked = json.loads(ok(team, "tokens", "create", "sci", "--json"))
    ok(team, "tokens", "revoke", revoked["code"], "--reason", "sent to the wrong person")
    assert f"The enrollment code {revoked['code_id']} was revoked at" in refused(
        team, "tokens", "redeem", revoked["code"]
    )

    fresh = json.loads(ok(team, "tokens", "create", "sci", "--json"))["code"]
    wrong = fresh[:-1] + ("A" if fresh[-1] != "A" else "B")
    unknown = f"gvc_{'0' * 12}_{access.parse_code(fresh)[1]}"
    for bad in (wrong, unknown, "gvc_nonsense"):
        assert "That is not a valid enrollment code" in refused(team, "tokens", "redeem", bad)
    assert "That is a token, not an enrollment code" in refused(team, "tokens", "redeem", f"gvn_{'0' * 12}_{'A' * 43}")


def test_a_code_never_outlives_the_token_it_gives_and_the_token_keeps_the_lifetime_asked(team: Path) -> None:
    short = json.loads(ok(team, "tokens", "create", "sci", "--expires", "12h", "--json"))
    assert short["expires_at"] == short["token_expires_at"], "a 12 h token: its code ends with it"
    never = json.loads(ok(team, "tokens", "create", "sci", "--expires", "never", "--json"))
    assert never["token_expires_at"] is None
    token = json.loads(ok(team, "tokens", "redeem", never["code"], "--json"))
    assert token["kind"] == "token" and token["expires_at"] is None


def test_tokens_create_says_a_code_is_printed_to_hand_over_not_a_token(team: Path) -> None:
    result = run_cli("tokens", "create", "sci", cwd=team)
    assert result.exit_code == 0 and result.stdout.startswith("gvc_")
    assert "enrollment code" in result.stderr and "It is not a token: hand it to sci" in result.stderr
    assert "govern tokens redeem CODE" in result.stderr


def test_in_a_solo_project_a_token_is_a_token(tmp_path: Path) -> None:
    root = tmp_path / "solo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README").write_text("one person's project\n")
    commit_all(root, "start")
    ok(root, "principals", "add", "ci", "--role", "deployer")
    issued = json.loads(ok(root, "tokens", "create", "ci", "--json"))
    assert issued["kind"] == "token" and issued["token"].startswith("gvn_")
    assert ok(root, "principals", "add", "pat", "--role", "approver"), "no two-admin rule for one person"


# ---------------------------------------------------------------- reports


def test_the_lineage_report_lists_the_grant_each_approver_acted_in_with_who_proposed_and_confirmed_it(
    team: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pat was granted approver at bootstrap by the operator; dora by two admins (alice proposed, bob confirmed),
    acting with a token from bob's code. Each approval's grant is in the report, with the strength of each name."""
    from govern import report as report_module
    from govern.api.report import gather

    monkeypatch.setenv("GOVERN_REGISTRY_MIRROR", "inline")  # MLflow cannot exist here: refused at once, pending
    with as_server(team):
        trained_version(team / "audit" / "ledger.duckdb", M, "1", via_server("tess"), commit="a" * 40)
        proposal = access_api.grant(project_at(team, ALICE), "dora", "approver", reason="release manager")
        access_api.confirm_grant(project_at(team, BOB), proposal.seq, "agreed at the board")
    dora = redeemed(team, code_for(team, "dora", by=BOB))
    with as_server(team):
        for stage, approver in (("staging", via_server("pat")), ("production", via_server("dora", dora.token_id))):
            number = approvals.request_promotion(project_at(team, via_server("sci")), M, "1", stage, "ready").request_id
            approvals.approve(project_at(team, approver), number, "evidence reviewed")

    found = gather(project_at(team, writing=False), M, "1")["approvals"]
    by = {g["principal"]: g for g in found["grants"]}
    assert set(by) == {"pat", "dora"} and found["missing"] == []
    assert by["pat"]["grant"]["basis"] == "bootstrap" and by["pat"]["grant"]["proposed_by"] is None
    assert by["pat"]["grant"]["confirmed_by"] == "Ada Auditor <ada@example.com> (self-asserted, git config)"
    grant = by["dora"]["grant"]
    assert grant["basis"] == "two admins" and grant["proposal_seq"] == proposal.seq
    assert grant["proposed_by"] == "alice (authenticated, token a11ce0000001)"
    assert grant["confirmed_by"] == "bob (authenticated, token b0b000000001)"
    assert (
        by["dora"]["token"] == dora.token_id and by["dora"]["token_issuer"] == "bob (authenticated, token b0b000000001)"
    )
    assert by["dora"]["shown"] == f"dora (authenticated, token {dora.token_id})"

    report = gather(project_at(team, writing=False), M, "1")
    markdown = report_module.render(report, "md")
    assert "| alice (authenticated, token a11ce0000001) (seq " in markdown and "| two admins |" in markdown
    assert "The roles they acted in" in markdown and "| bootstrap |" in markdown
    page = report_module.render(report, "html")
    assert "bob (authenticated, token b0b000000001)" in page and "<h3>The roles they acted in</h3>" in page
    tree = report_module.render_tree(report)
    assert (
        "approver grant of dora:" in tree
        and "proposed by alice (authenticated, token a11ce0000001) [two admins]" in tree
    )


def test_tokens_and_privileged_grants_a_writer_appends_by_hand_give_no_power_once_two_admins_exist(
    any_team: Path,
) -> None:
    """The second review, with the ledger's writer role only: a `token.issued` for the admin bob and the approver
    pat, and an `access.granted` of admin for mallory with a token, appended as facts (no use case, no key). The
    server honours none of their privileged roles; a token pat redeemed through the server still approves, and a
    scientist's role is untouched."""
    from govern.events import RoleGranted, TokenIssued

    ledger = open_store(config_ledger(any_team))

    def forged(principal: str) -> access.IssuedToken:
        token = access.new_token(principal, None)
        fact = TokenIssued(principal, token.token_id, access.secret_digest(token.secret), None)
        ledger.append([PendingEvent(fact, actor="Operator <op@example.com>", occurred_at=utc_now())])
        return token

    ledger.append(
        [PendingEvent(RoleGranted("mallory", "admin", basis="two admins"), actor="Operator <op@example.com>",
                      occurred_at=utc_now())]
    )  # fmt: skip
    as_bob, as_pat, as_mallory, as_sci = forged("bob"), forged("pat"), forged("mallory"), forged("sci")

    assert authentication.authenticate(ledger, as_bob.bearer).roles == {}
    assert authentication.authenticate(ledger, as_pat.bearer).roles == {}
    assert authentication.authenticate(ledger, as_mallory.bearer).roles == {}
    assert set(authentication.authenticate(ledger, as_sci.bearer).roles) == {"scientist"}
    real_pat = redeemed(any_team, code_for(any_team, "pat"))
    assert set(authentication.authenticate(ledger, real_pat.bearer).roles) == {"approver"}


def test_a_code_a_writer_appends_by_hand_and_redeems_through_the_server_gives_no_privileged_power(
    any_team: Path,
) -> None:
    """The third review: a `token.code_issued` for the approver pat and the admin bob appended by hand, then
    redeemed through the server (which signs the redemption); and a token pat then made for itself with the
    redeemed one. None of them approves or administers; a code alice issued through the server still does."""
    ledger = open_store(config_ledger(any_team))

    def forged_code(principal: str) -> str:
        now = utc_now()
        code = access.new_code(principal, now, None)
        fact = EnrollmentCodeIssued(
            principal, code.code_id, access.secret_digest(code.secret), format_timestamp(code.expires_at), None
        )
        ledger.append([PendingEvent(fact, actor="Operator <op@example.com>", occurred_at=now)])
        return code.code

    as_pat, as_bob = redeemed(any_team, forged_code("pat")), redeemed(any_team, forged_code("bob"))
    with as_server(any_team):
        own = access_api.issue_token(project_at(any_team, via_server("pat", as_pat.token_id)), "pat")

    assert authentication.authenticate(ledger, as_pat.bearer).roles == {}
    assert authentication.authenticate(ledger, as_bob.bearer).roles == {}
    assert own.token is not None and authentication.authenticate(ledger, own.token.bearer).roles == {}
    real_pat = redeemed(any_team, code_for(any_team, "pat"))
    assert set(authentication.authenticate(ledger, real_pat.bearer).roles) == {"approver"}


def test_a_checkout_of_ones_own_cannot_lift_the_two_admin_rule_of_a_ledger_a_server_signed_in(
    team: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the second insider review: a checkout saying `[access] two_admin_grants = false`, pointed at the
    team's ledger with GOVERN_LEDGER, granted approver and admin under a self-asserted name. The setting lowers
    the bar for the server's authenticated admins only."""
    own = checkout(tmp_path / "own", 'mode = "solo"\n[access]\ntwo_admin_grants = false\n')
    monkeypatch.setenv("GOVERN_LEDGER", str(team / "audit" / "ledger.duckdb"))
    before = head(team)
    for role in ("approver", "admin"):
        assert "is for admins the server authenticated" in refused(own, "principals", "add", "mallory", "--role", role)
    assert head(team) == before
