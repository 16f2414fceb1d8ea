"""The composition root as tests build it: a project on disk (as the CLI opens it), or the same project over an
in-memory ledger, for use-case tests that need no file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from govern import attribution
from govern import config as config_module
from govern.api.context import Project, open_project
from govern.storage import LedgerStore
from govern.storage.memory_log import MemoryLedger


def project_at(root: Path, actor: attribution.Actor | str | None = None, *, writing: bool = True) -> Project:
    """The project at `root` as a command opens it; `actor` a name (self-asserted) or an `Actor`."""
    return open_project(root, actor=actor, writing=writing)


def in_memory(root: Path, actor: attribution.Actor | str | None = None) -> Project:
    """The project at `root` (its configuration, its git checkout) over a fresh in-memory ledger."""
    root = config_module.find_root(root)
    if isinstance(actor, str):
        actor = attribution.self_asserted(actor, "given by the caller")
    return Project(root, config_module.load(root), MemoryLedger(), actor)


def ledger_at(root: Path) -> LedgerStore:
    """The ledger of the project at `root` (or GOVERN_LEDGER's), opened for reading: what a test checks was
    recorded, or was not."""
    return open_project(root, writing=False).ledger


def checkout(root: Path, settings: str) -> Path:
    """A git repository at `root` whose one commit is a `govern.toml` holding `settings` (a project of one's own,
    or a solo project)."""
    root.mkdir(parents=True)
    (root / "govern.toml").write_text(settings)
    for args in (["init", "-q", "-b", "main"], ["add", "govern.toml"], ["commit", "-q", "-m", "govern.toml"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root
