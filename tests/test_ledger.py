"""The ledger: append-only, idempotent, hash-chained, migrated on open, verified in SQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import snapshot_event

from govern.envelope import PendingEvent
from govern.errors import EventConflict, LedgerError, LedgerLocked, LedgerMissing, LedgerSchemaTooNew
from govern.readmodel.migrations import MIGRATIONS, schema_version
from govern.storage import duckdb_log
from govern.storage.duckdb_log import Ledger


def snapshot(i: int, source: str = "the source system") -> PendingEvent:
    return snapshot_event(i, source)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "audit" / "ledger.duckdb", lock_timeout=2)


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    ledger.append([snapshot(i, source=f'tricky "source" é\n{i}') for i in range(1, 6)])
    return ledger


def sql(ledger: Ledger, statement: str) -> None:
    con = duckdb.connect(str(ledger.path))
    try:
        con.execute(statement)
    finally:
        con.close()


def test_appends_get_gapless_seq_and_a_chain(filled: Ledger) -> None:
    events = filled.read()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == "0" * 64
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(events, events[1:], strict=False))


def test_verify_accepts_an_untouched_chain(filled: Ledger) -> None:
    result = filled.verify()
    assert result.ok and result.count == 5
    assert result.head_hash == filled.read()[-1].hash


def test_verify_names_the_seq_of_an_edited_payload(filled: Ledger) -> None:
    sql(filled, "UPDATE stored_events SET payload = replace(payload, 'tricky', 'benign') WHERE seq = 3")
    result = filled.verify()
    assert not result.ok and result.bad_seq == 3
    assert "seq 3" in result.problem


def test_verify_names_the_seq_of_an_edited_hash(filled: Ledger) -> None:
    sql(filled, "UPDATE stored_events SET hash = sha256('forged') WHERE seq = 2")
    result = filled.verify()
    assert not result.ok and result.bad_seq == 2


def test_verify_names_the_missing_seq_of_a_deleted_row(filled: Ledger) -> None:
    sql(filled, "DELETE FROM stored_events WHERE seq = 3")
    result = filled.verify()
    assert not result.ok and result.bad_seq == 4
    assert "seq 3 is missing" in result.problem


def test_verify_catches_an_edited_actor(filled: Ledger) -> None:
    sql(filled, "UPDATE stored_events SET actor = 'Mallory' WHERE seq = 5")
    assert filled.verify().bad_seq == 5


def test_a_retried_identical_event_is_a_no_op(ledger: Ledger) -> None:
    event = snapshot(1)
    first = ledger.append([event])
    again = ledger.append([event])
    assert [e.seq for e in ledger.read()] == [1]
    assert again[0].hash == first[0].hash


def test_the_same_event_id_with_other_content_is_refused(ledger: Ledger) -> None:
    event = snapshot(1)
    ledger.append([event])
    changed = PendingEvent(snapshot(2).fact, actor=event.actor, occurred_at=event.occurred_at, event_id=event.event_id)
    with pytest.raises(EventConflict, match="different content"):
        ledger.append([changed])
    assert len(ledger.read()) == 1


def test_a_failed_append_writes_nothing(ledger: Ledger) -> None:
    ledger.append([snapshot(1)])
    head = ledger.head()
    duplicate = snapshot(2)
    with pytest.raises(EventConflict):
        ledger.append([snapshot(3), duplicate, duplicate])
    assert ledger.head() == head


def test_read_filters_by_type_time_and_limit(filled: Ledger) -> None:
    assert [e.seq for e in filled.read(limit=2)] == [4, 5]
    assert filled.read(types=["training.completed"]) == []
    assert len(filled.read(since=filled.read()[2].occurred_at)) == 3


def test_payload_bytes_are_stored_exactly_as_hashed(ledger: Ledger) -> None:
    event = snapshot(1, source='tricky "source" é')
    ledger.append([event])
    stored = ledger.read()[0]
    assert stored.payload_json == event.payload_json
    assert stored.payload["source"] == 'tricky "source" é'


def test_a_new_ledger_is_migrated_to_the_current_schema(ledger: Ledger) -> None:
    ledger.append([snapshot(1)])
    con = duckdb.connect(str(ledger.path), read_only=True)
    versions = [row[0] for row in con.execute("SELECT version FROM govern_migrations ORDER BY version").fetchall()]
    views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    con.close()
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert {"trainings", "model_versions", "datasets"} <= views


def test_an_old_ledger_is_migrated_forward_on_write(ledger: Ledger) -> None:
    ledger.path.parent.mkdir(parents=True)
    con = duckdb.connect(str(ledger.path))
    con.execute(
        "CREATE TABLE govern_migrations "
        "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    MIGRATIONS[0](con)
    con.execute("INSERT INTO govern_migrations VALUES (1, ?, now()::TIMESTAMP)", [MIGRATIONS[0].__name__])
    con.close()
    ledger.append([snapshot(1)])
    assert ledger.query("SELECT count(*) FROM datasets")[1] == [(1,)]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE govern_migrations SET name = 'm002_something_else' WHERE version = 2",
        "UPDATE govern_migrations SET name = (SELECT name FROM govern_migrations WHERE version = 3) WHERE version = 2",
        "DELETE FROM govern_migrations WHERE version = 2",
    ],
    ids=["renamed", "reordered", "a gap"],
)
def test_migrations_are_matched_by_name_and_an_unknown_one_is_refused(filled: Ledger, statement: str) -> None:
    sql(filled, statement)
    with pytest.raises(LedgerError, match="migrated by another build of govern"):
        filled.read()
    with pytest.raises(LedgerError, match="migrated by another build of govern"):
        filled.append([snapshot(9)])


def test_a_ledger_from_a_newer_govern_is_refused(filled: Ledger) -> None:
    sql(filled, f"INSERT INTO govern_migrations VALUES ({schema_version() + 1}, 'future', now()::TIMESTAMP)")
    with pytest.raises(LedgerSchemaTooNew, match="upgrade govern"):
        filled.read()
    with pytest.raises(LedgerSchemaTooNew):
        filled.append([snapshot(9)])


def test_reading_a_missing_ledger_says_how_to_create_one(ledger: Ledger) -> None:
    with pytest.raises(LedgerMissing, match="govern repro"):
        ledger.read()


def test_a_ledger_file_another_process_is_still_creating_is_waited_for(tmp_path: Path) -> None:
    """Eight processes opening a new ledger at once: one may see the file before DuckDB wrote its headers."""
    import os
    import threading

    path, ready = tmp_path / "ledger.duckdb", tmp_path / "made" / "ledger.duckdb"
    Ledger(ready).append([snapshot_event(1)])
    path.write_bytes(b"")  # created, headers not written yet
    later = threading.Timer(0.4, lambda: os.replace(ready, path))
    later.start()
    try:
        assert Ledger(path).head()[0] == 1
    finally:
        later.join()


def test_an_absurd_limit_means_every_event(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.duckdb")
    ledger.append([snapshot_event(1), snapshot_event(2)])
    assert [e.seq for e in ledger.read(limit=10**23)] == [1, 2]


def test_a_file_that_is_not_a_ledger_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file shorter than DuckDB's headers may be one another process is still creating: it is given
    CREATION_WAIT (3 s; a fraction of it here, the same answer) before it is reported."""
    monkeypatch.setattr(duckdb_log, "CREATION_WAIT", 0.3)
    path = tmp_path / "ledger.duckdb"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="not a readable govern ledger"):
        Ledger(path).read()


