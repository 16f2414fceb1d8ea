"""Ed25519 keys and signatures, through `cryptography` (installed with MLflow): the only importer of it for
signing. Raw 32-byte public keys travel base64-encoded; private keys live in PKCS#8 PEM files."""

from __future__ import annotations

import base64
from pathlib import Path


class BadKey(ValueError):
    """A key file or public key that is not an Ed25519 key."""


def generate() -> bytes:
    """A new private key, as an unencrypted PKCS#8 PEM (the file's mode keeps it secret, as an SSH host key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class PrivateKey:
    """A loaded private key: signs, and tells its public half."""

    def __init__(self, pem: bytes) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise BadKey(f"not a PEM private key ({error})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise BadKey("not an Ed25519 key")
        self._key = key

    @classmethod
    def load(cls, path: Path) -> PrivateKey:
        return cls(path.read_bytes())

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode("ascii")

    def public(self) -> str:
        from cryptography.hazmat.primitives import serialization

        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")


class PublicKey:
    """A public key (base64 of its 32 raw bytes) that checks signatures."""

    def __init__(self, public: str) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            self._key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public, validate=True))
        except (ValueError, TypeError) as error:
            raise BadKey(f"not an Ed25519 public key ({error})") from None

    def verifies(self, signature: str | None, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        if not signature:
            return False
        try:
            self._key.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True
