"""Plain-git integration for teams without a CI service: a client pre-push hook, a server post-receive hook.

The client hook refuses a push whose pipeline is stale or whose dvc.lock is
not committed. The server hook answers the pusher at once: for each pushed
branch head it starts a detached verifier (logging to
`BARE/govern-hook/verify.log`) that checks the commit out into a temporary
worktree, runs the same verification as `govern ci verify` against the
team's central ledger, then imports pushed GTO tags (`govern sync`). A
lock file per commit keeps two verifications of one commit from running at
once, and a commit already verified in the ledger is not verified again.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from govern import config as config_module
from govern import redaction
from govern.adapters import dvc as dvc_adapter
from govern.adapters import git as git_adapter
from govern.api.results import ServerHook
from govern.errors import GovernError, InvalidInput
from govern.readmodel.events import verdicts_of_commit
from govern.storage import open_store

if TYPE_CHECKING:
    from govern.api.context import Project

ZERO = "0" * 40

PRE_PUSH = """#!/bin/sh
# Installed by `govern hooks install`: refuse a push whose DVC pipeline is stale or whose dvc.lock is uncommitted.
exec "{python}" -P -m govern hooks pre-push "$@"
"""

POST_COMMIT = """#!/bin/sh
# Installed by `govern hooks install`: a commit of dvc.lock may lock a training's versions; record it at once.
exec "{python}" -P -m govern hooks post-commit
"""

POST_RECEIVE = """#!/bin/sh
# Installed by `govern hooks install-server`: verify each pushed branch head in the background.
exec "{python}" -P -m govern hooks post-receive --bare "{bare}" --ledger "{ledger}"
"""


def _write_hook(path: Path, text: str, force: bool) -> Path:
    if path.exists() and not force and "govern" not in path.read_text(encoding="utf-8", errors="replace"):
        raise GovernError(f"{path} exists and is not govern's: pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def install_client(project: Project, force: bool = False) -> list[Path]:
    """Install the pre-push and post-commit hooks into this clone."""
    root = project.root
    hooks = Path(git_adapter.hooks_dir(root))
    for name in ("pre-push", "post-commit"):  # both refused before either is written
        path = hooks / name
        if path.exists() and not force and "govern" not in path.read_text(encoding="utf-8", errors="replace"):
            raise GovernError(f"{path} exists and is not govern's: pass --force to replace it")
    return [
        _write_hook(hooks / "pre-push", PRE_PUSH.format(python=sys.executable), force),
        _write_hook(hooks / "post-commit", POST_COMMIT.format(python=sys.executable), force),
    ]


def after_commit(project: Project) -> list[str]:
    """What the post-commit hook does: when the commit changed a dvc.lock, record the trainings it locks
    (`training.locked`); lines to print. Only where a ledger exists here: a commit never starts one.

    The project is opened for reading (every commit runs this, most change no dvc.lock): the checks of a write
    (`open_project(writing=True)`) are made here, once there is something to record."""
    from govern.api import locks
    from govern.api.anchors import refuse_writes_off_the_anchors
    from govern.api.context import guard_secrets

    root = project.root
    changed = subprocess.run(
        ["git", "diff-tree", "--root", "--no-commit-id", "--name-only", "-r", "HEAD"], cwd=root, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    if not any(path.rsplit("/", 1)[-1] == "dvc.lock" for path in changed.stdout.splitlines()):
        return []
    if not project.ledger.exists():
        return []
    refuse_writes_off_the_anchors(root, project.ledger)
    guard_secrets(root, project.config)
    found = locks.find(project, "post-commit hook")
    head = git_adapter.resolve(root, "HEAD")
    lines = []
    for event in found:
        if event.payload["commit"] == head:
            versions = ", ".join(f"{v['model']} version {v['version']}" for v in event.payload["versions"])
            lines.append(f"govern: {versions} locked at {head[:12]}")
    return lines


def pre_push_problems(project: Project) -> list[str]:
    """What makes this clone unfit to push: a stale pipeline, an uncommitted dvc.lock."""
    root = project.root
    problems = []
    pipeline = dvc_adapter.load_pipeline(root)
    uncommitted = git_adapter.uncommitted(root, pipeline.lock_files)
    if uncommitted:
        problems.append(
            f"{', '.join(uncommitted)} has uncommitted changes: commit it (git add {' '.join(uncommitted)} && "
            "git commit), or run `govern repro --commit`, then push again"
        )
    stale = dvc_adapter.stale_stages(root)
    if stale:
        problems.append(
            f"the pipeline is stale (stages {', '.join(stale)} changed since dvc.lock): run `govern repro --commit`, "
            "then push again"
        )
    return problems


TOKEN_FILE = "token"  # BARE/govern-hook/token: the verifier's bearer token when verdicts go to a server


def install_server(
    bare: Path, ledger: Path | str | None = None, force: bool = False, server: str | None = None
) -> ServerHook:
    """Install the post-receive hook into a bare repository. With `server`, verdicts are posted to that
    `govern serve` under the verifier token in GOVERN_TOKEN, kept in BARE/govern-hook/token (mode 0600)."""
    bare = bare.resolve()
    if not (bare / "HEAD").is_file() or not (bare / "objects").is_dir() or (bare / ".git").exists():
        raise InvalidInput(f"{bare} is not a bare git repository: create one with `git init --bare {bare}`")
    if server is not None:
        if ledger is not None:
            raise InvalidInput("--server and --ledger name two destinations for the verdicts: give one")
        from govern.remote import Server

        remote = Server.from_environment(server)
        remote.call("GET", "/whoami")  # the token works now, not at the first push
        (bare / "govern-hook").mkdir(exist_ok=True)
        token_file = bare / "govern-hook" / TOKEN_FILE
        token_file.touch(mode=0o600)
        token_file.chmod(0o600)
        token_file.write_text(remote.token + "\n", encoding="utf-8")
        ledger = remote.url
    elif ledger is not None and "://" in str(ledger):
        ledger = _team_ledger(str(ledger))
    else:
        ledger = Path(ledger or bare / "govern-hook" / "ledger.duckdb").resolve()
    (bare / "govern-hook").mkdir(exist_ok=True)
    hook = _write_hook(
        bare / "hooks" / "post-receive", POST_RECEIVE.format(python=sys.executable, bare=bare, ledger=ledger), force
    )
    return ServerHook(hook, ledger, bare / "govern-hook" / "verify.log")


def _team_ledger(url: str) -> str:
    """A PostgreSQL ledger for the hook, checked now rather than after the first push: reachable, created, and
    given without a password (the hook file and the process list would show it)."""
    location = str(config_module.ledger_location(url, "--ledger"))
    if redaction.has_password(location):
        raise InvalidInput(
            "--ledger carries a password, which the hook file and the process list would show: put it in ~/.pgpass "
            "(or PGPASSWORD) of the user git runs the hook as"
        )
    store = open_store(location)
    try:
        if not store.exists():
            raise InvalidInput(
                f"--ledger {store.location} has no govern schema yet: run `govern init --ledger URL` there first, as "
                "the database owner"
            )
    finally:
        store.close()
    return location


def on_receive(bare: Path, ledger: Path | str, updates: Iterable[str]) -> list[str]:
    """Start one detached verifier per pushed branch head; returns the commits handed over."""
    commits: list[str] = []
    tags = False
    for line in updates:
        parts = line.split()
        if len(parts) != 3:
            continue
        _old, new, ref = parts
        if new == ZERO:
            continue
        if ref.startswith("refs/heads/") and new not in commits:
            commits.append(new)
        elif ref.startswith("refs/tags/"):
            tags = True
    log = (bare / "govern-hook" / "verify.log").open("ab")
    for commit in commits:
        _detach(["verify-commit", "--bare", str(bare), "--ledger", str(ledger), "--rev", commit], log)
    if tags and not commits and not _is_server(ledger):
        _detach(["sync-server", "--bare", str(bare), "--ledger", str(ledger)], log)
    log.close()
    return commits


def _detach(arguments: list[str], log: object) -> None:
    """A process that outlives the hook, so the pusher is not held while the pipeline runs."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-P", "-m", "govern", "hooks", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        cwd=str(Path(arguments[2])),
    )


