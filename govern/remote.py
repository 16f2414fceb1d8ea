"""A client of `govern serve`: one JSON request, the server's problem details as govern's own errors.

The standard library's urllib is enough for JSON over HTTP(S) with a bearer token, and it costs no import time;
the server's RFC 9457 `detail` is the same one-line message the CLI prints, so a remote failure reads exactly
as a local one, with the same exit code (the status is mapped back to the error class).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govern.errors import Forbidden, GovernError, InvalidInput, LedgerLocked, NotFound, PolicyViolation

API = "/api/v1"
TIMEOUT = 60.0
UPLOAD_TIMEOUT = 600.0  # seconds for a training's facts and model files to reach the server and be recorded


class Unreachable(GovernError):
    """The server could not be reached."""


class RemoteUnauthenticated(GovernError):
    """The server refused the token (401)."""


# The error class of each HTTP status, so a remote failure exits as the same local one would.
ERRORS: dict[int, type[GovernError]] = {
    400: InvalidInput,
    401: RemoteUnauthenticated,
    403: Forbidden,
    404: NotFound,
    409: PolicyViolation,
    413: InvalidInput,
    422: InvalidInput,
    503: LedgerLocked,
}


@dataclass(frozen=True)
class Server:
    """Where a `govern serve` answers, and the token to send it."""

    url: str
    token: str

    @classmethod
    def from_environment(cls, url: str | None = None, environ: Mapping[str, str] | None = None) -> Server:
        env = os.environ if environ is None else environ
        base = (url or env.get("GOVERN_URL") or "").rstrip("/")
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInput(
                f"{base or 'the server URL'!r} is not an http(s) URL of a govern server, such as "
                "https://govern.example.com"
            )
        if parsed.path.rstrip("/").endswith("/api/v1"):
            root = base[: -len("/api/v1")]
            raise InvalidInput(f"GOVERN_URL is the server's root, without /api/v1: use {root}")
        token = env.get("GOVERN_TOKEN", "").strip()
        if not token:
            raise InvalidInput("GOVERN_TOKEN is not set: export the token `govern tokens create NAME` printed")
        return cls(base, token)

    def call(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        """One JSON request; the decoded answer, or the server's problem raised as the matching GovernError."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        raw, _ = self._exchange(method, path, data, "application/json" if data is not None else None, query)
        return json.loads(raw) if raw else None

    def _exchange(
        self, method: str, path: str, data: bytes | None, kind: str | None, query: Mapping[str, Any] | None
    ) -> tuple[bytes, dict]:
        address = self.url + API + path
        pairs = [(k, v) for k, v in (query or {}).items() if v is not None]
        if pairs:
            address += "?" + urllib.parse.urlencode(pairs, doseq=True)
        request = urllib.request.Request(address, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if kind is not None:
            request.add_header("Content-Type", kind)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 - http(s) checked above
                return answer.read(), {k.lower(): v for k, v in answer.headers.items()}
        except urllib.error.HTTPError as error:
            raise _problem(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"Cannot reach the govern server at {self.url} ({reason}): check GOVERN_URL") from None

    def send(self, path: str, body: bytes, kind: str, query: Mapping[str, Any] | None = None) -> tuple[bytes, dict]:
        """A request whose body is not JSON (CSV rows): the answer's bytes and headers (lower-case names)."""
        return self._exchange("POST", path, body, kind, query)

    def fetch(self, path: str, query: Mapping[str, Any] | None = None) -> tuple[bytes, dict]:
        """A GET whose answer is not JSON (a report): its bytes and headers."""
        return self._exchange("GET", path, None, None, query)

    def upload(self, path: str, fields: Mapping[str, str], files: Mapping[str, Path]) -> Any:
        """A multipart/form-data POST (form `fields`, and `files` by the name they travel under), streamed from a
        temporary file with its length: model files may be large. The decoded JSON answer."""
        import secrets
        import tempfile

        boundary = f"govern-{secrets.token_hex(16)}"
        with tempfile.TemporaryFile() as body:
            for name, value in fields.items():
                body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
                body.write(value.encode("utf-8") + b"\r\n")
            for name, source in files.items():
                quoted = urllib.parse.quote(name, safe="/._-")
                body.write(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n".encode()
                )
                with source.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        body.write(chunk)
                body.write(b"\r\n")
            body.write(f"--{boundary}--\r\n".encode())
            length = body.tell()
            body.seek(0)
            request = urllib.request.Request(self.url + API + path, data=body, method="POST")
            request.add_header("Authorization", f"Bearer {self.token}")
            request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
            request.add_header("Content-Length", str(length))
            try:
                with urllib.request.urlopen(request, timeout=UPLOAD_TIMEOUT) as answer:  # noqa: S310 - checked
                    return json.loads(answer.read() or b"null")
            except urllib.error.HTTPError as error:
                raise _problem(error) from None
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise Unreachable(
                    f"Cannot reach the govern server at {self.url} ({reason}): check GOVERN_URL"
                ) from None

    def upload_verdict(self, kind: str, payload: dict[str, Any]) -> Any:
        """`ci verify --server`: the server records the verdict under this token's principal."""
        from govern.api.results import Verdict
        from govern.envelope import RecordedEvent

        answer = self.call("POST", "/reproductions", {"type": kind, "payload": payload})
        return Verdict(RecordedEvent.from_dict(answer["event"]), answer["verdict"]["training_seq"])


def _problem(error: urllib.error.HTTPError) -> GovernError:
    """The server's problem as the error class it came from (its `type` names it), else by status."""
    try:
        problem = json.loads(error.read() or b"{}")
    except ValueError:
        problem = {}
    detail = problem.get("detail") if isinstance(problem, dict) else None
    kind = str(problem.get("type", "") if isinstance(problem, dict) else "").removeprefix("urn:govern:problem:")
    cls = _by_kind().get(kind) or ERRORS.get(error.code, GovernError)
    return cls(detail or f"The server answered {error.code} {error.reason}")


def _by_kind() -> dict[str, type[GovernError]]:
    """govern's error classes by the name the server's problems carry (`state-conflict`)."""
    from govern import errors

    return {
        errors.problem_kind(value): value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, GovernError)
    }
