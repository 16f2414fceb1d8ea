"""The server's signing key as the ledger knows it: created, registered on first use, rotated, all as facts.

`govern serve` calls `start` before it answers anything: the key is loaded (created on the very first start),
checked against the keys the ledger trusts, registered if the ledger has none yet, and made this process's
signer. A key the ledger does not know is refused rather than registered silently: a new key is what a forger
would bring, so it enters only endorsed by the current key (`rotate`), or pinned by a reviewed commit
(`[tool.govern.server] trusted_keys`) when the old key was lost (`register`).
"""

from __future__ import annotations

import socket
from pathlib import Path

from govern import attribution, signing
from govern.api.context import Project
from govern.api.results import KeyState
from govern.envelope import PendingEvent, RecordedEvent, utc_now
from govern.errors import StateConflict
from govern.events import SigningKeyRegistered, SigningKeyRetired
from govern.readmodel import access as access_reads
from govern.readmodel.access import SigningKeyRow
from govern.readmodel.reader import Reader


def server_actor() -> attribution.Actor:
    return attribution.server(socket.gethostname())


def key_path(project: Project) -> Path:
    path = project.config.signing_key or signing.default_path(project.ledger.location)
    signing.check_outside(path, project.root)
    return path


def registered_keys(reader: Reader) -> list[SigningKeyRow]:
    return access_reads.registered_keys(reader)


def init_key(project: Project) -> tuple[signing.Signer, bool]:
    """The key at the configured path, created if there is none: (signer, created)."""
    path = key_path(project)
    if path.exists():
        return signing.load(path), False
    return signing.create(path), True


def start(project: Project, create: bool = True, activate: bool = True) -> KeyState:
    """Load (or create) the server's key and make sure the ledger trusts it; with `activate`, this process signs
    with it from now on (otherwise the caller says where: `signing.signing_with`). The key's events are the
    server's (`server_actor`), whoever the project's actor is."""
    path = key_path(project)
    created = False
    if not path.exists() and create:
        signer, created = signing.create(path), True
    else:
        signer = signing.load(path)
    registered = _ensure_registered(project, signer)
    if activate:
        signing.activate(signer)
    return KeyState(signer, registered, created)


def _ensure_registered(project: Project, signer: signing.Signer) -> RecordedEvent | None:
    pinned = project.config.trusted_keys
    if pinned and signer.fingerprint not in pinned:
        raise signing.SigningKeyError(
            f"This server's signing key {signer.fingerprint} ({signer.path}) is not among the keys "
            f"{project.config.source} pins in `server.trusted_keys`: add it there in a reviewed commit, or start "
            "with a pinned key"
        )
    if project.ledger.exists():
        known = [k for k in registered_keys(project.ledger) if k.fingerprint == signer.fingerprint]
        if known and known[0].retired_seq is None:
            return None  # the usual start: registered before, nothing to write

    def decide(reader: Reader) -> list[PendingEvent]:
        keys = registered_keys(reader)
        mine = [k for k in keys if k.fingerprint == signer.fingerprint]
        if mine:
            if mine[0].retired_seq is not None:
                raise signing.SigningKeyError(
                    f"This server's signing key {signer.fingerprint} was retired at seq {mine[0].retired_seq}: "
                    f"it signs nothing any more; start with the key that replaced it (not {signer.path})"
                )
            return []
        active = [k.fingerprint for k in keys if k.retired_seq is None]
        if active and signer.fingerprint not in pinned:
            raise signing.SigningKeyError(
                f"The ledger trusts signing key(s) {', '.join(active)}, and this server holds another one, "
                f"{signer.fingerprint} ({signer.path}): restore the server's key file, or rotate from it "
                "(`govern serve --rotate-key --from OLD_KEY_FILE`); if the old key is lost, pin the new fingerprint "
                "in [tool.govern.server] trusted_keys in a reviewed commit and start again"
            )
        reason = "first key of this ledger" if not keys else "pinned in the project's configuration"
        return [_registration(signer, None, None, reason)]

    with signing.signing_with(signer):  # the registration is signed by the key it registers
        recorded = project.ledger.transact(decide)
    return recorded[0] if recorded else None


def rotate(project: Project, old_path: Path, reason: str) -> tuple[signing.Signer, list[RecordedEvent]]:
    """A new key at the configured path, endorsed by the old one (read from `old_path`), which is retired."""
    path = key_path(project)
    old = signing.load(old_path)
    if path.exists() and signing.load(path).fingerprint != old.fingerprint:
        raise StateConflict(
            f"A key exists at {path} already and it is not the one rotated from ({old_path}): move it away first"
        )
    kept = path.with_name(f"{path.name}.retired-{old.fingerprint.split(':')[1]}")
    if path.exists():
        path.rename(kept)
    new = signing.create(path)

    def decide(reader: Reader) -> list[PendingEvent]:
        keys = {k.fingerprint: k for k in registered_keys(reader)}
        current = keys.get(old.fingerprint)
        if current is None or current.retired_seq is not None:
            raise signing.SigningKeyError(
                f"The key in {old_path} ({old.fingerprint}) is not an active key of this ledger: rotate from the key "
                "the server signs with now"
            )
        endorsement = old.endorse(new.fingerprint, new.public)
        return [
            _registration(new, old.fingerprint, endorsement, reason),
            PendingEvent(
                SigningKeyRetired(fingerprint=old.fingerprint, reason=reason, successor=new.fingerprint),
                actor=server_actor(),
                occurred_at=project.clock(),
            ),
        ]

    try:
        with signing.signing_with(new):
            events = project.ledger.transact(decide)
    except BaseException:
        path.unlink(missing_ok=True)  # nothing was recorded: the new key must not linger as if it were in use
        if kept.exists():
            kept.rename(path)
        raise
    return new, events


def _registration(
    signer: signing.Signer, endorsed_by: str | None, endorsement: str | None, reason: str
) -> PendingEvent:
    return PendingEvent(
        SigningKeyRegistered(
            fingerprint=signer.fingerprint,
            public_key=signer.public,
            host=socket.gethostname(),
            endorsed_by=endorsed_by,
            endorsement=endorsement,
            reason=reason,
        ),
        actor=server_actor(),
        occurred_at=utc_now(),
    )