def test_a_writer_waits_for_a_lock_then_gives_up_clearly(filled: Ledger) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(30)",
            str(filled.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        filled.lock_timeout = 0.5
        started = time.monotonic()
        with pytest.raises(LedgerLocked, match="locked by another govern process"):
            filled.append([snapshot(9)])
        assert time.monotonic() - started >= 0.5
    finally:
        holder.kill()
        holder.wait()
    assert filled.append([snapshot(9)])[0].seq == 6


def test_a_bulk_append_is_chained_idempotent_and_all_or_nothing(ledger: Ledger) -> None:
    from govern.storage.duckdb_files import BULK_ROWS

    batch = [snapshot(i) for i in range(BULK_ROWS + 5)]
    recorded = ledger.append(batch)
    assert [e.seq for e in recorded] == list(range(1, BULK_ROWS + 6))
    assert ledger.verify().ok and ledger.verify().count == BULK_ROWS + 5
    stored = ledger.read(seqs=[1, BULK_ROWS + 5])
    assert [(e.event_id, e.hash, e.payload_json) for e in stored] == [
        (r.event_id, r.hash, r.payload_json) for r in (recorded[0], recorded[-1])
    ]

    again = ledger.append(batch)  # a retried bulk import is a no-op
    assert [e.hash for e in again] == [e.hash for e in recorded] and ledger.head()[0] == BULK_ROWS + 5

    clash = PendingEvent(
        snapshot(7).fact, actor="someone else", occurred_at=batch[0].occurred_at, event_id=batch[0].event_id
    )
    with pytest.raises(EventConflict, match="different content"):
        ledger.append([clash, *[snapshot(i) for i in range(BULK_ROWS)]])
    assert ledger.head()[0] == BULK_ROWS + 5


def test_a_transient_read_error_while_writing_is_retried_then_reported(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB can fail a writer's first read right after another process closed the file; forced here."""
    import govern.storage.duckdb_log as ledger_module

    ledger.append([snapshot(1)])
    real, failures = ledger_module._existing, []

    def flaky(con, ids):  # noqa: ANN001, ANN202
        if len(failures) < 1:
            failures.append(ids)
            raise duckdb.IOException('IO Error: Could not read enough bytes from file "ledger.duckdb"')
        return real(con, ids)

    monkeypatch.setattr(ledger_module, "_existing", flaky)
    [recorded] = ledger.append([snapshot(2)])
    assert failures and recorded.seq == 2 and ledger.verify().ok

    def broken(con, ids):  # noqa: ANN001, ANN202
        raise duckdb.IOException('IO Error: Could not read enough bytes from file "ledger.duckdb"')

    monkeypatch.setattr(ledger_module, "_existing", broken)
    head = ledger.head()
    with pytest.raises(LedgerError, match="could not be read while writing .* 3 times; nothing was appended"):
        ledger.append([snapshot(3)])
    assert ledger.head() == head


def test_the_audit_sandbox_is_duckdbs_own_configuration_locked_before_the_query(tmp_path: Path) -> None:
    """Below the one-SELECT rule: even a statement that got through would meet DuckDB's locked configuration."""
    ledger = Ledger(tmp_path / "ledger.duckdb")
    ledger.append([snapshot(0)])
    secret = tmp_path / "secret.txt"
    secret.write_text("not for auditors\n")

    names, rows = ledger.audit_query(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration'), "
        "current_setting('autoload_known_extensions'), current_setting('autoinstall_known_extensions')"
    )
    assert rows == [(False, True, False, False)]
    with ledger._connect(write=False, sandbox=True) as con:
        for statement in (
            "SET enable_external_access = true",
            "RESET lock_configuration",
            "SET lock_configuration = false",
        ):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(statement)
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_text('{secret}')").fetchall()
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'")
    assert not (tmp_path / "out.csv").exists()
    assert ledger.audit_query("SELECT count(*) FROM events")[1] == [(1,)]


def test_a_session_opens_the_file_once_for_its_reads_and_writes_and_lets_go_when_it_ends(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    import govern.storage.duckdb_log as ledger_module
    from govern.storage import sessions

    ledger.append([snapshot(1)])
    opened = []
    real = ledger_module.attached
    monkeypatch.setattr(ledger_module, "attached", lambda path, **kw: opened.append(kw) or real(path, **kw))
    with sessions.Session() as current:
        ledger = Ledger(ledger.path, session=current)
        assert ledger.head()[0] == 1
        Ledger(ledger.path, session=current).append([snapshot(2)])  # another object, the same file and session
        assert len(ledger.read()) == 2
        assert ledger.verify().ok
    assert opened == [{"read_only": True}, {"read_only": False}]  # read-only until the first write
    code = "import sys; from govern.storage.duckdb_log import Ledger; from conftest import snapshot_event as s; "
    code += f"Ledger({str(ledger.path)!r}, lock_timeout=5).append([s(3)])"
    written = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert written.returncode == 0, written.stderr  # the session released DuckDB's lock on the file
    assert ledger.head()[0] == 3


def test_another_thread_waits_for_a_session_to_end_before_it_uses_the_file(ledger: Ledger) -> None:
    import threading

    from govern.storage.sessions import Session

    ledger.append([snapshot(1)])
    order: list[str] = []
    with Session(write=True) as current:
        Ledger(ledger.path, session=current).head()
        other = threading.Thread(target=lambda: (ledger.append([snapshot(2)]), order.append("other wrote")))
        other.start()
        time.sleep(0.3)
        order.append("session ends")
    other.join(timeout=10)
    assert order == ["session ends", "other wrote"]
    assert ledger.head()[0] == 2


def test_work_after_a_closed_session_in_its_context_holds_the_file_no_longer(ledger: Ledger) -> None:
    """Found by the web pages: a page's dependency closes its session when the route ends, and then the error
    handler read the ledger through the closed session; that connection was never released, and the server's
    next request waited for the file forever."""
    import threading

    from govern.storage.sessions import Session

    ledger.append([snapshot(1)])
    closed = Session()
    ledger = Ledger(ledger.path, session=closed)
    try:
        assert ledger.head()[0] == 1
        closed.close()
        assert ledger.head()[0] == 1  # in the same context, after the close
        outcome: list[object] = []

        def other() -> None:
            try:
                outcome.append(Ledger(ledger.path, lock_timeout=2).append([snapshot(2)])[0].seq)
            except LedgerLocked as error:
                outcome.append(error)

        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        thread.join(timeout=10)
        assert outcome == [2]
        assert closed.held == {}
    finally:
        for held in list(closed.held.values()):  # what a regression would leave held, so teardown does not hang
            held.release()
