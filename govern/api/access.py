"""`govern principals` and `govern tokens`: who may act, as ledger facts; and checking a bearer token.

Granting, revoking and issuing are appended like any other fact, in one transaction with the check that
allows them, so the state they are decided on cannot change meanwhile. Run locally, the actor is the git or CI
identity (whoever may write the ledger may manage it: the first admin is made this way); through the server
it is the authenticated admin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from govern import access, queries
from govern.api.context import open_project, text_argument
from govern.errors import GovernError, InvalidInput, NotFound, StateConflict
from govern.events import (
    IdentityLinked,
    PendingEvent,
    RecordedEvent,
    RoleGranted,
    RoleRevoked,
    TokenIssued,
    TokenRevoked,
    format_timestamp,
    utc_now,
)
from govern.ledger import Reader
from govern.storage import LedgerStore


class Unauthenticated(GovernError):
    """No valid token: missing, malformed, unknown, expired or revoked."""


class InvalidToken(Unauthenticated):
    """Missing, malformed, unknown or of a wrong secret: one message for all, so a caller learns nothing about
    which token ids exist."""


ROLES_AT_SQL = """
SELECT principal, role, apps, granted_at, granted_by, reason, grant_seq
FROM role_grants
WHERE granted_at <= $at AND (ended_at IS NULL OR ended_at > $at)
ORDER BY principal, role
"""

ACTIVE_GRANT_SQL = """
SELECT apps FROM role_grants WHERE principal = $principal AND role = $role AND ended_at IS NULL
"""

TOKENS_SQL = """
SELECT token_id, principal, issued_at, issued_by, expires_at, description, revoked_at, revoked_by
FROM access_tokens WHERE $principal IS NULL OR principal = $principal ORDER BY seq
"""

TOKEN_SQL = """
SELECT t.principal, t.secret_sha256, t.expires_at, t.revoked_at,
       (SELECT coalesce(list({'role': g.role, 'apps': g.apps} ORDER BY g.role), [])
        FROM role_grants AS g WHERE g.principal = t.principal AND g.ended_at IS NULL) AS roles
FROM access_tokens AS t WHERE t.token_id = $token_id
"""

# What a cached token row depends on: the events of these types (roles depend on no clock, expiry is checked at
# each request), and that the ledger is still the one read (the hash at the seq last seen).
CHANGES_SQL = """
SELECT (SELECT hash FROM stored_events WHERE seq = $seen) AS seen_hash, max(seq) AS head, arg_max(hash, seq) AS hash,
       count(*) FILTER (WHERE type IN ('access.granted', 'access.revoked', 'token.issued', 'token.revoked')) AS changed
