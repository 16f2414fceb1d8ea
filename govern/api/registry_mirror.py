"""MLflow's registry follows the ledger: stage aliases, deprecation marks and lock commits, through an outbox.

A promotion or deprecation is appended to the ledger first: it is the fact. Its mirror in MLflow (the alias
named after each stage on the version holding it, the `govern.deprecated` tag) is pending until a
`registry.mirrored` event records that the model's aliases reflect the ledger up to a seq. Nothing is ever
updated: "pending" is a query, and `govern status` shows it.

MLflow takes seconds to import, and a promotion is a ledger append that answers in well under one. So
promote, deprecate and sync start `govern mirror` as a detached background process (its output goes to
`mirror.log` beside the ledger), unless `[tool.govern.mlflow] registry_mirror = "inline"` (or
GOVERN_REGISTRY_MIRROR=inline) asks them to wait for it. `govern mirror` and every later write complete
what is still pending, for example after MLflow was down.

The same mirror tags each version locked since the model's last mirror, and its run, `govern.lock_commit` (the
commit to check out). A lock alone does not make a model pending (every `repro --commit` would start a mirror):
the tag lands with the model's next promotion or deprecation, which for a gated stage the lock precedes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from govern.api.results import RegistryOutcome
from govern.envelope import PendingEvent, RecordedEvent
from govern.errors import MirrorError, Note
from govern.events import RegistryMirrored
from govern.readmodel.mirrors import Pending, deprecated_since, locked_since, pending_registry
from govern.readmodel.reader import Reader
from govern.readmodel.versions import stage_holders
from govern.redaction import redact
from govern.storage import LedgerStore

if TYPE_CHECKING:
    from govern.api.context import Project

MIRROR_LOG = "mirror.log"
log = logging.getLogger("govern.registry_mirror")


def pending(reader: Reader) -> list[Pending]:
    return pending_registry(reader)


def mirror_pending(project: Project) -> RegistryOutcome:
    """Bring every pending model's MLflow aliases in line with the ledger; stops at the first MLflow failure."""
    from govern.adapters import mlflow as mlflow_adapter

    ledger, cfg, actor = project.ledger, project.config, project.actor
    if not ledger.exists():
        return RegistryOutcome()
    with one_mirror_at_a_time(ledger):
        todo = pending(ledger)
        recorded: list[RecordedEvent] = []
        for position, item in enumerate(todo):
            holders = stage_holders(ledger, item.model)
            deprecated = deprecated_since(ledger, item.model, item.mirrored_through)
            locked = locked_since(ledger, item.model, item.mirrored_through)
            try:
                aliases = mlflow_adapter.sync_registry(
                    cfg.tracking_uri, item.model, holders, cfg.stages, deprecated, locked
                )
            except MirrorError as error:
                return RegistryOutcome(recorded, todo[position:], [str(error)])
            recorded.extend(
                ledger.transact(_recorder(item, aliases, deprecated, cfg.tracking_uri, actor, project.clock))
            )
        return RegistryOutcome(recorded, [], [])


@contextmanager
def one_mirror_at_a_time(ledger: LedgerStore) -> Iterator[None]:
    """Mirrors of one ledger run one after another (an exclusive lock on `mirror.log` beside it).

    Two interleaved mirrors could read the stage holders in one order and set the aliases in the other: the
    older state would land in MLflow after the newer one was recorded as mirrored. Each mirror reads the ledger
    after taking the lock, so the last one to run sets what the ledger says last.
    """
    with (ledger.state_dir / MIRROR_LOG).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _recorder(
    item: Pending, aliases: dict[str, str], deprecated: list[str], uri: str, actor: Any, clock: Callable[[], Any]
) -> Callable[[Reader], list[PendingEvent]]:
    """Append `registry.mirrored` unless another mirror recorded as much meanwhile (checked in the transaction)."""

    def decide(reader: Reader) -> list[PendingEvent]:
        current = next((p for p in pending(reader) if p.model == item.model), None)
        if current is None or current.mirrored_through >= item.through_seq:
            return []
        fact = RegistryMirrored(
            model=item.model,
            through_seq=item.through_seq,
            aliases=aliases,
            deprecated_versions=deprecated,
            tracking_uri=redact(uri),
        )
        return [PendingEvent(fact, actor=actor, occurred_at=clock())]

    return decide


def request(project: Project, on_progress: Callable[[str], None] | None = None) -> list[str]:
    """After a promotion, deprecation or import: mirror now (inline) or start it in the background."""
    ledger, cfg = project.ledger, project.config
    if not ledger.exists() or not (waiting := pending(ledger)):
        return []
    if cfg.registry_mirror == "inline":
        if on_progress:
            models = ", ".join(item.model for item in waiting)
            on_progress(f"setting the MLflow aliases of {models} (registry_mirror = inline) ...")
        outcome = mirror_pending(project)
        return [f"the MLflow registry is not updated yet (`govern mirror` retries): {e}" for e in outcome.errors]
    from govern import signing

    signer = signing.active()
    if signer is not None:  # the server: a thread of its own, signed as the server's own work (not a git identity)
        _in_the_background(project, signer)
        return [Note("the MLflow aliases follow in the background; `govern status` shows what is pending")]
    log = ledger.state_dir / MIRROR_LOG
    with log.open("ab") as handle:
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-P", "-m", "govern", "mirror"],
            cwd=str(cfg.root),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "GOVERN_LEDGER": ledger.address},
        )
    return [Note(f"the MLflow aliases follow in the background (log: {log}); `govern status` shows what is pending")]


def _in_the_background(project: Project, signer: object) -> None:
    """In `govern serve`: mirror in a daemon thread of the server, under its own identity and key. A process of its
    own would record the server checkout's git identity (a person's, in a team), self-asserted."""
    import threading

    def mirror() -> None:
        from govern import signing
        from govern.api.context import Project
        from govern.api.keys import server_actor
        from govern.storage import open_store

        cfg = project.config
        try:
            # the thread's own ledger (the request's, within its session, ends with the request), the server as actor
            ledger = open_store(cfg.ledger, lock_timeout=cfg.lock_timeout)
            with signing.signing_with(signer):  # type: ignore[arg-type]
                outcome = mirror_pending(Project(project.root, cfg, ledger, server_actor(), clock=project.clock))
            for error in outcome.errors:
                log.warning("govern serve: the MLflow registry is not updated yet (govern mirror retries): %s", error)
        except Exception:  # noqa: BLE001 - a background mirror must not take the server down; the log has it
            log.exception("govern serve: the background registry mirror failed")

    threading.Thread(target=mirror, name="govern-registry-mirror", daemon=True).start()


def describe(item: Pending) -> dict[str, object]:
    return {"model": item.model, "through_seq": item.through_seq, "mirrored_through": item.mirrored_through}
