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
from govern.storage.duckdb_files import CHECKPOINT_WAL_BYTES
from govern.storage.duckdb_log import Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.duckdb", lock_timeout=5)


def leftovers(path: Path) -> list[str]:
    """Backups of a checkpoint in progress (the base kept between checkpoints is not one)."""
    base = checkpoints.base_path(path).name
    return sorted(p.name for p in path.parent.iterdir() if checkpoints.BACKUP_SUFFIX in p.name and p.name != base)


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
    import govern.storage.duckdb_log as ledger_module
    from govern.envelope import PendingEvent, utc_now
    from govern.events import DatasetSnapshotted

    real, calls = ledger_module.checkpoint_behind_backup, []

    def tear_then_die(path, checkpoint, hold, block_size):
        def torn():
            calls.append(1)
            if len(calls) < 3:
                return checkpoint()
            # What a kill -9 during DuckDB's in-place metadata write leaves: a block whose checksum fails.
            with open(path, "r+b") as file:
                file.seek(12288)
                file.write(os.urandom(8192))
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, torn, hold, block_size)

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

    with caplog.at_level(logging.WARNING, logger="govern.storage.duckdb_log"):
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
    import govern.storage.duckdb_log as ledger_module

    ledger.append([snapshot_event(0)])

    def disk_full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_module, "CHECKPOINT_WAL_BYTES", 0)
    monkeypatch.setattr(checkpoints.shutil, "copyfileobj", disk_full)
    with caplog.at_level(logging.WARNING, logger="govern.storage.duckdb_log"):
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


def _block_size(ledger: Ledger) -> int:
    return ledger.query("SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()")[1][0][
        0
    ]


def test_a_new_ledger_is_in_a_storage_layout_the_block_level_backup_knows(ledger: Ledger) -> None:
    """When DuckDB writes another storage version this fails, and until then govern copies such files whole."""
    ledger.append([snapshot_event(1)])
    header = ledger.path.read_bytes()[: checkpoints.HEADER_BYTES]
    assert header[8:12] == b"DUCK"
    assert int.from_bytes(header[12:20], "little") in checkpoints.STORAGE_VERSIONS
    assert (ledger.path.stat().st_size - checkpoints.HEADER_BYTES) % _block_size(ledger) == 0


def _checking_backups(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, at each checkpoint's start, whether its backup is byte for byte the file it guards."""
    import govern.storage.duckdb_log as ledger_module

    real, seen = ledger_module.checkpoint_behind_backup, []

    def checked(path: Path, checkpoint, hold, block_size) -> None:  # noqa: ANN001
        def compare_then_checkpoint() -> None:
            backup, _ = backup_paths(path)
            seen.append(backup.read_bytes() == path.read_bytes())
            checkpoint()

        real(path, compare_then_checkpoint, hold, block_size)

    monkeypatch.setattr(ledger_module, "checkpoint_behind_backup", checked)
    monkeypatch.setattr(ledger_module, "CHECKPOINT_WAL_BYTES", 0)  # every write checkpoints
    return seen


@pytest.mark.slow  # a 20 MB ledger: about 5 s
def test_after_the_first_checkpoint_each_copies_only_the_blocks_that_changed_and_backs_up_the_whole_file(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    import secrets

    for batch in range(4):  # incompressible payloads: a file of some eighty blocks
        ledger.append(
            [snapshot_event(i, source=secrets.token_hex(1500)) for i in range(batch * 2500, batch * 2500 + 2500)]
        )
    seen = _checking_backups(monkeypatch)
    ledger.append([snapshot_event(10_000)])
    assert seen == [True] and checkpoints.base_path(ledger.path).exists()

    written: list[int] = []
    real_write_at = checkpoints._write_at

    def counting(descriptor: int, data: bytes, offset: int) -> None:
        written.append(len(data))
        real_write_at(descriptor, data, offset)

    monkeypatch.setattr(checkpoints, "_write_at", counting)
    monkeypatch.setattr(checkpoints, "_copy_durably", _refuse_whole_copies(checkpoints._copy_durably, ledger.path))
    per_checkpoint = []
    for i in range(10_001, 10_031):
        before = sum(written)
        ledger.append([snapshot_event(i)])
        per_checkpoint.append(sum(written) - before)
    ledger.append([snapshot_event(i, source=secrets.token_hex(1500)) for i in range(20_000, 21_000)])  # it grows
    ledger.append([snapshot_event(21_000)])
    assert len(seen) == 33 and all(seen), "every checkpoint ran behind an exact copy of the file"
    size = ledger.path.stat().st_size
    assert max(per_checkpoint) < size / 3, f"a one-event checkpoint wrote {max(per_checkpoint)} of {size} bytes"
    assert ledger.verify().ok and ledger.head()[0] == 11_032


def _refuse_whole_copies(real, ledger_path: Path):  # noqa: ANN001, ANN202
    """The log may be copied whole; the ledger file itself must not be, once a base exists."""

    def copy(source, target: Path) -> None:  # noqa: ANN001
        assert target != checkpoints.base_path(ledger_path), "the ledger file was copied whole"
        real(source, target)

    return copy


def test_a_base_torn_in_the_middle_of_its_update_is_repaired_by_the_next_checkpoint(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.append([snapshot_event(i, source="x" * 2000) for i in range(2000)])
    seen = _checking_backups(monkeypatch)
    ledger.append([snapshot_event(2000)])
    base = checkpoints.base_path(ledger.path)
    block = _block_size(ledger)
    with open(base, "r+b") as file:  # a crash after some bodies were written and before their checksums
        for k in (0, 3, 5):
            file.seek(checkpoints.HEADER_BYTES + k * block + checkpoints.CHECKSUM_BYTES)
            file.write(os.urandom(block - checkpoints.CHECKSUM_BYTES))
            file.seek(checkpoints.HEADER_BYTES + k * block)
            file.write(b"\0" * checkpoints.CHECKSUM_BYTES)
    ledger.append([snapshot_event(2001)])
    assert seen == [True, True]


def test_a_block_the_file_never_wrote_is_copied_even_where_the_base_has_zeros_at_its_start(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Zeros are a hole, not a checksum: a base torn while growing can hold zeros before a body that differs."""
    ledger.append([snapshot_event(1)])
    block = _block_size(ledger)
    header = ledger.path.read_bytes()[: checkpoints.HEADER_BYTES]
    file, base = tmp_path / "file.duckdb", tmp_path / "base"
    file.write_bytes(header + bytes(block))
    base.write_bytes(header + bytes(checkpoints.CHECKSUM_BYTES) + os.urandom(block - checkpoints.CHECKSUM_BYTES))
    with open(file, "rb") as source:
        assert checkpoints.sync_blocks(source, base, block) is True
    assert base.read_bytes() == file.read_bytes()


def test_a_file_in_an_unknown_storage_layout_is_copied_whole(ledger: Ledger, tmp_path: Path) -> None:
    ledger.append([snapshot_event(1)])
    base = checkpoints.base_path(ledger.path)
    shutil.copy2(ledger.path, base)
    with open(ledger.path, "rb") as source:
        assert checkpoints.sync_blocks(source, base, 262144 + 4096) is False, "blocks of another size"
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"\0" * 8 + b"SQLi" + b"\0" * (checkpoints.HEADER_BYTES + 262144))
    with open(foreign, "rb") as source:
        assert checkpoints.sync_blocks(source, base, 262144) is False
    assert base.read_bytes() == ledger.path.read_bytes(), "the base was left untouched"
