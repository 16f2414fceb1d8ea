"""What a checkpoint of the DuckDB file costs as the file grows: the backup copy that makes it crash-safe.

    python -m bench.checkpoint_cost [--sizes 1,10] [--dir DIR]

`govern.checkpoints.checkpoint_behind_backup` copies the ledger file (and its write-ahead log) before every
checkpoint, once about twenty one-event commits have collected in the log. The copy is O(file size); this
times exactly that copy (`_copy_durably`: read, write, fsync, rename) on files of the given sizes in GiB,
filled with incompressible bytes so that no file system can skip them. Not part of `python -m bench`: writing
10 GiB twice takes minutes and 20 GiB of disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from govern.checkpoints import _copy_durably

CHUNK = 64 << 20


def make_file(path: Path, gib: int) -> None:
    block = os.urandom(CHUNK)
    with path.open("wb") as out:
        for _ in range(gib * (1 << 30) // CHUNK):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10", help="file sizes in GiB, comma-separated (default 1,10)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="govern-checkpoint-cost-") as folder:
        for gib in (int(size) for size in args.sizes.split(",")):
            ledger, backup = Path(folder) / "ledger.duckdb", Path(folder) / "ledger.duckdb.checkpoint-backup"
            make_file(ledger, gib)
            with contextlib.ExitStack(), ledger.open("rb") as source:
                started = time.perf_counter()
                _copy_durably(source, backup)
                seconds = time.perf_counter() - started
            print(f"{gib} GiB: backup copy before a checkpoint {seconds:.2f} s "
                  f"({gib * 1024 / seconds:.0f} MiB/s); per one-event commit, amortised over ~20: "
                  f"{seconds / 20 * 1000:.0f} ms")  # fmt: skip
            ledger.unlink()
            backup.unlink()


if __name__ == "__main__":
    main()
