"""Git facts through GitPython: commit, branch, remote, identity, dirtiness."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from govern.errors import GovernError, InvalidInput, NoCommitYet, NotAGitRepository
from govern.redaction import redact


@dataclass(frozen=True)
class GitState:
    commit: str
    branch: str | None
    remote_url: str | None
    dirty_paths: tuple[str, ...]


def _repo(root: Path):
    import git

    try:
        return git.Repo(root, search_parent_directories=False)  # a bare repository too
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
    return redact(url) if url else None


def identity(root: Path) -> str | None:
    """`Name <email>` from git config, or None when git has no identity.

    Asked of the git CLI, not GitPython: every write needs the actor, and importing GitPython costs
    more than the whole of a small command.
    """
    found = subprocess.run(
        ["git", "config", "--get-regexp", r"^user\.(name|email)$"], cwd=root, capture_output=True, text=True
    )
    values = dict(line.partition(" ")[::2] for line in found.stdout.splitlines())
    name, email = values.get("user.name", ""), values.get("user.email", "")
    if not name and not email:
        return None
    return f"{name} <{email}>".strip() if email else name


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


@dataclass(frozen=True)
class CommitDetails:
    sha: str
    author: str
    authored_at: datetime
    committer: str
    message: str
    signature: str  # git's %G? letter explained: "good", "none", ...


SIGNATURE_STATUS = {
    "G": "good signature",
    "B": "bad signature",
    "U": "good signature, unknown validity",
    "X": "good signature, expired",
    "Y": "good signature, expired key",
    "R": "good signature, revoked key",
    "E": "signature cannot be checked (missing key)",
    "N": "not signed",
}


def commit_details(root: Path, sha: str) -> CommitDetails | None:
    """Author, date, message and signature status of a commit, or None when it is not in this clone."""
    import git

    try:
        output = _repo(root).git.show("-s", "--format=%H%x00%an <%ae>%x00%aI%x00%cn <%ce>%x00%G?%x00%B", sha)
    except git.GitCommandError:
        return None
    full, author, date, committer, signature, message = output.split("\0", 5)
    return CommitDetails(
        full,
        author,
        datetime.fromisoformat(date),
        committer,
        message.strip(),
        SIGNATURE_STATUS.get(signature, signature),
    )


def blob_hashes(root: Path, sha: str, paths: Iterable[str]) -> dict[str, str]:
    """Git blob ids of files at a commit (what `git ls-tree` prints)."""
    import git

    wanted = list(paths)
    if not wanted:
        return {}
    try:
        output = _repo(root).git.ls_tree("-r", sha, "--", *wanted)
    except git.GitCommandError:
        return {}
    found = {}
    for line in output.splitlines():
        meta, path = line.split("\t", 1)
        found[path] = meta.split()[2]
    return found


def commits_touching(root: Path, paths: Iterable[str], limit: int = 200) -> list[str]:
    """The commits reachable from HEAD that changed any of `paths`, newest first, at most `limit`."""
    import git

    wanted = list(paths)
    try:
        output = _repo(root).git.log(f"--max-count={limit}", "--format=%H", "--", *wanted)
    except (git.GitCommandError, ValueError):
        return []  # an unborn branch has no history
    return output.split()


def tracked_named(root: Path, name: str, rev: str = "HEAD") -> list[str]:
    """Files called `name`, in any directory, committed at `rev` (a bare repository too), sorted."""
    import git

    try:
        output = _repo(root).git.ls_tree("-r", "--name-only", rev)
    except (git.GitCommandError, ValueError):
        return []
    return sorted(path for path in output.splitlines() if path.rsplit("/", 1)[-1] == name)


def files_at(root: Path, commits: list[str], paths: list[str]) -> dict[str, dict[str, str]]:
    """The text of each of `paths` at each commit (those it has), read by one `git cat-file --batch`."""
    specs = [f"{sha}:{path}" for sha in commits for path in paths]
    if not specs:
        return {}
    try:
        done = subprocess.run(
            ["git", "cat-file", "--batch"], cwd=root, input="\n".join(specs).encode() + b"\n",
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, dict[str, str]] = {}
    output, at = done.stdout, 0
    for spec in specs:
        end = output.index(b"\n", at)
        header = output[at:end].split()
        at = end + 1
        if len(header) != 3 or header[1] != b"blob":
            continue  # "<spec> missing": the file is not in that commit
        size = int(header[2])
        sha, path = spec.split(":", 1)
        found.setdefault(sha, {})[path] = output[at : at + size].decode("utf-8", errors="replace")
        at += size + 1
    return found


@dataclass(frozen=True)
class Tag:
    name: str
    commit: str
    tagged_at: datetime | None
    tagger: str | None = None
    message: str = ""
    object_id: str = ""


def tags(root: Path, pattern: str) -> list[Tag]:
    """Tags matching a glob, with the commit they point at and the tagger date of annotated ones."""
    # The git CLI directly: audit commands call this, and must not pay for importing GitPython.
    done = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "for-each-ref",
            "--format=%(refname:strip=2)%00%(*objectname)%00%(objectname)%00%(taggerdate:iso-strict)%00"
            "%(taggername) %(taggeremail)%00%(contents:subject)%01",
            f"refs/tags/{pattern}",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise GovernError(f"git for-each-ref failed in {root}: {done.stderr.strip()}")
    output = done.stdout
    found = []
    for record in output.split("\x01"):
        record = record.strip("\n")
        if not record:
            continue
        name, peeled, direct, date, tagger, message = record.split("\0")
        found.append(
            Tag(
                name,
                peeled or direct,
                datetime.fromisoformat(date) if date else None,
                tagger.strip() or None,
                message.strip(),
                direct,
            )
        )
    return found


def hooks_dir(root: Path) -> Path:
    """Where git looks for this repository's hooks (respects core.hooksPath)."""
    path = Path(_repo(root).git.rev_parse("--git-path", "hooks"))
    return path if path.is_absolute() else root / path


