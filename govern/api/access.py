"""`govern principals` and `govern tokens`: who may act, as ledger facts; and checking a bearer token.

Granting, revoking and issuing are appended like any other fact, in one transaction with the check that
allows them, so the state they are decided on cannot change meanwhile. Run locally, the actor is the git or CI
identity (whoever may write the ledger may manage it: the first admin is made this way); through the server
it is the authenticated admin.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("govern.server")


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

# Every token with what authenticating it needs: its principal, secret digest, expiry, revocation and the
# principal's roles now. Small (one row per token ever issued), read whole into each process's snapshot.
TOKEN_TABLE_SQL = """
SELECT t.token_id, t.principal, t.secret_sha256, t.expires_at, t.revoked_at,
       (SELECT coalesce(list({'role': g.role, 'apps': g.apps} ORDER BY g.role), [])
        FROM role_grants AS g WHERE g.principal = t.principal AND g.ended_at IS NULL) AS roles
FROM access_tokens AS t
"""

# Whether the snapshot still holds: is the ledger the one read (the hash at the seq last seen), and did any event
# that could change a row (a grant, a revocation, a token issued or revoked) come since? Roles depend on no clock,
# and expiry is checked at each request.
ACCESS_TYPES = ("access.granted", "access.revoked", "token.issued", "token.revoked")
CHANGES_SQL = f"""
SELECT (SELECT hash FROM stored_events WHERE seq = $seen) AS seen_hash, max(seq) AS head, arg_max(hash, seq) AS hash,
       count(*) FILTER (WHERE type IN ({", ".join(f"'{kind}'" for kind in ACCESS_TYPES)})) AS changed
