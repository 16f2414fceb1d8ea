"""Results of audit and integrity (see `govern.api.results`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from govern.presentation import jsonable

if TYPE_CHECKING:
    from pathlib import Path

    from govern.attestations import AttestationReport
    from govern.storage.contract import Verification


@dataclass(frozen=True)
class Copied:
    location: str
    verification: Verification
    added: int
    grants: list[str] = field(default_factory=list)  # where the copy created a PostgreSQL ledger's schema

    @property
    def ok(self) -> bool:
        return self.verification.ok

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.location, "added": self.added, "grants": self.grants, **jsonable(self.verification)}


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Anchor:
    tag: str
    seq: int
    hash: str


@dataclass(frozen=True)
class IntegrityReport:
    chain: Verification
    anchors: list[Anchor] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    repository: Path | None = None  # where anchors were looked for; None: not checked at all
    attestations: AttestationReport | None = None  # None: not checked (the chain failed first)

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems and (self.attestations is None or self.attestations.ok)

    @property
    def anchors_checked(self) -> bool:
        return self.repository is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            **jsonable(self.chain),
            "ok": self.ok,
            "chain_ok": self.chain.ok,
            "anchors": [{"tag": a.tag, "seq": a.seq, "hash": a.hash} for a in self.anchors],
            "anchors_checked": self.anchors_checked,
            "repository": str(self.repository) if self.repository else None,
            "anchors_found": len(self.anchors),
            "latest_anchor": {"tag": self.anchors[-1].tag, "seq": self.anchors[-1].seq} if self.anchors else None,
            "anchor_problems": self.problems,
            "attestations": self.attestations.to_dict() if self.attestations else None,
        }


@dataclass(frozen=True)
class AnchorState:
    """The ledger's head and how it stands against the repository's anchors, without re-hashing the chain: each
    anchored seq is looked up and its hash compared (what `verify` adds is every hash and link recomputed)."""

    head_seq: int | None
    head_hash: str | None
    anchors: list[Anchor]
    problems: list[str]
    repository: Path | None

    @property
    def anchors_checked(self) -> bool:
        return self.repository is not None
