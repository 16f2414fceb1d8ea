"""How often an unauthenticated operation may be tried: per client address, and in total.

Redeeming an enrollment code is the one operation without a bearer token: the code itself authenticates it. A
code's secret is 256 random bits, so guessing is hopeless whatever the rate; the limit keeps one client from
turning a public write (each attempt reads the ledger, a success appends to it) into a way to load the server,
and answers it with 429 and `Retry-After`, as RFC 6585 asks. Sliding windows in memory, per server process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from govern.errors import GovernError


class TooManyAttempts(GovernError):
    """Too many attempts from this address, or in total: wait and try again (429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Throttle:
    """At most `per_client` attempts per address and `total` attempts in all within `window` seconds."""

    def __init__(self, per_client: int, total: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client, self.total, self.window, self.clock = per_client, total, window, clock
        self._guard = threading.Lock()
        self._seen: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def attempt(self, client: str, what: str) -> None:
        """Count one attempt by `client`, or refuse it (counting nothing) with how long to wait."""
        now = self.clock()
        with self._guard:
            self._expire(now)
            mine = self._seen.setdefault(client, deque())
            for seen, limit, whose in ((mine, self.per_client, "from this address"), (self._all, self.total, "")):
                if len(seen) >= limit:
                    wait = max(1, int(seen[0] + self.window - now) + 1)
                    scope = f" {whose}" if whose else " on this server"
                    raise TooManyAttempts(
                        f"Too many attempts to {what}{scope} ({limit} in {self.window:g} s): try again in {wait} s",
                        wait,
                    )
            mine.append(now)
            self._all.append(now)

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for client in list(self._seen):
            seen = self._seen[client]
            while seen and seen[0] <= horizon:
                seen.popleft()
            if not seen:
                del self._seen[client]