def verify_pushed(bare: Path, ledger: Path | str, commit: str) -> str:
    """Verify one pushed commit, once, then import pushed GTO tags. Returns what happened, for the log."""
    from govern.api.ci import headline, verify
    from govern.api.sync import at_repository, sync

    os.environ.setdefault("GOVERN_CI_SYSTEM", "server-hook")
    os.environ.setdefault("GOVERN_CI_IDENTITY", f"server-hook:{bare.name}")
    lock = bare / "govern-hook" / "locks" / f"{commit}.lock"
    if not _acquire(lock):
        return f"{commit}: a verification is already running"
    if _is_server(ledger):
        return _verify_for_server(bare, str(ledger), commit, lock)
    os.environ["GOVERN_LEDGER"] = str(ledger)
    try:
        project = at_repository(bare, ledger)
        if project.ledger.exists() and verdicts_of_commit(project.ledger, commit):
            outcome = f"{commit}: already verified"
        else:
            verdict = verify(project, commit, pushed=True)
            outcome = f"{commit}: {headline(verdict)} (seq {verdict.event.seq})"
    finally:
        lock.unlink(missing_ok=True)
    imported = sync(project, mirror=False)  # the aliases wait for `govern mirror` with the team's MLflow
    return f"{outcome}; {len(imported.events)} GTO promotion(s) imported"


def _is_server(destination: Path | str) -> bool:
    return str(destination).startswith(("http://", "https://"))


def _verify_for_server(bare: Path, url: str, commit: str, lock: Path) -> str:
    """Verify and post the verdict to the team's `govern serve`; GTO tags are not imported (the server has no
    import operation yet: run `govern sync` where the ledger is)."""
    from govern.api.ci import headline, verify
    from govern.api.sync import at_repository
    from govern.remote import Server

    token = (bare / "govern-hook" / TOKEN_FILE).read_text(encoding="utf-8").strip()
    try:
        verdict = verify(at_repository(bare), commit, pushed=True, upload=Server(url, token).upload_verdict)
    finally:
        lock.unlink(missing_ok=True)
    return f"{commit}: {headline(verdict)} (seq {verdict.event.seq} on {url})"


def _acquire(lock: Path) -> bool:
    """An exclusive lock file holding our pid; a lock left by a dead process is taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(lock.read_text() or "0")
                os.kill(holder, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)
                continue
            except PermissionError:
                return False
            return False
        os.write(descriptor, str(os.getpid()).encode())
        os.close(descriptor)
        return True
    return False