FROM stored_events WHERE seq > $seen
"""

# What an unknown token id's secret is compared with, so that it costs what a known id's comparison costs.
DUMMY_DIGEST = "0" * 64


@dataclass(frozen=True)
class _Snapshot:
    """The token table of one ledger as read at (seq, hash), when the ledger looked like `marker`."""

    rows: dict[str, dict[str, Any]]
    seq: int
    hash: str
    marker: Any
    confirmed_at: float  # time.monotonic() when the ledger was last seen to hold exactly this; -inf: known stale


class TokenTable:
    """Every token of a ledger, in this process: a server authenticates every request from it without waiting for
    the ledger, which may be busy with a writer (or a crowd of readers) for seconds.

    Authentication asks `rows()`, which answers from the snapshot while it still holds. Whether it still holds is
    told without the ledger where it can be: a DuckDB file's size, modification time and inode (its write-ahead log's
    too) change with every commit, so a request on an unchanged file reads nothing at all. A PostgreSQL ledger has no
    such sign here: its snapshot is checked against the ledger at most every `refresh_every` seconds. When the
    snapshot may be out of date, the request that notices reads the ledger again *without waiting* for it (it never
    queues behind a writer; requests that notice meanwhile wait for that one read, milliseconds, and take its
    result). If the ledger is busy, the request is answered from the snapshot as long as that was known to hold
    (read, or the file seen unchanged) less than `stale_after` seconds ago, while a background thread waits its turn
    to read the ledger, and with `LedgerLocked` (503) after that. So a revocation or a new token made elsewhere takes
    effect at the next request when the ledger is free, and within `stale_after` when it is not. Nothing here
    depends on the token asked about: a known and an unknown id cost the same, and an unknown id is refused from the
    snapshot."""

    PEER_WAIT = 1.0  # seconds a request waits for another's read of the ledger (which itself never waits) to end

    def __init__(self, stale_after: float = 5.0, refresh_every: float = 1.0) -> None:
        import threading

        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self._guard = threading.Lock()
        self._snapshots: dict[str, _Snapshot] = {}
        self._unchanged: dict[str, float] = {}  # when each ledger file was last seen as its snapshot read it
        self._reading: dict[str, threading.Lock] = {}  # one request reading a ledger at a time
        self._behind: set[str] = set()  # ledgers a background thread is reading again

    def configure(self, *, stale_after: float, refresh_every: float) -> None:
        self.stale_after, self.refresh_every = stale_after, refresh_every

    def current(self, ledger: LedgerStore) -> bool:
        """Does the snapshot of `ledger` hold without reading the ledger (so `rows` answers at once)?"""
        found = self._snapshots.get(ledger.location)
        return found is not None and not self._due(found, _marker(ledger))

    def rows(self, ledger: LedgerStore, *, read: bool = True) -> dict[str, dict[str, Any]]:
        """The token table of `ledger`, fresh enough to authenticate with, or `LedgerLocked`. With `read` False,
        the ledger is not read here at all (the server's door reads it once for every request that needs it:
        `refresh`), only the snapshot answers."""
        import time

        from govern.errors import LedgerLocked
        from govern.ledger import wait_budget

        location = ledger.location
        found = self._snapshots.get(location)
        marker = _marker(ledger)
        if found is not None and not self._due(found, marker):
            if marker is not None:
                self._unchanged[location] = time.monotonic()  # the snapshot held until now, at least
            return found.rows
        if read and (wait_budget() is None or found is None):
            # a command line (no request's budget) waits its turn like any reader; so does a server's first read,
            # within the request's budget (there is no snapshot to answer from: 503 if the ledger stays busy)
            return self._read(ledger, wait=True).rows
        if read:
            try:
                return self._read(ledger, wait=False).rows
            except LedgerLocked:
                pass
        self._read_later(ledger)
        found = self._snapshots.get(location)
        if found is not None and time.monotonic() - self._confirmed(location, found) <= self.stale_after:
            return found.rows
        raise LedgerLocked(
            f"The ledger {location} has been too busy for {self.stale_after:g} s to check tokens against it: retry "
            "in a moment"
        )

    def refresh(self, ledger: LedgerStore) -> None:
        """Read `ledger` again if its snapshot may be out of date, without waiting for it (the first read waits
        within the request's budget); where it cannot be read now, the background thread will. Never raises: the
        requests waiting for this read then answer from the snapshot, or 503 (`rows(read=False)`)."""
        from govern.errors import GovernError

        if self.current(ledger):
            return
        try:
            self._read(ledger, wait=ledger.location not in self._snapshots, forced=True)
        except GovernError as error:
            self._read_later(ledger)
            log.debug("govern serve: the tokens of %s were not read now: %s", ledger.location, error)
        except Exception:  # the waiting requests answer from the snapshot, or 503; the log keeps the why
            log.exception("govern serve: reading the tokens of %s failed", ledger.location)

    def changed(self, ledger: LedgerStore) -> None:
        """Access changed in this process (a grant, a revocation, a token): read the table again now, so the change
        holds from the next request; where the ledger cannot be read now, no request is answered from the old one."""
        import dataclasses

        from govern.errors import GovernError

        location = ledger.location
        if location not in self._snapshots:
            return  # this process authenticates nothing (a command line)
        try:
            self._read(ledger, wait=False, forced=True)
        except GovernError:
            with self._guard:
                found = self._snapshots.get(location)
                if found is not None:
                    self._snapshots[location] = dataclasses.replace(found, confirmed_at=float("-inf"))
            self._read_later(ledger)

    def read_soon(self, ledger: LedgerStore) -> None:
        """Read `ledger`'s tokens in the background (a server starting: its first request need not wait)."""
        self._read_later(ledger)

    def _confirmed(self, location: str, found: _Snapshot) -> float:
        """When the snapshot was last known to hold: read then, or the file seen unchanged since (a change came
        after that, so a revocation is at most this old when the snapshot answers)."""
        if found.confirmed_at == float("-inf"):
            return found.confirmed_at
        return max(found.confirmed_at, self._unchanged.get(location, found.confirmed_at))

    def _due(self, found: _Snapshot, marker: Any) -> bool:
        import time

        if found.confirmed_at == float("-inf"):
            return True
        if marker is not None:
            return marker != found.marker
        return time.monotonic() - found.confirmed_at >= self.refresh_every

    def _read(self, ledger: LedgerStore, *, wait: bool, forced: bool = False) -> _Snapshot:
        """Read the ledger into a new snapshot. With `wait` (a command line, the background thread), as any reader
        does; without, the read never waits for the ledger (`LedgerLocked` where this process's turn on it, or
        another process's lock, is held), and requests take turns at it: one waits up to PEER_WAIT for another's
        read (which never waits for the ledger either), and takes that snapshot where it holds (unless `forced`)."""
        import threading

        from govern.errors import LedgerLocked
        from govern.ledger import wait_at_most

        location = ledger.location
        if wait:
            return self._keep(location, self._query(ledger, self._snapshots.get(location)))
        with self._guard:
            reading = self._reading.setdefault(location, threading.Lock())
        if not reading.acquire(timeout=self.PEER_WAIT):
            raise LedgerLocked(f"The tokens of {location} are being read by another request")
        try:
            found = self._snapshots.get(location)
            if found is not None and not forced and not self._due(found, _marker(ledger)):
                return found  # another request read it while this one waited
            with wait_at_most(0):
                return self._keep(location, self._query(ledger, found))
        finally:
            reading.release()

    def _keep(self, location: str, fresh: _Snapshot) -> _Snapshot:
        """Keep `fresh` unless a read that started later was kept meanwhile (the background's and a request's)."""
        with self._guard:
            found = self._snapshots.get(location)
            if found is None or fresh.confirmed_at >= found.confirmed_at:
                self._snapshots[location] = fresh
                return fresh
            return found

    @staticmethod
    def _query(ledger: LedgerStore, found: _Snapshot | None) -> _Snapshot:
        import time

        started = time.monotonic()
        marker = _marker(ledger)  # before reading: a commit meanwhile changes it again, and is read next time
        asked = getattr(ledger, "access_changes", None)  # PostgreSQL answers without this machine's read model
        if found is not None and found.seq and asked is not None:
            seen_hash, head, head_hash, changed = asked(found.seq, ACCESS_TYPES)
            if seen_hash == found.hash and not changed:
                return _Snapshot(found.rows, head, head_hash, marker, started)
        if not ledger.exists():
            return _Snapshot({}, 0, "", marker, started)
        seq, hash_ = (found.seq, found.hash) if found is not None else (0, "")
        with ledger.reader() as reader:
            [(seen_hash, head, head_hash, changed)] = reader.query(CHANGES_SQL, {"seen": seq})[1]
            rows = found.rows if found is not None else None
            if rows is None or (seq and seen_hash != hash_) or changed:
                # the first read, another ledger at this place, or access changed: read the table again
                rows = {row["token_id"]: row for row in queries.rows_as_dicts(reader, TOKEN_TABLE_SQL)}
        if head is not None:
            seq, hash_ = head, head_hash
        return _Snapshot(rows, seq, hash_, marker, started)

    def _read_later(self, ledger: LedgerStore) -> None:
        """Read the ledger again in a thread of its own, which waits its turn (no request waits for it)."""
        import threading

        location = ledger.location
        with self._guard:
            if location in self._behind:
                return
            self._behind.add(location)

        def read() -> None:
            try:
                self._read(ledger, wait=True, forced=True)
            except Exception as error:  # noqa: BLE001 - logged; the next request tries again
                log.warning("govern serve: the tokens of %s could not be read again: %s", location, error)
            finally:
                with self._guard:
                    self._behind.discard(location)

        threading.Thread(target=read, name="govern-token-table", daemon=True).start()


def _marker(ledger: LedgerStore) -> Any:
    """What changes whenever a DuckDB ledger file does (its and its write-ahead log's inode, size and modification
    time, read with stat and no lock), or None for a ledger with no such sign (PostgreSQL). Asked at every request:
    the paths are kept as strings (pathlib's conversions cost more than the stat)."""
    import os

    if ledger.backend != "duckdb":
        return None
    names = _MARKED.get(ledger.location)
    if names is None:
        path = getattr(ledger, "path", None)
        if path is None:
            return None
        names = _MARKED[ledger.location] = (str(path), f"{path}.wal")
    found = []
    for name in names:
        try:
            stat = os.stat(name)
        except OSError:
            found.append(None)
            continue
        found.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


_MARKED: dict[str, tuple[str, str]] = {}


_TOKENS = TokenTable()


def token_table() -> TokenTable:
    """This process's token table (the server configures its bounds from `[tool.govern.server]`)."""
    return _TOKENS


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

    return _access_changed(project.ledger, project.ledger.transact(decide))[0]


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

    return _access_changed(project.ledger, project.ledger.transact(decide))[0]


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

    return Issued(token, _access_changed(project.ledger, project.ledger.transact(decide))[0])


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

    return _access_changed(project.ledger, project.ledger.transact(decide))[0]


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


def _access_changed(ledger: LedgerStore, recorded: list[RecordedEvent]) -> list[RecordedEvent]:
    """After a grant, a revocation or a token: this process's token table reads it before the next request."""
    _TOKENS.changed(ledger)
    return recorded


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


def authenticate(ledger: LedgerStore, bearer: str | None, *, read: bool = True) -> access.Principal:
    """The principal a bearer token stands for now, or `Unauthenticated` (one message for every kind of bad
    token, so a caller learns nothing about which ids exist), from this process's `TokenTable`: a known and an
    unknown id take the same steps (an unknown id's secret is compared with a dummy digest), and neither waits
    for the ledger (`LedgerLocked` where the table is too old to trust and the ledger too busy to read). With
    `read` False, only the table answers (`TokenTable.rows`)."""
    refused = InvalidToken("A valid bearer token is required: `govern tokens create NAME` issues one")
    parsed = access.parse_bearer(bearer or "")
    if parsed is None:
        access.secret_matches("", DUMMY_DIGEST)
        raise refused
    token_id, secret = parsed
    row = _TOKENS.rows(ledger, read=read).get(token_id)
    matched = access.secret_matches(secret, row["secret_sha256"] if row is not None else DUMMY_DIGEST)
    if row is None or not matched:
        raise refused
    return _principal(row, token_id)  # the secret matched: what is wrong with the token tells its holder only


def authenticate_session(ledger: LedgerStore, token_id: str, *, read: bool = True) -> access.Principal:
    """The principal of a web session: the token it signed in with (its secret was checked then; the session
    cookie is signed by the server) as it stands now, so a revocation ends the session at the next request."""
    row = _TOKENS.rows(ledger, read=read).get(token_id) if access.TOKEN_ID.match(token_id) else None
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
