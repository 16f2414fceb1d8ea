"""Results of access, keys, projects, hooks (see `govern.api.results`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from govern.presentation import jsonable

if TYPE_CHECKING:
    from pathlib import Path

    from govern import access, signing
    from govern.envelope import RecordedEvent


@dataclass(frozen=True)
class Issued:
    """A token just issued (its bearer value in `token.bearer`), or an enrollment code (its value in `code.code`),
    here and nowhere else. Their JSON forms differ on purpose: a code is never mistaken for a token."""

    token: access.IssuedToken | None
    event: RecordedEvent
    code: access.IssuedCode | None = None

    @property
    def is_code(self) -> bool:
        return self.code is not None

    def to_dict(self) -> dict[str, Any]:
        if self.code is not None:
            return {
                "kind": "enrollment code",
                "code_id": self.code.code_id,
                "principal": self.code.principal,
                "code": self.code.code,
                "expires_at": jsonable(self.code.expires_at),
                "token_expires_at": jsonable(self.code.token_expires_at),
                "seq": self.event.seq,
            }
        assert self.token is not None
        return {
            "kind": "token",
            "token_id": self.token.token_id,
            "principal": self.token.principal,
            "token": self.token.bearer,
            "expires_at": jsonable(self.token.expires_at),
            "seq": self.event.seq,
        }


@dataclass(frozen=True)
class KeyState:
    signer: signing.Signer
    registered: RecordedEvent | None  # the registration this start recorded, if any
    created: bool


@dataclass(frozen=True)
class InitResult:
    root: Path
    config_file: str
    changed: list[str] = field(default_factory=list)
    dvc_initialized: bool = False

    @property
    def already_initialized(self) -> bool:
        return not self.changed and not self.dvc_initialized

    @property
    def to_commit(self) -> list[str]:
        """What `govern init` wrote that git should hold before the first training (`dvc init` staged .dvc)."""
        paths = [path.split("/")[0] if path.startswith("audit/") else path for path in self.changed]
        if self.dvc_initialized:
            paths += [".dvc", ".dvcignore"]
        return list(dict.fromkeys(paths))


@dataclass(frozen=True)
class TeamLedger:
    location: str
    schema_version: int
    grants: list[str]
    writer_url: str  # what the project's configuration should name: the writer role, no password


@dataclass(frozen=True)
class ServerHook:
    hook: Path
    ledger: Path | str
    log: Path
