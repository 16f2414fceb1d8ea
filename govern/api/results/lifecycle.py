"""Results of lifecycle and approvals (see `govern.api.results`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from govern.envelope import RecordedEvent


@dataclass(frozen=True)
class Outcome:
    """The events a lifecycle command appended, and what could not be mirrored."""

    events: list[RecordedEvent]
    warnings: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "events": [event.to_dict() for event in self.events],
            "tags": self.tags,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Requested:
    event: RecordedEvent

    @property
    def request_id(self) -> int:
        return self.event.seq

    def to_dict(self) -> dict[str, Any]:
        return {"request": self.event.seq, "event": self.event.to_dict()}


@dataclass(frozen=True)
class Prediction:
    model: str
    version: str
    app: str | None
    env: str | None
    output: Path
    rows: int | None
    event: RecordedEvent | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "app": self.app,
            "env": self.env,
            "output": str(self.output),
            "rows": self.rows,
            "event_seq": self.event.seq if self.event else None,
        }


@dataclass(frozen=True)
class Answered:
    """A batch sent to the server (the API or the consumer's page) and scored: the recorded prediction, and the
    CSV the model's entry point wrote (with its rows as objects, for a JSON caller)."""

    prediction: Prediction
    csv: bytes
    records: list[dict[str, Any]] | None = None

    def headers(self) -> dict[str, str]:
        event = self.prediction.event
        return {
            "X-Govern-Model": self.prediction.model,
            "X-Govern-Version": self.prediction.version,
            "X-Govern-Event-Seq": str(event.seq if event else ""),
            "X-Govern-Event": json.dumps(event.to_dict()) if event else "",  # ASCII: a header may carry it
        }
