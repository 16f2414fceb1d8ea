"""Shared fixtures: real git repositories, real DVC, a real MLflow SQLite store, real DuckDB.

Every test runs with HOME, git config, GOVERN_* and MLFLOW_* isolated in its
own temporary directory, so nothing leaks from the developer's machine into
a test or from a test into the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from govern.checkpoints import wal_path
from govern.cli import cli
from govern.envelope import PendingEvent, utc_now
from govern.events import DatasetSnapshotted

REPO = Path(__file__).resolve().parent.parent
DEMO_FILES = (
    "pipelines",
    "dvc.yaml",
    "params.yaml",
    "dvc.lock",
    "metrics.json",
    "pyproject.toml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "data/raw/.gitignore",
    "data/prepared/.gitignore",
    "models/.gitignore",
    "audit/README.md",
    "audit/queries",
)
# The machine's PostgreSQL (trust auth): each test that needs it gets a database of its own, dropped after
# (`pg_database` empty, `pg_ledger_database` a copy of a migrated template).
POSTGRES_ADMIN = os.environ.get("GOVERN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
GIT_NAME, GIT_EMAIL = "Ada Auditor", "ada@example.com"
ACTOR = f"{GIT_NAME} <{GIT_EMAIL}>"

# The fast tier (`pytest -m "not slow"`) leaves out every test that runs DVC, MLflow or a browser. Every demo
# fixture starts from the migrated MLflow store, so needing it is what makes a test slow; modules that run
# DVC or MLflow by other routes mark themselves with `pytestmark = pytest.mark.slow`.
SLOW_FIXTURES = frozenset({"mlflow_store_template"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


HEAVY = {"mlflow": "MLflow", "dvc.repo": "DVC"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Importing MLflow alone costs seconds (a store's migrations many more), DVC's repository one more: a fast-tier
    test whose body reaches either (a registry mirror after a promotion, a `govern repro`) is a slow test in
    disguise, and fails saying so. Fixtures may set a project up with `govern init` (DVC's init); a worker imports
    each module once, so the first such test it runs is the one named."""
    absent = [name for name in HEAVY if name not in sys.modules]
    result = yield
    if not item.get_closest_marker("slow"):
        for name in absent:
            if name in sys.modules:
                pytest.fail(
                    f"This fast-tier test imported {HEAVY[name]}: mark it slow, or, where MLflow is not what it "
                    "checks, point [mlflow] tracking_uri at a missing folder (sqlite:////nonexistent/mlflow.db)"
                )
    return result


def isolate(env: dict[str, str], home: Path) -> dict[str, str]:
    """The environment variables every govern process in a test gets."""
    for key in list(env):
        if key.startswith(("GOVERN_", "MLFLOW_", "GIT_", "DVC_")) or key in ("GITHUB_ACTIONS", "GITLAB_CI", "CI"):
            del env[key]
    home.mkdir(parents=True, exist_ok=True)
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        f"[user]\n\tname = {GIT_NAME}\n\temail = {GIT_EMAIL}\n[init]\n\tdefaultBranch = main\n", encoding="utf-8"
    )
    env.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=str(gitconfig),
        GIT_CONFIG_NOSYSTEM="1",
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(home / "dvc-site-cache"),
        MLFLOW_DISABLE_TELEMETRY="true",
        # MLflow aliases follow promotions inline, so a test sees them at once; the background mode,
        # every user's default, has its own test (tests/test_registry_mirror.py)
        GOVERN_REGISTRY_MIRROR="inline",
        XDG_CONFIG_HOME=str(home / ".config"),
        # Stage commands call `python`: the interpreter running the tests.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def apply_isolation(monkeypatch: pytest.MonkeyPatch, home: Path) -> dict[str, str]:
    """Make this process's environment the isolated one, until `monkeypatch` undoes it."""
    env = isolate(dict(os.environ), home)
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(autouse=True)
def no_signer_left_behind() -> Iterator[None]:
    """A test that ran a server in-process (create_app) leaves this process signing; the next test starts clean."""
    yield
    from govern import signing

    signing.activate(None)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return apply_isolation(monkeypatch, tmp_path_factory.mktemp("home"))


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def commit_all(cwd: Path, message: str, env: dict[str, str] | None = None) -> str:
    git(cwd, "add", "-A", env=env)
    git(cwd, "commit", "-q", "-m", message, env=env)
    return git(cwd, "rev-parse", "HEAD", env=env)


