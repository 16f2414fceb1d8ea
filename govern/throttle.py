"""How often an unauthenticated operation may be tried: per client address, and in total.

Redeeming an enrollment code is the one operation without a bearer token: the code itself authenticates it. A
code's secret is 256 random bits, so guessing is hopeless whatever the rate; the limit keeps one client from
turning a public write (each attempt reads the ledger) into a way to load the server, and answers it with 429 and
`Retry-After`, as RFC 6585 asks. Sliding windows in memory, per server process.

Only failures count, and a valid code always gets through the limit in total: a success spends its code, so
successes cannot flood, while a limit in total that counted anyone's junk let ten addresses lock every new
member out of enrollment for as long as they kept sending it (the second security review). An address over its
own limit is refused before its attempt runs; behind a proxy that `server.trusted_proxies` does not name, every
client shares the proxy's address, and its limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from govern.errors import GovernError

T = TypeVar("T")


class TooManyAttempts(GovernError):
    """Too many attempts from this address, or in total: wait and try again (429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Throttle:
    """At most `per_client` failed attempts per address within `window` seconds (then refused before they run);
    beyond `total` failures in all, a failure is answered 429 too, and a success still goes through."""

    def __init__(self, per_client: int, total: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client, self.total, self.window, self.clock = per_client, total, window, clock
        self._guard = threading.Lock()
        self._seen: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def run(self, client: str, what: str, attempt: Callable[[], T], failure: tuple[type[Exception], ...]) -> T:
        """One attempt by `client`: refused (`TooManyAttempts`, nothing run) where the address failed `per_client`
        times in the window; otherwise run. An exception of the `failure` kinds counts against the address and in
        all, and is raised as it is, or as `TooManyAttempts` once the server saw `total` failures in the window."""
        now = self.clock()
        with self._guard:
            self._expire(now)
            mine = self._seen.get(client)
            if mine is not None and len(mine) >= self.per_client:
                raise self._refusal(mine, self.per_client, what, "from this address", now)
        try:
            return attempt()
        except failure:
            with self._guard:
                self._seen.setdefault(client, deque()).append(now)
                self._all.append(now)
                if len(self._all) > self.total:
                    raise self._refusal(self._all, self.total, what, "on this server", now) from None
            raise

    def _refusal(self, seen: deque[float], limit: int, what: str, scope: str, now: float) -> TooManyAttempts:
        wait = max(1, int(seen[0] + self.window - now) + 1)
        return TooManyAttempts(
            f"Too many failed attempts to {what} {scope} ({limit} in {self.window:g} s): try again in {wait} s", wait
        )

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
