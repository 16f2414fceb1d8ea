"""Separation of duties in team mode (issue 25): secure defaults, only authenticated identities count, no side door.

The use cases are called in-process with the actors the server would pass: `via_server(principal)` inside
`server(root)` signs with the project's server key exactly as `govern serve` does; a self-asserted actor is
what a local CLI, a job or anyone with the ledger's writer role can type. The rules need no file: they run over
an in-memory copy of the team's ledger (`support.projects.in_memory`) and on PostgreSQL; what goes through the
command line runs on the ledger file and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import as_server, commit_all, git, run_cli, trained_version, via_server
from support.copies import Prepared, PreparedOnPostgres, prepared, prepared_on_postgres
from support.projects import checkout, in_memory, project_at

from govern import attribution, config, signing
from govern.api import access as access_api
from govern.api import approvals, lifecycle
from govern.api.context import Project
from govern.envelope import PendingEvent, utc_now
from govern.errors import Forbidden, FourEyesViolation, PolicyViolation
from govern.events import ReproductionVerified
from govern.storage import LedgerStore, open_store

M = "churn"
GIT_TESS = "Tess Trainer <tess@example.com>"
NO_TAGS_NO_MLFLOW = '[registry]\ngto_tags = false\n[mlflow]\ntracking_uri = "sqlite:////nonexistent/mlflow.db"\n'


def build_team(root: Path, url: str | None = None) -> Path:
    """A team's project (a server declared; or, with `url`, a PostgreSQL ledger, a team's by itself): version 1
    trained through the server by tess, version 2 in a checkout under tess's git identity; alice is an admin and a
    scientist, pat and abe approvers, sci a scientist."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    if url is not None:
        ledger: Path | str = url
        declared = f'ledger = "{ledger}"\n'
    else:
        ledger, declared = root / "audit" / "ledger.duckdb", '[server]\nurl = "https://govern.example"\n'
    (root / "govern.toml").write_text(
        declared + "[registry]\ngto_tags = false\n" + '[mlflow]\ntracking_uri = "sqlite:////nonexistent/mlflow.db"\n'
    )
    commit_all(root, "start")
    # approvers first: before any admin exists the operator grants directly (bootstrap); after, approver and admin
    # take two admins (tests/test_admin_duties.py)
    for name, role in (("tess", "scientist"), ("tess", "approver"), ("pat", "approver"), ("abe", "approver"),
                       ("sci", "scientist"), ("alice", "admin"), ("alice", "scientist")):  # fmt: skip
        assert run_cli("principals", "add", name, "--role", role, cwd=root).exit_code == 0
    with as_server(root):
        trained_version(ledger, M, "1", via_server("tess"), {"validation.f1": 0.93}, commit="a" * 40)
    trained_version(ledger, M, "2", GIT_TESS, {"validation.f1": 0.91}, commit="b" * 40)
    return root


