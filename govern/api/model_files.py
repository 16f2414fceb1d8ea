"""Find the exact file of a registered model version, checked against its recorded sha256."""

from __future__ import annotations

from pathlib import Path

from govern.adapters import dvc as dvc_adapter
from govern.hashing import digest, file_sha256


def local_copy(root: Path, path: str, md5: str | None, sha256: str | None) -> Path | None:
    """The workspace file when its sha256 matches, else the file in DVC's cache; None when neither is there."""
    workspace = root / path
    found = digest(workspace)
    if found is not None and found.sha256 == sha256:
        return workspace
    if md5 and not md5.endswith(".dir") and (root / ".dvc").is_dir():
        cached = dvc_adapter.cached_file(root, md5)
        if cached is not None and file_sha256(cached) == sha256:
            return cached
    return None
