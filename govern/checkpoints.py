"""Crash-safe checkpoints for the ledger's DuckDB file.

A DuckDB checkpoint rewrites its metadata blocks in place. A process killed
during that write (kill -9, the OOM killer, a cancelled CI job) leaves a block
whose checksum fails, and the file no longer opens: every event in it is out of
reach. govern therefore never lets DuckDB checkpoint on its own. Commits go to
the write-ahead log, which is append-only and drops a torn tail on replay, and
govern folds the log into the file itself, behind a copy of both taken under
the write lock. If the checkpointing process dies, the next process to open
the ledger puts the copy back: the same events, in a file that opens.

The copy is the whole file. That is the only assumption this needs ("a file
and its log copied byte for byte under the write lock are a consistent
snapshot"); copying only the blocks DuckDB rewrites in place would need
DuckDB's block layout, which is not a public contract.

POSIX only: it uses the same fcntl lock as DuckDB to tell a live
checkpoint from a dead one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from govern.errors import LedgerError

BACKUP_SUFFIX = ".checkpoint-backup"


def wal_path(path: Path) -> Path:
    """DuckDB's write-ahead log for the database file at `path`."""
    return path.with_name(path.name + ".wal")


def backup_paths(path: Path) -> tuple[Path, Path]:
    """The copy of the file and of its log that guard a checkpoint in progress."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    return backup, backup.with_name(backup.name + ".wal")


def wal_size(path: Path) -> int:
    try:
        return wal_path(path).stat().st_size
    except FileNotFoundError:
        return 0


def checkpoint_behind_backup(path: Path, checkpoint: Callable[[], None], hold: contextlib.ExitStack) -> None:
    """Run `checkpoint` with a restorable copy of the file and its log in place.

    Call it while holding DuckDB's write connection (and so its file lock).
    POSIX drops a process's lock on a file when any descriptor of that file
    closes, so the descriptors opened here are closed by `hold`, which the
    caller exits only after the DuckDB connection has closed.

    If the copy cannot be made, nothing is checkpointed and the error is
    raised with no backup left behind. If `checkpoint` fails, the backup is
    kept: the next open restores it, which is correct whether or not the
    checkpoint got as far as writing.
    """
    backup, backup_wal = backup_paths(path)
    wal = wal_path(path)
    try:
        if wal.exists():
            _copy_durably(_held_reader(wal, hold), backup_wal)
        else:
            backup_wal.unlink(missing_ok=True)
        _copy_durably(_held_reader(path, hold), backup)  # from here on the backup is complete
        _sync_directory(path.parent)
    except OSError:
        for leftover in (backup, backup_wal, _temporary(backup), _temporary(backup_wal)):
            leftover.unlink(missing_ok=True)
        raise
    checkpoint()
    backup.unlink()
    backup_wal.unlink(missing_ok=True)
    _sync_directory(path.parent)


def restore_interrupted_checkpoint(path: Path) -> bool:
    """Put back the copy a dead checkpoint left behind; True if one was restored.

    A copy with a live owner (its process still holds the file lock) is left
    alone: DuckDB's own lock makes the caller wait for that checkpoint to end.
    """
    backup, backup_wal = backup_paths(path)
    if not backup.exists():
        return False
    try:
        descriptor = os.open(path, os.O_RDWR)
    except PermissionError:
        raise LedgerError(
            f"The ledger {path} has a checkpoint that was interrupted, and restoring its backup "
            f"({backup.name}) needs write access: run any govern command as a user who can write the ledger"
        ) from None
    try:
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        if not backup.exists():  # its owner finished between our look and our lock
            return False
        with open(backup, "rb") as source:
            _overwrite(source, descriptor)
        wal = wal_path(path)
        if backup_wal.exists():
            with open(backup_wal, "rb") as source:
                _copy_durably(source, wal)
        else:
            wal.unlink(missing_ok=True)
        backup.unlink()
        backup_wal.unlink(missing_ok=True)
        _sync_directory(path.parent)
        return True
    finally:
        os.close(descriptor)


def _held_reader(path: Path, hold: contextlib.ExitStack) -> BinaryIO:
    return hold.enter_context(open(path, "rb"))


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _copy_durably(source: BinaryIO, target: Path) -> None:
    """Copy an open file to `target` through a temporary name, so `target` is never partial."""
    temporary = _temporary(target)
    source.seek(0)
    with open(temporary, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, target)


def _overwrite(source: BinaryIO, descriptor: int) -> None:
    """Write `source` over the locked file in place: its inode, and so its lock, stay the same."""
    offset = 0
    while chunk := source.read(1 << 20):
        view = memoryview(chunk)
        while view:
            written = os.pwrite(descriptor, view, offset)
            offset += written
            view = view[written:]
    os.ftruncate(descriptor, offset)
    os.fsync(descriptor)


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
