"""A project prepared once (per module, or per session and worker), and a private copy of it for each test.

Building a project (principals, grants, trained versions, a second admin) takes a command or an append per fact;
copying the folder it left takes milliseconds. A copy is what the build would have made, at another path: the
same files, git history and ledger, and the server's signing key where govern looks for it: at the path the
project configures (outside its folder, so shared by the copies, read and never written by the tests), or else
at the default path for the copy's ledger location, in the test's own configuration folder.

A PostgreSQL ledger's URL is committed in the project, so its copies share one database name (per module and
xdist worker): `prepared_on_postgres` keeps the database the build left as a template, and each copy drops the
database of the copy before it and creates it anew from that template (PostgreSQL copies a small database in a
tenth of a second; building one again takes a command or an append per fact, a second and more).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import apply_isolation, database_name, database_url, postgres_admin


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


@dataclass(frozen=True)
class PreparedOnPostgres:
    prepared: Prepared  # the project, whose committed configuration names `database`
    database: str  # the database of the copy in use; made anew from `original` for each copy
    original: str  # the database as the build left it, a template nobody connects to

    def copy_to(self, target: Path) -> Path:
        admin = postgres_admin()
        try:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.database}" TEMPLATE "{self.original}"')
        finally:
            admin.close()
        return self.prepared.copy_to(target)


@contextmanager
def prepared_on_postgres(
    tmp_path_factory: pytest.TempPathFactory, ledger_template: str, build: Callable[[Path, str], Path]
) -> Iterator[PreparedOnPostgres]:
    """`build(root, url)` run once on a new database holding an empty ledger (a copy of `ledger_template`, the
    `pg_ledger_template` fixture, with an identity of its own); both databases dropped when the block ends."""
    import psycopg

    database = database_name("prepared")
    original = f"{database}_original"
    admin = postgres_admin()
    try:
        admin.execute(f'CREATE DATABASE "{database}" TEMPLATE "{ledger_template}"')
        with psycopg.connect(database_url(database), autocommit=True) as con:
            con.execute("UPDATE govern.ledger SET id = gen_random_uuid()::text, created_at = now() AT TIME ZONE 'UTC'")
        project = prepared(tmp_path_factory, lambda root: build(root, database_url(database)))
        # the build's connections are done with; a database is copied only while nobody is connected to it
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [database])
        admin.execute(f'CREATE DATABASE "{original}" TEMPLATE "{database}"')
        yield PreparedOnPostgres(project, database, original)
    finally:
        for name in (database, original):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