FROM stored_events WHERE seq > $seen
"""


class _TokenRows:
    """Token rows as of a ledger position, per ledger, in this process: a server authenticates every request, and
    the query over the access views costs more than the rest of a small request. One cheap query tells whether
    anything that could change a row (a grant, a revocation, a token issued or revoked) was appended since."""

    def __init__(self) -> None:
        import threading

        self._guard = threading.Lock()
        self._seen: dict[str, tuple[int, str, dict[str, dict[str, Any]]]] = {}

    def row(self, ledger: LedgerStore, token_id: str) -> dict[str, Any] | None:
        with self._guard:
            seq, hash_, rows = self._seen.get(ledger.location, (0, "", {}))
        [(seen_hash, head, head_hash, changed)] = ledger.query(CHANGES_SQL, {"seen": seq})[1]
        if (seq and seen_hash != hash_) or changed:
            rows = {}  # another ledger at this location, or access changed: read again
        if head is not None:
            seq, hash_ = head, head_hash
        if token_id not in rows:
            found = queries.rows_as_dicts(ledger, TOKEN_SQL, {"token_id": token_id})
            if not found:
                return None
            rows = {**rows, token_id: found[0]}
        with self._guard:
            self._seen[ledger.location] = (seq, hash_, rows)
        return rows[token_id]


_TOKEN_ROWS = _TokenRows()


@dataclass(frozen=True)
class Issued:
    """A token just issued: its bearer value is in `token.bearer`, here and nowhere else."""

    token: access.IssuedToken
    event: RecordedEvent

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token.token_id,
            "principal": self.token.principal,
            "token": self.token.bearer,
            "expires_at": format_timestamp(self.token.expires_at) if self.token.expires_at else None,
            "seq": self.event.seq,
        }


def grant(
    principal: str,
    role: str,
    apps: Sequence[str] = (),
    reason: str = "",
    start: Path | None = None,
    actor: str | None = None,
) -> RecordedEvent:
    """Give `principal` a role (a consumer, for `apps`); granting it again with other apps replaces them."""
    project = open_project(start, actor)
    name = access.check_principal_name(principal)
    limited = access.check_role(role, tuple(apps))
    why = text_argument(reason, "--reason") if reason else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        _, rows = reader.query(ACTIVE_GRANT_SQL, {"principal": name, "role": role})
        if rows and tuple(rows[0][0]) == limited:
            held = f" for {', '.join(limited)}" if limited else ""
            raise StateConflict(f"{name} holds the role {role} already{held}")
        fact = RoleGranted(principal=name, role=role, apps=list(limited), reason=why)
        return [PendingEvent(fact, actor=project.actor, occurred_at=utc_now())]

    return project.ledger.transact(decide)[0]


def revoke(
    principal: str, role: str, reason: str = "", start: Path | None = None, actor: str | None = None
) -> RecordedEvent:
    """From now on `principal` may no longer act as `role`."""
    project = open_project(start, actor)
    name = access.check_principal_name(principal)
    if role not in access.ROLES:
        raise InvalidInput(f"Unknown role {role!r}: use one of {', '.join(access.ROLES)}")
    why = text_argument(reason, "--reason") if reason else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        _, rows = reader.query(ACTIVE_GRANT_SQL, {"principal": name, "role": role})
        if not rows:
            raise NotFound(f"{name} does not hold the role {role}: `govern principals list` shows who holds what")
        if role == "admin":
            _, admins = reader.query("SELECT count(*) FROM role_grants WHERE role = 'admin' AND ended_at IS NULL")
            if admins[0][0] == 1:
                raise StateConflict(
                    f"{name} is the last admin: grant admin to someone else first, or no one could manage access"
                )
        return [PendingEvent(RoleRevoked(principal=name, role=role, reason=why), project.actor, utc_now())]

    return project.ledger.transact(decide)[0]


def issue_token(
    principal: str,
    expires: str | None = None,
    description: str = "",
    start: Path | None = None,
    actor: str | None = None,
) -> Issued:
    """A new bearer token for a principal that holds a role now; the ledger keeps only its secret's hash."""
    project = open_project(start, actor)
    name = access.check_principal_name(principal)
    now = utc_now()
    token = access.new_token(name, access.expiry(expires, now))
    note = text_argument(description, "--description") if description else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        _, rows = reader.query("SELECT 1 FROM role_grants WHERE principal = $p AND ended_at IS NULL", {"p": name})
        if not rows:
            raise NotFound(f"{name} holds no role: grant one first (govern principals add {name} --role ROLE)")
        fact = TokenIssued(
            principal=name,
            token_id=token.token_id,
            secret_sha256=access.secret_digest(token.secret),
            expires_at=format_timestamp(token.expires_at) if token.expires_at else None,
            description=note,
        )
        return [PendingEvent(fact, actor=project.actor, occurred_at=now)]

    return Issued(token, project.ledger.transact(decide)[0])


def revoke_token(token_id: str, reason: str = "", start: Path | None = None, actor: str | None = None) -> RecordedEvent:
    project = open_project(start, actor)
    why = text_argument(reason, "--reason") if reason else ""
    bearer = access.parse_bearer(token_id)
    if bearer is not None:  # the whole token pasted: its id is enough, and its secret is never echoed
        token_id = bearer[0]
    elif not access.TOKEN_ID.match(token_id):
        raise InvalidInput("Give the token's 12-character id (govern tokens list shows them), or the token itself")

    def decide(reader: Reader) -> list[PendingEvent]:
        rows = queries.rows_as_dicts(reader, "SELECT * FROM access_tokens WHERE token_id = $id", {"id": token_id})
        found = rows[0] if rows else None
        if found is None:
            raise NotFound(f"No token {token_id!r}: `govern tokens list` shows their ids")
        if found["revoked_at"] is not None:
            raise StateConflict(f"Token {token_id} was revoked already, at {format_timestamp(found['revoked_at'])}")
        fact = TokenRevoked(principal=found["principal"], token_id=token_id, reason=why)
        return [PendingEvent(fact, actor=project.actor, occurred_at=utc_now())]

    return project.ledger.transact(decide)[0]


