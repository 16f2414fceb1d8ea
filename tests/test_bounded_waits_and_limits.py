"""A server that stays up (issue 25, item 6), below the HTTP layer: every wait for the ledger bounded, the token
table read without waiting, auditor SQL stopped at its limits, JSON nesting measured before parsing.

In process, against real DuckDB files and a real PostgreSQL: the fast tier. The same guarantees through a real
`govern serve` are in tests/test_server_stays_up.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from conftest import commit_all, git, run_cli, snapshot_event

from govern import config
from govern.api.authentication import InvalidToken, TokenTable, authenticate, token_table
from govern.config import AuditLimits
from govern.errors import ConfigError, LedgerLocked, QueryLimitExceeded
from govern.server.http import json_depth
from govern.storage.duckdb_log import Ledger
from govern.storage.postgres_log import LOCK_KEY, PostgresLedger
from govern.storage.sessions import wait_at_most, waiting_as, writer_lock

pytestmark = pytest.mark.slow  # these tests wait on purpose (busy ledgers, budgets, timeouts): seconds each

LONG_QUERY = "SELECT sum(hash(i)) FROM range(5000000000) t(i)"  # a minute and more, in one statement


@contextmanager
def turn_held(path: Path, seconds: float = 60) -> Iterator[None]:
    """Another thread of this process holds the ledger file's turn (a writer's transaction, say) for the block, or
    for `seconds` if that ends sooner."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        lock = writer_lock(path)
        assert lock.acquire(timeout=5)
        taken.set()
        done.wait(seconds)
        lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(5)
    try:
        yield
    finally:
        done.set()
        holder.join()


@pytest.fixture
def file_ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "audit" / "ledger.duckdb")
    ledger.append([snapshot_event(i) for i in range(1, 4)])
    return ledger


