"""What the ledger survives: tampering (chain and anchors), concurrent writers, and kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from conftest import commit_all, copy_ledger, git, run_cli, snapshot_event
from support.projects import project_at

from govern.api import integrity
from govern.checkpoints import wal_path
from govern.envelope import PendingEvent, envelope_hash
from govern.storage import open_store
from govern.storage.duckdb_log import Ledger


def snapshot(i: int) -> PendingEvent:
    return snapshot_event(i, source="warehouse", actor="someone")


@pytest.fixture
def anchored(tmp_path: Path) -> Path:
    """A git project with 10 events, anchored at the head (the anchor event is seq 11)."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "README").write_text("a governed project\n")
    commit_all(tmp_path, "start")
    Ledger(tmp_path / "audit" / "ledger.duckdb").append([snapshot(i) for i in range(10)])
    integrity.anchor(project_at(tmp_path))
    return tmp_path


def sql(project: Path, *statements: str) -> None:
    con = duckdb.connect(str(project / "audit" / "ledger.duckdb"))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


def rehash_everything(project: Path) -> None:
    """What a careful forger does after an edit: recompute every hash so the chain is consistent again."""
    con = duckdb.connect(str(project / "audit" / "ledger.duckdb"))
    rows = con.execute("SELECT * FROM stored_events ORDER BY seq").fetchall()
    names = [d[0] for d in con.description]
    previous = "0" * 64
    for row in rows:
        values = dict(zip(names, row, strict=True))
        fields = {
            **{k: v for k, v in values.items() if k not in ("hash", "payload", "signature")},
            "prev_hash": previous,
        }
        fields["payload_json"] = values["payload"].replace("warehouse", "spreadsheet")
        new_hash = envelope_hash(**fields)
        con.execute(
            "UPDATE stored_events SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            [fields["payload_json"], previous, new_hash, values["seq"]],
        )
        previous = new_hash
    con.close()


