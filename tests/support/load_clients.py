"""Clients that hammer a `govern serve`, for tests/test_server_stays_up.py: run as a process of its own, so the test's
own measurements do not queue behind them for Python's GIL.

    python tests/support/load_clients.py URL SECONDS GROUP...   where GROUP is COUNT:PATH:TOKEN

Each client keeps one HTTP/1.1 connection (bounded sockets: no port exhaustion over a minute) and sends its request
again as soon as the last one is answered. At the end, prints one JSON line: per group ("N:PATH", N its position),
the count of each status.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


async def client(host: str, port: int, path: str, token: str, until: float, seen: Counter[str]) -> None:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()  # fmt: skip
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            seen["connect-error"] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.monotonic() < until:
                writer.write(request)
                await writer.drain()
                status = (await reader.readline()).split(b" ")
                if len(status) < 2:
                    seen["closed"] += 1
                    break
                length, close = 0, False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "connection" and value.strip().lower() == "close":
                        close = True
                await reader.readexactly(length)
                seen[status[1].decode()] += 1
                if close:
                    break
        except (OSError, asyncio.IncompleteReadError):
            seen["connection-error"] += 1
        finally:
            writer.close()


async def main(url: str, seconds: float, groups: list[str]) -> dict[str, dict[str, int]]:
    parts = urlsplit(url)
    until = time.monotonic() + seconds
    seen: dict[str, Counter[str]] = {}
    tasks = []
    for number, group in enumerate(groups):
        count, path, token = group.split(":", 2)
        counts = seen[f"{number}:{path}"] = Counter()
        tasks += [client(parts.hostname, parts.port, path, token, until, counts) for _ in range(int(count))]
    await asyncio.gather(*tasks)
    return {path: dict(counts) for path, counts in seen.items()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3:]))), flush=True)
