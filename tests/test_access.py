"""Principals, roles and tokens as ledger facts: granted, revoked, issued, checked (issue 14, first part)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import commit_all, git, run_cli
from support.projects import project_at

from govern import access
from govern.api.access import roles_at
from govern.api.authentication import Unauthenticated, authenticate
from govern.envelope import PendingEvent, format_timestamp, utc_now
from govern.events import TokenIssued
from govern.storage.duckdb_log import Ledger


@pytest.fixture
def project(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "README").write_text("a governed project\n")
    commit_all(tmp_path, "start")
    return tmp_path


def ledger_of(project: Path) -> Ledger:
    return Ledger(project / "audit" / "ledger.duckdb")


def ok(project: Path, *args: str) -> str:
    result = run_cli(*args, cwd=project)
    assert result.exit_code == 0, result.output
    return result.stdout


def token_of(project: Path, name: str, *options: str) -> str:
    return json.loads(ok(project, "tokens", "create", name, "--json", *options))["token"]


def test_roles_are_windows_so_who_held_a_role_at_any_instant_is_a_query(project: Path) -> None:
    ok(project, "principals", "add", "alice", "--role", "approver", "--reason", "release manager")
    ok(project, "principals", "add", "bob", "--role", "consumer", "--app", "scoring", "--app", "triage")
    [granted] = ledger_of(project).read(limit=1)
    between = granted.occurred_at.replace(tzinfo=UTC) + timedelta(microseconds=1)
    ok(project, "principals", "revoke", "alice", "--role", "approver", "--reason", "left the team")

    now = {(r["principal"], r["role"]) for r in roles_at(project_at(project, writing=False))}
    assert now == {("bob", "consumer")}
    then = roles_at(project_at(project, writing=False), between)
    assert {(r["principal"], r["role"]) for r in then} == {("alice", "approver"), ("bob", "consumer")}
    assert next(r for r in then if r["principal"] == "bob")["apps"] == ["scoring", "triage"]
    listed = json.loads(ok(project, "principals", "list", "--at", format_timestamp(between), "--json"))
    assert [r["principal"] for r in listed] == ["alice", "bob"]
    _, rows = ledger_of(project).query("SELECT ended_how, ended_by FROM role_grants WHERE principal = 'alice'")
    assert rows[0][0] == "revoked" and rows[0][1]


def test_a_token_is_shown_once_stored_as_a_hash_and_stands_for_its_principal(project: Path) -> None:
    ok(project, "principals", "add", "bob", "--role", "consumer", "--app", "scoring")
    token = token_of(project, "bob", "--description", "the scoring service")
    token_id, secret = access.parse_bearer(token)
    stored = (project / "audit").glob("ledger.duckdb*")
    assert not any(secret.encode() in path.read_bytes() for path in stored), "the secret is nowhere on disk"
    [issued] = ledger_of(project).read(types=["token.issued"])
    assert issued.payload["secret_sha256"] == access.secret_digest(secret)

    principal = authenticate(ledger_of(project), token)
    assert principal.name == "bob" and principal.roles == {"consumer": ("scoring",)}
    assert principal.may_use("scoring") and not principal.may_use("triage")
    assert principal.actor.name == f"bob (token {token_id})" and principal.actor.authenticated
    listed = json.loads(ok(project, "tokens", "list", "--json"))
    assert [(t["token_id"], t["state"]) for t in listed] == [(token_id, "active")]
    assert secret not in ok(project, "tokens", "list") and secret not in json.dumps(listed)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # the wrong secret
        lambda token: token.replace("gvn_", "gvx_"),  # malformed
        lambda token: "",  # none
        lambda token: f"gvn_{'0' * 12}_{token.split('_', 2)[2]}",  # an id that does not exist
    ],
    ids=["wrong secret", "malformed", "missing", "unknown id"],
)
def test_a_bad_token_is_refused_with_one_message_that_tells_nothing(project: Path, spoil) -> None:  # noqa: ANN001
    ok(project, "principals", "add", "alice", "--role", "auditor")
    token = token_of(project, "alice")
    with pytest.raises(Unauthenticated, match="A valid bearer token is required"):
        authenticate(ledger_of(project), spoil(token))


def test_a_revoked_or_expired_token_or_one_whose_principal_lost_its_roles_carries_nothing(project: Path) -> None:
    ok(project, "principals", "add", "alice", "--role", "auditor")
    revoked, lost = token_of(project, "alice"), token_of(project, "alice")
    ok(project, "tokens", "revoke", access.parse_bearer(revoked)[0], "--reason", "leaked in a log")
    with pytest.raises(Unauthenticated):
        authenticate(ledger_of(project), revoked)
    states = {t["token_id"]: t["state"] for t in json.loads(ok(project, "tokens", "list", "--json"))}
    assert states[access.parse_bearer(revoked)[0]] == "revoked"

    ledger = ledger_of(project)  # a token recorded with an expiry that has passed
    expired = access.new_token("alice", utc_now() - timedelta(seconds=1))
    fact = TokenIssued(
        "alice", expired.token_id, access.secret_digest(expired.secret), format_timestamp(expired.expires_at)
    )
    ledger.append([PendingEvent(fact, actor="admin", occurred_at=utc_now())])
    with pytest.raises(Unauthenticated):
        authenticate(ledger, expired.bearer)

    ok(project, "principals", "revoke", "alice", "--role", "auditor")
    assert authenticate(ledger, lost).roles == {}, "a valid token of a principal without a role grants nothing"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["principals", "add", "Alice Smith", "--role", "admin"], "is not a principal name"),
        (["principals", "add", "alice", "--role", "boss"], "Unknown role 'boss': use one of scientist, approver"),
        (["principals", "add", "bob", "--role", "consumer"], "A consumer is limited to named apps: add --app APP"),
        (["principals", "add", "bob", "--role", "scientist", "--app", "x"], "--app limits a consumer"),
        (["principals", "add", "bob", "--role", "consumer", "--app", "../x"], "is not a valid app name"),
        (["principals", "revoke", "nobody", "--role", "admin"], "nobody does not hold the role admin"),
        (["tokens", "create", "nobody"], "nobody holds no role: grant one first"),
        (["tokens", "create", "alice", "--expires", "soon"], "is not a lifetime (12h, 30d, 8w)"),
        (["tokens", "create", "alice", "--expires", "2020-01-01T00:00:00Z"], "is not in the future"),
        (["tokens", "create", "alice", "--expires", "0d"], "a token must live a while"),
        (["tokens", "revoke", "0123456789ab"], "No token '0123456789ab'"),
        (["principals", "add", "alice", "--role", "admin"], "alice holds the role admin already"),
        (["principals", "list", "--at", "yesterday"], "is not an ISO 8601 time"),
        (["principals", "list", "--at", "3026-01-01T00:00:00Z"], "is in the future"),
        (["tokens", "create", "alice", "--expires", "99999999w"], "--expires 99999999w: at most 3650 days"),
        (["tokens", "revoke", "not-an-id"], "Give the token's 12-character id"),
    ],
)
def test_bad_access_input_is_one_line_and_writes_nothing(project: Path, args: list[str], message: str) -> None:
    ok(project, "principals", "add", "alice", "--role", "admin")
    head = ledger_of(project).head()
    result = run_cli(*args, cwd=project)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert ledger_of(project).head() == head


def test_the_default_lifetime_is_ninety_days_and_never_means_never(project: Path) -> None:
    ok(project, "principals", "add", "ci", "--role", "deployer")
    default = json.loads(ok(project, "tokens", "create", "ci", "--json"))
    expires = datetime.strptime(default["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert timedelta(days=89, hours=23) < expires - utc_now() <= timedelta(days=90)
    forever = json.loads(ok(project, "tokens", "create", "ci", "--expires", "never", "--json"))
    assert forever["expires_at"] is None
    assert authenticate(ledger_of(project), forever["token"]).roles == {"deployer": ()}


def test_a_token_pasted_whole_into_revoke_is_revoked_by_its_id_and_its_secret_never_echoed(project: Path) -> None:
    ok(project, "principals", "add", "ci", "--role", "deployer")
    token = token_of(project, "ci")
    out = run_cli("tokens", "revoke", token, cwd=project)
    assert out.exit_code == 0 and access.parse_bearer(token)[1] not in out.output
    assert json.loads(ok(project, "tokens", "list", "--json"))[0]["state"] == "revoked"
    none = run_cli("tokens", "list", "--principal", "someone-else", cwd=project)
    assert "No token issued for someone-else" in none.output


def test_a_token_checked_before_is_checked_again_after_any_change_to_access_in_the_same_process(
    project: Path,
) -> None:
    """Token rows are cached per ledger position in a long-lived process (the server): a revocation, a role
    revoked or a ledger replaced at the same place takes effect at the next check, as without the cache."""
    ok(project, "principals", "add", "bob", "--role", "deployer")
    ok(project, "principals", "add", "eve", "--role", "auditor")
    token = token_of(project, "bob")
    assert authenticate(ledger_of(project), token).roles == {"deployer": ()}
    ok(project, "principals", "add", "bob", "--role", "auditor")  # a grant moves the cached row on
    assert set(authenticate(ledger_of(project), token).roles) == {"deployer", "auditor"}
    ok(project, "principals", "revoke", "bob", "--role", "deployer", "--reason", "moved team")
    assert authenticate(ledger_of(project), token).roles == {"auditor": ()}
    ok(project, "tokens", "revoke", token.split("_")[1], "--reason", "leaked")
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(ledger_of(project), token)
    again = token_of(project, "bob")
    assert authenticate(ledger_of(project), again).name == "bob"

    other = project / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    ok(other, "principals", "add", "carol", "--role", "auditor")
    carol = token_of(other, "carol")
    assert authenticate(ledger_of(other), carol).name == "carol"
    for suffix in ("", ".wal"):  # the other ledger put where this one was: its tokens, and only those, count
        target = Path(f"{ledger_of(project).path}{suffix}")
        target.unlink(missing_ok=True)
        source = Path(f"{ledger_of(other).path}{suffix}")
        if source.exists():
            target.write_bytes(source.read_bytes())
    assert authenticate(ledger_of(project), carol).name == "carol"
    with pytest.raises(Unauthenticated):
        authenticate(ledger_of(project), again)