def run_cli(*args: str, cwd: Path | None = None) -> Result:
    """Invoke the real CLI in-process, from `cwd`."""
    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(previous)


def ok(project: Path, *args: str) -> str:
    """Run the CLI in `project`, require success, return what it printed on stdout."""
    result = run_cli(*args, cwd=project)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow SQLite store; creating one costs over a second, copying it nothing."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    env = isolate(dict(os.environ), folder / "home")
    code = (
        "import sys; from mlflow.tracking import MlflowClient; "
        "MlflowClient(tracking_uri=sys.argv[1]).search_experiments()"
    )
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{folder / 'mlflow.db'}"], check=True, env=env)
    return folder / "mlflow.db"


def make_demo(target: Path, mlflow_template: Path, env: dict[str, str] | None = None) -> Path:
    """A copy of this repository's demo project as a fresh git repository."""
    for name in DEMO_FILES:
        source = REPO / name
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination)
    shutil.copy2(mlflow_template, target / "mlflow.db")
    git(target, "init", "-q", "-b", "main", env=env)
    commit_all(target, "demo project", env=env)
    return target


@pytest.fixture
def demo(tmp_path: Path, mlflow_store_template: Path) -> Path:
    """A fresh, never reproduced copy of the demo."""
    return make_demo(tmp_path / "demo", mlflow_store_template)


@pytest.fixture(scope="session")
def reproduced_demo_original(tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path) -> Path:
    """The demo after one `govern repro --commit`, made once per session; tests use copies of it.

    On a machine whose floats differ from the one that made the committed dvc.lock, the reproduction
    writes other model bytes: `--commit` then commits this machine's lock, so that tests compare with
    what this machine produced and never with another machine's bytes.
    """
    base = tmp_path_factory.mktemp("reproduced")
    env = isolate(dict(os.environ), base / "home")
    project = make_demo(base / "demo", mlflow_store_template, env)
    subprocess.run(
        [sys.executable, "-m", "govern", "repro", "--commit"], cwd=project, env=env, check=True, capture_output=True
    )
    return project


@pytest.fixture
def reproduced_demo(tmp_path: Path, reproduced_demo_original: Path) -> Iterator[Path]:
    """A private copy of the reproduced demo: ledger, MLflow store, DVC cache and outputs included."""
    copy = tmp_path / "demo"
    shutil.copytree(reproduced_demo_original, copy, symlinks=True)
    yield copy


def snapshot_event(i: int, source: str = "the source system", actor: str = "Zoë <zoe@example.com>") -> PendingEvent:
    """A small, valid event for ledger-level tests."""
    return PendingEvent(
        DatasetSnapshotted(
            path=f"data/part-{i}.csv",
            md5=f"{i:032x}",
            sha256=f"{i:064x}",
            size=i,
            source=source,
            extracted_at="2026-01-01T00:00:00.000000Z",
            extracted_at_basis="stage-run",
            rows=i,
            columns=["a", "b"],
        ),
        actor=actor,
        occurred_at=utc_now(),
        git_commit="c0ffee",
    )


ECHO_INFER = 'python -c "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])" {input} {output}'


@contextmanager
def as_server(root: Path) -> Iterator[Any]:
    """This test process acts as the project's `govern serve`: its key (created and registered on first use, at
    the path the project's server will use) signs what is appended meanwhile, as the server would."""
    from support.projects import project_at

    from govern import signing
    from govern.api import keys

    previous = signing.active()
    state = keys.start(project_at(root, keys.server_actor()))
    try:
        yield state.signer
    finally:
        signing.activate(previous)


def via_server(principal: str, token_id: str = "7e55a0000001") -> Any:
    """An actor as the server records a principal it authenticated (with `as_server`, its events are signed)."""
    from govern import attribution

    return attribution.authenticated(principal, token_id)


