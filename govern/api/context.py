"""The composition root: the project a command or a request works on (root, config, ledger, actor, clock)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from govern import attribution, environment, redaction
from govern import config as config_module
from govern.adapters import git as git_adapter
from govern.api.anchors import refuse_writes_off_the_anchors
from govern.config import Config
from govern.envelope import utc_now
from govern.errors import InvalidInput, NotAGitRepository
from govern.storage import LedgerStore, open_store
from govern.storage.sessions import Session


class Project:
    """The composition root of one command or one server request: the project's root, its configuration (loaded
    once), its ledger (within the request's unit of work, where it has one), who acts and how that was
    established, and the clock. Delivery (the CLI, the server, the pages, the jobs) builds it; use cases take it
    as their first argument and never find a root, load a configuration or open a ledger of their own.

    The actor is resolved on first use (the git identity costs a process; a read never needs it).

    Outside any repository, a read of GOVERN_LEDGER's ledger alone (`govern audit ...` where no project is) has
    no root and no configuration (`root` and `config` None): the use cases that read answer at their defaults."""

    def __init__(
        self,
        root: Path | None,
        config: Config | None,
        ledger: LedgerStore,
        actor: attribution.Actor | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.root = root
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self._actor = actor

    @property
    def actor(self) -> attribution.Actor:
        if self._actor is None:
            root = self.root
            self._actor = environment.actor(lambda: git_adapter.identity(root))
        return self._actor

    def acting_as(self, actor: attribution.Actor) -> Project:
        """The same project, ledger and clock, another actor (a request's principal, once authenticated)."""
        return Project(self.root, self.config, self.ledger, actor, clock=self.clock)

    def __repr__(self) -> str:
        return f"Project({self.root}, ledger={self.ledger.location})"


def open_project(
    root: Path | None = None,
    *,
    actor: attribution.Actor | str | None = None,
    session: Session | None = None,
    writing: bool = True,
) -> Project:
    """The project a command works on, from `root` or the current directory. `writing` (the default) refuses a
    ledger lost where anchors exist and tells the ledger the secrets it must never record; a read-only command
    opens with `writing=False` and pays for neither.

    `actor` is who acts: the server passes its authenticated principal; otherwise the CI or git identity, which
    is self-asserted (resolved here when writing, so that an identity refused writes nothing, not even the ledger
    file; on first use when reading). A bare name given by a caller is self-asserted too.

    Outside a repository, a read (`writing=False`) with GOVERN_LEDGER set opens that ledger alone: a project
    without root or configuration (an auditor's `govern audit` away from any checkout)."""
    if isinstance(actor, str):
        actor = attribution.self_asserted(actor, "given by the caller")
    try:
        root = config_module.find_root(root)
    except NotAGitRepository:
        if writing or not os.environ.get("GOVERN_LEDGER"):
            raise
        return Project(None, None, open_store(config_module.configured_ledger(), session=session), actor)
    cfg = config_module.load(root)
    ledger = open_store(cfg.ledger, lock_timeout=cfg.lock_timeout, session=session)
    if writing:
        refuse_writes_off_the_anchors(root, ledger)
        guard_secrets(root, cfg)
    project = Project(root, cfg, ledger, actor)
    if writing:
        project.actor  # noqa: B018 - who acts is established before anything is written: a forged identity, none
    return project


def guard_secrets(root: Path, cfg: Config, environ: Mapping[str, str] | None = None) -> None:
    """Tell this process's ledgers the secrets this project is configured with, never to be recorded
    (`redaction.remember`): the passwords of the ledger's and MLflow's URIs (GOVERN_LEDGER, MLFLOW_TRACKING_URI
    included), of the git and DVC remotes, DVC's remote credentials, and secret-named environment variables."""
    env = os.environ if environ is None else environ
    files = tuple(
        _stamp(path) for path in (*_git_configs(root), root / ".dvc" / "config", root / ".dvc" / "config.local")
    )
    key = (str(root), str(cfg.ledger), cfg.tracking_uri, files, tuple(sorted(env.items())))
    if key in _guarded:
        return
    uris = {
        str(cfg.ledger): "the password of the ledger's URL",
        cfg.tracking_uri: "the password of MLflow's tracking URI",
    }
    candidates = redaction.secrets_of_environment(env)
    for uri, where in uris.items():
        candidates.update(dict.fromkeys(redaction.secrets_of_uri(uri), where))
    for path, _ in files:
        text = _read(path)
        candidates.update(dict.fromkeys(redaction.secrets_of_config(text), f"a credential in {path.name} ({path})"))
    redaction.remember(redaction.guarded(candidates, [redaction.redact(uri) for uri in uris]))
    _guarded.add(key)


_guarded: set[tuple] = set()  # what was already told: open_project runs per request in the server


def _git_configs(root: Path) -> list[Path]:
    """The repository's config file (a linked worktree's `.git` is a file naming its git directory)."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return [dot_git / "config"]
    text = _read(dot_git)
    if not text.startswith("gitdir:"):
        return []
    gitdir = (root / text.removeprefix("gitdir:").strip()).resolve()
    common = _read(gitdir / "commondir").strip()
    return [(gitdir / common).resolve() / "config" if common else gitdir / "config"]


def _stamp(path: Path) -> tuple[Path, int | None]:
    try:
        return path, path.stat().st_mtime_ns
    except OSError:
        return path, None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def text_argument(value: str, option: str) -> str:
    """Free text for the record: non-empty, valid UTF-8, one logical value."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{option} is not valid UTF-8 text: re-type it, or set a UTF-8 locale") from None
    if not value.strip():
        raise InvalidInput(f"{option} must not be empty: say why, for the record")
    return value.strip()
