"""`govern serve`: the web pages and the API over HTTP, and the server's signing key."""

from __future__ import annotations

import os
from pathlib import Path

import click

from govern.errors import InvalidInput


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The interface to listen on.")
@click.option("--port", default=8750, show_default=True, type=click.IntRange(1, 65535), help="The TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--init-key", is_flag=True, help="Create the signing key (if there is none), print it, and exit.")
@click.option(
    "--rotate-key",
    "rotate_from",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Replace the signing key in OLD_KEY_FILE by a new one it endorses (both recorded), then exit.",
)
@click.option("--reason", default="", help="Why the key is rotated (with --rotate-key).")
def serve(host: str, port: int, workers: int, init_key: bool, rotate_from: Path | None, reason: str) -> None:
    """Serve this project's web pages and API (the controller) over HTTP: the pages at /, the API at /api/v1
    (its OpenAPI document at /api/v1/openapi.json), /health and /ready. Every request needs a token (govern tokens
    create; a bearer header for the API, a sign-in for the pages) and is checked against the role table; every
    event written records the principal and its token, and is signed with the server's key
    ([tool.govern.server] signing_key; created on the first start, mode 0600, outside the checkout)."""
    # cold start: import the use case on use (the api modules load DuckDB)
    from govern.api import keys
    from govern.api.context import open_project
    from govern.config import find_root, load

    root = find_root()
    settings = load(root).server  # a broken configuration is refused here, in one line, not by the first request
    if init_key:
        signer, created = keys.init_key(open_project(root, actor=keys.server_actor()))
        what = "created" if created else "exists already"
        click.echo(f"signing key {signer.fingerprint} {what}: {signer.path}")
        click.echo(f'pin it: [tool.govern.server] trusted_keys = ["{signer.fingerprint}"]')
        return
    if rotate_from is not None:
        new, events = keys.rotate(open_project(root, actor=keys.server_actor()), rotate_from, reason or "rotated")
        click.echo(f"signing key {new.fingerprint} now signs ({new.path}); {rotate_from} is retired")
        for event in events:
            click.echo(f"recorded seq {event.seq:>4}  {event.type:<24} {event.subject}")
        return
    # cold start: import the HTTP server only when it starts
    import uvicorn

    _check_port_free(host, port)
    state = keys.start(open_project(root, actor=keys.server_actor()))
    made = " (created)" if state.created else ""
    click.echo(f"govern: signing with key {state.signer.fingerprint}{made}: {state.signer.path}", err=True)
    os.environ["GOVERN_PROJECT"] = str(root)
    _session_secret()
    click.echo(f"govern: serving {root}: pages at http://{host}:{port}/, the API at /api/v1 (Ctrl-C stops)", err=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            "govern: warning: plain HTTP on a non-loopback address sends bearer tokens in clear; put a "
            "TLS-terminating proxy in front, listen on 127.0.0.1 behind it, and name it in [tool.govern.server] "
            'trusted_proxies = ["127.0.0.1"]',
            err=True,
        )
    uvicorn.run(
        "govern.server.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",  # one access line per request (method, path, status), never a header or a body
        # X-Forwarded-For and -Proto are believed from `server.trusted_proxies` only (uvicorn would otherwise believe
        # any client on 127.0.0.1, or FORWARDED_ALLOW_IPS): the access log shows the socket's peer
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )


def _session_secret() -> None:
    """The key web sessions are signed with, the same for every worker: GOVERN_SESSION_SECRET (to keep sessions
    across restarts), else a new one for this run (signing everyone out at the next restart)."""
    # cold start: import the web layer (FastAPI, DuckDB) only when the server starts
    from govern.web.sessions import new_secret

    given = os.environ.get("GOVERN_SESSION_SECRET")
    if given is not None and len(given) < 32:
        raise InvalidInput(
            "GOVERN_SESSION_SECRET is shorter than 32 characters: set a random one "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))") or unset it'
        )
    os.environ["GOVERN_SESSION_SECRET"] = given or new_secret()


def _check_port_free(host: str, port: int) -> None:
    # cold start: import socket only to check the port
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except socket.gaierror:
        raise InvalidInput(
            f"--host {host}: no such address on this machine; give an IP address or a known name"
        ) from None
    except OSError as error:
        raise InvalidInput(
            f"Cannot listen on {host}:{port} ({os.strerror(error.errno or 0)}): choose another --port or --host, "
            "or stop what listens there"
        ) from None
