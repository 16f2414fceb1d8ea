"""Git facts through GitPython: commit, branch, remote, identity, dirtiness."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from govern.errors import GovernError, NoCommitYet, NotAGitRepository


@dataclass(frozen=True)
class GitState:
    commit: str
    branch: str | None
    remote_url: str | None
    dirty_paths: tuple[str, ...]


def _repo(root: Path):
    import git

    try:
        return git.Repo(root, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise NotAGitRepository(f"{root} is not a git repository: run `git init` first") from None


def state(root: Path) -> GitState:
    """The commit HEAD points at, with branch, remote and uncommitted tracked changes."""
    repo = _repo(root)
    try:
        commit = repo.head.commit.hexsha
    except ValueError:
        raise NoCommitYet() from None
    branch = None if repo.head.is_detached else repo.active_branch.name
    return GitState(commit=commit, branch=branch, remote_url=remote_url(root), dirty_paths=tuple(changed_paths(root)))


def changed_paths(root: Path) -> list[str]:
    """Tracked files with uncommitted changes (staged or not); untracked files do not count."""
    output = _repo(root).git.status("--porcelain=v1", "-z", "--untracked-files=no")
    paths = []
    entries = iter(output.split("\0"))
    for entry in entries:
        if not entry:
            continue
        status, path = entry[:2], entry[3:]
        if "R" in status or "C" in status:
            next(entries, None)  # the rename's source path follows
        paths.append(path)
    return paths


def uncommitted(root: Path, paths: Iterable[str]) -> list[str]:
    """Those of `paths` that are new (untracked, not ignored) or changed since HEAD."""
    wanted = [p for p in paths if (root / p).exists() or _is_tracked(root, p)]
    if not wanted:
        return []
    output = _repo(root).git.status("--porcelain=v1", "-z", "--untracked-files=all", "--", *wanted)
    return [entry[3:] for entry in output.split("\0") if len(entry) > 3]


def _is_tracked(root: Path, path: str) -> bool:
    return bool(_repo(root).git.ls_files("--", path))


def remote_url(root: Path) -> str | None:
    """The URL of `origin` (or the first remote), with any credentials removed."""
    repo = _repo(root)
    remotes = {remote.name: remote for remote in repo.remotes}
    remote = remotes.get("origin") or next(iter(remotes.values()), None)
    if remote is None:
        return None
    url = next(iter(remote.urls), None)
    return re.sub(r"^(\w+://)[^/@]+@", r"\1", url) if url else None


def identity(root: Path) -> str | None:
    """`Name <email>` from git config, or None when git has no identity."""
    reader = _repo(root).config_reader()
    name = reader.get_value("user", "name", default="") or ""
    email = reader.get_value("user", "email", default="") or ""
    if not name and not email:
        return None
    return f"{name} <{email}>".strip() if email else str(name)


def last_commit_time(root: Path, path: str) -> datetime | None:
    """When `path` was last committed, or None when it never was."""
    repo = _repo(root)
    try:
        commit = next(repo.iter_commits(paths=path, max_count=1), None)
    except Exception:  # noqa: BLE001 - an unborn branch has no history at all
        return None
    return commit.committed_datetime if commit else None


def commit_paths(root: Path, paths: Iterable[str], message: str) -> str:
    """Stage exactly `paths` and commit them; returns the new commit sha."""
    import git

    repo = _repo(root)
    try:
        repo.git.add("--", *paths)
        repo.git.commit("-m", message, "--", *paths)
    except git.GitCommandError as error:
        raise GovernError(f"git commit failed: {error.stderr.strip() or error}") from None
    return repo.head.commit.hexsha


def is_repository(path: Path) -> bool:
    import git

    try:
        git.Repo(path, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False
    return True
