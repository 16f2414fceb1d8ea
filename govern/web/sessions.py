"""Browser sessions of the web pages: a signed cookie naming the token that signed in, and CSRF tokens bound to it.

The cookie carries the token's id and a random nonce, never its secret, signed and timestamped with the server's
session key (itsdangerous): a stolen cookie works for the web pages only, and only until the session expires,
whereas a stolen bearer token works on the API for months. Every request still authenticates the token by id
against the ledger, so revoking the token or the principal's roles ends its sessions at the next request.
Nothing is kept on the server, so several `--workers` share sessions when they share the key (`govern serve`
gives its workers one; `GOVERN_SESSION_SECRET` keeps sessions across restarts).

CSRF: every form carries a token derived from the session's nonce (before sign-in, from a nonce cookie of its
own), checked on every POST, on top of `SameSite=Strict` cookies.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

SESSION_COOKIE = "govern_session"
NONCE_COOKIE = "govern_form"  # the CSRF nonce of a browser that has not signed in yet
SESSION_LIFETIME = timedelta(hours=8)  # a working day; then sign in again


@dataclass(frozen=True)
class WebSession:
    token_id: str
    nonce: str


class SessionKeys:
    """Sign and read session cookies and CSRF tokens with one secret key."""

    def __init__(self, secret: str, lifetime: timedelta = SESSION_LIFETIME) -> None:
        from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

        if len(secret) < 32:
            raise ValueError("a session key needs at least 32 characters")
        self.lifetime = lifetime
        self._sessions = URLSafeTimedSerializer(secret, salt="govern-session")
        self._nonces = URLSafeSerializer(secret, salt="govern-form-nonce")
        self._csrf_key = hmac.new(secret.encode(), b"govern-csrf", "sha256").digest()

    def session_cookie(self, token_id: str) -> str:
        return self._sessions.dumps({"token": token_id, "nonce": secrets.token_urlsafe(16)})

    def session(self, cookie: str | None) -> WebSession | None:
        """The session a cookie stands for; None when absent, forged or older than the lifetime."""
        from itsdangerous import BadSignature

        if not cookie:
            return None
        try:
            found: Any = self._sessions.loads(cookie, max_age=int(self.lifetime.total_seconds()))
        except BadSignature:  # SignatureExpired is one
            return None
        if not isinstance(found, dict) or not isinstance(found.get("token"), str):
            return None
        return WebSession(found["token"], str(found.get("nonce", "")))

    def nonce_cookie(self) -> str:
        return self._nonces.dumps(secrets.token_urlsafe(16))

    def nonce(self, cookie: str | None) -> str | None:
        from itsdangerous import BadSignature

        if not cookie:
            return None
        try:
            found = self._nonces.loads(cookie)
        except BadSignature:
            return None
        return found if isinstance(found, str) else None

    def csrf_token(self, nonce: str) -> str:
        return hmac.new(self._csrf_key, nonce.encode(), "sha256").hexdigest()

    def csrf_matches(self, nonce: str | None, given: str | None) -> bool:
        if not nonce or not given:
            return False
        return hmac.compare_digest(self.csrf_token(nonce), given)


def new_secret() -> str:
    return secrets.token_urlsafe(32)