def trained_version(
    ledger_path: Path | str,
    model: str,
    version: str,
    trained_by: Any,
    metrics: dict | None = None,
    commit: str = "c0ffee",
    model_file: Path | None = None,
    datasets: list[dict] | None = None,
    locked: bool = True,
) -> str:
    """A training and its registered version, appended as facts (no DVC run, no MLflow): for tests of what
    happens to versions after training. With `model_file` (relative to the project root, which holds the ledger
    under audit/), the version is that file and its inference command echoes its input (ECHO_INFER); `datasets`
    as a training records them. Returns the training's event id."""
    import hashlib

    from govern.events import ModelRegistered, TrainingCompleted, TrainingLocked
    from govern.storage import open_store
    from govern.storage.duckdb_log import Ledger

    path, sha256, models = "model.pkl", f"{version:0>64}", []
    if model_file is not None:
        path = str(model_file)
        sha256 = hashlib.sha256((ledger_path.parent.parent / model_file).read_bytes()).hexdigest()
        models = [{"name": model, "path": path, "sha256": sha256, "meta": {"infer": ECHO_INFER}}]

    training = TrainingCompleted(
        git={"commit": commit, "branch": "main", "dirty_paths": []},
        dvc_lock_sha256="0" * 64,
        targets=[],
        stages=[],
        params={},
        metrics=metrics or {},
        outputs=[],
        datasets=datasets or [],
        models=models,
        environment={},
        duration_s=1.0,
        run_cache_hit=False,
    )
    ledger = open_store(ledger_path) if isinstance(ledger_path, str) else Ledger(ledger_path)  # a file, or a URL
    [recorded] = ledger.append([PendingEvent(training, actor=trained_by, occurred_at=utc_now(), git_commit=commit)])
    registered = ModelRegistered(
        model,
        version,
        path,
        None,
        sha256,
        recorded.event_id,
        "run",
        "sqlite:///x",
        f"models:/{model}/1",
    )
    ledger.append([PendingEvent(registered, actor=trained_by, occurred_at=utc_now(), git_commit=commit)])
    if locked:  # its lock committed at the training's commit: a version that may enter a gated stage
        lock = TrainingLocked(recorded.event_id, commit, "0" * 64, [{"model": model, "version": version}], [])
        ledger.append([PendingEvent(lock, actor=trained_by, occurred_at=utc_now(), git_commit=commit)])
    return recorded.event_id


TINY_STAGE = "import yaml; n = yaml.safe_load(open('params.yaml'))['n']; open('out.txt', 'w').write('x' * n)"
TINY_DVC_YAML = """
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [n]
    outs: [out.txt]
artifacts:
  tiny-model:
    path: out.txt
    type: model
"""


def tiny_pipeline(project: Path, code: str = TINY_STAGE, params: str = "n: 3\n", *init: str) -> Path:
    """A new git repository at `project` with a one-stage DVC pipeline (`make.py` writes `out.txt`, registered
    as the model `tiny-model`; its params are every top-level key of `params`), after `govern init *init`."""
    project.mkdir(parents=True)
    git(project, "init", "-q", "-b", "main")
    (project / "make.py").write_text(code)
    (project / "params.yaml").write_text(params)
    names = ", ".join(line.split(":")[0] for line in params.splitlines() if line.strip())
    (project / "dvc.yaml").write_text(TINY_DVC_YAML.replace("params: [n]", f"params: [{names}]"))
    result = run_cli("init", *init, cwd=project)
    assert result.exit_code == 0, result.output
    return project


def tracking_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


@pytest.fixture(scope="session")
def three_versions_original(tmp_path_factory: pytest.TempPathFactory, reproduced_demo_original: Path) -> Path:
    """The demo trained three times (C = 1.0, 0.25, 4.0): model versions 1, 2 and 3."""
    base = tmp_path_factory.mktemp("three-versions")
    env = isolate(dict(os.environ), base / "home")
    project = base / "demo"
    shutil.copytree(reproduced_demo_original, project, symlinks=True)
    for value in ("0.25", "4.0"):
        params = project / "params.yaml"
        params.write_text(re.sub(r"C: [0-9.]+", f"C: {value}", params.read_text()))
        commit_all(project, f"C={value}", env=env)
        subprocess.run(
            [sys.executable, "-m", "govern", "repro", "--commit"], cwd=project, env=env, check=True, capture_output=True
        )
    return project


@pytest.fixture
def three_versions(tmp_path: Path, three_versions_original: Path) -> Path:
    copy = tmp_path / "demo"
    shutil.copytree(three_versions_original, copy, symlinks=True)
    return copy


def another_blas_kernel() -> str:
    """An OPENBLAS_CORETYPE that differs from the one this run has (the suite may itself run under one)."""
    return "Sandybridge" if os.environ.get("OPENBLAS_CORETYPE") == "Prescott" else "Prescott"


def pickling_with_protocol_from_the_environment(project: Path) -> None:
    """Make a demo copy pickle its model with the protocol DEMO_PICKLE_PROTOCOL names (default 5).

    A training with protocol 4 then writes other bytes for the same model: what a machine whose floats
    differ does, reproducible on this one.
    """
    model_py = project / "pipelines" / "model.py"
    text = model_py.read_text()
    text = text.replace("import argparse\n", "import argparse\nimport os\n", 1)
    text = text.replace("protocol=5)", 'protocol=int(os.environ.get("DEMO_PICKLE_PROTOCOL", "5")))')
    assert "DEMO_PICKLE_PROTOCOL" in text
    model_py.write_text(text)