TAMPERING: dict[str, Callable[[Path, Path], None]] = {
    "edit a payload": lambda p, _: sql(
        p, "UPDATE stored_events SET payload = replace(payload, 'warehouse', 'x') WHERE seq = 4"
    ),
    "edit a hash": lambda p, _: sql(p, "UPDATE stored_events SET hash = sha256('forged') WHERE seq = 6"),
    "delete a middle row": lambda p, _: sql(p, "DELETE FROM stored_events WHERE seq = 5"),
    "delete the tail": lambda p, _: sql(p, "DELETE FROM stored_events WHERE seq >= 9"),
    "swap two rows' seq": lambda p, _: sql(
        p,
        "UPDATE stored_events SET seq = -3 WHERE seq = 3",
        "UPDATE stored_events SET seq = 3 WHERE seq = 4",
        "UPDATE stored_events SET seq = 4 WHERE seq = -3",
    ),
    "insert a forged row": lambda p, _: sql(
        p,
        "INSERT INTO stored_events SELECT 12, 'forged-id', type, schema_version, occurred_at, recorded_at, 'mallory', "
        "subject, git_commit, payload, sha256('made up'), sha256('also made up'), authn, signature "
        "FROM stored_events WHERE seq = 2",
    ),
    "duplicate a row": lambda p, _: sql(
        p,
        "CREATE TABLE copy AS SELECT * FROM stored_events UNION ALL SELECT * FROM stored_events WHERE seq = 7",
        "DROP TABLE stored_events",
        "ALTER TABLE copy RENAME TO stored_events",
    ),
    "re-hash the whole chain after an edit": lambda p, _: rehash_everything(p),
    "forge a deployment in the projection table": lambda p, _: sql(
        p,
        "INSERT INTO deployment_index VALUES (999, 'forged', 'deployment.started', now()::TIMESTAMP, 'mallory', "
        "'scoring', 'production', 'some-model', '1', NULL, md5_number_upper(concat('scoring', chr(31), 'production')))",
    ),
    "replace the file with an older copy": lambda p, older: copy_ledger(older, p / "audit" / "ledger.duckdb"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_every_kind_of_tampering_is_detected(
    anchored: Path, tmp_path_factory: pytest.TempPathFactory, case: str
) -> None:
    older = tmp_path_factory.mktemp("older") / "ledger.duckdb"
    ledger = anchored / "audit" / "ledger.duckdb"
    before = integrity.verify(project_at(anchored, writing=False))
    assert before.ok and len(before.anchors) == 1
    if case == "replace the file with an older copy":
        copy_ledger(ledger, older)
        Ledger(ledger).append([snapshot(99)])
        integrity.anchor(project_at(anchored))
    TAMPERING[case](anchored, older)

    result = integrity.verify(project_at(anchored, writing=False))

    assert not result.ok, f"{case} went unnoticed"
    cli = run_cli("audit", "verify", cwd=anchored)
    assert cli.exit_code == 1 and "FAILED" in cli.output


def test_a_consistent_rehash_passes_the_chain_and_only_the_anchor_catches_it(anchored: Path) -> None:
    rehash_everything(anchored)
    result = integrity.verify(project_at(anchored, writing=False))
    assert result.chain.ok, "the forger recomputed every hash"
    assert result.problems == ["govern-anchor/11: seq 11 has a different hash than anchored: the ledger was rewritten"]


def test_deleting_the_anchor_event_itself_is_caught(anchored: Path) -> None:
    sql(anchored, "DELETE FROM stored_events WHERE seq = 11")
    result = integrity.verify(project_at(anchored, writing=False))
    assert result.chain.ok
    assert "the ledger has no seq 11 (it ends at seq 10)" in result.problems[0]


def test_anchor_is_recorded_as_an_event_and_a_tag_covering_it(anchored: Path) -> None:
    [event] = Ledger(anchored / "audit" / "ledger.duckdb").read(types=["ledger.anchored"])
    assert event.seq == 11 and event.payload["tag"] == "govern-anchor/11"
    message = git(anchored, "tag", "-l", "--format=%(contents:subject)", "govern-anchor/11")
    assert json.loads(message) == {"seq": 11, "hash": event.hash}
    assert git(anchored, "cat-file", "-t", "govern-anchor/11") == "tag", "an annotated tag, which travels with pushes"


def test_verify_outside_the_repository_says_the_anchors_were_not_checked(
    anchored: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOVERN_LEDGER", str(anchored / "audit" / "ledger.duckdb"))
    elsewhere = tmp_path_factory.mktemp("elsewhere")

    plain = run_cli("audit", "verify", cwd=elsewhere)
    assert plain.exit_code == 0 and "anchors NOT checked: no git repository here" in plain.output
    assert "--repo PATH" in plain.output
    as_json = json.loads(run_cli("audit", "verify", "--json", cwd=elsewhere).stdout)
    assert as_json["anchors_checked"] is False and as_json["anchors_found"] == 0
    with_repo = run_cli("audit", "verify", "--repo", str(anchored), "--json", cwd=elsewhere)
    assert json.loads(with_repo.stdout)["anchors_checked"] is True
    assert json.loads(with_repo.stdout)["latest_anchor"] == {"tag": "govern-anchor/11", "seq": 11}


def test_a_lost_ledger_is_not_replaced_by_a_new_chain_where_anchors_exist(anchored: Path) -> None:
    ledger = anchored / "audit" / "ledger.duckdb"
    ledger.unlink()
    wal_path(ledger).unlink(missing_ok=True)

    result = run_cli("audit", "anchor", cwd=anchored)

    assert result.exit_code == 1
    assert "is missing, but this repository holds anchors up to seq 11 (govern-anchor/11)" in result.output
    assert "govern audit backup" in result.output and len(result.output.strip().splitlines()) == 1
    assert not ledger.exists(), "no second chain was started"


def test_a_ledger_that_ends_before_the_newest_anchor_takes_no_write(anchored: Path, tmp_path: Path) -> None:
    ledger = anchored / "audit" / "ledger.duckdb"
    older = tmp_path / "older.duckdb"
    Ledger(ledger).backup(older)
    moved_on = run_cli("audit", "anchor", cwd=anchored)  # the history moves on: an anchor at seq 12
    assert moved_on.exit_code == 0, moved_on.output
    os.replace(older, ledger)  # someone restores an older copy
    wal_path(ledger).unlink(missing_ok=True)

    result = run_cli("audit", "anchor", cwd=anchored)

    assert result.exit_code == 1
    assert "ends at seq 11, but this repository's newest anchor is seq 12 (govern-anchor/12)" in result.output
    assert Ledger(ledger).head()[0] == 11, "nothing was written"


def test_a_backup_beside_another_ledgers_log_is_refused_before_anything_is_written(
    anchored: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backups" / "monday.duckdb"
    backup.parent.mkdir()
    wal_path(backup).write_bytes(b"another ledger's log")
    result = run_cli("audit", "backup", str(backup), cwd=anchored)
    assert result.exit_code != 0
    assert f"{wal_path(backup)} exists: DuckDB would replay that log onto the backup monday.duckdb" in result.output
    assert sorted(p.name for p in backup.parent.iterdir()) == ["monday.duckdb.wal"]


def test_a_backup_removes_the_temporary_copies_of_backups_killed_before_it(anchored: Path, tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    backup = tmp_path / "backups" / "b.duckdb"
    backup.parent.mkdir()
    leftovers = [backup.parent / f".b.duckdb.partial-{pid}", backup.parent / f".b.duckdb.partial-{pid}.wal"]
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    in_progress = backup.parent / f".b.duckdb.partial-{running.pid}"  # another backup, still running
    try:
        for leftover in [*leftovers, in_progress]:
            leftover.write_bytes(b"x" * 1000)
        assert run_cli("audit", "backup", str(backup), cwd=anchored).exit_code == 0
        assert not any(leftover.exists() for leftover in leftovers)
        assert in_progress.exists(), "a live backup's copy is left alone"
    finally:
        running.kill()
        running.wait()
    assert Ledger(backup).verify().ok


def test_a_ledger_restored_beside_a_newer_log_names_the_log_to_move_away(anchored: Path, tmp_path: Path) -> None:
    ledger = Ledger(anchored / "audit" / "ledger.duckdb")
    saved = tmp_path / "saved.duckdb"
    ledger.backup(saved)
    ledger.append([snapshot(100)])
    assert wal_path(ledger.path).exists(), "the new event waits in the log"
    saved.replace(ledger.path)  # "restore it by copying it to the ledger's path"
    result = run_cli("audit", "verify", cwd=anchored)
    assert result.exit_code != 0
    assert "its write-ahead log ledger.duckdb.wal are from different copies of the ledger" in result.output
    assert "move ledger.duckdb.wal away" in result.output
    wal_path(ledger.path).unlink()
    assert Ledger(ledger.path).verify().ok


@pytest.mark.slow  # processes racing for tens of seconds
def test_a_backup_taken_while_writers_append_is_one_consistent_file_that_verifies(
    anchored: Path, tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    ledger = anchored / "audit" / "ledger.duckdb"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(ledger), "w", "300"], env=isolated_env)
    try:
        time.sleep(1.0)
        backup = tmp_path / "backups" / "ledger-copy.duckdb"
        result = run_cli("audit", "backup", str(backup), "--json", cwd=anchored)
    finally:
        writer.wait(timeout=300)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["ok"] is True and answer["path"] == str(backup)
    assert not wal_path(backup).exists(), "self-contained: no write-ahead log beside it"
    copied = Ledger(backup)
    assert copied.verify().ok and 11 <= copied.head()[0] <= Ledger(ledger).head()[0]
    assert [e.hash for e in copied.read()] == [e.hash for e in Ledger(ledger).read()][: copied.head()[0]]
    env = {**isolated_env, "GOVERN_LEDGER": str(backup)}
    done = subprocess.run([sys.executable, "-m", "govern", "audit", "verify", "--repo", str(anchored)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and "1 anchor(s) match" in done.stdout, done.stdout + done.stderr


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from govern.envelope import PendingEvent, utc_now
    from govern.events import DatasetSnapshotted
    from govern.storage import open_store

    ledger, writer, count = open_store(sys.argv[1], lock_timeout=300), sys.argv[2], int(sys.argv[3])
    for i in range(count):
        fact = DatasetSnapshotted(path=f"{writer}/{i}", md5=None, sha256=None, size=i, source=writer,
                                  extracted_at="2026-01-01T00:00:00.000000Z", extracted_at_basis="stage-run")
        ledger.append([PendingEvent(fact, actor=writer, occurred_at=utc_now())])
    """
)

READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from govern.storage import open_store

    ledger, deadline, seen = open_store(sys.argv[1], lock_timeout=300), time.monotonic() + 600, []
    while time.monotonic() < deadline and not Path(sys.argv[2]).exists():
        result = ledger.verify()
        seen.append([result.count, result.ok])
        time.sleep(0.05)
    print(json.dumps(seen))
    """
)


@pytest.fixture(params=["duckdb", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same stress on both backends: a file, or a database of the machine's PostgreSQL."""
    if request.param == "duckdb":
        return str(tmp_path / "ledger.duckdb")
    return request.getfixturevalue("pg_ledger_database")


@pytest.mark.slow  # processes racing for tens of seconds
def test_eight_concurrent_writers_lose_nothing_and_readers_see_consistent_chains(location: str, tmp_path: Path) -> None:
    path = location
    open_store(path).append([snapshot(0)])
    done = tmp_path / "writers-done"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(done)], stdout=subprocess.PIPE, text=True)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"writer-{n}", "250"]) for n in range(8)]
    assert [w.wait(timeout=900) for w in writers] == [0] * 8
    done.touch()
    observations = json.loads(reader.communicate(timeout=120)[0])

    ledger = open_store(path)
    result = ledger.verify()
    assert result.ok and result.count == 2001
    _, rows = ledger.query("SELECT count(DISTINCT event_id), min(seq), max(seq), count(DISTINCT seq) FROM events")
    assert rows == [(2001, 1, 2001, 2001)]
    _, per_writer = ledger.query("SELECT actor, count(*) FROM events WHERE actor LIKE 'writer-%' GROUP BY ALL")
    assert sorted(per_writer) == [(f"writer-{n}", 250) for n in range(8)]
    assert observations, "the reader got answers while writers ran"
    assert all(ok for _, ok in observations), "every read saw a consistent chain"
    counts = [count for count, _ in observations]
    assert counts == sorted(counts), "readers never see the ledger shrink"


CRASHER = textwrap.dedent(
    """
    import os, sys, uuid
    from pathlib import Path
    from govern.envelope import PendingEvent, utc_now
    from govern.events import DatasetSnapshotted
    from govern.storage import open_store

    ledger, acks = open_store(sys.argv[1], lock_timeout=60), open(sys.argv[2], "a")
    while True:
        event_id = str(uuid.uuid4())
        fact = DatasetSnapshotted(path=event_id, md5=None, sha256=None, size=None, source="crash test",
                                  extracted_at="2026-01-01T00:00:00.000000Z", extracted_at_basis="stage-run")
        ledger.append([PendingEvent(fact, actor="crasher", occurred_at=utc_now(), event_id=event_id)])
        acks.write(event_id + "\\n")
        acks.flush()
        os.fsync(acks.fileno())
    """
)


@pytest.mark.slow  # processes racing for tens of seconds
def test_appenders_killed_with_sigkill_lose_no_acknowledged_event(location: str, tmp_path: Path) -> None:
    path, acks = location, tmp_path / "acknowledged.txt"
    open_store(path).append([snapshot(0)])
    randomness = random.Random(20261127)
    for _ in range(50):
        before = acks.read_text().count("\n") if acks.exists() else 0
        process = subprocess.Popen([sys.executable, "-c", CRASHER, str(path), str(acks)])
        # Killed once it is appending (its first acknowledgement), at a random point of its next appends: on a
        # busy machine, starting Python and govern alone can take longer than a fixed delay.
        deadline = time.monotonic() + 60
        while not (acks.exists() and acks.read_text().count("\n") > before):
            assert time.monotonic() < deadline, "a crasher appended nothing in 60 s"
            time.sleep(0.01)
        time.sleep(randomness.uniform(0.0, 0.3))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    ledger = open_store(path)
    result = ledger.verify()
    assert result.ok, result.problem
    acknowledged = [line for line in acks.read_text().splitlines() if line]
    assert len(acknowledged) >= 50, "every writer got an append through before its kill"
    _, rows = ledger.query("SELECT event_id FROM events WHERE actor = 'crasher'")
    stored = {event_id for (event_id,) in rows}
    assert set(acknowledged) <= stored, f"lost {len(set(acknowledged) - stored)} acknowledged events"
    assert len(stored) - len(set(acknowledged)) <= 50, "at most one unacknowledged append per kill"


def test_auto_anchor_anchors_after_each_governance_write(three_versions: Path) -> None:
    pyproject = three_versions / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.govern]\n", "[tool.govern]\nauto_anchor = true\n", 1))
    commit_all(three_versions, "anchor after every write")

    result = run_cli("promote", "breast-cancer-classifier", "1", "--to", "staging", "--reason", "r", cwd=three_versions)

    assert result.exit_code == 0, result.output
    events = Ledger(three_versions / "audit" / "ledger.duckdb").read()
    assert [e.type for e in events[-3:]] == ["model.promoted", "registry.mirrored", "ledger.anchored"]
    assert git(three_versions, "tag", "-l", "govern-anchor/*") == f"govern-anchor/{events[-1].seq}"
    assert integrity.verify(project_at(three_versions, writing=False)).ok
