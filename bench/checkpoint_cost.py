"""What a checkpoint of the DuckDB file costs as the file grows: the backup that makes it crash-safe.

    python -m bench.checkpoint_cost [--sizes 1,10] [--changed 40] [--dir DIR]

`govern.checkpoints.checkpoint_behind_backup` backs the ledger file (and its write-ahead log) up before every
checkpoint, once about twenty one-event commits have collected in the log. The first checkpoint of a ledger
copies the file whole (`_copy_durably`: read, write, fsync, rename); every later one brings the copy kept since
(the base) up to the file with `sync_blocks`, which reads each block's 8-byte checksum in both files and copies
only the blocks that differ. This times both on files of the given sizes in GiB, laid out as DuckDB lays out its
file and filled with incompressible bytes, with `--changed` blocks rewritten between checkpoints (a one-event
checkpoint of a 1,000,000-event ledger rewrites about 35), once with both files in the page cache and once with
them dropped from it (`posix_fadvise`). Not part of `python -m bench`: it writes 2 x 10 GiB.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from govern.checkpoints import HEADER_BYTES, STORAGE_VERSIONS, _copy_durably, sync_blocks

BLOCK = 262144
CHUNK = 256 * BLOCK


def make_file(path: Path, gib: int) -> int:
    """A file shaped like DuckDB's: its header, then `gib` GiB of blocks. Returns the number of blocks."""
    header = bytearray(HEADER_BYTES)
    header[8:12] = b"DUCK"
    header[12:20] = min(STORAGE_VERSIONS).to_bytes(8, "little")
    blocks = gib * (1 << 30) // BLOCK
    with path.open("wb") as out:
        out.write(header)
        for _ in range(blocks * BLOCK // CHUNK):
            out.write(os.urandom(CHUNK))
        out.flush()
        os.fsync(out.fileno())
    return blocks


def rewrite_blocks(path: Path, blocks: int, changed: int, rng: random.Random) -> None:
    """What a checkpoint does to the file: new contents, each with its own checksum, in `changed` blocks."""
    with path.open("r+b") as file:
        for block in rng.sample(range(blocks), changed):
            file.seek(HEADER_BYTES + block * BLOCK)
            file.write(os.urandom(BLOCK))
        file.flush()
        os.fsync(file.fileno())


def drop_from_cache(*paths: Path) -> None:
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def timed_sync(ledger: Path, base: Path) -> float:
    with ledger.open("rb") as source:
        started = time.perf_counter()
        assert sync_blocks(source, base, BLOCK), "the file's layout was not recognised"
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10", help="file sizes in GiB, comma-separated (default 1,10)")
    parser.add_argument("--changed", type=int, default=40, help="blocks a checkpoint rewrites (default 40)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default a temp folder)")
    args = parser.parse_args(argv)
    rng = random.Random(13)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="govern-checkpoint-cost-") as folder:
        for gib in (int(size) for size in args.sizes.split(",")):
            ledger, base = Path(folder) / "ledger.duckdb", Path(folder) / "ledger.duckdb.checkpoint-backup.base"
            blocks = make_file(ledger, gib)
            with ledger.open("rb") as source:
                started = time.perf_counter()
                _copy_durably(source, base)
                whole = time.perf_counter() - started
            rewrite_blocks(ledger, blocks, args.changed, rng)
            warm = timed_sync(ledger, base)
            rewrite_blocks(ledger, blocks, args.changed, rng)
            drop_from_cache(ledger, base)
            cold = timed_sync(ledger, base)
            print(f"{gib} GiB ({blocks} blocks): first checkpoint, whole copy {whole:.2f} s; every later one, "
                  f"{args.changed} blocks changed: {warm * 1000:.0f} ms in the page cache, "
                  f"{cold * 1000:.0f} ms from disk")  # fmt: skip
            ledger.unlink()
            base.unlink()


if __name__ == "__main__":
    main()
