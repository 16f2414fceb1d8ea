"""Results of mirrors and sync (see `govern.api.results`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from govern.envelope import RecordedEvent
    from govern.readmodel.mirrors import Pending


@dataclass(frozen=True)
class MirrorOutcome:
    events: list[RecordedEvent] = field(default_factory=list)
    pending: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RegistryOutcome:
    events: list[RecordedEvent] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SyncOutcome:
    events: list[RecordedEvent]
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
