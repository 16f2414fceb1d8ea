"""Schema evolution: a payload written at schema v1 is read as v2 through an upcaster; stored bytes never change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from govern import events
from govern.events import Fact, PendingEvent, utc_now
from govern.ledger import Ledger


@dataclass(frozen=True)
class ThresholdSetV1(Fact):
    """A decision threshold was set (as written by an older govern)."""

    type: ClassVar[str] = "threshold.set"
    schema_version: ClassVar[int] = 1

    model: str
    threshold: float

    @property
    def subject(self) -> str:
        return f"model:{self.model}"


@dataclass(frozen=True)
class ThresholdSetV2(Fact):
    """v2 names the metric the threshold applies to; v1 thresholds were always on the probability."""

    type: ClassVar[str] = "threshold.set"
    schema_version: ClassVar[int] = 2

    model: str
    threshold: float
    applies_to: str

    @property
    def subject(self) -> str:
        return f"model:{self.model}"


def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "applies_to": "probability"}


def test_a_v1_event_is_read_as_v2_and_its_bytes_and_hash_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(tmp_path / "ledger.duckdb")
    monkeypatch.setitem(events.FACT_TYPES, "threshold.set", ThresholdSetV1)
    [written] = ledger.append([PendingEvent(ThresholdSetV1("scorer", 0.7), actor="old govern", occurred_at=utc_now())])

    monkeypatch.setitem(events.FACT_TYPES, "threshold.set", ThresholdSetV2)
    monkeypatch.setitem(events.UPCASTERS, ("threshold.set", 1), v1_to_v2)
    [read] = ledger.read()

    assert read.schema_version == 1, "the stored envelope keeps the version it was written with"
    assert read.payload == {"model": "scorer", "threshold": 0.7, "applies_to": "probability"}
    assert read.fact() == ThresholdSetV2("scorer", 0.7, "probability")
    assert read.payload_json == written.payload_json == '{"model":"scorer","threshold":0.7}'
    assert ledger.verify().ok and read.hash == written.hash


def test_a_payload_newer_than_its_reader_is_not_upcast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(events.FACT_TYPES, "threshold.set", ThresholdSetV2)
    ledger = Ledger(tmp_path / "ledger.duckdb")
    ledger.append([PendingEvent(ThresholdSetV2("scorer", 0.5, "score"), actor="a", occurred_at=utc_now())])
    assert ledger.read()[0].payload["applies_to"] == "score"