def test_a_request_waiting_for_the_ledger_gives_up_after_its_budget_not_the_ledgers_timeout(
    file_ledger: Ledger,
) -> None:
    """A server request's budget (`server.lock_wait`) bounds every wait for this process's turn on the file, for a
    read and for a write; without one (a command line), the ledger's own lock_timeout does."""
    with turn_held(file_ledger.path):
        for work in (lambda: file_ledger.query("SELECT count(*) FROM events"), lambda: file_ledger.append(
                [snapshot_event(9)])):  # fmt: skip
            started = time.monotonic()
            with wait_at_most(0.2), pytest.raises(LedgerLocked, match="gave up after 0.2 s. Retry"):
                work()
            assert 0.15 <= time.monotonic() - started < 3, "the budget, not the ledger's 30 s"
        patient = Ledger(file_ledger.path, lock_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(LedgerLocked, match="gave up after 0.3 s"):
            patient.query("SELECT 1")
        assert time.monotonic() - started < 3
    assert file_ledger.query("SELECT count(*) FROM events")[1] == [(3,)], "nothing was written meanwhile"


def test_the_ledgers_turn_goes_round_the_callers_and_each_callers_waiters_in_order(
    file_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller (a principal, for a server) with many requests waiting delays another by one turn, not by all of
    them; each caller's own requests are served in the order they came.

    Deterministic: each waiter starts only once the one before it is seen queued on the turn, and the order served
    is the order the turn was handed over in, recorded under the turn's own guard (a list the readers appended to
    after `head()` returned could be out of order: the next reader runs as soon as the turn is handed over)."""
    turn = writer_lock(file_ledger.path)
    label: dict[int, str] = {}  # thread ident -> the waiter it runs
    handed: list[str] = []
    take_next = turn._next

    def next_recorded() -> object:
        following = take_next()
        if following is not None:
            handed.append(label[following.owner])
        return following

    monkeypatch.setattr(turn, "_next", next_recorded)
    heads: list[tuple[int, str] | None] = []

    def read(caller: str, number: int) -> None:
        label[threading.get_ident()] = f"{caller}{number}"
        with waiting_as(caller):
            heads.append(file_ledger.head())  # the ledger's read, which waits for the turn

    def queued() -> int:
        with turn._guard:
            return sum(len(waiters) for waiters in turn._queues.values())

    order = [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1), ("a", 5), ("c", 1), ("b", 2)]
    with turn_held(file_ledger.path):
        threads = []
        for caller, number in order:
            thread = threading.Thread(target=read, args=(caller, number))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + 10
            while queued() < len(threads):  # queued before the next arrives
                assert time.monotonic() < deadline, f"{caller}{number} never queued for the turn"
                time.sleep(0.005)
    for thread in threads:
        thread.join(30)
    assert handed == ["a1", "b1", "c1", "a2", "b2", "a3", "a4", "a5"]
    assert len(heads) == len(order) and len(set(heads)) == 1 and heads[0][0] == 3, "each read answered the head"


def test_another_process_holding_the_file_makes_a_request_give_up_after_its_budget(file_ledger: Ledger) -> None:
    """DuckDB's own file lock (another govern process writing) is waited for within the budget too."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(30)",
            str(file_ledger.path),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with wait_at_most(0.3), pytest.raises(LedgerLocked, match="locked by another govern process"):
            file_ledger.query("SELECT count(*) FROM events")
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()


def test_a_request_waiting_for_the_chain_lock_on_postgresql_gives_up_after_its_budget(
    pg_database: str, tmp_path: Path
) -> None:
    ledger = PostgresLedger(pg_database, lock_timeout=30, cache_dir=tmp_path / "machine")
    ledger.append([snapshot_event(1)])
    other = psycopg.connect(pg_database, autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])  # another writer, mid-transaction
        started = time.monotonic()
        with wait_at_most(0.5), pytest.raises(LedgerLocked, match="held by another govern writer; gave up after 0.5"):
            ledger.append([snapshot_event(2), snapshot_event(3)])
        assert time.monotonic() - started < 5, "the request's budget, not the ledger's 30 s"
        other.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        assert len(ledger.append([snapshot_event(4)])) == 1, "the connection is usable again at once"
        assert ledger.head()[0] == 2, "nothing of the refused append was written"
    finally:
        other.close()
        ledger.close()


# ---------------------------------------------------------------- the token table


@pytest.fixture
def project(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "README").write_text("a governed project\n")
    commit_all(tmp_path, "start")
    for name, role in (("bob", "deployer"), ("eve", "auditor")):
        assert run_cli("principals", "add", name, "--role", role, cwd=tmp_path).exit_code == 0
    return tmp_path


def token_of(project: Path, name: str) -> str:
    created = run_cli("tokens", "create", name, "--json", cwd=project)
    assert created.exit_code == 0, created.output
    return json.loads(created.stdout)["token"]


class CountingLedger(Ledger):
    """The project's real ledger, counting the connections authentication opens on it."""

    opened = 0

    def reader(self):  # noqa: ANN201 - the parent's context manager
        CountingLedger.opened += 1
        return super().reader()


@pytest.fixture
def table() -> Iterator[TokenTable]:
    """This process's token table with short bounds for the test, restored after."""
    found = token_table()
    before = (found.stale_after, found.refresh_every)
    found.configure(stale_after=0.4, refresh_every=1.0)
    yield found
    found.configure(stale_after=before[0], refresh_every=before[1])


def test_an_unknown_token_is_refused_from_the_snapshot_without_touching_the_ledger(
    project: Path, table: TokenTable
) -> None:
    bob = token_of(project, "bob")
    ledger = CountingLedger(project / "audit" / "ledger.duckdb")
    assert authenticate(ledger, bob).name == "bob"
    CountingLedger.opened = 0
    with turn_held(ledger.path), wait_at_most(10):  # a writer holds the file; requests do not wait for it
        started = time.monotonic()
        for _ in range(50):
            with pytest.raises(InvalidToken):
                authenticate(ledger, "gvn_000000000000_" + "A" * 43)
            with pytest.raises(InvalidToken):
                authenticate(ledger, bob[:-4] + "AAAA")  # a known id, a wrong secret
            assert authenticate(ledger, bob).name == "bob"
        assert time.monotonic() - started < 2, "150 authentications without one wait"
    assert CountingLedger.opened == 0, "nothing read the ledger: the file did not change"


