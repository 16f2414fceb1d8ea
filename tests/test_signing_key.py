"""The server's signing key (issue 25): created outside the checkout with mode 0600, registered by an event it signs
itself, rotated with an endorsement, refused when the ledger does not trust it; and local identities that try to
look authenticated."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import commit_all, git, run_cli, snapshot_event, via_server
from support.projects import project_at

from govern import attestations, signing
from govern.api import keys
from govern.storage.duckdb_log import Ledger


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "govern.toml").write_text(f'[server]\nsigning_key = "{tmp_path / "keys" / "server.key"}"\n')
    commit_all(root, "start")
    return root


def ledger_of(project: Path) -> Ledger:
    return Ledger(project / "audit" / "ledger.duckdb")


def test_init_key_creates_a_private_key_only_its_owner_reads_and_prints_its_fingerprint(project: Path) -> None:
    first = run_cli("serve", "--init-key", cwd=project)
    assert first.exit_code == 0, first.output
    path = project.parent / "keys" / "server.key"
    assert (path.stat().st_mode & 0o777) == 0o600 and (path.parent.stat().st_mode & 0o777) == 0o700
    fingerprint = signing.load(path).fingerprint
    assert f"signing key {fingerprint} created: {path}" in first.output
    assert f'trusted_keys = ["{fingerprint}"]' in first.output
    again = run_cli("serve", "--init-key", cwd=project)
    assert again.exit_code == 0 and "exists already" in again.output and signing.load(path).fingerprint == fingerprint


def test_a_key_others_can_read_or_one_inside_the_checkout_is_refused(project: Path) -> None:
    state = keys.start(project_at(project), activate=False)
    state.signer.path.chmod(0o644)
    with pytest.raises(signing.SigningKeyError, match="accessible to other users"):
        keys.start(project_at(project), activate=False)
    (project / "govern.toml").write_text('[server]\nsigning_key = "secrets/server.key"\n')
    result = run_cli("serve", "--init-key", cwd=project)
    assert result.exit_code == 1 and "is inside the project's checkout" in result.output


def test_the_first_start_registers_the_key_in_an_event_it_signs_and_the_next_start_records_nothing(
    project: Path,
) -> None:
    state = keys.start(project_at(project), activate=False)
    [registered] = ledger_of(project).read(types=["signing_key.registered"])
    assert registered.payload["fingerprint"] == state.signer.fingerprint
    assert json.loads(registered.authn) == {"by": "server", "key": state.signer.fingerprint, "via": "server"}
    assert registered.actor.startswith("server:") and registered.signature
    keys.start(project_at(project), activate=False)
    assert ledger_of(project).head()[0] == registered.seq, "registered once"
    assert attestations.check(ledger_of(project).query_stored).ok


def test_a_server_holding_a_key_the_ledger_does_not_trust_is_refused(project: Path, tmp_path: Path) -> None:
    keys.start(project_at(project), activate=False)
    other = tmp_path / "elsewhere.key"
    (project / "govern.toml").write_text(f'[server]\nsigning_key = "{other}"\n')
    with pytest.raises(signing.SigningKeyError, match="this server holds another one"):
        keys.start(project_at(project), activate=False)
    assert len(ledger_of(project).read(types=["signing_key.registered"])) == 1


def test_a_rotated_key_is_endorsed_by_the_old_one_which_signs_nothing_after(project: Path) -> None:
    old = keys.start(project_at(project), activate=False).signer
    old_copy = old.path.with_name("old.key")
    old_copy.write_bytes(old.path.read_bytes())
    old_copy.chmod(0o600)
    result = run_cli("serve", "--rotate-key", str(old_copy), "--reason", "yearly", cwd=project)
    assert result.exit_code == 0, result.output
    new = signing.load(old.path)
    registered, retired = ledger_of(project).read(types=["signing_key.registered", "signing_key.retired"])[1:]
    assert registered.payload["endorsed_by"] == old.fingerprint and retired.payload["successor"] == new.fingerprint
    with signing.signing_with(new):
        ledger_of(project).append([replace(snapshot_event(1), actor=via_server("abe"))])
    report = attestations.check(ledger_of(project).query_stored)
    assert report.ok, report.problems
    assert [k.trusted for k in report.keys] == [True, True] and report.keys[1].why.startswith("endorsed by")
    with signing.signing_with(old):  # a stolen old key, after its retirement
        stolen = ledger_of(project).append([replace(snapshot_event(2), actor=via_server("abe"))])[0]
    report = attestations.check(ledger_of(project).query_stored)
    assert (
        not report.ok and f"seq {stolen.seq}: signed with key {old.fingerprint}, retired at seq" in report.problems[0]
    )


def test_a_lost_key_is_replaced_only_by_one_pinned_in_the_projects_configuration(project: Path, tmp_path: Path) -> None:
    lost = keys.start(project_at(project), activate=False).signer
    lost.path.unlink()
    replacement = signing.create(tmp_path / "replacement.key")
    (project / "govern.toml").write_text(f'[server]\nsigning_key = "{replacement.path}"\n')
    with pytest.raises(signing.SigningKeyError, match="pin the new fingerprint"):
        keys.start(project_at(project), activate=False)
    pins = f'["{lost.fingerprint}", "{replacement.fingerprint}"]'
    (project / "govern.toml").write_text(f'[server]\nsigning_key = "{replacement.path}"\ntrusted_keys = {pins}\n')
    keys.start(project_at(project), activate=False)
    result = run_cli("audit", "verify", cwd=project)
    assert result.exit_code == 0 and "2 trusted key(s)" in result.output, result.output


@pytest.mark.parametrize(
    ("variable", "value"),
    [("GOVERN_CI_IDENTITY", "alice (token 00d199502a68)"), ("GOVERN_CI_IDENTITY", "server:govern-host")],
)
def test_a_local_identity_in_the_servers_form_is_refused_and_nothing_is_written(
    project: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """The security review's forgery: a job or a writer typing an admin's authenticated name into a variable."""
    monkeypatch.setenv(variable, value)
    result = run_cli("principals", "add", "mallory", "--role", "admin", cwd=project)
    assert result.exit_code == 2 and not (project / "audit" / "ledger.duckdb").exists()
    [line] = result.output.strip().splitlines()
    assert "is in the form govern serve gives authenticated principals" in line


def test_a_git_identity_in_the_servers_form_is_refused(project: Path) -> None:
    git(project, "config", "user.name", "abe (token b6e5036e1e3b)")
    result = run_cli("principals", "add", "mallory", "--role", "admin", cwd=project)
    assert result.exit_code == 2 and "form govern serve gives authenticated principals" in result.output


def test_audit_log_and_history_show_how_each_actor_was_established(project: Path) -> None:
    assert run_cli("principals", "add", "ann", "--role", "auditor", cwd=project).exit_code == 0
    with signing.signing_with(keys.start(project_at(project), activate=False).signer):
        ledger_of(project).append([replace(snapshot_event(1), actor=via_server("ann"))])
    printed = run_cli("audit", "log", cwd=project).output
    assert "by Ada Auditor <ada@example.com> (self-asserted, git config)" in printed
    assert "by ann (authenticated, token 7e55a0000001)" in printed
    assert "by server:" in printed and "(authenticated, the server itself)" in printed
    as_json = json.loads(run_cli("audit", "log", "--json", cwd=project).stdout)
    assert as_json[-1]["authn"]["by"] == "server" and as_json[-1]["signature"]
    assert os.environ.get("GOVERN_CI_IDENTITY") is None
