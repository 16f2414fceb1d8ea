"""What every write use case starts from: the project root, its config, its ledger, the actor."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from govern import attribution, environment, redaction
from govern import config as config_module
from govern.adapters import git as git_adapter
from govern.api.anchors import refuse_writes_off_the_anchors
from govern.config import Config
from govern.errors import InvalidInput
from govern.storage import LedgerStore, open_store


@dataclass(frozen=True)
class Project:
    root: Path
    config: Config
    ledger: LedgerStore
    actor: attribution.Actor


def open_project(start: Path | None = None, actor: attribution.Actor | str | None = None) -> Project:
    """The project a governance command works on; a ledger lost where anchors exist is refused here.

    `actor` is who acts: the server passes its authenticated principal; otherwise the CI or git identity, which
    is self-asserted. A bare name given by a caller is self-asserted too."""
    root = config_module.find_root(start)
    cfg = config_module.load(root)
    ledger = open_store(cfg.ledger, lock_timeout=cfg.lock_timeout)
    refuse_writes_off_the_anchors(root, ledger)
    guard_secrets(root, cfg)
    if actor is None:
        actor = environment.actor(lambda: git_adapter.identity(root))
    elif isinstance(actor, str):
        actor = attribution.self_asserted(actor, "given by the caller")
    return Project(root, cfg, ledger, actor)


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
