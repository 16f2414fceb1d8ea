"""A project prepared once (per module, or per session and worker), and a private copy of it for each test.

Building a project (principals, grants, trained versions, a second admin) takes a command or an append per fact;
copying the folder it left takes milliseconds. A copy is what the build would have made, at another path: the
same files, git history and ledger, and the server's signing key where govern looks for it: at the path the
project configures (outside its folder, so shared by the copies, read and never written by the tests), or else
at the default path for the copy's ledger location, in the test's own configuration folder. Only for projects on
a ledger file: a PostgreSQL ledger's URL is committed in the project, so each test builds its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import apply_isolation


def ledger_location(root: Path) -> str:
    from govern import config
    from govern.storage import open_store

    return open_store(config.load(root).ledger).location


@dataclass(frozen=True)
class Prepared:
    root: Path
    key: Path | None  # the server's signing key of its ledger, where the build made one

    def copy_to(self, target: Path) -> Path:
        from govern import signing

        shutil.copytree(self.root, target, symlinks=True)
        if self.key is not None:
            mine = signing.default_path(ledger_location(target))
            mine.parent.mkdir(parents=True, exist_ok=True)
            mine.parent.chmod(self.key.parent.stat().st_mode & 0o777)
            shutil.copy2(self.key, mine)
        return target


def prepared(tmp_path_factory: pytest.TempPathFactory, build: Callable[[Path], Path]) -> Prepared:
    """`build(root)` run once, under a HOME of its own (the test's environment is restored after)."""
    from govern import signing

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        root = build(tmp_path_factory.mktemp("prepared") / "project")
        key = signing.default_path(ledger_location(root))
    return Prepared(root, key if key.exists() else None)