def link_identity(
    principal: str, identity: str, reason: str = "", start: Path | None = None, actor: str | None = None
) -> RecordedEvent:
    """Record that a git identity (`Name <email>`) is `principal`'s: versions it trained in a checkout count as
    the principal's for the four-eyes rule. One principal per identity; a link is never undone (a wrong link
    only makes the rule stricter)."""
    project = open_project(start, actor)
    name = access.check_principal_name(principal)
    who = access.check_identity(identity)
    why = text_argument(reason, "--reason") if reason else ""

    def decide(reader: Reader) -> list[PendingEvent]:
        _, known = reader.query("SELECT 1 FROM role_grants WHERE principal = $p LIMIT 1", {"p": name})
        if not known:
            raise NotFound(f"No principal {name!r}: add it first (govern principals add {name} --role ROLE)")
        _, linked = reader.query(
            "SELECT principal FROM principal_identities WHERE lower(identity) = lower($identity)", {"identity": who}
        )
        if linked:
            owner = linked[0][0]
            if owner == name:
                raise StateConflict(f"{who} is linked to {name} already")
            raise StateConflict(f"{who} is linked to {owner} already: one identity names one person")
        return [PendingEvent(IdentityLinked(principal=name, identity=who, reason=why), project.actor, utc_now())]

    return project.ledger.transact(decide)[0]


def identities(ledger: LedgerStore) -> list[dict[str, Any]]:
    """Every git identity linked to a principal, oldest first."""
    if not ledger.exists():
        return []
    return queries.rows_as_dicts(
        ledger, "SELECT principal, identity, linked_at, linked_by, reason FROM principal_identities ORDER BY seq"
    )


def roles_at(ledger: LedgerStore, at: datetime | None = None) -> list[dict[str, Any]]:
    """Who held which role at `at` (now by default): the answer to "who could approve on date T"."""
    from govern.timeparse import not_in_future

    if at is not None:
        not_in_future(at, "--at", "who holds a role later is not known yet")
    if not ledger.exists():
        return []
    return queries.rows_as_dicts(ledger, ROLES_AT_SQL, {"at": queries.naive_utc(at or utc_now())})


def tokens(ledger: LedgerStore, principal: str | None = None) -> list[dict[str, Any]]:
    """Every token ever issued (never its secret), with whether it is active, expired or revoked now."""
    if not ledger.exists():
        return []
    now = queries.naive_utc(utc_now())
    rows = queries.rows_as_dicts(ledger, TOKENS_SQL, {"principal": principal})
    for row in rows:
        expired = row["expires_at"] is not None and row["expires_at"] <= now
        row["state"] = "revoked" if row["revoked_at"] is not None else "expired" if expired else "active"
    return rows


def authenticate(ledger: LedgerStore, bearer: str | None) -> access.Principal:
    """The principal a bearer token stands for now, or `Unauthenticated` (one message for every kind of bad
    token, so a caller learns nothing about which ids exist)."""
    refused = InvalidToken("A valid bearer token is required: `govern tokens create NAME` issues one")
    parsed = access.parse_bearer(bearer or "")
    if parsed is None or not ledger.exists():
        raise refused
    token_id, secret = parsed
    row = _TOKEN_ROWS.row(ledger, token_id)
    if row is None or not access.secret_matches(secret, row["secret_sha256"]):
        raise refused
    return _principal(row, token_id)  # the secret matched: what is wrong with the token tells its holder only


def authenticate_session(ledger: LedgerStore, token_id: str) -> access.Principal:
    """The principal of a web session: the token it signed in with (its secret was checked then; the session
    cookie is signed by the server) as it stands now, so a revocation ends the session at the next request."""
    row = _TOKEN_ROWS.row(ledger, token_id) if access.TOKEN_ID.match(token_id) and ledger.exists() else None
    if row is None:
        raise Unauthenticated("The session's token is not known to this ledger: sign in again")
    return _principal(row, token_id)


def _principal(row: dict[str, Any], token_id: str) -> access.Principal:
    now = queries.naive_utc(utc_now())
    if row["revoked_at"] is not None:
        raise Unauthenticated(
            f"The token {token_id} was revoked at {format_timestamp(row['revoked_at'])}: ask an admin for a new one"
        )
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise Unauthenticated(
            f"The token {token_id} expired at {format_timestamp(row['expires_at'])}: ask an admin for a new one"
        )
    roles = {grant["role"]: tuple(grant["apps"]) for grant in row["roles"]}
    return access.Principal(row["principal"], roles, token_id)


GRANT_HISTORY_SQL = """
SELECT grant_seq, principal, role, apps, granted_at, granted_by, reason, ended_at, end_seq, ended_by, ended_how
FROM role_grants WHERE $principal IS NULL OR principal = $principal
ORDER BY grant_seq DESC LIMIT $limit
"""


def grant_history(ledger: LedgerStore, principal: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Role grants over time, newest first: each grant with when and by whom it ended (revoked, or replaced by
    a grant of the same role with other apps); at most `limit` of them."""
    if principal is not None:
        access.check_principal_name(principal)
    if not ledger.exists():
        return []
    return queries.rows_as_dicts(ledger, GRANT_HISTORY_SQL, {"principal": principal, "limit": limit})
