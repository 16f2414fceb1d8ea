"""The controller's signing key: what makes an event's "authenticated by the server" checkable by anyone.

`govern serve` holds an Ed25519 private key in a file of mode 0600 outside the checkout (`[tool.govern.server]
signing_key`, default `~/.config/govern/keys/<ledger>.key`). Every event it writes for an authenticated principal
(or for itself) carries `authn.by = "server"` and `authn.key` = the key's fingerprint in its hashed envelope, and
a signature over its chain hash beside it. The public key is a ledger fact (`signing_key.registered`, signed by
the key itself); a later key is endorsed by the one before it (`govern serve --rotate-key`), so `audit verify`
knows which keys to trust without trusting whoever can append to the ledger. What a signature proves: that a
process holding this key wrote the event, and (since it signs the chain hash) the whole history before it.
What it does not: anything about who holds the key file (the server host's administrators can sign).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from govern.errors import ConfigError, GovernError

ATTESTATION = b"govern attestation v1\n"
ENDORSEMENT = b"govern key endorsement v1\n"
FINGERPRINT_HEX = 32


class SigningKeyError(GovernError):
    """The server's signing key cannot be used: missing, readable by others, inside the checkout, or not one the
    ledger trusts."""


def fingerprint(public: str) -> str:
    """`ed25519:` and the first 128 bits of the SHA-256 of the raw public key, in hex."""
    import base64

    return "ed25519:" + hashlib.sha256(base64.b64decode(public)).hexdigest()[:FINGERPRINT_HEX]


def attestation_message(chain_hash: str) -> bytes:
    return ATTESTATION + chain_hash.encode("ascii")


def endorsement_message(new_fingerprint: str, new_public: str) -> bytes:
    return ENDORSEMENT + f"{new_fingerprint}\n{new_public}".encode("ascii")


@dataclass(frozen=True)
class Signer:
    """A loaded private key and its public identity."""

    path: Path
    public: str
    fingerprint: str
    _key: object

    def sign_event(self, chain_hash: str) -> str:
        return self._key.sign(attestation_message(chain_hash))  # type: ignore[attr-defined]

    def endorse(self, new_fingerprint: str, new_public: str) -> str:
        return self._key.sign(endorsement_message(new_fingerprint, new_public))  # type: ignore[attr-defined]


def default_path(ledger_location: str) -> Path:
    """Where a server keeps its key unless configured: the user's configuration directory, one key per ledger."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    name = hashlib.sha256(ledger_location.encode("utf-8")).hexdigest()[:16]
    return base / "govern" / "keys" / f"{name}.key"


def check_outside(path: Path, root: Path) -> None:
    resolved = path.expanduser().resolve()
    if resolved == root or root in resolved.parents:
        raise ConfigError(
            f"The signing key {path} is inside the project's checkout ({root}), where commits, jobs and backups "
            "could carry it: set [tool.govern.server] signing_key to a path outside it"
        )


def create(path: Path) -> Signer:
    """Write a new key (mode 0600, its directory 0700), refusing to overwrite one."""
    from govern.adapters import ed25519

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"A signing key exists at {path} already: it is used as it is") from None
    except OSError as error:
        raise SigningKeyError(f"Cannot create the signing key {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(ed25519.generate())
        handle.flush()
        os.fsync(handle.fileno())
    return load(path)


def load(path: Path) -> Signer:
    """Load a key, refusing one others could read or write (as ssh refuses a private key with loose modes)."""
    from govern.adapters import ed25519

    try:
        info = path.stat()
    except FileNotFoundError:
        raise SigningKeyError(
            f"No signing key at {path}: create one with `govern serve --init-key`, or restore the file"
        ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"The signing key {path} is accessible to other users (mode {stat.filemode(info.st_mode)}): "
            f"chmod 600 {path}"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise SigningKeyError(f"The signing key {path} belongs to another user (uid {info.st_uid}): the server's own")
    try:
        key = ed25519.PrivateKey.load(path)
    except ed25519.BadKey as error:
        raise SigningKeyError(f"{path} is not a govern signing key: {error}") from None
    public = key.public()
    return Signer(path, public, fingerprint(public), key)


def verifier(public: str):  # noqa: ANN201 - an adapter object
    from govern.adapters import ed25519

    return ed25519.PublicKey(public)


# The key that signs what is appended now: the server sets it for each request it answers and for its own
# threads (`signing_with`), or for the whole process (`activate`). Appends of events claiming server
# authentication are refused without one: a CLI, a job or anything else that imports govern cannot make one.
_ACTIVE: Signer | None = None
_CURRENT: ContextVar[Signer | None] = ContextVar("govern_signer", default=None)


def activate(signer: Signer | None) -> None:
    global _ACTIVE
    _ACTIVE = signer


def active() -> Signer | None:
    return _CURRENT.get() or _ACTIVE


@contextmanager
def signing_with(signer: Signer) -> Iterator[Signer]:
    """`signer` signs what this context (a request, a thread of the server) appends, and nothing else does."""
    token = _CURRENT.set(signer)
    try:
        yield signer
    finally:
        _CURRENT.reset(token)