@pytest.fixture(scope="module")
def team_on_file(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """The team's project on the ledger file, built once: each test takes a copy."""
    return prepared(tmp_path_factory, build_team)


@pytest.fixture(scope="module")
def team_on_postgresql(
    tmp_path_factory: pytest.TempPathFactory, pg_ledger_template: str
) -> Iterator[PreparedOnPostgres]:
    """The team's project on a PostgreSQL ledger, built once: each test takes a copy, its database included."""
    with prepared_on_postgres(tmp_path_factory, pg_ledger_template, build_team) as found:
        yield found


@pytest.fixture(params=["file", pytest.param("postgresql", marks=pytest.mark.slow)])
def team_files(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The team's project (build_team) of a test through the command line: a copy of `team_on_file`, or of
    `team_on_postgresql` (the database's URL is in the project)."""
    if request.param == "postgresql":
        root = request.getfixturevalue("team_on_postgresql").copy_to(tmp_path / "team")
    else:
        root = request.getfixturevalue("team_on_file").copy_to(tmp_path / "team")
    monkeypatch.setenv("GOVERN_REGISTRY_MIRROR", "background")  # MLflow is unreachable: mirrored later
    return root


IN_MEMORY: dict[Path, Project] = {}  # a team's project over an in-memory ledger, by its root (the operator acting)


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.slow)])
def team(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The team's project (build_team) of a test of the rules: its checkout and configuration over an in-memory
    copy of `team_on_file`'s ledger (the file removed: nothing reads or writes it), or built on a PostgreSQL
    database of its own. `acting`, `server` and `ledger_of` find the project's ledger either way."""
    monkeypatch.setenv("GOVERN_REGISTRY_MIRROR", "background")  # MLflow is unreachable: mirrored later
    if request.param == "postgresql":
        yield request.getfixturevalue("team_on_postgresql").copy_to(tmp_path / "team")
        return
    from govern.storage.copying import copy

    built: Prepared = request.getfixturevalue("team_on_file")
    root = tmp_path / "team"
    built.copy_to(root)
    project = in_memory(root)
    copy(open_store(root / "audit" / "ledger.duckdb"), project.ledger)
    for file in (root / "audit").glob("ledger.duckdb*"):
        file.unlink()
    if built.key is not None:  # the server's key, where the server of this ledger keeps it
        mine = signing.default_path(project.ledger.location)
        mine.parent.mkdir(parents=True, exist_ok=True)
        mine.write_bytes(built.key.read_bytes())
        mine.chmod(0o600)
    IN_MEMORY[root] = project
    yield root
    IN_MEMORY.pop(root)


def acting(root: Path, actor: attribution.Actor) -> Project:
    """The team's project, `actor` acting: over its in-memory ledger, or as a command opens it."""
    if root in IN_MEMORY:
        return IN_MEMORY[root].acting_as(actor)
    return project_at(root, actor)


@contextmanager
def server(root: Path) -> Iterator[None]:
    """This test process acts as the project's `govern serve` (`conftest.as_server`), on its in-memory ledger too."""
    if root not in IN_MEMORY:
        with as_server(root):
            yield
        return
    from govern.api import keys

    previous = signing.active()
    keys.start(IN_MEMORY[root])
    try:
        yield
    finally:
        signing.activate(previous)


def ledger_of(root: Path) -> LedgerStore:
    if root in IN_MEMORY:
        return IN_MEMORY[root].ledger
    return open_store(config.load(root).ledger)


def head(root: Path) -> tuple[int, str]:
    return ledger_of(root).head()


def ask(root: Path, version: str, stage: str, who: str = "sci", force: bool = False) -> int:
    with server(root):
        return approvals.request_promotion(
            acting(root, via_server(who)), M, version, stage, "ready", force=force
        ).request_id


def test_the_last_stage_needs_an_approved_request_by_default_in_team_mode(team: Path) -> None:
    before = head(team)
    with server(team), pytest.raises(PolicyViolation, match="team mode's default for the last stage"):
        lifecycle.promote(acting(team, via_server("pat")), M, "1", "production", "board", force=True)
    assert head(team) == before
    with server(team):
        outcome = lifecycle.promote(acting(team, via_server("pat")), M, "1", "staging", "shadow traffic")
    assert outcome.events[0].actor == "pat (token 7e55a0000001)"
    assert json.loads(outcome.events[0].authn)["by"] == "server"


def test_a_solo_project_keeps_its_configured_rules(tmp_path: Path) -> None:
    root = checkout(tmp_path / "solo", NO_TAGS_NO_MLFLOW)
    trained_version(root / "audit" / "ledger.duckdb", M, "1", GIT_TESS, commit="a" * 40)
    result = run_cli("promote", M, "1", "--to", "production", "--force", "--reason", "one person", cwd=root)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "command",
    [
        ("promote", M, "1", "--to", "staging", "--reason", "typed into a terminal"),
        ("request-promotion", M, "1", "--to", "staging", "--reason", "typed into a terminal"),
    ],
)
def test_a_self_asserted_identity_cannot_promote_or_ask_in_team_mode(
    team_files: Path, command: tuple[str, ...]
) -> None:
    team = team_files
    before = head(team)
    result = run_cli(*command, cwd=team)
    assert result.exit_code == 1
    assert "counts only when govern serve authenticated who made it" in result.output
    assert "(self-asserted, git config)" in result.output and head(team) == before


