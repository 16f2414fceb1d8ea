"""What every write use case starts from: the project root, its config, its ledger, the actor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from govern import attribution, environment
from govern import config as config_module
from govern.adapters import git as git_adapter
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
    from govern.api.integrity import refuse_writes_off_the_anchors

    refuse_writes_off_the_anchors(root, ledger)
    if actor is None:
        actor = environment.actor(lambda: git_adapter.identity(root))
    elif isinstance(actor, str):
        actor = attribution.self_asserted(actor, "given by the caller")
    return Project(root, cfg, ledger, actor)


def text_argument(value: str, option: str) -> str:
    """Free text for the record: non-empty, valid UTF-8, one logical value."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{option} is not valid UTF-8 text: re-type it, or set a UTF-8 locale") from None
    if not value.strip():
        raise InvalidInput(f"{option} must not be empty: say why, for the record")
    return value.strip()