def resolve(root: Path, rev: str) -> str:
    """The full sha of a revision, or a clear error."""
    import git

    try:
        return _repo(root).git.rev_parse("--verify", f"{rev}^{{commit}}")
    except git.GitCommandError:
        raise InvalidInput(f"{rev!r} is not a commit of {root}: give a branch, tag or sha that exists") from None


def checkout_copy(repository: Path, target: Path, commit: str) -> None:
    """A separate, detached checkout of `commit` at `target`, sharing the repository's objects.

    A clone rather than a git worktree: DVC does not resolve its index inside
    linked worktrees. `--shared` borrows the objects, so nothing is copied.
    """
    import git

    try:
        clone = git.Repo.clone_from(str(repository), str(target), shared=True, no_checkout=True)
        clone.git.checkout("--detach", commit)
    except git.GitCommandError as error:
        raise GovernError(f"Could not check out {commit[:12]}: {error.stderr.strip() or error}") from None


def create_tag(root: Path, name: str, commit: str, message: str, tagged_at: datetime) -> None:
    """An annotated tag on `commit` whose tagger date is `tagged_at`."""
    import git

    stamp = f"{int(tagged_at.timestamp())} +0000"
    repo = _repo(root)
    try:
        with repo.git.custom_environment(GIT_COMMITTER_DATE=stamp):
            repo.git.tag("-a", name, commit, "-m", message)
    except git.GitCommandError as error:
        raise GovernError(f"git tag {name} failed: {error.stderr.strip() or error}") from None


def is_repository(path: Path) -> bool:
    import git

    try:
        git.Repo(path, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False
    return True


def _plumb(root: Path, args: list[str], data: bytes | None = None, env: dict[str, str] | None = None) -> str:
    import os

    done = subprocess.run(
        ["git", *args], cwd=root, input=data, capture_output=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise GovernError(f"git {args[0]} failed: {redact(said[-1]) if said else f'exit {done.returncode}'}")
    return done.stdout.decode("utf-8", errors="replace").strip()


def valid_branch(root: Path, name: str) -> bool:
    """Whether `name` is a branch name git accepts."""
    done = subprocess.run(["git", "check-ref-format", "--branch", name], cwd=root, capture_output=True, timeout=30)
    return done.returncode == 0 and not name.startswith("-")


def commit_onto(
    root: Path, base: str, files: dict[str, bytes], branch: str, message: str, name: str, email: str
) -> str:
    """A commit whose tree is `base`'s with `files` written, on the new branch `branch`; its sha.

    Built with plumbing in `root` (a temporary index, `commit-tree`, `update-ref`): no work tree is touched and no
    hook or configuration of another checkout runs, so files a sandboxed job wrote are only ever data here.
    """
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="govern-index-") as folder:
        env = {"GIT_INDEX_FILE": os.path.join(folder, "index")}
        _plumb(root, ["read-tree", base], env=env)
        for path, data in sorted(files.items()):
            blob = _plumb(root, ["hash-object", "-w", "--stdin"], data=data)
            _plumb(root, ["update-index", "--add", "--cacheinfo", f"100644,{blob},{path}"], env=env)
        tree = _plumb(root, ["write-tree"], env=env)
    existing = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}"], cwd=root, capture_output=True,
        text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    if existing and _plumb(root, ["rev-parse", f"{existing}^{{tree}}", f"{existing}^@"]).split() == [tree, base]:
        return existing  # this very commit, made before a crash: the job's retry takes it
    who = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    sha = _plumb(root, ["commit-tree", tree, "-p", base, "-F", "-"], data=message.encode("utf-8"), env=who)
    _plumb(root, ["update-ref", f"refs/heads/{branch}", sha, ""])  # "": refused when the branch exists already
    return sha


def tracking_remote(root: Path) -> str | None:
    """The remote the checked-out branch tracks, else `origin`, else None (a repository with no remote)."""
    branch = subprocess.run(["git", "symbolic-ref", "-q", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    if branch.returncode == 0 and branch.stdout.strip():
        configured = subprocess.run(
            ["git", "config", "--get", f"branch.{branch.stdout.strip()}.remote"], cwd=root, capture_output=True,
            text=True,
        )  # fmt: skip
        if configured.returncode == 0 and configured.stdout.strip() not in ("", "."):
            return configured.stdout.strip()
    remotes = subprocess.run(["git", "remote"], cwd=root, capture_output=True, text=True).stdout.split()
    return "origin" if "origin" in remotes else None


def push_branch(root: Path, remote: str, branch: str, timeout: float = 300) -> str | None:
    """Push `branch` to `remote` as a new branch there: None when it landed, else why not (one line, redacted)."""
    import os

    try:
        done = subprocess.run(
            ["git", "push", "--porcelain", remote, f"refs/heads/{branch}:refs/heads/{branch}"], cwd=root,
            capture_output=True, text=True, timeout=timeout, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"git push to {remote} did not answer within {int(timeout)} s"
    if done.returncode == 0:
        return None
    said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    reason = next((line for line in said if "rejected" in line or "remote:" in line), said[-1] if said else "")
    return f"git push to {remote} was refused: {redact(reason) or f'exit {done.returncode}'}"