def test_a_self_asserted_approval_does_not_count_in_team_mode(team_files: Path) -> None:
    team = team_files
    number = ask(team, "1", "staging")
    before = head(team)
    git(team, "config", "user.name", "Pat Approver")  # a changed git identity is still self-asserted
    result = run_cli("approve", str(number), "--reason", "looks fine", cwd=team)
    assert result.exit_code == 1 and "authenticated" in result.output and head(team) == before
    forged = attribution.self_asserted("pat", attribution.CI_OVERRIDE)
    with pytest.raises(PolicyViolation, match="counts only when govern serve authenticated"):
        approvals.approve(acting(team, forged), number, "as pat, typed")
    with server(team):
        approvals.approve(acting(team, via_server("pat")), number, "evidence reviewed")


def test_nobody_promotes_or_approves_a_version_they_trained_by_any_path(team: Path) -> None:
    with server(team), pytest.raises(FourEyesViolation, match="tess trained version 1"):
        lifecycle.promote(acting(team, via_server("tess")), M, "1", "staging", "mine")
    number = ask(team, "1", "staging")
    with server(team), pytest.raises(FourEyesViolation, match="tess trained version 1"):
        approvals.approve(acting(team, via_server("tess")), number, "mine")
    assert (
        "tess trained version 1"
        in approvals.evidence(acting(team, via_server("tess")), number, four_eyes=True)["four_eyes"]
    )
    assert approvals.evidence(acting(team, via_server("pat")), number, four_eyes=True)["four_eyes"] is None


def test_a_version_only_a_self_asserted_identity_trained_needs_a_verified_reproduction(team: Path) -> None:
    number = ask(team, "2", "staging")
    with server(team), pytest.raises(FourEyesViolation, match="trained by a self-asserted identity"):
        approvals.approve(acting(team, via_server("pat")), number, "reviewed")
    ledger = ledger_of(team)
    verdict = ReproductionVerified(
        commit="b" * 40, outputs=[{"path": "model.pkl", "md5": "0" * 32}], differing_outputs=[], metric_deltas={},
        metrics={}, duration_s=1.0, ci={"system": "local"}, match="exact", dvc_lock_sha256="0" * 64,
    )  # fmt: skip
    ledger.append([PendingEvent(verdict, attribution.self_asserted("CI", "GOVERN_CI_IDENTITY"), utc_now(), "b" * 40)])
    with server(team), pytest.raises(FourEyesViolation, match="verified reproduction"):
        approvals.approve(acting(team, via_server("pat")), number, "a self-asserted verdict opens nothing")
    with server(team):
        ledger.append([PendingEvent(verdict, via_server("ci-runner"), utc_now(), "b" * 40)])
        outcome = approvals.approve(acting(team, via_server("pat")), number, "reproduced by CI")
    assert outcome.events[-1].type == "model.promoted"


def test_force_is_an_admins_request_and_an_approvers_decision_never_a_way_around_four_eyes(team: Path) -> None:
    with server(team), pytest.raises(PolicyViolation, match="--force is no way around the rules"):
        lifecycle.promote(acting(team, via_server("pat")), M, "1", "staging", "now", force=True)
    with server(team), pytest.raises(Forbidden, match="sci is no admin"):
        approvals.request_promotion(acting(team, via_server("sci")), M, "1", "production", "skip staging", force=True)
    number = ask(team, "1", "production", who="alice", force=True)
    with server(team), pytest.raises(FourEyesViolation, match="tess trained"):
        approvals.approve(acting(team, via_server("tess")), number, "mine")
    with server(team):
        outcome = approvals.approve(acting(team, via_server("pat")), number, "incident 4711: skip staging")
    promoted = outcome.events[-1]
    assert promoted.payload["forced"] is True and promoted.payload["to_stage"] == "production"


