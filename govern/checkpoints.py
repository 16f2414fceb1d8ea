"""Crash-safe checkpoints for the ledger's DuckDB file.

A DuckDB checkpoint rewrites its metadata blocks in place. A process killed
during that write (kill -9, the OOM killer, a cancelled CI job) leaves a block
whose checksum fails, and the file no longer opens: every event in it is out of
reach. govern therefore never lets DuckDB checkpoint on its own. Commits go to
the write-ahead log, which is append-only and drops a torn tail on replay, and
govern folds the log into the file itself, behind a copy of both taken under
the write lock. If the checkpointing process dies, the next process to open
the ledger puts the copy back: the same events, in a file that opens.

The copy is of the whole file, so nothing depends on which blocks DuckDB
rewrites in place. What keeps its cost from growing with the ledger is that
the copy is kept between checkpoints (the *base*) and brought up to the file
block by block: DuckDB starts every block with the checksum of its contents,
so a block whose first eight bytes match the base's is the same block, and
only the few blocks a checkpoint wrote are copied. A file in a storage format
this module does not know is copied whole, as before.

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
# DuckDB's file: a 4 KiB main header and two 4 KiB database headers, then blocks of the database's block size,
# each starting with an 8-byte checksum of the rest. The storage versions whose layout this was checked against
# (tests/test_checkpoints.py fails when DuckDB writes another, and until then such a file is copied whole).
HEADER_BYTES = 3 * 4096
CHECKSUM_BYTES = 8
STORAGE_VERSIONS = frozenset({999})
UNWRITTEN = bytes(CHECKSUM_BYTES)


def wal_path(path: Path) -> Path:
    """DuckDB's write-ahead log for the database file at `path`."""
    return path.with_name(path.name + ".wal")


def backup_paths(path: Path) -> tuple[Path, Path]:
    """The copy of the file and of its log that guard a checkpoint in progress."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    return backup, backup.with_name(backup.name + ".wal")


def base_path(path: Path) -> Path:
    """The copy of the file kept between checkpoints, which the next checkpoint updates block by block."""
    return path.with_name(path.name + BACKUP_SUFFIX + ".base")


def wal_size(path: Path) -> int:
    try:
        return wal_path(path).stat().st_size
    except FileNotFoundError:
        return 0


def checkpoint_behind_backup(
    path: Path, checkpoint: Callable[[], None], hold: contextlib.ExitStack, block_size: int | None = None
) -> None:
    """Run `checkpoint` with a restorable copy of the file and its log in place.

    Call it while holding DuckDB's write connection (and so its file lock).
    POSIX drops a process's lock on a file when any descriptor of that file
    closes, so the descriptors opened here are closed by `hold`, which the
    caller exits only after the DuckDB connection has closed.

    With the database's `block_size`, the base left by the last checkpoint is
    brought up to the file by copying only the blocks that differ, then renamed
    to the backup; without it, or with no base yet, the file is copied whole.

    If the copy cannot be made, nothing is checkpointed and the error is
    raised with no backup left behind. If `checkpoint` fails, the backup is
    kept: the next open restores it, which is correct whether or not the
    checkpoint got as far as writing.
    """
    backup, backup_wal = backup_paths(path)
    base = base_path(path)
    wal = wal_path(path)
    try:
        if wal.exists():
            _copy_durably(_held_reader(wal, hold), backup_wal)
        else:
            backup_wal.unlink(missing_ok=True)
        source = _held_reader(path, hold)
        if block_size is None or not sync_blocks(source, base, block_size):
            _copy_durably(source, base)
        os.replace(base, backup)  # from here on the backup is complete
        _sync_directory(path.parent)
    except OSError:
        for leftover in (backup, backup_wal, base, _temporary(base), _temporary(backup_wal)):
            leftover.unlink(missing_ok=True)
        raise
    checkpoint()
    os.replace(backup, base)  # the file has moved on; the next checkpoint copies only what it wrote
    backup_wal.unlink(missing_ok=True)
    _sync_directory(path.parent)


def sync_blocks(source: BinaryIO, base: Path, block_size: int) -> bool:
    """Make `base` byte for byte the file open as `source`, writing only the blocks whose checksum differs.

    False, with `base` untouched, where there is no base or the file is not in a layout known here. Bodies are
    written and synced before checksums, so a base torn by a crash keeps an old checksum wherever its body may
    be new, and the next call copies that block again.
    """
    if not base.exists():
        return False
    reader = source.fileno()
    size = os.fstat(reader).st_size
    header = os.pread(reader, HEADER_BYTES, 0)
    known = header[8:12] == b"DUCK" and int.from_bytes(header[12:20], "little") in STORAGE_VERSIONS
    if not known or size < HEADER_BYTES or (size - HEADER_BYTES) % block_size:
        return False
    descriptor = os.open(base, os.O_RDWR)
    try:
        changed = _changed_blocks(reader, descriptor, size, block_size)
        for offset, _ in changed:
            _write_at(descriptor, os.pread(reader, block_size, offset)[CHECKSUM_BYTES:], offset + CHECKSUM_BYTES)
        os.ftruncate(descriptor, size)
        os.fsync(descriptor)
        for offset, checksum in changed:
            _write_at(descriptor, checksum, offset)
        _write_at(descriptor, header, 0)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return True


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
        os.replace(backup, base_path(path))  # it is the file now: the next checkpoint starts from it
        backup_wal.unlink(missing_ok=True)
        _sync_directory(path.parent)
        return True
    finally:
        os.close(descriptor)


def _changed_blocks(reader: int, descriptor: int, size: int, block_size: int) -> list[tuple[int, bytes]]:
    """The offsets and checksums of the file's blocks whose checksum the base does not have at the same offset."""
    for random_reads in (reader, descriptor):  # eight bytes a block: read-ahead would read the whole file
        os.posix_fadvise(random_reads, 0, 0, os.POSIX_FADV_RANDOM)
    changed = []
    for offset in range(HEADER_BYTES, size, block_size):
        checksum = os.pread(reader, CHECKSUM_BYTES, offset)
        # eight zero bytes are a block DuckDB never wrote (a hole), not a checksum: such a block is copied
        if checksum == UNWRITTEN or os.pread(descriptor, CHECKSUM_BYTES, offset) != checksum:
            changed.append((offset, checksum))
    return changed


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
        _write_at(descriptor, chunk, offset)
        offset += len(chunk)
    os.ftruncate(descriptor, offset)
    os.fsync(descriptor)


def _write_at(descriptor: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, offset)
        offset += written
        view = view[written:]


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
