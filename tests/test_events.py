"""The hashing contract: canonical JSON and the envelope hash, in Python and in SQL alike."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from govern.envelope import GENESIS_HASH, canonical_json, envelope_hash, format_timestamp
from govern.events import DatasetSnapshotted

ENVELOPE = dict(
    seq=1,
    event_id="00000000-0000-4000-8000-000000000001",
    type="dataset.snapshotted",
    schema_version=1,
    occurred_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    recorded_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
    actor="Zoë <z@example.com>",
    subject="dataset:data/raw.csv",
    git_commit=None,
    payload_json=canonical_json({"b": 1, "a": "é\n"}),
    prev_hash=GENESIS_HASH,
)


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": [1, 2], "a": {"d": None, "c": True}}) == '{"a":{"c":true,"d":null},"b":[1,2]}'


def test_canonical_json_keeps_non_ascii_and_escapes_controls() -> None:
    assert canonical_json('José\u0001"') == '"José\\u0001\\""'


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_timestamps_are_utc_with_microseconds() -> None:
    moment = datetime(2026, 6, 1, 12, 0, 0, 500, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2026-06-01T10:00:00.000500Z"


def test_envelope_hash_is_sha256_of_prev_hash_and_canonical_envelope() -> None:
    expected_envelope = {
        "actor": ENVELOPE["actor"],
        "event_id": ENVELOPE["event_id"],
        "git_commit": None,
        "occurred_at": "2026-01-02T03:04:05.000006Z",
        "payload": {"a": "é\n", "b": 1},
        "prev_hash": GENESIS_HASH,
        "recorded_at": "2026-01-02T03:04:06.000000Z",
        "schema_version": 1,
        "seq": 1,
        "subject": "dataset:data/raw.csv",
        "type": "dataset.snapshotted",
    }
    text = GENESIS_HASH + json.dumps(expected_envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert envelope_hash(**ENVELOPE) == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    "field, value",
    [
        ("seq", 2),
        ("actor", "Mallory"),
        ("payload_json", canonical_json({"b": 2, "a": "é\n"})),
        ("prev_hash", "1" * 64),
        ("occurred_at", datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC)),
        ("git_commit", "abc"),
    ],
)
def test_every_envelope_field_changes_the_hash(field: str, value: object) -> None:
    assert envelope_hash(**{**ENVELOPE, field: value}) != envelope_hash(**ENVELOPE)


def test_a_fact_knows_its_type_and_subject() -> None:
    fact = DatasetSnapshotted(
        path="data/x.csv", md5=None, sha256=None, size=None, source="s", extracted_at="t", extracted_at_basis="b"
    )
    assert fact.type == "dataset.snapshotted"
    assert fact.subject == "dataset:data/x.csv"
    assert DatasetSnapshotted.from_payload(fact.to_payload()) == fact


@pytest.mark.parametrize(
    "text",
    ["plain", 'quote " backslash \\ slash /', "newline\n tab\t nul\x00 unit\x1f", "é ü 漢字 😀", "\u2028\u2029", ""],
)
def test_the_spelled_out_envelope_is_the_canonical_json_of_the_envelope(text: str) -> None:
    """chain_hash builds the envelope text by hand for speed; it must equal json.dumps of the whole object."""
    fields = {**ENVELOPE, "actor": text, "subject": text, "event_id": text + "-id", "git_commit": text or None}
    envelope = {
        "actor": text,
        "event_id": text + "-id",
        "git_commit": text or None,
        "occurred_at": "2026-01-02T03:04:05.000006Z",
        "payload": json.loads(ENVELOPE["payload_json"]),
        "prev_hash": GENESIS_HASH,
        "recorded_at": "2026-01-02T03:04:06.000000Z",
        "schema_version": 1,
        "seq": 1,
        "subject": text,
        "type": "dataset.snapshotted",
    }
    reference = GENESIS_HASH + json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert envelope_hash(**fields) == hashlib.sha256(reference.encode()).hexdigest()


def test_timestamps_keep_the_strftime_spelling_for_every_year() -> None:
    for moment in (datetime(999, 1, 2, 3, 4, 5, 6), datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)):
        assert format_timestamp(moment) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
