"""Find the exact file of a registered model version, checked against its recorded sha256."""

from __future__ import annotations

from pathlib import Path

from govern.adapters import dvc as dvc_adapter
from govern.errors import GovernError
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


def from_mlflow(
    tracking_uri: str, run_id: str, model: str, path: str, md5: str | None, sha256: str | None, scratch: Path
) -> Path:
    """The model logged with the run (`models/NAME/FILE`, or a directory's files under `models/NAME`),
    downloaded into `scratch` and checked against the recorded sha256.

    Raises MirrorError when MLflow cannot give it, GovernError when what it gives is not the recorded file.
    """
    from govern.adapters import mlflow as mlflow_adapter

    downloaded = mlflow_adapter.download_model(tracking_uri, run_id, model, scratch)
    directory = bool(md5 and md5.endswith(".dir"))
    candidate = downloaded / Path(path).name if downloaded.is_dir() and not directory else downloaded
    checked = digest(candidate)
    if checked is None or checked.sha256 != sha256:
        raise GovernError(f"The file MLflow holds for {model} (run {run_id}) does not match its recorded sha256")
    return candidate
