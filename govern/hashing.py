"""Content digests of pipeline outputs: sha256 beside DVC's md5.

DVC records md5 only; regulators and MLflow's dataset digests want more, so
govern adds the sha256 of every output. A directory's digest is the sha256
of its manifest (one `sha256  relative/path` line per file, sorted), so it
changes when any file is renamed, added, removed or edited.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class Digest:
    sha256: str
    size: int
    nfiles: int


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest(path: Path) -> Digest | None:
    """The digest of a file or directory, or None when it does not exist."""
    if path.is_file():
        return Digest(file_sha256(path), path.stat().st_size, 1)
    if not path.is_dir():
        return None
    lines, size, count = [], 0, 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        lines.append(f"{file_sha256(file)}  {file.relative_to(path).as_posix()}\n")
        size += file.stat().st_size
        count += 1
    return Digest(hashlib.sha256("".join(lines).encode("utf-8")).hexdigest(), size, count)
