"""Checkpoints: commits live in DuckDB's log until govern folds it in, behind a backup a dead process leaves."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import copy_ledger, snapshot_event

from govern import checkpoints
from govern.checkpoints import backup_paths, restore_interrupted_checkpoint, wal_size
from govern.errors import LedgerError
from govern.ledger import CHECKPOINT_WAL_BYTES, Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.duckdb", lock_timeout=5)


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if checkpoints.BACKUP_SUFFIX in p.name)


def test_commits_stay_in_the_log_until_it_passes_the_threshold_then_fold_into_the_file(ledger: Ledger) -> None:
    ledger.append([snapshot_event(0)])
    file_size = ledger.path.stat().st_size
    sizes = [wal_size(ledger.path)]
    for i in range(1, 1000):
        ledger.append([snapshot_event(i)])
        sizes.append(wal_size(ledger.path))
        if sizes[-1] < sizes[-2]:
            break
    else:
        pytest.fail("the log never folded into the file")

    growing = sizes[:-1]
    assert growing == sorted(growing) and len(growing) > 10, "each commit stayed in the log"
    assert CHECKPOINT_WAL_BYTES / 2 < growing[-1] < CHECKPOINT_WAL_BYTES
    assert sizes[-1] < growing[-1]
    assert ledger.path.stat().st_size > file_size, "the checkpoint wrote the events into the file"
    assert leftovers(ledger.path) == [], "the backup is removed once the checkpoint is done"
    assert ledger.head()[0] == i + 1
    assert ledger.verify().ok


TEARING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import govern.ledger as ledger_module
    from govern.events import DatasetSnapshotted, PendingEvent, utc_now

    real, calls = ledger_module.checkpoint_behind_backup, []

    def tear_then_die(path, checkpoint, hold):
        def torn():
            calls.append(1)
            if len(calls) < 3:
                return checkpoint()
            # What a kill -9 during DuckDB's in-place metadata write leaves: a block whose checksum fails.
            with open(path, "r+b") as file:
                file.seek(12288)
                file.write(os.urandom(8192))
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, torn, hold)

    ledger_module.checkpoint_behind_backup = tear_then_die
    ledger_module.CHECKPOINT_WAL_BYTES = 0
    ledger, acks = ledger_module.Ledger(Path(sys.argv[1])), open(sys.argv[2], "a")
    for i in range(100):
        fact = DatasetSnapshotted(path=f"part-{i}", md5=None, sha256=None, size=None, source="tear test",
                                  extracted_at="2026-01-01T00:00:00.000000Z", extracted_at_basis="stage-run")
        ledger.append([PendingEvent(fact, actor="writer", occurred_at=utc_now())])
        acks.write(f"{i}\\n")
        acks.flush()
    """
)


def test_a_checkpoint_killed_mid_write_is_restored_on_the_next_open(
    ledger: Ledger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acks = tmp_path / "acknowledged.txt"
    process = subprocess.run([sys.executable, "-c", TEARING_WRITER, str(ledger.path), str(acks)])
    assert process.returncode == -9, "the writer died in its third checkpoint"
    acknowledged = acks.read_text().split()
    backup, _ = backup_paths(ledger.path)
    assert acknowledged == ["0", "1"] and backup.exists()

    torn = tmp_path / "torn" / "ledger.duckdb"
    torn.parent.mkdir()
    copy_ledger(ledger.path, torn)
    with pytest.raises(LedgerError, match="not a readable govern ledger"):
        Ledger(torn).verify()

    with caplog.at_level(logging.WARNING, logger="govern.ledger"):
        result = ledger.verify()

    assert result.ok and result.count == 3, "both acknowledged events and the one being checkpointed are there"
    assert "restored" in caplog.text and "no event was lost" in caplog.text
    assert leftovers(ledger.path) == []
    ledger.append([snapshot_event(3)])
    assert ledger.head()[0] == 4


LOCK_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    descriptor = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(descriptor, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_the_backup_of_a_checkpoint_still_running_elsewhere_is_left_alone(ledger: Ledger) -> None:
    ledger.append([snapshot_event(1)])
    ledger.append([snapshot_event(2)])
    assert wal_size(ledger.path) > 0, "the second event waits in the log"
    backup, backup_wal = backup_paths(ledger.path)
    copy_ledger(ledger.path, backup)  # a backup is a ledger copy: the file, and its log beside it
    original = ledger.path.read_bytes()
    with open(ledger.path, "r+b") as file:  # what the checkpoint in progress has written so far
        file.seek(12288)
        file.write(os.urandom(8192))
    torn = ledger.path.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(ledger.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert restore_interrupted_checkpoint(ledger.path) is False
        assert backup.exists() and ledger.path.read_bytes() == torn
    finally:
        holder.kill()
        holder.wait()

    assert restore_interrupted_checkpoint(ledger.path) is True
    assert not backup.exists() and not backup_wal.exists()
    assert ledger.path.read_bytes() == original
    assert ledger.verify().ok and ledger.head()[0] == 2


def test_a_checkpoint_that_cannot_copy_the_file_keeps_the_commit_and_leaves_no_backup(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import govern.ledger as ledger_module

    ledger.append([snapshot_event(0)])

    def disk_full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_module, "CHECKPOINT_WAL_BYTES", 0)
    monkeypatch.setattr(checkpoints.shutil, "copyfileobj", disk_full)
    with caplog.at_level(logging.WARNING, logger="govern.ledger"):
        recorded = ledger.append([snapshot_event(1)])

    assert [event.seq for event in recorded] == [2]
    assert "was not checkpointed" in caplog.text and "No space left on device" in caplog.text
    assert leftovers(ledger.path) == []
    assert wal_size(ledger.path) > 0, "the commit is still in the log"
    assert ledger.verify().ok and ledger.head()[0] == 2


def test_a_reader_who_cannot_write_is_told_who_can_restore_the_backup(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.append([snapshot_event(1)])
    backup, _ = backup_paths(ledger.path)
    shutil.copy2(ledger.path, backup)
    real_open = checkpoints.os.open

    def read_only_user(path: object, flags: int, *args: object) -> int:
        if Path(str(path)) == ledger.path and flags & checkpoints.os.O_RDWR:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(checkpoints.os, "open", read_only_user)

    with pytest.raises(LedgerError, match="interrupted, and restoring its backup .* needs write access"):
        ledger.head()
    assert backup.exists()
