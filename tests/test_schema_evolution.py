"""Schema evolution: a payload written at schema v1 is read as v2 through an upcaster; stored bytes never change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from govern import events
from govern.envelope import PendingEvent, utc_now
from govern.events import Fact
from govern.storage.duckdb_log import Ledger


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


def test_every_upcaster_has_filled_the_current_schema_view_by_a_migration() -> None:
    """A new schema version of a fact needs a migration that refills `upcasts`, or SQL readers would see old
    payloads: add one (see ledger.m007_current_schema_events) and its key to UPCASTS_FILLED_FOR."""
    from govern.readmodel.migrations import UPCASTS_FILLED_FOR

    assert set(events.UPCASTERS) == UPCASTS_FILLED_FOR


def test_a_ledger_written_before_the_current_schema_view_is_migrated_and_its_old_payloads_upcast(
    tmp_path: Path,
) -> None:
    """A ledger at schema 6 (events a table, no upcasts) holding a v1 reproduction: after the migration, SQL sees v2."""
    import duckdb

    from govern.envelope import GENESIS_HASH, envelope_hash
    from govern.readmodel.migrations import MIGRATIONS

    path = tmp_path / "ledger.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE govern_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP)"
    )
    for version, step in enumerate(MIGRATIONS[:6], start=1):
        step(con)
        con.execute("INSERT INTO govern_migrations VALUES (?, ?, now())", [version, step.__name__])
    payload = (
        '{"ci":{"system":"local"},"commit":"c0ffee","differing_outputs":[],"duration_s":1.5,'
        '"metric_deltas":{},"outputs":[]}'
    )
    moment = utc_now().replace(tzinfo=None, microsecond=0)
    fields = dict(seq=1, event_id="e1", type="reproduction.verified", schema_version=1, occurred_at=moment,
                  recorded_at=moment, actor="CI", subject="commit:c0ffee", git_commit="c0ffee", payload_json=payload,
                  prev_hash=GENESIS_HASH)  # fmt: skip
    con.execute(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [*fields.values(), envelope_hash(**fields)],
    )
    con.close()
    ledger = Ledger(path)
    ledger.append([PendingEvent(ThresholdSetV2("m", 0.5, "score"), actor="a", occurred_at=utc_now())])  # migrates
    assert ledger.query("SELECT schema_version, payload->>'$.match' FROM events WHERE seq = 1")[1] == [(2, "exact")]
    assert ledger.read(seqs=[1])[0].payload_json == payload
    assert ledger.verify().ok
