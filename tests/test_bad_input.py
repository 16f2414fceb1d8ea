"""Bad input, table-driven: one clear line naming the problem and what to do, non-zero exit, ledger unchanged."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from conftest import commit_all, git, run_cli

from govern.readmodel.migrations import schema_version

M = "breast-cancer-classifier"


@dataclass
class Case:
    args: list[str]  # "{tmp}" stands for a scratch folder outside the project
    expected: str
    exit_code: int = 1
    setup: Callable[[Path, Path, pytest.MonkeyPatch], Path | None] | None = None  # returns another cwd
    env: dict[str, str] = field(default_factory=dict)
    creates_nothing: str | None = None  # a file, in the scratch folder, that must not exist afterwards


def sql(statement: str, **options: object) -> Case:
    return Case(["audit", "sql", statement], **options)  # type: ignore[arg-type]


SANDBOXED = "files and extensions are out of its reach"


def run_clis(*commands: list[str]) -> Callable[[Path, Path, pytest.MonkeyPatch], None]:
    """A setup that runs govern commands in the project first (each must succeed)."""

    def setup(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
        for command in commands:
            result = run_cli(*command, cwd=project)
            assert result.exit_code == 0, result.output

    return setup


SERVING_COMMANDS = (
    ["promote", M, "1", "--to", "staging", "--reason", "r"],
    ["promote", M, "1", "--to", "production", "--reason", "r"],
    ["deploy", M, "1", "--app", "scoring"],
)
SERVING = run_clis(*SERVING_COMMANDS)


def evil_named_query(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
    (project / "audit" / "queries" / "evil.sql").write_text(
        f"-- Looks like a report.\nCOPY (SELECT 'echo pwned') TO '{tmp}/post-checkout' (FORMAT csv, HEADER false)\n"
    )


def outside_git(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> Path:
    return tmp


def no_dvc_yaml(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> Path:
    git(tmp, "init", "-q")
    run_cli("init", cwd=tmp)
    commit_all(tmp, "governed, but no pipeline yet")
    return tmp


def write_and_commit(name: str, text: str) -> Callable[[Path, Path, pytest.MonkeyPatch], None]:
    def setup(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
        (project / name).write_text(text)
        commit_all(project, f"break {name}")

    return setup


def append_and_commit(name: str, text: str) -> Callable[[Path, Path, pytest.MonkeyPatch], None]:
    def setup(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
        (project / name).write_text((project / name).read_text() + text)
        commit_all(project, f"append to {name}")

    return setup


def replace_and_commit(name: str, old: str, new: str) -> Callable[[Path, Path, pytest.MonkeyPatch], None]:
    def setup(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
        text = (project / name).read_text()
        assert old in text
        (project / name).write_text(text.replace(old, new, 1))
        commit_all(project, f"edit {name}")

    return setup


def branch_without(branch: str, *paths: str) -> Callable[[Path, Path, pytest.MonkeyPatch], None]:
    """A branch whose last commit no longer holds `paths`; the checkout stays on main."""

    def setup(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
        git(project, "checkout", "-q", "-b", branch)
        git(project, "rm", "-r", "-q", "--cached", *paths)
        git(project, "commit", "-q", "-m", f"without {', '.join(paths)}")
        git(project, "checkout", "-q", "-f", "main")

    return setup


def delete_script(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
    git(project, "rm", "-q", "pipelines/evaluate.py")
    commit_all(project, "lose a script")


def dirty(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
    (project / "pipelines" / "model.py").write_text("# edited\n" + (project / "pipelines" / "model.py").read_text())


def corrupt_ledger(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
    garbage = tmp / "garbage.duckdb"
    garbage.write_bytes(b"\x00not a database\xff" * 512)
    patch.setenv("GOVERN_LEDGER", str(garbage))


def newer_ledger(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
    con = duckdb.connect(str(project / "audit" / "ledger.duckdb"))
    con.execute(f"INSERT INTO govern_migrations VALUES ({schema_version() + 1}, 'from the future', now()::TIMESTAMP)")
    con.close()


def unwritable_ledger(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
    patch.setenv("GOVERN_LEDGER", "/proc/govern-cannot-write-here/ledger.duckdb")


def config_is_a_directory(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
    (project / "govern.toml").mkdir()


def mlflow_unreachable(project: Path, tmp: Path, patch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    patch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("C: 4.0", "C: 8.0"))
    commit_all(project, "C=8")
    assert run_cli("repro", cwd=project).exit_code == 0  # recorded, its mirror pending


CASES = {
    "not a git repository": Case(["repro"], "is not inside a git repository: run `git init` first", setup=outside_git),
    "no dvc.yaml": Case(["repro"], "No dvc.yaml in", setup=no_dvc_yaml),
    "malformed params.yaml": Case(["repro"], "params.yaml", setup=write_and_commit("params.yaml", "train: [C: 1\n")),
    "malformed dvc.yaml": Case(["repro"], "dvc.yaml", setup=write_and_commit("dvc.yaml", "stages:\n  a: [\n")),
    "a stage's script is missing": Case(
        ["repro"], "depends on pipelines/evaluate.py, which does not exist", setup=delete_script
    ),
    "unknown stage": Case(["repro", "trian"], "Unknown stage trian: the pipeline's stages are"),
    "dirty tree": Case(["repro"], "Uncommitted changes to tracked files (pipelines/model.py)", setup=dirty),
    "malformed grid": Case(["repro", "--grid", "train.C"], "is not KEY=V1,V2", exit_code=2),
    "unknown model": Case(
        ["promote", "credit-scorer", "1", "--to", "staging", "--reason", "r"], "Unknown model 'credit-scorer'"
    ),
    "unknown version": Case(
        ["promote", M, "42", "--to", "staging", "--reason", "r"], "has no version '42': its versions are 1, 2, 3"
    ),
    "unknown stage name": Case(
        ["promote", M, "1", "--to", "prod", "--reason", "r"], "Unknown stage 'prod'", exit_code=2
    ),
    "promotion out of order": Case(["promote", M, "1", "--to", "production", "--reason", "r"], "or pass --force"),
    "empty reason": Case(
        ["promote", M, "1", "--to", "staging", "--reason", " "], "--reason must not be empty", exit_code=2
    ),
    "non-UTF-8 bytes in a reason": Case(
        ["promote", M, "1", "--to", "staging", "--reason", "caf\udce9"], "--reason is not valid UTF-8", exit_code=2
    ),
    "deploy without the stage": Case(
        ["deploy", M, "1", "--app", "scoring"], f"run `govern promote {M} 1 --to production"
    ),
    "unknown app": Case(["retire", "--app", "nowhere"], "Nothing was ever deployed to nowhere/production"),
    "retire in an undeclared environment": Case(
        ["retire", "--app", "scoring", "--env", "prodution"], "Unknown environment 'prodution'", exit_code=2
    ),
    "malformed --at": Case(
        ["deploy", M, "1", "--app", "a", "--at", "yesterday"], "is not an ISO 8601 time", exit_code=2
    ),
    "future --at": Case(
        ["deploy", M, "1", "--app", "a", "--at", "2999-01-01T00:00:00Z"], "is in the future", exit_code=2
    ),
    "naive --since": Case(["audit", "log", "--since", "2026-01-01 10:00"], "has no time zone", exit_code=2),
    "audit sql with a write": Case(["audit", "sql", "DELETE FROM events"], "not DELETE"),
    "audit sql with several statements": Case(
        ["audit", "sql", "SELECT 1; DROP TABLE events"], "Give exactly one SQL statement, not 2"
    ),
    "injection through a filter option": Case(
        ["audit", "windows", "--app", "x' OR '1'='1"], "--app \"x' OR '1'='1\" is not a valid name", exit_code=2
    ),
    "malformed --param": Case(["audit", "run", "production_at", "--param", "app"], "is not NAME=VALUE", exit_code=2),
    "unknown named query": Case(["audit", "run", "who_knows"], "No query named 'who_knows'"),
    "report of an unknown model": Case(["audit", "report", "nope", "1"], "Unknown model 'nope'"),
    "corrupt ledger file": Case(["audit", "verify"], "is not a readable govern ledger", setup=corrupt_ledger),
    "ledger from a newer govern": Case(["audit", "log"], "newer than this govern understands", setup=newer_ledger),
    "unwritable ledger location": Case(
        ["deploy", M, "1", "--app", "a"], "Cannot create the ledger directory", setup=unwritable_ledger
    ),
    "unreadable config file": Case(["audit", "log"], "Cannot read", setup=config_is_a_directory),
    "MLflow server missing": Case(["mirror"], "1 training(s) still pending", setup=mlflow_unreachable),
    "verify an unknown revision": Case(["ci", "verify", "--rev", "no-such-branch"], "is not a commit of", exit_code=2),
    "malformed --tolerance": Case(["ci", "verify", "--tolerance", "f1=lots"], "is not METRIC=ABS", exit_code=2),
    "infinite --tolerance": Case(
        ["ci", "verify", "--tolerance", "validation.f1=inf"], "a non-negative finite number", exit_code=2
    ),
    "--tolerance for a metric the commit lacks": Case(
        ["ci", "verify", "--tolerance", "validaton.f1=0.5"],
        "--tolerance names validaton.f1, which no metrics file of this commit has: its metrics are test.accuracy",
        exit_code=2,
    ),
    "--summary where a file stands for its folder": Case(
        ["ci", "verify", "--summary", "params.yaml/summary.md"],
        "--summary params.yaml/summary.md: cannot create",
        exit_code=2,
    ),
    "a misspelt [tool.govern.ci] key": Case(
        ["ci", "verify"],
        "`ci` has unknown key(s) tolerance (did you mean tolerances?); use models, outputs, tolerances",
        exit_code=3,
        setup=append_and_commit("pyproject.toml", '[tool.govern.ci]\ntolerance = { "validation.f1" = 0.01 }\n'),
    ),
    "a misspelt ledger key in [tool.govern]": Case(
        ["status"],
        "govern's settings have unknown key(s) legder (did you mean ledger?)",
        setup=replace_and_commit(
            "pyproject.toml", "[tool.govern]\n", '[tool.govern]\nlegder = "postgresql://x@db/g"\n'
        ),
    ),
    "a misspelt [tool.govern.deploy] key": Case(
        ["status"],
        "`deploy` has unknown key(s) enviroments (did you mean environments?); use environments, require_stage",
        setup=append_and_commit("pyproject.toml", '[tool.govern.deploy]\nenviroments = ["production"]\n'),
    ),
    "the predictions rule on a data output": Case(
        ["ci", "verify"],
        "gives data/prepared/test.csv the predictions rule, which only a `type: model` artifact",
        exit_code=3,
        setup=append_and_commit(
            "pyproject.toml", '[tool.govern.ci.outputs]\n"data/prepared/test.csv" = "predictions"\n'
        ),
    ),
    "verify a commit without a dvc.lock": Case(
        ["ci", "verify", "--rev", "no-lock"],
        "has no dvc.lock, so nothing is recorded to verify against: run `govern repro --commit`",
        exit_code=2,
        setup=branch_without("no-lock", "dvc.lock"),
    ),
    # The SQL surface: DuckDB's own configuration (no file system, no extensions, locked settings) and its own
    # parser (one SELECT) keep an auditor's query inside the ledger.
    "sql: COPY TO a file": sql(
        "COPY (SELECT 'echo pwned') TO '{tmp}/x.sh' (FORMAT csv, HEADER false, QUOTE '')",
        expected="not COPY",
        creates_nothing="x.sh",
    ),
    "sql: COPY FROM a file": sql("COPY events FROM '/etc/passwd'", expected="not COPY"),
    "sql: read_text of a file": sql("SELECT * FROM read_text('/etc/passwd')", expected=SANDBOXED),
    "sql: read_csv of a file": sql("SELECT * FROM read_csv('/etc/passwd')", expected=SANDBOXED),
    "sql: glob of a folder": sql("SELECT * FROM glob('/etc/*')", expected=SANDBOXED),
    "sql: a statement hidden in a string, run by query()": sql(
        "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')", expected=SANDBOXED
    ),
    "sql: a statement hidden after a comment": sql(
        "SELECT 1 --\n; COPY (SELECT 1) TO '{tmp}/y.csv'",
        expected="exactly one SQL statement, not 2",
        creates_nothing="y.csv",
    ),
    "sql: ATTACH another database": sql(
        "ATTACH '{tmp}/other.duckdb'", expected="not ATTACH", creates_nothing="other.duckdb"
    ),
    "sql: DETACH": sql("DETACH ledger", expected="not DETACH"),
    "sql: INSTALL an extension": sql("INSTALL httpfs", expected="not LOAD"),
    "sql: LOAD an extension": sql("LOAD httpfs", expected="not LOAD"),
    "sql: SET a lock back": sql("SET enable_external_access = true", expected="not SET"),
    "sql: RESET a lock": sql("RESET lock_configuration", expected="not SET"),
    "sql: PRAGMA": sql("PRAGMA database_size", expected="not PRAGMA"),
    "sql: EXPORT DATABASE": sql("EXPORT DATABASE '{tmp}/dump'", expected="not EXPORT", creates_nothing="dump"),
    "sql: CREATE a temporary table": sql("CREATE TEMP TABLE t AS SELECT 1", expected="not CREATE"),
    "sql: CREATE a macro": sql("CREATE MACRO m() AS 1", expected="not CREATE"),
    "sql: CREATE a secret": sql("CREATE SECRET (TYPE s3)", expected="not CREATE"),
    "sql: CALL a function": sql("CALL pragma_version()", expected="not CALL"),
    "a named query that writes a file": Case(
        ["audit", "run", "evil"], "not COPY", setup=evil_named_query, creates_nothing="post-checkout"
    ),
    # Times: a fact dated T is judged by the history as it stood at T; nothing is known of the future.
    "deploy dated before the version existed": Case(
        ["deploy", M, "1", "--app", "scoring", "--at", "2026-01-01T00:00:00Z"],
        "was registered at",
        setup=run_clis(["promote", M, "1", "--to", "production", "--reason", "r", "--force"]),
    ),
    "audit production in the future": Case(
        ["audit", "production", "--app", "scoring", "--at", "2099-01-01T00:00:00Z"], "is in the future", exit_code=2
    ),
    "a naive instant for a named query": Case(
        [
            "audit",
            "run",
            "production_at",
            "--param",
            "app=a",
            "--param",
            "env=production",
            "--param",
            "at=2026-11-25T08:00:00",
        ],
        "--param at: '2026-11-25T08:00:00' has no time zone",
        exit_code=2,
    ),  # fmt: skip
    "a future instant for a named query": Case(
        [
            "audit",
            "run",
            "production_at",
            "--param",
            "app=a",
            "--param",
            "env=production",
            "--param",
            "at=2099-01-01T00:00:00Z",
        ],
        "is in the future",
        exit_code=2,
    ),  # fmt: skip
    "a parameter the named query does not have": Case(
        ["audit", "run", "promotions_of_model", "--param", f"model={M}", "--param", "versoin=1"],
        "--param versoin is not a parameter of promotions_of_model: its parameters are model",
        exit_code=2,
    ),
    "a named query's missing parameter": Case(
        ["audit", "run", "production_at", "--param", "app=scoring"],
        "production_at needs --param env=... (text) --param at=... (instant)",
        exit_code=2,
    ),
    # Environments are a declared list: a typo is not a new environment without a stage gate.
    "deploy to an undeclared environment": Case(
        ["deploy", M, "1", "--app", "scoring", "--env", "prodution"],
        "Unknown environment 'prodution': the environments are staging, production; to add one, list it",
        exit_code=2,
    ),
    "audit production of an undeclared environment": Case(
        ["audit", "production", "--app", "scoring", "--env", "prodution", "--at", "2026-01-01T00:00:00Z"],
        "Unknown environment 'prodution'",
        exit_code=2,
    ),
    "predict for an undeclared environment": Case(
        ["predict", "--app", "scoring", "--env", "prodution", "--input", "params.yaml", "--output", "{tmp}/p.csv"],
        "Unknown environment 'prodution'",
        exit_code=2,
    ),
    # Deprecation that sticks.
    "deprecate a version that serves": Case(
        ["deprecate", M, "1", "--reason", "bias"],
        "Version 1 of breast-cancer-classifier serves scoring/production: deploy another version there",
        setup=SERVING,
    ),
    "predict with a deprecated version": Case(
        ["predict", M, "3", "--input", "data/raw/breast_cancer.csv", "--output", "{tmp}/p.csv"],
        "Version 3 of breast-cancer-classifier is deprecated (seq",
        setup=run_clis(["deprecate", M, "3", "--reason", "leak"]),
        creates_nothing="p.csv",
    ),
    "predict through an app served by a deprecated version": Case(
        ["predict", "--app", "scoring", "--input", "data/raw/breast_cancer.csv", "--output", "{tmp}/p.csv"],
        "which serves scoring/production, is deprecated",
        setup=run_clis(*SERVING_COMMANDS, ["deprecate", M, "1", "--reason", "leak", "--force"]),
        creates_nothing="p.csv",
    ),
    # Unknown names are named, with the known ones.
    "audit production of an app never deployed": Case(
        ["audit", "production", "--app", "nosuch", "--at", "2026-01-01T00:00:00Z"],
        "Unknown app 'nosuch': deployments are recorded for scoring/production",
        setup=SERVING,
    ),
    "audit windows of an unknown model": Case(
        ["audit", "windows", "--model", "nosuch"], "Unknown model 'nosuch': registered models are " + M
    ),
    "audit windows of an unknown app": Case(["audit", "windows", "--app", "nosuch"], "Unknown app 'nosuch'"),
    "audit log of an unknown event type": Case(
        ["audit", "log", "--type", "nosuch.type"], "Unknown event type 'nosuch.type': the types are", exit_code=2
    ),
    "predict for an app never deployed": Case(
        ["predict", "--app", "nosuch", "--input", "data/raw/breast_cancer.csv", "--output", "{tmp}/p.csv"],
        "Unknown app 'nosuch'",
    ),
    # One rule for every output path: missing folders are made, impossible ones refused before any work.
    "openlineage into a folder that is a file": Case(
        ["audit", "openlineage", "-o", "params.yaml/x.jsonl"],
        "--output params.yaml/x.jsonl: cannot create its folder (params.yaml is a file, not a folder)",
        exit_code=2,
    ),
    "a report into a folder that is a file": Case(
        ["audit", "report", M, "1", "-o", "params.yaml/r.html"],
        "--output params.yaml/r.html: cannot create",
        exit_code=2,
    ),
    "predictions into a folder that is a file": Case(
        ["predict", M, "1", "--input", "data/raw/breast_cancer.csv", "--output", "params.yaml/p.csv"],
        "--output params.yaml/p.csv: cannot create",
        exit_code=2,
    ),
    "a report over the project's configuration": Case(
        ["audit", "report", M, "1", "-o", "pyproject.toml"],
        "--output pyproject.toml is one of the files this project is governed by",
        exit_code=2,
    ),
    "openlineage over the pipeline": Case(
        ["audit", "openlineage", "-o", "dvc.yaml"], "--output dvc.yaml is one of the files", exit_code=2
    ),
    "a report over a reviewed query": Case(
        ["audit", "report", M, "1", "-o", "audit/queries/production_at.sql"],
        "--output audit/queries/production_at.sql is one of the files",
        exit_code=2,
    ),
    "predictions over the configuration": Case(
        ["predict", M, "1", "--input", "data/raw/breast_cancer.csv", "--output", "pyproject.toml"],
        "--output pyproject.toml is one of the files",
        exit_code=2,
    ),
    "a copy onto another database's log": Case(
        ["audit", "copy", "--to", "{tmp}/other.duckdb.wal"],
        "is a database's write-ahead log: choose another path",
        exit_code=2,
        creates_nothing="other.duckdb.wal",
    ),
    "a backup over an existing file": Case(
        ["audit", "backup", "params.yaml"], "params.yaml exists: a backup goes to a new file", exit_code=2
    ),
    "verify anchors of a folder that is no repository": Case(
        ["audit", "verify", "--repo", "{tmp}"], "is not inside a git repository"
    ),
    # Checked before anything runs.
    "grid with a metric the pipeline does not write": Case(
        ["repro", "--grid", "train.C=1,2", "--metric", "nosuch.metric"],
        "Metric 'nosuch.metric' is not among the pipeline's metrics (test.accuracy",
        exit_code=2,
    ),
    "a corrupted params.yaml": Case(
        ["repro"],
        "params.yaml is not valid YAML (line 3, column 7: expected ',' or ']', but got ':')",
        setup=write_and_commit("params.yaml", "train:\n  C: [1.0\n  seed: 42\n"),
    ),
    "a corrupted params.yaml with a grid": Case(
        ["repro", "--grid", "train.C=1,2", "--metric", "validation.f1"],
        "params.yaml is not valid YAML (line 3, column 7: expected ',' or ']', but got ':')",
        setup=write_and_commit("params.yaml", "train:\n  C: [1.0\n  seed: 42\n"),
    ),
    "a report written over the ledger": Case(
        ["audit", "report", M, "1", "--format", "md", "-o", "audit/ledger.duckdb"],
        "--output audit/ledger.duckdb is the ledger itself (or its log or backup): choose another path",
        exit_code=2,
    ),
    "an export written over the ledger's log": Case(
        ["audit", "openlineage", "-o", "audit/ledger.duckdb.wal"],
        "--output audit/ledger.duckdb.wal is the ledger itself",
        exit_code=2,
    ),
    "predictions written over their input": Case(
        ["predict", M, "1", "--input", "data/raw/breast_cancer.csv", "--output", "data/raw/breast_cancer.csv"],
        "--output data/raw/breast_cancer.csv is also the input: choose another path",
        exit_code=2,
    ),
    "a PostgreSQL ledger on a server that is not there": Case(
        ["audit", "log"],
        "Cannot reach the PostgreSQL ledger at postgresql://govern@127.0.0.1:1/govern (",
        env={"GOVERN_LEDGER": "postgresql://govern:secret@127.0.0.1:1/govern"},
    ),
    "a PostgreSQL ledger in a database that does not exist": Case(
        ["audit", "verify"],
        "Cannot reach the PostgreSQL ledger at postgresql://postgres@127.0.0.1:5432/govern_no_such_database (",
        env={"GOVERN_LEDGER": "postgresql://postgres@127.0.0.1:5432/govern_no_such_database"},
    ),
    "a PostgreSQL URL that names no database": Case(
        ["audit", "copy", "--to", "postgresql://postgres@127.0.0.1:5432"],
        "--to postgresql://postgres@127.0.0.1:5432 names no database: give postgresql://USER@HOST[:PORT]/DATABASE",
    ),
    "a password in a PostgreSQL URL is never shown": Case(
        ["audit", "log"],
        "Cannot reach the PostgreSQL ledger at postgresql://govern@127.0.0.1:1/govern (",
        env={"GOVERN_LEDGER": "postgresql://govern@127.0.0.1:1/govern?password=s3cret"},
    ),
    "a password in the committed ledger URL": Case(
        ["audit", "log"],
        "`ledger` carries a password, and this file is committed: remove it from the URL",
        setup=write_and_commit("govern.toml", 'ledger = "postgresql://govern:s3cret@127.0.0.1/govern"\n'),
    ),
    "audit copy onto a file that is not a ledger": Case(
        ["audit", "copy", "--to", "data/raw/breast_cancer.csv"],
        "--to data/raw/breast_cancer.csv exists and is not a govern ledger: give a new path",
        exit_code=2,
    ),
    "init --ledger with a file path": Case(
        ["init", "--ledger", "team.duckdb"],
        "--ledger takes a PostgreSQL URL (postgresql://USER@HOST[:PORT]/DATABASE)",
        exit_code=2,
    ),
    "a ledger URL that is not PostgreSQL": Case(
        ["audit", "log"],
        "GOVERN_LEDGER s3://... is not a ledger location: give a file path, or a postgresql:// URL",
        env={"GOVERN_LEDGER": "s3://bucket/ledger.duckdb"},
    ),
    "verify a commit from before DVC": Case(
        ["ci", "verify", "--rev", "no-dvc"],
        "is not a DVC project (it has no .dvc directory)",
        exit_code=3,
        setup=branch_without("no-dvc", ".dvc"),
    ),
}


def raw_head(path: Path) -> tuple:
    """The ledger's head, read without govern (whose schema check refuses some of these ledgers)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT count(*), max(seq), max_by(hash, seq) FROM events").fetchone()
    finally:
        con.close()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_and_changes_nothing(
    name: str, three_versions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = (case.setup(three_versions, elsewhere, monkeypatch) if case.setup else None) or three_versions
    ledger = three_versions / "audit" / "ledger.duckdb"
    head = raw_head(ledger)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)

    result = run_cli(*(arg.replace("{tmp}", str(elsewhere)) for arg in case.args), cwd=cwd)

    assert result.exit_code == case.exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and case.expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert raw_head(ledger) == head
    assert not (elsewhere / "audit" / "ledger.duckdb").exists()
    if case.creates_nothing:
        assert not (elsewhere / case.creates_nothing).exists(), f"{case.creates_nothing} was written"


def test_the_table_has_at_least_75_cases() -> None:
    assert len(CASES) >= 75
