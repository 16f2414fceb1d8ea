"""Files a job's code wrote, read as data: reached without following links (a job's workspace may hold links to
the ledger or to the server's secrets), only as regular files, never more than a bound. What a job reports and
the lock it leaves are both read this way."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from govern.errors import InvalidInput


class ReportRefused(InvalidInput):
    """The facts a training reported were refused: nothing was recorded."""


def open_inside(folder: Path, relative: str) -> int:
    """A file descriptor for the regular file `folder/relative`, reached without following any link (a job's
    workspace may hold links to the ledger or to the server's secrets) and without blocking on a FIFO."""
    parts = PurePosixPath(relative).parts
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = step
        handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ReportRefused(f"{relative} in the job's workspace is not a plain file ({error.strerror})") from None
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        os.close(handle)
        raise ReportRefused(f"{relative} in the job's workspace is not a plain file")
    return handle


def read_inside(folder: Path, relative: str, limit: int) -> bytes | None:
    """At most `limit` + 1 bytes of the regular file `folder/relative` (one more than the bound, so the caller sees
    it was passed), or None when there is no such file."""
    try:
        handle = open_inside(folder, relative)
    except FileNotFoundError:
        return None
    with os.fdopen(handle, "rb") as stream:
        return stream.read(limit + 1)