def test_an_approver_whose_token_the_requester_issued_acts_with_the_requesters_hands(team: Path) -> None:
    with server(team):
        issued = access_api.issue_token(acting(team, via_server("alice")), "abe")
        assert issued.is_code and issued.token is None, "for another principal: an enrollment code"
        door = acting(team, attribution.server("redeem"))  # the server's door: whoever redeemed the code
        token = access_api.redeem(door, issued.code.code, through_server=True).token
    number = ask(team, "1", "staging", who="alice")
    with server(team), pytest.raises(FourEyesViolation, match="was issued by alice"):
        approvals.approve(acting(team, via_server("abe", token.token_id)), number, "as abe")
    with server(team):
        approvals.approve(acting(team, via_server("pat")), number, "reviewed")


def test_a_self_asserted_ci_verdict_does_not_open_the_reproduction_gate_in_team_mode(team: Path) -> None:
    toml = team / "govern.toml"
    toml.write_text(
        toml.read_text().replace("[registry]\n", '[registry]\ngates = { staging = ["reproduction.verified"] }\n')
    )
    if team in IN_MEMORY:  # the configuration is read when the project is built: built again, the same ledger
        IN_MEMORY[team] = Project(team, config.load(team), IN_MEMORY[team].ledger)
    ledger = ledger_of(team)
    verdict = ReproductionVerified(
        commit="a" * 40, outputs=[{"path": "model.pkl", "md5": "0" * 32}], differing_outputs=[], metric_deltas={},
        metrics={}, duration_s=1.0, ci={"system": "local"}, match="exact", dvc_lock_sha256="0" * 64,
    )  # fmt: skip
    ledger.append([PendingEvent(verdict, attribution.self_asserted("CI", "GOVERN_CI_IDENTITY"), utc_now(), "a" * 40)])
    with server(team), pytest.raises(PolicyViolation, match="reproduction.verified"):
        lifecycle.promote(acting(team, via_server("pat")), M, "1", "staging", "gated")
    with server(team):
        ledger.append([PendingEvent(verdict, via_server("ci-runner"), utc_now(), "a" * 40)])
        lifecycle.promote(acting(team, via_server("pat")), M, "1", "staging", "gated")


def test_a_checkout_saying_solo_does_not_lift_team_mode_from_a_ledger_a_server_signed_in(
    team_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the insider review: a checkout of one's own saying `mode = "solo"`, pointed at the team's ledger
    with GOVERN_LEDGER, promoted to production with a typed --approver and no request; the server then deployed
    on that standing. The ledger's team mode is the ledger's, whatever a checkout says."""
    own = checkout(tmp_path / "own", 'mode = "solo"\n' + NO_TAGS_NO_MLFLOW)
    monkeypatch.setenv("GOVERN_LEDGER", str(config.load(team_files).ledger))
    before = head(team_files)
    for stage, refusal in (
        ("staging", "counts only when govern serve authenticated"),
        ("production", "need an approved request (team mode's default for the last stage)"),
    ):
        result = run_cli("promote", M, "1", "--to", stage, "--reason", "x", "--approver", "carol", cwd=own)
        assert result.exit_code == 1, result.output
        assert refusal in result.output
    assert head(team_files) == before


def test_closing_a_request_or_deprecating_a_version_counts_only_from_an_authenticated_person_in_team_mode(
    team_files: Path,
) -> None:
    """Found by the insider review: through the server only approvers reject and deprecate, but the local CLI
    let any git identity close a request or block a version from deployment."""
    team = team_files
    number = ask(team, "1", "staging")
    before = head(team)
    for command in (
        ("reject", str(number), "--reason", "closed by a typed name"),
        ("deprecate", M, "2", "--reason", "blocked by a typed name"),
    ):
        result = run_cli(*command, cwd=team)
        assert result.exit_code == 1, result.output
        assert "counts only when govern serve authenticated" in result.output
    assert head(team) == before
    with server(team):
        approvals.reject(acting(team, via_server("pat")), number, "not yet")
        lifecycle.deprecate(acting(team, via_server("pat")), M, "2", "superseded")