def copy_ledger(source: Path, target: Path) -> None:
    """A ledger is its file and, between checkpoints, DuckDB's write-ahead log next to it."""
    shutil.copy2(source, target)
    source_wal, target_wal = wal_path(source), wal_path(target)
    if source_wal.exists():
        shutil.copy2(source_wal, target_wal)
    else:
        target_wal.unlink(missing_ok=True)


def postgres_admin():  # noqa: ANN201 - psycopg is imported here only
    """A connection to the server's maintenance database; the test fails loudly, never skips, without one."""
    import psycopg

    try:
        return psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is required at {POSTGRES_ADMIN} and is not reachable ({str(error).strip()}): start it "
            "(`.ci/run` checks it with pg_isready), or point GOVERN_TEST_POSTGRES at one",
            pytrace=False,
        )


def database_url(name: str, user: str = "postgres") -> str:
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgres@", f"{user}@", 1)
    return f"{base}/{name}"


def database_name(kind: str = "test") -> str:
    """Unique on the server, which other sessions and xdist's workers share; the worker's name says whose it is."""
    return f"govern_{kind}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{uuid.uuid4().hex[:12]}"


@contextmanager
def new_database(template: str | None = None) -> Iterator[str]:
    """A new database (a copy of `template`, or empty), dropped when the block ends: its name."""
    admin = postgres_admin()
    name = database_name("test" if template else "db")
    admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class DatabasePool:
    """Empty databases this worker reuses: `CREATE DATABASE` costs PostgreSQL about 0.4 s of CPU (it copies the
    template's catalogs), dropping govern's schema and checking that nothing else is left about 20 ms. A database
    a test left anything else in (a table outside govern's schema, another schema, an extension) is dropped, not
    reused, so no test sees another's objects."""

    def __init__(self) -> None:
        self.clean: list[str] = []
        self.made: list[str] = []

    def take(self) -> str:
        if self.clean:
            return self.clean.pop()
        admin = postgres_admin()
        try:
            name = database_name("db")
            admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            admin.close()
        self.made.append(name)
        return name

    def give_back(self, name: str) -> None:
        import psycopg

        admin = postgres_admin()
        try:  # a connection the test left open would hold locks the reset waits for
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            try:
                with psycopg.connect(database_url(name), autocommit=True, connect_timeout=5) as con:
                    con.execute("DROP SCHEMA IF EXISTS govern CASCADE")
                    left = con.execute(
                        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                        "        AND nspname NOT IN ('public', 'information_schema'))"
                        " + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "        WHERE n.nspname = 'public')"
                        " + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                        "        WHERE n.nspname = 'public')"
                        " + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')"
                    ).fetchone()[0]
            except psycopg.Error:
                left = -1
            if left == 0:
                self.clean.append(name)
            else:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                self.made.remove(name)
        finally:
            admin.close()

    def drop_all(self) -> None:
        if not self.made:
            return
        admin = postgres_admin()
        try:
            for name in self.made:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()


@pytest.fixture(scope="session")
def pg_pool() -> Iterator[DatabasePool]:
    pool = DatabasePool()
    yield pool
    pool.drop_all()


@pytest.fixture
def pg_database(pg_pool: DatabasePool) -> Iterator[str]:
    """The URL of an empty database on the machine's PostgreSQL (one of this worker's, reset after the test)."""
    name = pg_pool.take()
    try:
        yield database_url(name)
    finally:
        pg_pool.give_back(name)


@pytest.fixture(scope="session")
def pg_ledger_template() -> Iterator[str]:
    """A database holding govern's schema, migrated, with no event: made once per session (and xdist worker) for
    the prepared teams on PostgreSQL (`support.copies.prepared_on_postgres`) to copy."""
    from govern.storage.postgres_log import PostgresLedger

    with new_database(None) as name:
        ledger = PostgresLedger(database_url(name))
        ledger.create()
        ledger.close()
        yield name


