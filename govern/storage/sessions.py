"""The unit of work: a `Session` holds one connection per ledger for one request or command, and the
per-file turn that shares writers fairly between the callers of one process; the wait budget a server gives
each request."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govern.storage.duckdb_files import Held


_WRITER_LOCKS: dict[str, Turn] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


class Turn:
    """A re-entrant lock per file whose owner is the current session, or else the thread; fair between callers.

    A server request's session may authenticate in one worker thread and run its handler in another (FastAPI
    runs a dependency and an endpoint as separate thread-pool calls); both are the same owner, one after the
    other, so the session keeps the file across them, and other threads and requests wait their turn.

    Waiters are served one caller after the other (`waiting_as`: a server names the principal, or the address of
    an unauthenticated client), and each caller's waiters in the order they came; the turn is handed to the next
    one on release, so a newcomer never overtakes. A principal with many requests queued delays another principal
    by one turn, not by all of them; with a bounded wait (`wait_at_most`), a request's wait is bounded by one turn
    of each caller waiting, not by its luck. Every wait is bounded by the caller's timeout and by the budget of the
    current context (a server request's `lock_wait`)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._owner: object | None = None
        self._depth = 0
        self._queues: dict[str, deque[_Waiter]] = {}  # per caller, the callers in line in order

    def acquire(self, timeout: float | None = None, owner: object | None = None) -> bool:
        """`owner` is who holds the turn (a session, shared by the threads of one request); else this thread."""
        me = threading.get_ident() if owner is None else owner
        timeout = bounded_wait(timeout)
        with self._guard:
            if self._owner is not None and (self._owner is me or self._owner == me):
                self._depth += 1
                return True
            if self._owner is None and not self._queues:
                self._owner, self._depth = me, 1
                return True
            if timeout is not None and timeout <= 0:
                return False
            waiter = _Waiter(me, _CALLER.get())
            self._queues.setdefault(waiter.caller, deque()).append(waiter)
        waiter.granted.wait(timeout)
        with self._guard:
            if waiter.granted.is_set():  # handed over, perhaps just as the wait ran out: it is ours
                return True
            queue = self._queues[waiter.caller]
            queue.remove(waiter)
            if not queue:
                del self._queues[waiter.caller]
            return False

    def release(self) -> None:
        with self._guard:
            self._depth -= 1
            if self._depth > 0:
                return
            following = self._next()
            if following is None:
                self._owner = None
                return
            self._owner, self._depth = following.owner, 1
            following.granted.set()

    def _next(self) -> _Waiter | None:
        """The first waiter of the first caller in line; that caller, if it has more, goes to the end of the line."""
        if not self._queues:
            return None
        caller = next(iter(self._queues))
        queue = self._queues.pop(caller)
        following = queue.popleft()
        if queue:
            self._queues[caller] = queue
        return following

    def busy(self) -> bool:
        """Held by someone, or waited for (a snapshot: for choosing not to queue, never for deciding)."""
        with self._guard:
            return self._owner is not None or bool(self._queues)


@dataclass
class _Waiter:
    owner: object
    caller: str
    granted: threading.Event = field(default_factory=threading.Event)


# Who the work of the current context is done for, so that the per-file turn is shared fairly between callers: a
# server sets it per request (the principal, or the client's address); "" for everything else (one caller).
_CALLER: ContextVar[str] = ContextVar("govern_ledger_caller", default="")


@contextmanager
def waiting_as(caller: str) -> Iterator[None]:
    """Wait for the ledger's turn as `caller` in this context (and the thread-pool calls made from it)."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)


# How long the work of the current context may wait for a lock on the ledger (this process's turn on a file,
# DuckDB's file lock, PostgreSQL's chain lock), on top of each ledger's own `lock_timeout`: a server sets it per
# request (`[tool.govern.server] lock_wait`), so that no request holds a worker thread for longer, and answers
# 503 with Retry-After instead. None (command lines, background jobs): the ledger's lock_timeout alone.
_WAIT_BUDGET: ContextVar[float | None] = ContextVar("govern_ledger_wait_budget", default=None)


@contextmanager
def wait_at_most(seconds: float | None) -> Iterator[None]:
    """Bound every wait for a ledger lock in this context (and the thread-pool calls made from it) to `seconds`;
    0 means do not wait at all."""
    token = _WAIT_BUDGET.set(seconds)
    try:
        yield
    finally:
        _WAIT_BUDGET.reset(token)


def wait_budget() -> float | None:
    """The current context's bound on waiting for a ledger lock, if any (see `wait_at_most`)."""
    return _WAIT_BUDGET.get()


def bounded_wait(timeout: float | None) -> float | None:
    """`timeout` (None: unbounded) cut to the current context's budget."""
    budget = _WAIT_BUDGET.get()
    if budget is None:
        return timeout
    return budget if timeout is None else min(timeout, budget)


class Session:
    """One connection per ledger file for a unit of work, opened on first use and closed by `close()`.

    Opening a DuckDB file costs tens of milliseconds (its catalogue of views is loaded each time); a server
    request that authenticates, reads, decides, writes and looks for pending mirrors would open it four or
    five times. Inside a session it opens once. The connection, and so DuckDB's lock on the file, is held until
    `close()`: keep a session as short as one request's ledger work (no model runs, no network waits). Sandboxed
    auditor queries still get their own connection. `write` opens read-write from the first read, for work that
    will write (reopening would cost a second open). Other stores join through `resources` (a pool's lease)."""

    def __init__(self, *, write: bool = False) -> None:
        self.write = write
        self.closed = False
        self.held: dict[str, Held] = {}
        self.stores: dict[Any, Any] = {}
        self.resources = contextlib.ExitStack()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def holds_nothing(self) -> bool:
        """Nothing opened yet (no connection, no pooled store): closing it has nothing to let go of."""
        return not self.held and not self.stores

    def close(self) -> None:
        """Release what the session holds. It stays closed: work after it (a page's error handler, which runs in
        the request's context once the route's dependencies have ended) opens and closes its own connections,
        instead of holding the file in a session no one would close again."""
        self.closed = True
        try:
            for found in list(self.held.values()):
                found.release()
            self.held.clear()
        finally:
            self.stores.clear()
            self.resources.close()


def live(current: Session | None) -> Session | None:
    """`current` if it is still open (a closed session is no session: work after it opens its own connections)."""
    return current if current is not None and not current.closed else None


def let_go(current: Session | None, path: Path) -> None:
    """Close the session's connection to `path`, if any: what comes next needs another configuration."""
    current = live(current)
    found = current.held.pop(str(path.resolve()), None) if current else None
    if found is not None:
        found.release()


def after_close(current: Session | None, path: Path, own: contextlib.ExitStack) -> contextlib.ExitStack:
    """Where a checkpoint parks what must outlive the connection: the session's connection closes later."""
    current = live(current)
    found = current.held.get(str(path.resolve())) if current else None
    return found.after_close if found is not None else own


def writer_lock(path: Path) -> Turn:
    """One turn per file in this process: writers take it for their whole transaction (and its checkpoint),
    every connection for its lifetime (`Ledger._turn`), a session until it closes."""
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(str(path.resolve()), Turn())
