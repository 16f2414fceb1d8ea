"""The web pages (issue 15) on the bench's history, through a real `govern serve`.

W1  every page each role can reach, signed in as that role: the p95 of each page's answer time (loopback, so
    about the server's time), the slowest page against the issue's 200 ms

Run inside `python -m bench`, or alone on a history of its own: `python -m bench.web_pages [--events N]
[--repeat R] [--record]` (`--record` puts the row into bench/results.json and BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import tempfile
import time
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from bench.figures import p95, stats
from bench.over_http import served, token

ROLES = (
    ("sci", "scientist"),
    ("appr", "approver"),
    ("con", "consumer"),
    ("aud", "auditor"),
    ("adm", "admin"),
)
MAX_PAGES = 25  # per role: the navigation and the pages one click further
SKIP = re.compile(r"^/(sign-out|static/)|/download|format=")


def measure(project: Path, env: dict[str, str], base: Path, repeat: int, app: str) -> dict[str, Any]:
    tokens = {}
    for name, role in ROLES:
        tokens[name] = token(project, env, f"web-{name}", role, ["--app", app] if role == "consumer" else [])
    timings: dict[str, list[float]] = {}
    with served(project, env, base / "web-server.log") as port:
        for name, _ in ROLES:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            cookie = sign_in(connection, tokens[name])
            for path in crawl(connection, cookie):
                times = timings.setdefault(path, [])
                for _ in range(repeat):
                    began = time.perf_counter()
                    status, _ = get(connection, path, cookie)
                    times.append(time.perf_counter() - began)
                    if status != 200:
                        raise RuntimeError(f"W1: {path} answered {status} to {name}")
            connection.close()
    per_page = {path: p95(times) for path, times in timings.items()}
    slowest = max(per_page, key=per_page.get)
    everything = [t for times in timings.values() for t in times]
    return {
        "W1": {
            "govern": {
                "slowest page": {"p95": per_page[slowest], **stats(timings[slowest])},
                "every page": {"p95": p95(everything), **stats(everything)},
            },
            "peer": None,
            "peer_name": f"{len(per_page)} pages of 5 roles; slowest: {_template(slowest)}",
            "target": "each page <= 200 ms (p95)",
            "met": per_page[slowest] <= 0.2,
            "pages": {path: round(value, 5) for path, value in sorted(per_page.items())},
        }
    }


def sign_in(connection: http.client.HTTPConnection, bearer: str) -> str:
    """The session cookie after posting the sign-in form, as a browser would."""
    connection.request("GET", "/sign-in")
    answer = connection.getresponse()
    page = answer.read().decode()
    nonce = _cookie(answer.getheader("set-cookie") or "")
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)
    body = urllib.parse.urlencode({"token": bearer, "csrf": csrf, "next": "/"})
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": nonce}
    connection.request("POST", "/sign-in", body=body, headers=headers)
    answer = connection.getresponse()
    answer.read()
    if answer.status != 303:
        raise RuntimeError(f"W1: signing in answered {answer.status}")
    return _cookie(answer.getheader("set-cookie") or "")


def crawl(connection: http.client.HTTPConnection, cookie: str) -> list[str]:
    """The pages the navigation links and those one click further, in the order found."""
    status, page = get(connection, "/account", cookie)
    found: list[str] = []
    queue = [link for link in links(page) if link != "/account"]
    nav = list(queue)
    kinds: set[str] = set()
    while queue and len(found) < MAX_PAGES:
        path = queue.pop(0)
        if path in found or SKIP.search(path) or _template(path) in kinds:
            continue  # one page of each kind: a timeline's forty windows are one page, measured once
        kinds.add(_template(path))
        status, page = get(connection, path, cookie)
        if status != 200:
            continue
        found.append(path)
        if path in nav:
            queue.extend(link for link in links(page) if link not in found)
    return found


def get(connection: http.client.HTTPConnection, path: str, cookie: str) -> tuple[int, str]:
    connection.request("GET", path, headers={"Cookie": cookie})
    answer = connection.getresponse()
    return answer.status, answer.read().decode(errors="replace")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href and href.startswith("/") and not href.startswith("//"):
            self.found.append(href.split("#")[0])


def links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return list(dict.fromkeys(parser.found))


def _cookie(header: str) -> str:
    return header.split(";", 1)[0]


def _template(path: str) -> str:
    return re.sub(r"/[0-9a-f]{12}\b|/\d+\b", "/…", path.split("?")[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="ledger size (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="answers per page")
    parser.add_argument("--record", action="store_true", help="write the row into bench/results.json, BENCHMARKS.md")
    args = parser.parse_args(argv)
    import os

    from bench.__main__ import REPO, deployed_at, environment, fill, make_project, markdown

    base = Path(tempfile.mkdtemp(prefix="govern-bench-web-"))
    env = environment(base / "home")
    shared = ("HOME", "GIT_CONFIG_GLOBAL", "DVC_NO_ANALYTICS", "MLFLOW_DISABLE_TELEMETRY")
    os.environ.update({k: env[k] for k in shared})
    project = make_project(base, env)
    filled = fill(project / "audit" / "ledger.duckdb", args.events)
    app, _ = deployed_at(filled["deployments"] - 1)
    row = measure(project, env, base, args.repeat, app)
    print(json.dumps(row, indent=2))
    if args.record:
        results_path = REPO / "bench" / "results.json"
        results = json.loads(results_path.read_text())
        row["W1"]["target"] += f" at {args.events:,} events (python -m bench.web_pages, after the run above)"
        results["rows"].update(row)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        (REPO / "BENCHMARKS.md").write_text(markdown(results))
    print(f"bench: {base} can be deleted", file=sys.stderr)


if __name__ == "__main__":
    main()
