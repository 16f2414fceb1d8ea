"""Checking a bearer token: the principal a token or a web session stands for now, from this process's token
table (one read of the ledger's token rows, refreshed when the ledger moves), in constant time whatever the token,
never waiting for the ledger on the server's door."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from govern import access, attribution
from govern.envelope import format_timestamp, utc_now
from govern.errors import Forbidden, GovernError, InvalidInput, NotFound, StateConflict
from govern.readmodel import access as access_reads
from govern.readmodel.access import ACCESS_TYPES, AuthTokenRow
from govern.readmodel.reader import Reader
from govern.readmodel.rows import naive_utc
from govern.storage import LedgerStore

log = logging.getLogger("govern.server")


class Unauthenticated(GovernError):
    """No valid token: missing, malformed, unknown, expired or revoked."""

    http_status = 401  # with `WWW-Authenticate` (`server.http.problem`)


class InvalidToken(Unauthenticated):
    """Missing, malformed, unknown or of a wrong secret: one message for all, so a caller learns nothing about
    which token ids exist."""


class InvalidCode(Unauthenticated):
    """Not an enrollment code this ledger issued (malformed, unknown, or of a wrong secret): one message for all."""


# What a refused redemption raises: counted by the server's throttle (`govern.throttle`), which lets a valid code
# through whatever others sent.
REDEMPTION_REFUSALS: tuple[type[Exception], ...] = (Unauthenticated, InvalidInput, NotFound, Forbidden, StateConflict)


# What an unknown token id's secret is compared with, so that it costs what a known id's comparison costs.
DUMMY_DIGEST = "0" * 64


@dataclass(frozen=True)
class _Snapshot:
    """The token table of one ledger as read at (seq, hash), when the ledger looked like `marker`."""

    rows: dict[str, AuthTokenRow]
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
    SETTLE_WAIT = 2.0  # seconds a read may wait for the ledger before a token the snapshot does not know is refused

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

    def rows(self, ledger: LedgerStore, *, read: bool = True) -> dict[str, AuthTokenRow]:
        """The token table of `ledger`, fresh enough to authenticate with, or `LedgerLocked`. With `read` False,
        the ledger is not read here at all (the server's door reads it once for every request that needs it:
        `refresh`), only the snapshot answers."""

        from govern.errors import LedgerLocked
        from govern.storage.sessions import wait_budget

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

    def settle(self, ledger: LedgerStore) -> bool:
        """Read `ledger` again, waiting up to SETTLE_WAIT for it (within the request's budget), because a token is
        about to be refused by a snapshot that may be older than the token (made a moment ago by another process
        while this one could not read). True where the table was read (or found current); False where the ledger
        stayed busy (the caller answers 503, retry, rather than 401 to a token that may be good)."""
        from govern.errors import GovernError
        from govern.storage.sessions import bounded_wait

        if self.current(ledger):
            return True
        patience = bounded_wait(self.SETTLE_WAIT) or 0.0
        try:
            self._read(ledger, wait=False, patience=patience)
        except GovernError as error:
            self._read_later(ledger)
            log.debug("govern serve: the tokens of %s could not be read before a refusal: %s", ledger.location, error)
            return False
        return True

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

        if found.confirmed_at == float("-inf"):
            return True
        if marker is not None:
            return marker != found.marker
        return time.monotonic() - found.confirmed_at >= self.refresh_every

    def _read(self, ledger: LedgerStore, *, wait: bool, forced: bool = False, patience: float = 0.0) -> _Snapshot:
        """Read the ledger into a new snapshot. With `wait` (a command line, the background thread), as any reader
        does; without, the read never waits for the ledger (`LedgerLocked` where this process's turn on it, or
        another process's lock, is held), and requests take turns at it: one waits up to PEER_WAIT for another's
        read (which never waits for the ledger either), and takes that snapshot where it holds (unless `forced`).
        `patience`: seconds the read may wait for the ledger after all (`settle`)."""
        import threading

        from govern.errors import LedgerLocked
        from govern.storage.sessions import wait_at_most

        location = ledger.location
        if wait:
            return self._keep(location, self._query(ledger, self._snapshots.get(location)))
        with self._guard:
            reading = self._reading.setdefault(location, threading.Lock())
        if not reading.acquire(timeout=self.PEER_WAIT + patience):
            raise LedgerLocked(f"The tokens of {location} are being read by another request")
        try:
            found = self._snapshots.get(location)
            if found is not None and not forced and not self._due(found, _marker(ledger)):
                return found  # another request read it while this one waited
            with wait_at_most(patience):
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
            seen_hash, head, head_hash, changed = access_reads.changes_since(reader, seq)
            rows = found.rows if found is not None else None
            if rows is None or (seq and seen_hash != hash_) or changed:
                # the first read, another ledger at this place, or access changed: read the table again
                rows = _honoured(reader, access_reads.token_table(reader))
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


def _honoured(reader: Reader, rows: list[AuthTokenRow]) -> dict[str, AuthTokenRow]:
    """The token table as a server honours it. In a signed (team) ledger, once two admins exist, an approver or
    admin role granted after that, and a token of a principal holding one made after that, count only where every
    event the token comes from is the server's (authenticated, with a signature that holds): its `token.issued`,
    the enrollment code it was redeemed with, and the token it was made with (a principal's token for itself). A
    holder of the ledger's writer role can append a `token.issued`, a `token.code_issued` or an `access.granted`
    by hand (the second and third reviews did, as INSERTs, then redeemed the code through the server, which signed
    the redemption); such events are in the chain, shown self-asserted, and give no power here. The token keeps
    its other roles."""
    from govern import attestations

    signed, closed = access_reads.bootstrap_closed(reader)
    if not signed or closed is None:
        return {row.token_id: row for row in rows}
    by_id = {row.token_id: row for row in rows}
    late: set[int] = set()
    for row in rows:
        late.update(g["grant_seq"] for g in row.roles if g["role"] in access.PRIVILEGED and g["grant_seq"] > closed)
        late.update(seq for seq, authn in _origins(row) if seq > closed and _claims_server(authn))
    checked = attestations.check_events(reader, sorted(late))

    def servers(seq: int | None, authn: Any) -> bool:
        return seq is None or seq <= closed or (_claims_server(authn) and checked.get(seq) is None)

    trusted: dict[str, bool] = {}

    def from_server(token_id: str, depth: int = 0) -> bool:
        """Every event this token comes from is the server's, or the bootstrap's (memoised; chains are short)."""
        if token_id not in trusted:
            row = by_id.get(token_id)
            trusted[token_id] = False  # a cycle, or too deep: not trusted
            if row is not None and depth < 32 and all(servers(seq, authn) for seq, authn in _origins(row)):
                parent = _made_with(row)  # a parent the table lacks: the signed issuance vouches for it alone
                trusted[token_id] = parent is None or parent not in by_id or from_server(parent, depth + 1)
        return trusted[token_id]

    honoured = {}
    for row in rows:
        roles = [
            g for g in row.roles if g["role"] not in access.PRIVILEGED or servers(g["grant_seq"], g["granted_authn"])
        ]
        if any(g["role"] in access.PRIVILEGED for g in roles) and not from_server(row.token_id):
            roles = [g for g in roles if g["role"] not in access.PRIVILEGED]
        if len(roles) != len(row.roles):
            log.warning(
                "govern serve: token %s of %s is not honoured for %s: granted or issued after two admins existed "
                "without the server's signature",
                row.token_id, row.principal,
                ", ".join(sorted({g["role"] for g in row.roles} - {g["role"] for g in roles})),
            )  # fmt: skip
        honoured[row.token_id] = replace(row, roles=roles)
    return honoured


def _origins(row: AuthTokenRow) -> list[tuple[int | None, Any]]:
    """The events a token comes from directly: its issuance, and the enrollment code it was redeemed with."""
    found: list[tuple[int | None, Any]] = [(row.issued_seq, row.issued_authn)]
    if row.code_seq is not None:
        found.append((row.code_seq, row.code_authn))
    return found


def _made_with(row: AuthTokenRow) -> str | None:
    """The token a principal used to make this one for itself, if it did."""
    found = attribution.TOKEN_ACTOR.match(row.issued_by or "")
    if found is None or found.group(1) != row.principal or found.group(2) == row.token_id:
        return None
    return found.group(2)


def _claims_server(authn: Any) -> bool:
    import json

    if not authn:
        return False
    found = json.loads(authn) if isinstance(authn, str) else authn
    return isinstance(found, dict) and found.get("by") == "server"


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


def authenticate(ledger: LedgerStore, bearer: str | None, *, read: bool = True) -> access.Principal:
    """The principal a bearer token stands for now, or `Unauthenticated` (one message for every kind of bad
    token, so a caller learns nothing about which ids exist), from this process's `TokenTable`: a known and an
    unknown id take the same steps (an unknown id's secret is compared with a dummy digest), and neither waits
    for the ledger (`LedgerLocked` where the table is too old to trust and the ledger too busy to read). A token
    the table refuses while it may be out of date is checked again after one patient read (`TokenTable.settle`):
    a token made a moment ago elsewhere works at once, or the answer is 503 (retry), never 401. With `read` False,
    only the table answers (the server's door settles on its own, off the event loop)."""
    try:
        return _authenticated(ledger, bearer, read=read)
    except Unauthenticated:
        if not read or not access.parse_bearer(bearer or "") or _TOKENS.current(ledger):
            raise
        if not _TOKENS.settle(ledger):
            raise unsettled(ledger) from None
        return _authenticated(ledger, bearer, read=False)


def unsettled(ledger: LedgerStore) -> Exception:
    """What a token refused by an out-of-date table, with the ledger too busy to read, is answered (503)."""
    from govern.errors import LedgerLocked

    return LedgerLocked(
        f"The ledger {ledger.location} is too busy to check this token against its latest state: retry in a moment"
    )


def _authenticated(ledger: LedgerStore, bearer: str | None, *, read: bool) -> access.Principal:
    refused = InvalidToken("A valid bearer token is required: `govern tokens create NAME` issues one")
    parsed = access.parse_bearer(bearer or "")
    if parsed is None:
        access.secret_matches("", DUMMY_DIGEST)
        raise refused
    token_id, secret = parsed
    row = _TOKENS.rows(ledger, read=read).get(token_id)
    matched = access.secret_matches(secret, row.secret_sha256 if row is not None else DUMMY_DIGEST)
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


def _principal(row: AuthTokenRow, token_id: str) -> access.Principal:
    now = naive_utc(utc_now())
    if row.revoked_at is not None:
        raise Unauthenticated(
            f"The token {token_id} was revoked at {format_timestamp(row.revoked_at)}: ask an admin for a new one"
        )
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthenticated(
            f"The token {token_id} expired at {format_timestamp(row.expires_at)}: ask an admin for a new one"
        )
    roles = {grant["role"]: tuple(grant["apps"]) for grant in row.roles}
    return access.Principal(row.principal, roles, token_id)
