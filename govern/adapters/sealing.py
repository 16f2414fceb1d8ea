"""Authenticated encryption of a short secret for one trip (the cryptography package's Fernet): what a web page
hands the browser to carry and take back, unreadable and unforgeable to everyone without the key."""

from __future__ import annotations

import base64
import hashlib


def _fernet(key_material: str):  # noqa: ANN202 - the library's type stays in this module
    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_material.encode()).digest()))


def seal(key_material: str, data: bytes) -> str:
    """`data` encrypted and authenticated under a key derived (sha256) from `key_material`."""
    return _fernet(key_material).encrypt(data).decode()


def unseal(key_material: str, token: str, max_age: int) -> bytes | None:
    """What `seal` sealed under the same key material, not older than `max_age` seconds; None otherwise."""
    from cryptography.fernet import InvalidToken

    try:
        return _fernet(key_material).decrypt(token.encode(), ttl=max_age)
    except (InvalidToken, ValueError):
        return None
