"""Who acted, and how sure the ledger is of it. Pure: no I/O.

Every event names an actor and, since issue 25, how that actor was established (`authn`, hashed with the event):
authenticated by `govern serve` (a bearer token it checked, or the server itself for its own background work),
whose signature over the event's hash proves the claim; or self-asserted by a local process (its git
configuration, a CI system's environment variables, `GOVERN_CI_IDENTITY`, the OS user), which anyone who can
write the ledger can type. The two must never look alike, so a self-asserted name in the form the server gives
its principals is refused, and every place that shows an actor shows its strength with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from govern.canonical import canonical_json
from govern.errors import InvalidInput

SERVER = "server"  # authenticated by govern serve, signed with its key
SELF = "self"  # asserted by the process that wrote the event

# Sources of a self-asserted identity (`via`)
GIT_CONFIG = "git config"
CI_OVERRIDE = "GOVERN_CI_IDENTITY"
OS_USER = "OS user"

# How the server names a principal acting with a token, and itself
TOKEN_ACTOR = re.compile(r"^([a-z0-9][a-z0-9._-]{0,62}) \(token ([0-9a-f]{12})\)$")
SERVER_ACTOR = re.compile(r"^server:\S+$")
# Any of these in a self-asserted name would read like a claim of authentication
_AUTHENTICATED_LOOK = re.compile(
    r"\(\s*token\s+[0-9a-f]{12}\s*\)|\(\s*authenticated\b|^\s*server:", re.IGNORECASE
)  # "Ada (Server team) <ada@x>" is a name; "ada (token 00d199502a68)" is a claim


@dataclass(frozen=True)
class Authn:
    """How an actor was established; recorded in the event's hashed envelope (`authn`)."""

    by: str  # SERVER or SELF
    via: str  # "token 3f9a0c12d4e5", "job 0a1b2c3d4e5f (token 3f9a0c12d4e5)", "server", or a self-asserted source
    principal: str | None = None  # the authenticated principal (SERVER only)
    key: str | None = None  # fingerprint of the key that signs it (SERVER only; filled in at append)

    @property
    def authenticated(self) -> bool:
        return self.by == SERVER

    def to_json(self) -> str:
        """The canonical text stored and hashed (keys sorted, no whitespace, absent members left out)."""
        return canonical_json({k: v for k, v in self.__dict__.items() if v is not None})

    def with_key(self, fingerprint: str) -> Authn:
        return Authn(self.by, self.via, self.principal, fingerprint)

    @classmethod
    def from_json(cls, text: str | None) -> Authn | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(data.get("by", ""), data.get("via", ""), data.get("principal"), data.get("key"))


@dataclass(frozen=True)
class Actor:
    """An actor as the use cases pass it on: the name the `actor` column records, and how it was established."""

    name: str
    authn: Authn

    @property
    def authenticated(self) -> bool:
        return self.authn.authenticated

    def __str__(self) -> str:
        return self.name


def authenticated(principal: str, token_id: str) -> Actor:
    """A principal acting through the server with a token: `abe (token f20373caf69d)`."""
    return Actor(f"{principal} (token {token_id})", Authn(SERVER, f"token {token_id}", principal))


def on_behalf(principal: str, requested_by: str, via: str) -> Actor:
    """Work the server does for a principal who asked for it earlier (a training job): the principal as recorded
    when they asked, established by what `via` names (`job ID (token ID)`)."""
    return Actor(requested_by, Authn(SERVER, via, principal))


def server(host: str) -> Actor:
    """The server itself, for the work nobody asked for in that moment (mirrors, job bookkeeping, its key)."""
    return Actor(f"server:{host}", Authn(SERVER, "server"))


def self_asserted(name: str, via: str) -> Actor:
    """A local process's own claim of who it is; refused when it would read like an authenticated one."""
    check_self_asserted(name, via)
    return Actor(name, Authn(SELF, via))


def check_self_asserted(name: str, via: str) -> None:
    if TOKEN_ACTOR.match(name.strip()) or _AUTHENTICATED_LOOK.search(name):
        raise InvalidInput(
            f"The {via} identity {name!r} is in the form govern serve gives authenticated principals: a local "
            "identity cannot take it. Act through the server with your token (GOVERN_URL and GOVERN_TOKEN), or "
            "use your own name"
        )


def server_form(actor: str) -> bool:
    """Does this actor name read like one the server authenticated (a principal with a token, or the server)?"""
    return bool(TOKEN_ACTOR.match(actor) or SERVER_ACTOR.match(actor))


def principal_of(actor: str) -> str | None:
    found = TOKEN_ACTOR.match(actor)
    return found.group(1) if found else None


def shown(actor: str, authn: Authn | str | None) -> str:
    """An actor with the strength of its identity, as reports, pages and `audit history` show it:
    `abe (authenticated, token f20373caf69d)`, `Tess <tess@bank.example> (self-asserted, git config)`."""
    who, how = split(actor, authn)
    return f"{who} ({how})"


def split(actor: str, authn: Authn | str | None) -> tuple[str, str]:
    """(who, how sure): the two halves of `shown`, for a page that sets them on two lines."""
    found = Authn.from_json(authn) if isinstance(authn, str) or authn is None else authn
    if found is None:
        if server_form(actor):
            return actor, "not attested: recorded before govern signed events"
        return actor, "self-asserted, source not recorded"
    if found.by == SERVER:
        how = found.via if found.via != "server" else "the server itself"
        return found.principal or actor, f"authenticated, {how}"
    return actor, f"self-asserted, {found.via}"


def describe(actor: str, authn: Authn | str | None) -> dict[str, Any]:
    """The actor as JSON answers carry it: its name, its strength, and the display text."""
    found = Authn.from_json(authn) if isinstance(authn, str) or authn is None else authn
    return {
        "name": actor,
        "authenticated": bool(found and found.by == SERVER),
        "authn": None if found is None else {k: v for k, v in found.__dict__.items() if v is not None},
        "shown": shown(actor, found),
    }
