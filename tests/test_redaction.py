"""Nothing secret reaches the ledger: one redaction for every URI and assignment form, applied to every payload
before it is hashed, and the append path's refusal of any configured secret the redaction could not recognise.

The fast tier: pure functions, a DuckDB file and a PostgreSQL database. The end-to-end check (a password in every
configured URI, through `govern repro`, `govern serve`, MLflow and every report) is in test_secrets_end_to_end.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, run_cli, snapshot_event

from govern import redaction
from govern.envelope import GENESIS_HASH, PendingEvent, envelope_hash, utc_now
from govern.errors import SecretInEvent
from govern.events import TrainingFailed
from govern.redaction import REDACTED, has_password, redact, without_password
from govern.storage.duckdb_log import Ledger
from govern.storage.postgres_log import PostgresLedger

SECRET = "S3cret-Pa55word"  # distinctive: what a guard looks for


@pytest.fixture(autouse=True)
def fresh_guard() -> Iterator[None]:
    """Each test starts with, and leaves, a process that remembers no secret."""
    redaction.forget()
    yield
    redaction.forget()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the URI: a driver in the scheme
        ("postgresql+psycopg://postgres:S3cret@127.0.0.1:5432/x", "postgresql+psycopg://postgres@127.0.0.1:5432/x"),
        ("mysql+pymysql://app:p%40ss@db/x", "mysql+pymysql://app@db/x"),
        ("redis://:S3cret@cache:6379/0", "redis://cache:6379/0"),
        ("postgresql://u:p@ss/w@rd@h/db", "postgresql://u@h/db"),  # a password holding '@' and '/' goes whole
        # a user alone stays, unless it is itself a credential
        ("https://alice@github.com/team/repo.git", "https://alice@github.com/team/repo.git"),
        ("https://ghp_0123456789abcdefghijABCDEFGHIJ012345@github.com/t/r", "https://github.com/t/r"),
        ("https://x-access-token:ghs_abc123@github.com/t/r", "https://github.com/t/r"),
        ("ssh://git@github.com:22/team/repo.git", "ssh://git@github.com:22/team/repo.git"),
        # query-string secrets, presigned URLs
        (
            "postgresql://u@h/db?sslmode=require&password=S3cret&sslpassword=k3y&application_name=x",
            f"postgresql://u@h/db?sslmode=require&password={REDACTED}&sslpassword={REDACTED}&application_name=x",
        ),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Signature=deadbeef&X-Amz-Security-Token=t0k",
            f"https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Signature={REDACTED}"
            f"&X-Amz-Security-Token={REDACTED}",
        ),
        (
            "https://a.blob.core.windows.net/c?sv=2020&sig=abc%2Bdef",
            f"https://a.blob.core.windows.net/c?sv=2020&sig={REDACTED}",
        ),
        (
            "https://api.example.com/v1?access_token=abc&pwd=x&key=AIza1",
            f"https://api.example.com/v1?access_token={REDACTED}&pwd={REDACTED}&key={REDACTED}",
        ),
        # inside longer texts: an error message, a command line, an environment listing, a printed mapping
        (
            "Could not mirror into MLflow at postgresql+psycopg://postgres:S3cret@127.0.0.1:5432/x: refused",
            "Could not mirror into MLflow at postgresql+psycopg://postgres@127.0.0.1:5432/x: refused",
        ),
        ("PGPASSWORD=S3cret psql -h db", f"PGPASSWORD={REDACTED} psql -h db"),
        (
            "MLFLOW_TRACKING_TOKEN='a b' AWS_SECRET_ACCESS_KEY=xyz AWS_ACCESS_KEY_ID=AKIA1 max_tokens=512",
            f"MLFLOW_TRACKING_TOKEN={REDACTED} AWS_SECRET_ACCESS_KEY={REDACTED} AWS_ACCESS_KEY_ID=AKIA1 max_tokens=512",
        ),
        (
            "train.py --api-key=abc123 --learning_rate=0.1 noise.sig=0.1",
            f"train.py --api-key={REDACTED} --learning_rate=0.1 noise.sig=0.1",
        ),
        ("Driver=x;Server=db;UID=sa;PWD=S3cret;", f"Driver=x;Server=db;UID=sa;PWD={REDACTED};"),
        ("AccountName=x;AccountKey=abc==;EndpointSuffix=y", f"AccountName=x;AccountKey={REDACTED};EndpointSuffix=y"),
        ("{'user': 'bob', 'password': 'hunter2'}", f"{{'user': 'bob', 'password': '{REDACTED}'}}"),
        ("Authorization: Bearer eyJhbGciOi.abc.def", f"Authorization: Bearer {REDACTED}"),
        (
            "DELETE /api/v1/tokens/gvn_00d199502a68_abcdEFGH0123-_xyz",
            f"DELETE /api/v1/tokens/gvn_00d199502a68_{REDACTED}",
        ),
        (  # an enrollment code pasted where its id belongs
            "DELETE /api/v1/tokens/gvc_00d199502a68_abcdEFGH0123-_xyz",
            f"DELETE /api/v1/tokens/gvc_00d199502a68_{REDACTED}",
        ),
        # glued to what comes before (the security review: a reason `xgvn_...` reached the ledger, `a_gvn_...` the log)
        ("reason=xgvn_00d199502a68_abcdEFGH0123-_xyz", f"reason=xgvn_00d199502a68_{REDACTED}"),
        ("?principal=a_gvn_00d199502a68_abcdEFGH0123", f"?principal=a_gvn_00d199502a68_{REDACTED}"),
        ("?principal=a%20gvn_00d199502a68_abcdEFGH0123", f"?principal=a%20gvn_00d199502a68_{REDACTED}"),
        ("key:xghp_" + "A" * 36, f"key:x{REDACTED}"),
        # separators percent-encoded (an access log's raw query string), full-width or with zero-width characters
        # around them (pasted from a chat): the third review found each of them unredacted
        ("?reason=xgvn%5F00d199502a68%5FabcdEFGH0123", f"?reason=xgvn%5F00d199502a68%5F{REDACTED}"),
        ("gvn\uff3f00d199502a68\uff3fabcdEFGH0123", f"gvn\uff3f00d199502a68\uff3f{REDACTED}"),
        ("gvc\u200b_00d199502a68_\u200babcdEFGH0123", f"gvc\u200b_00d199502a68_\u200b{REDACTED}"),
        ("the gvn team", "the gvn team"),
        # not secrets: left as they are
        ("alice (token 00d199502a68)", "alice (token 00d199502a68)"),
        ("PGPASSWORD=$PGPASSWORD psql", "PGPASSWORD=$PGPASSWORD psql"),
        ("a basic statistics summary of the password policy", "a basic statistics summary of the password policy"),
        (
            "A valid bearer token is required: `govern tokens create NAME`",
            "A valid bearer token is required: `govern tokens create NAME`",
        ),
        ("sqlite:////home/x/mlflow.db", "sqlite:////home/x/mlflow.db"),
    ],
)
def test_one_redaction_removes_the_secret_of_every_form_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected, "idempotent"


def test_without_password_keeps_a_url_libpq_can_use_and_has_password_says_whether_it_changed() -> None:
    url = "postgresql+psycopg://govern:S3cret@db:5432/x?password=S3cret&sslmode=require"
    assert without_password(url) == "postgresql+psycopg://govern@db:5432/x?sslmode=require"
    assert (
        has_password(url)
        and has_password("postgresql://govern@db/x?sslpassword=k")
        and not has_password("postgresql://govern@db/x")
    )


def test_a_payload_is_redacted_before_it_is_hashed_and_the_chain_verifies(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.duckdb")
    failed = TrainingFailed(
        git={"commit": "c" * 40, "remote_url": "https://ci:Rem0teS3cret@git.example.com/t/r.git"},
        targets=[],
        stage="train",
        error="stage train failed: could not connect to postgresql+psycopg://postgres:S3cret@db/x",
        output_tail="PGPASSWORD=S3cret psql ...\nTraceback ...",
        stages=[],
        environment={},
        duration_s=1.0,
    )
    pending = PendingEvent(failed, actor="tess", occurred_at=utc_now(), git_commit="c" * 40)

    [recorded] = ledger.append([pending])

    assert "S3cret" not in recorded.payload_json and "Rem0teS3cret" not in recorded.payload_json
    assert recorded.payload["git"]["remote_url"] == "https://ci@git.example.com/t/r.git"
    assert recorded.payload["error"].endswith("postgresql+psycopg://postgres@db/x")
    assert recorded.payload["output_tail"].startswith(f"PGPASSWORD={REDACTED} psql")
    names = (
        "seq",
        "event_id",
        "type",
        "schema_version",
        "occurred_at",
        "recorded_at",
        "actor",
        "subject",
        "git_commit",
    )
    fields = {name: getattr(recorded, name) for name in names}
    assert recorded.hash == envelope_hash(**fields, payload_json=recorded.payload_json, prev_hash=GENESIS_HASH)
    assert ledger.verify().ok
    assert ledger.append([pending])[0].seq == recorded.seq, "a retried event is the same event, not a conflict"


def test_a_payload_without_secrets_is_serialised_exactly_as_before() -> None:
    """The hash contract of every other event is untouched: the same canonical JSON as `fact.to_payload()`."""
    from govern.envelope import canonical_json

    event = snapshot_event(7, source="the warehouse, key column id, token count 3")
    assert event.payload_json == canonical_json(event.fact.to_payload())


@pytest.mark.parametrize(
    ("secret", "guarded"),
    [
        ("S3cret", True),  # six characters, three kinds
        ("hunter2", True),
        ("postgres", False),  # a plain word: it names things in every payload
        ("mlflow", False),
        ("pw", False),  # too short
        ("12345", False),
        ("a3f9c1d2", False),  # short hexadecimal: found in hashes by chance
        ("a3f9c1d2e5b7a9c0d1", True),
        ("correcthorsebatterystaple", True),  # long enough alone
        ("c" * 43, False),  # too few different characters: a made-up hash has them
    ],
)
def test_only_distinctive_secrets_are_guarded(secret: str, guarded: bool) -> None:
    assert redaction.distinctive(secret) is guarded


def test_a_password_equal_to_its_user_name_is_not_guarded_since_the_redacted_uri_shows_it() -> None:
    uri = "postgresql://Adm1nistrator:Adm1nistrator@db/x"
    candidates = dict.fromkeys(redaction.secrets_of_uri(uri), "the password of MLflow's tracking URI")
    assert redaction.guarded(candidates, [redact(uri)]) == {}


def test_secrets_are_found_in_uris_configuration_files_and_the_environment() -> None:
    assert redaction.secrets_of_uri("postgresql://u:P%40ss@h/x?sslpassword=k3y&sslmode=x") == ["P%40ss", "k3y"]
    config = (
        '[remote "storage"]\n    url = https://dvc:Dvc5ecret@dvc.example.com/store\n'
        "    password = Pa55-word\n    secret_access_key = AbC123xyz\n    access_key_id = AKIA123\n"
    )
    assert redaction.secrets_of_config(config) == ["Dvc5ecret", "Pa55-word", "AbC123xyz"]
    found = redaction.secrets_of_environment(
        {"PGPASSWORD": "Pg5ecret", "DATABASE_URL": "postgresql://u:Db5ecret@h/x", "PWD": "/home/x", "PGPASSFILE": "/p"}
    )
    assert found == {"Pg5ecret": "the value of PGPASSWORD", "Db5ecret": "the password in DATABASE_URL"}
    spellings = redaction.guarded({"P%40ss-w0rd": "x"})
    assert {"P%40ss-w0rd", "P@ss-w0rd"} <= set(spellings), "percent-encoded in the URI, decoded in a message"


def refused_on(ledger: Ledger | PostgresLedger) -> None:
    """A payload carrying a configured secret in free text (no structure the redaction knows) is refused, in a
    single append and in a batch; nothing is appended, and the ledger still takes other events."""
    redaction.remember(redaction.guarded({SECRET: "the value of PGPASSWORD"}))
    before = ledger.head()
    leaking = snapshot_event(1, source=f"exported with the password {SECRET} by mistake")
    with pytest.raises(SecretInEvent) as refused:
        ledger.append([leaking])
    message = str(refused.value)
    assert message.startswith("Refused to record dataset.snapshotted: its payload holds the value of PGPASSWORD")
    assert SECRET not in message and "\n" not in message
    with pytest.raises(SecretInEvent, match="its actor holds"):
        ledger.append([snapshot_event(2), snapshot_event(3, actor=f"bob {SECRET}")])
    quoted = 'Qu0te"d\\S3cret'  # stored escaped in the payload's JSON: looked for as such
    redaction.remember(redaction.guarded({quoted: "the value of GOVERN_TOKEN"}))
    assert json.dumps(quoted)[1:-1] != quoted
    with pytest.raises(SecretInEvent, match="GOVERN_TOKEN"):
        ledger.append([snapshot_event(4, source=f"token {quoted} pasted")])
    assert ledger.head() == before, "nothing appended"
    assert ledger.append([snapshot_event(5)])[0].payload["path"] == "data/part-5.csv"


def test_the_file_ledger_refuses_an_event_holding_a_configured_secret(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.duckdb")
    ledger.append([snapshot_event(100)])
    refused_on(ledger)


def test_the_postgresql_ledger_refuses_an_event_holding_a_configured_secret(
    pg_ledger_database: str, tmp_path: Path
) -> None:
    ledger = PostgresLedger(pg_ledger_database, cache_dir=tmp_path / "model")
    try:
        ledger.append([snapshot_event(100)])
        refused_on(ledger)
    finally:
        ledger.close()


def test_the_postgresql_ledger_refuses_its_own_urls_password_however_it_was_opened(
    pg_ledger_database: str, tmp_path: Path
) -> None:
    # the server trusts: the password is not checked
    url = pg_ledger_database.replace("postgres@", f"postgres:{SECRET}@", 1)
    ledger = PostgresLedger(url, cache_dir=tmp_path / "model")
    try:
        with pytest.raises(SecretInEvent, match="the password of the ledger's URL"):
            ledger.append([snapshot_event(1, source=f"copied from a psql session with {SECRET}")])
        assert ledger.head() is None
    finally:
        ledger.close()


def test_a_command_refuses_to_record_a_secret_of_its_environment_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The composition (`open_project`) tells the ledger the environment's secrets: a reason quoting one is refused."""
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q")
    git(project, "remote", "add", "origin", "https://ci-bot:Rem0te-S3cret@git.example.com/team/project.git")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    added = run_cli(
        "principals", "add", "ann", "--role", "auditor", "--reason", f"asked by mail ({SECRET})", cwd=project
    )
    assert added.exit_code != 0
    assert added.output.strip() == (
        "Error: Refused to record access.granted: its payload holds the value of MLFLOW_TRACKING_PASSWORD, a "
        "configured secret, and the ledger can never remove what it records; nothing was appended. Find what put it "
        "there (an error message, a parameter, a log line) and keep the secret out of it"
    )
    remote = run_cli("principals", "add", "ann", "--role", "auditor", "--reason", "pasted Rem0te-S3cret", cwd=project)
    assert remote.exit_code != 0 and "a credential in config" in remote.output
    assert (
        not (project / "audit" / "ledger.duckdb").exists() or Ledger(project / "audit" / "ledger.duckdb").head() is None
    )
    assert run_cli("principals", "add", "ann", "--role", "auditor", cwd=project).exit_code == 0


def test_the_server_guards_its_sessions_key_and_the_projects_secrets_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from govern.server.app import create_app

    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q")
    git(project, "remote", "add", "origin", "https://ci-bot:Rem0te-S3cret@git.example.com/team/project.git")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql+psycopg://mlflow:{SECRET}@db/mlflow")
    key = "k3y-Of-The-Sessions-0123456789abcdefghij"

    create_app(project, session_secret=key)

    assert redaction.guard()[key] == "the web sessions' key (GOVERN_SESSION_SECRET)"
    assert redaction.guard()[SECRET] == "the password of MLflow's tracking URI"
    assert redaction.guard()["Rem0te-S3cret"].startswith("a credential in config")


def test_a_problem_the_server_answers_carries_no_secret() -> None:
    """An unexpected error's words (a driver's message quoting its connection string) reach the client scrubbed."""
    from govern.server.http import problem

    redaction.remember(redaction.guarded({SECRET: "the value of PGPASSWORD"}))
    answer = problem(500, "unexpected", f"OperationalError: postgresql://u:pw@h/x refused ({SECRET})", "/api/v1/x")
    detail = json.loads(answer.body)["detail"]
    assert detail == f"OperationalError: postgresql://u@h/x refused ({REDACTED})"