def test_a_busy_ledger_is_answered_from_a_recent_snapshot_and_refused_503_once_it_is_too_old(
    project: Path, table: TokenTable
) -> None:
    """When the ledger changed and cannot be read without waiting, tokens are checked against a snapshot confirmed
    at most `token_staleness` ago (0.4 s here), then refused with LedgerLocked (503) until it can be read again."""
    bob = token_of(project, "bob")
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    assert authenticate(ledger, bob).name == "bob"
    ledger.append([snapshot_event(1)])  # the file changed (another process's write, as far as the table knows)
    with turn_held(ledger.path), wait_at_most(10):
        started = time.monotonic()
        assert authenticate(ledger, bob).name == "bob", "answered from the snapshot, without waiting"
        assert time.monotonic() - started < 0.3
        time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(LedgerLocked, match="too busy for 0.4 s to check tokens"):
            authenticate(ledger, bob)
        assert time.monotonic() - started < 2, "refused at once, not after a wait"
    time.sleep(0.2)  # the background reader, which waited its turn, has read it by now
    with wait_at_most(10):
        assert authenticate(ledger, bob).name == "bob"


def test_a_revocation_elsewhere_holds_at_the_next_request_once_the_ledger_can_be_read(
    project: Path, table: TokenTable
) -> None:
    """Another process revokes (here: a ledger written behind this process's back, through another Ledger object
    it never authenticated with); the next request reads the changed file, without waiting, and refuses."""
    bob = token_of(project, "bob")
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    with wait_at_most(10):
        assert authenticate(ledger, bob).name == "bob"
    revoked = subprocess.run(
        [sys.executable, "-m", "govern", "tokens", "revoke", bob.split("_")[1], "--reason", "left"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert revoked.returncode == 0, revoked.stderr
    with wait_at_most(10), pytest.raises(Exception, match="revoked"):
        authenticate(ledger, bob)


def made_elsewhere(project: Path, name: str) -> str:
    """A token created by another process (the operator's command line), behind this process's back."""
    created = subprocess.run(
        [sys.executable, "-m", "govern", "tokens", "create", name, "--json"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    return json.loads(created.stdout)["token"]


def test_a_token_made_elsewhere_a_moment_ago_works_though_the_ledger_was_busy_when_it_came(
    project: Path, table: TokenTable
) -> None:
    """Seen in CI: a token created by the command line, then used at once while a writer held the file, was refused
    401 from the snapshot read before it existed. A token the snapshot refuses while the file has changed since is
    checked after one patient read (up to SETTLE_WAIT), so it works as soon as the writer is done."""
    bob = token_of(project, "bob")
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    with wait_at_most(10):
        assert authenticate(ledger, bob).name == "bob"
    table.configure(stale_after=30, refresh_every=1.0)  # the snapshot is recent enough to answer from
    eve = made_elsewhere(project, "eve")
    with turn_held(ledger.path, seconds=0.8), wait_at_most(10):
        started = time.monotonic()
        assert authenticate(ledger, bob).name == "bob", "a known token is answered from the snapshot, at once"
        assert time.monotonic() - started < 0.5
        with pytest.raises(InvalidToken):
            authenticate(ledger, "not-a-token")  # malformed: refused without a read
        assert authenticate(ledger, eve).name == "eve", "the new token works at its first use, once the writer is done"
        assert time.monotonic() - started < TokenTable.SETTLE_WAIT + 1


def test_a_token_the_snapshot_does_not_know_is_answered_503_not_401_while_the_ledger_stays_busy(
    project: Path, table: TokenTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TokenTable, "SETTLE_WAIT", 0.5)  # the patient read's bound (2 s), shorter: the same answer
    bob = token_of(project, "bob")
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    with wait_at_most(10):
        assert authenticate(ledger, bob).name == "bob"
    table.configure(stale_after=30, refresh_every=1.0)
    eve = made_elsewhere(project, "eve")
    with turn_held(ledger.path), wait_at_most(10):
        started = time.monotonic()
        with pytest.raises(LedgerLocked, match="too busy to check this token against its latest state: retry"):
            authenticate(ledger, eve)
        with pytest.raises(LedgerLocked, match="retry"):
            authenticate(ledger, "gvn_000000000000_" + "A" * 43)  # an unknown id: the same answer, learns nothing
        assert time.monotonic() - started < 3 * TokenTable.SETTLE_WAIT + 1, "each waited at most SETTLE_WAIT"
    with wait_at_most(10):
        assert authenticate(ledger, eve).name == "eve"
        with pytest.raises(InvalidToken):
            authenticate(ledger, "gvn_000000000000_" + "A" * 43)


# ---------------------------------------------------------------- auditor SQL


@pytest.fixture(params=["file", "postgresql"])
def audited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger | PostgresLedger]:
    if request.param == "file":
        ledger = Ledger(tmp_path / "ledger.duckdb")
        ledger.append([snapshot_event(i) for i in range(1, 4)])
        yield ledger
        return
    pg = PostgresLedger(request.getfixturevalue("pg_database"), cache_dir=tmp_path / "machine")
    pg.append([snapshot_event(i) for i in range(1, 4)])
    yield pg
    pg.close()


def test_an_auditor_statement_is_interrupted_at_its_timeout(audited: Ledger | PostgresLedger) -> None:
    """`SELECT sum(hash(i)) FROM range(5000000000)` ran 33 s; here it stops at its limit, on both ledgers (on
    PostgreSQL it runs on this machine's read model, in the same sandbox). Half a second here."""
    started = time.monotonic()
    with pytest.raises(QueryLimitExceeded, match=r"ran longer than 0.5 s and was stopped: narrow it"):
        audited.audit_query(LONG_QUERY, limits=AuditLimits(timeout=0.5))
    assert time.monotonic() - started < 5
    assert audited.audit_query("SELECT count(*) FROM events")[1] == [(3,)], "the ledger answers after it"


def test_a_result_over_the_row_or_byte_limit_is_refused_with_what_to_do(audited: Ledger | PostgresLedger) -> None:
    with pytest.raises(QueryLimitExceeded, match=r"The result has more than 100000 rows: add LIMIT or aggregate"):
        audited.audit_query("SELECT i, repeat('x', 100) FROM range(2000000) t(i)")
    with pytest.raises(QueryLimitExceeded, match=r"The result is larger than 1 MiB: select fewer columns or rows"):
        audited.audit_query("SELECT repeat('x', 1000) FROM range(5000) t(i)", limits=AuditLimits(max_bytes=1 << 20))
    columns, rows = audited.audit_query("SELECT i FROM range(100000) t(i)")
    assert columns == ["i"] and len(rows) == 100000, "a result at the limit is answered whole"


def test_the_sandbox_runs_with_its_threads_and_memory_and_cannot_raise_them(audited: Ledger | PostgresLedger) -> None:
    limits = AuditLimits(threads=1, memory_limit="256MB")
    _, [(threads, memory)] = audited.audit_query(
        "SELECT current_setting('threads'), current_setting('memory_limit')", limits=limits
    )
    assert threads == 1 and memory.endswith("MiB") and float(memory.split()[0]) < 256
    with pytest.raises(QueryLimitExceeded, match="needs more than the 100MB of memory audit SQL may use"):
        audited.audit_query("SELECT count(*) FROM (SELECT DISTINCT hash(i) FROM range(20000000) t(i))",
                            limits=AuditLimits(memory_limit="100MB"))  # fmt: skip
    with pytest.raises(Exception, match="not SET"):
        audited.audit_query("SET threads = 8")


def test_the_command_line_takes_the_same_limits_and_its_options_raise_them(project: Path) -> None:
    (project / "govern.toml").write_text("[audit]\nmax_rows = 5\ntimeout = 0.5\n")
    refused = run_cli("audit", "sql", "SELECT * FROM range(10)", cwd=project)
    assert refused.exit_code == 1
    assert refused.output.strip() == (
        "Error: The result has more than 5 rows: add LIMIT or aggregate (the limit is `audit.max_rows`; locally, "
        "--max-rows raises it)"
    )
    raised = run_cli("audit", "sql", "--max-rows", "20", "--json", "SELECT * FROM range(10)", cwd=project)
    assert raised.exit_code == 0 and len(json.loads(raised.stdout)) == 10
    started = time.monotonic()
    stopped = run_cli("audit", "sql", LONG_QUERY, cwd=project)
    assert stopped.exit_code == 1 and "ran longer than 0.5 s and was stopped" in stopped.output
    assert time.monotonic() - started < 10
    queries = project / "audit" / "queries"
    queries.mkdir(parents=True)
    (queries / "numbers.sql").write_text("-- Numbers\n-- Parameters: none\nSELECT * FROM range(10)\n")
    assert "more than 5 rows" in run_cli("audit", "run", "numbers", cwd=project).output
    assert run_cli("audit", "run", "numbers", "--max-rows", "10", cwd=project).exit_code == 0
    bad = run_cli("audit", "sql", "--max-rows", "0", "SELECT 1", cwd=project)
    assert bad.exit_code == 2 and "--max-rows" in bad.output


# ---------------------------------------------------------------- JSON and configuration


def test_json_nesting_is_measured_without_parsing_it() -> None:
    assert json_depth(b'{"rows": [{"a": 1, "b": "[[[{{{"}]}') == 3, "brackets in strings do not count"
    assert json_depth(b'{"a": "\\"[[[[", "b": [[1]]}') == 3, "nor after an escaped quote"
    assert json_depth(b"[" * 1_000_000) == 1_000_000, "a million levels, counted at C speed"
    assert json_depth(b"") == 0 and json_depth(b"42") == 0
    with pytest.raises(RecursionError):
        json.loads(b"[" * 1_000_000)  # what the count protects from


def test_the_server_and_audit_tables_are_checked_like_every_other(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "govern.toml").write_text(
        '[server]\nmax_requests = 8\nlock_wait = 2.5\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\n'
        '[audit]\ntimeout = 5\nmemory_limit = "512MiB"\n'
    )
    loaded = config.load(tmp_path)
    assert loaded.server.max_requests == 8 and loaded.server.lock_wait == 2.5
    assert loaded.server.trusted_proxies == ("127.0.0.1", "10.0.0.0/8") and loaded.server.max_predictions == 8
    assert loaded.audit.timeout == 5 and loaded.audit.memory_limit == "512MiB" and loaded.audit.max_rows == 100000
    for table, message in (
        ("[server]\nmax_request = 3\n", "unknown key(s) max_request (did you mean max_requests?)"),
        ("[server]\nmax_requests = 0\n", "`server.max_requests` must be a whole number from 1 to 10000"),
        ("[server]\nlock_wait = -1\n", "`server.lock_wait` must be a positive number of seconds"),
        ('[server]\ntrusted_proxies = ["proxy.example.com"]\n', "`server.trusted_proxies` must be a list of IP"),
        ('[audit]\nmemory_limit = "1GB; SET threads=64"\n', '`audit.memory_limit` is a size such as "1GB"'),
        ("[audit]\nthreads = true\n", "`audit.threads` must be a whole number from 1 to 256"),
    ):
        (tmp_path / "govern.toml").write_text(table)
        with pytest.raises(ConfigError) as refused:
            config.load(tmp_path)
        assert message in str(refused.value)