@pytest.fixture
def pg_ledger_database(pg_database: str) -> str:
    """The URL of a database holding an empty ledger: govern's schema at this govern's version, no event, and an
    identity of its own (a ledger's id names its read model), as `govern init --ledger URL` leaves it. A test of
    what happens before the schema exists takes `pg_database`."""
    from govern.storage.postgres_log import PostgresLedger

    ledger = PostgresLedger(pg_database)
    ledger.create()
    ledger.close()
    return pg_database


def wait_for(condition, what: str, timeout: float = 120.0):  # noqa: ANN001, ANN201 - a predicate and its value
    """Poll `condition` until it returns something truthy (and return that), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(project: Path, env: dict[str, str], log: Path, port: int = 0) -> tuple[subprocess.Popen, str]:
    """A real `govern serve` in `project` (its stderr appended to `log`), once it answers /health: the process
    and its base URL. The caller stops it."""
    import urllib.request

    port = port or free_port()
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "govern", "serve", "--port", str(port)],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=sink,
        )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"govern serve exited {process.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    wait_for(healthy, "govern serve to answer /health", timeout=60)
    return process, base


def token_for(root: Path, name: str, *options: str) -> str:
    """A token for `name` as its holder has it: created by the operator here and, in team mode, where what is
    created for someone else is an enrollment code, redeemed (the code's issuer stays the token's issuer)."""
    import json

    created = run_cli("tokens", "create", name, "--json", *options, cwd=root)
    if created.exit_code != 0 and "is for admins the server authenticated" in created.output:
        return _own_token_via_server(root, name, *options)
    assert created.exit_code == 0, created.output
    issued = json.loads(created.stdout)
    if issued["kind"] == "enrollment code":
        redeemed = run_cli("tokens", "redeem", issued["code"], "--json", cwd=root)
        assert redeemed.exit_code == 0, redeemed.output
        issued = json.loads(redeemed.stdout)
    return issued["token"]


def _own_token_via_server(root: Path, name: str, *options: str) -> str:
    """Once two admins exist, the operator issues no code for an approver or admin: the holder makes its own
    token, signed in through the server (as `tokens create` with its own GOVERN_TOKEN would)."""
    from support.projects import project_at

    from govern.api import access as access_api

    expires = dict(zip(options[::2], options[1::2], strict=False)).get("--expires")
    with as_server(root):
        issued = access_api.issue_token(project_at(root, via_server(name)), name, expires)
    assert issued.token is not None, f"{name}'s own token came back as a code"
    return issued.to_dict()["token"]


def grant_role(root: Path, name: str, role: str, *options: str, admin: str = "adm") -> None:
    """`name` holds `role` (options: --app, --reason). Where approver and admin take two admins, the operator
    proposes it here (break-glass: one admin exists) and `admin` confirms it as the server would record it."""
    import json

    from support.projects import project_at

    from govern.api import access as access_api

    added = run_cli("principals", "add", name, "--role", role, "--json", *options, cwd=root)
    assert added.exit_code == 0, added.output
    event = json.loads(added.stdout)
    if event["type"] == "access.grant_proposed":
        with as_server(root):
            access_api.confirm_grant(project_at(root, via_server(admin)), event["seq"])


# ---------------------------------------------------------------- fixtures the server and team tests share
# Their code is in tests/support/ (imported here when a test asks for them: support's modules import this one).


@pytest.fixture(scope="session")
def served_project_original(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """support.server.make_project's project (versions 1 to 3 of `churn`, a principal per role), built once per
    session and worker: the tests and modules that serve it take copies (support.copies)."""
    from support.copies import prepared
    from support.server import make_project

    return prepared(tmp_path_factory, make_project)


@pytest.fixture
def project(tmp_path: Path, served_project_original: Any) -> Path:
    """A served project of its own: a copy of `served_project_original`."""
    return served_project_original.copy_to(tmp_path / "project")


@pytest.fixture
def server(project: Path, isolated_env: dict[str, str]) -> Iterator[str]:
    """A real `govern serve` on `project`: its base URL."""
    from support.server import served

    with served(project, isolated_env) as base:
        yield base


@pytest.fixture
def team() -> Iterator[dict[str, str]]:
    """README "Team setup"'s databases and roles (support.team), dropped afterwards."""
    from support.team import team_databases

    with team_databases() as names:
        yield names


@pytest.fixture
def mlflow_server(team: dict[str, str], tmp_path: Path, isolated_env: dict[str, str]) -> Iterator[str]:
    """`mlflow server` on the team's PostgreSQL database, artifacts proxied: its URI."""
    from support.team import mlflow_on_postgres

    with mlflow_on_postgres(team, tmp_path, isolated_env) as uri:
        yield uri
