"""Questions about the event log itself: its head, its types, a page of it, the newest verdict and anchor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as


@dataclass(frozen=True, slots=True)
class VerdictEvent:
    """A CI verdict (`reproduction.verified` or `.diverged`) with its envelope and its payload as stored (JSON
    text, at its own schema version: upcast before reading it)."""

    seq: int
    type: str
    schema_version: int
    occurred_at: datetime
    actor: str
    git_commit: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class AnchorEvent:
    """A `ledger.anchored`: where and when the head was anchored, and the tag that holds it."""

    seq: int
    occurred_at: datetime
    tag: str | None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event of the log as stored: its envelope, its payload (JSON text) and how its actor was established."""

    seq: int
    event_id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    subject: str | None
    git_commit: str | None
    payload: str
    hash: str
    authn: str | None


@dataclass(frozen=True, slots=True)
class EventActor:
    """Who recorded an event, and how the server established it (`authn`, JSON text; None: self-asserted)."""

    seq: int
    actor: str
    authn: str | None


HEAD_SQL = "SELECT count(*), max(seq), max_by(hash, seq) FROM events"


def head(reader: Reader) -> tuple[int, int | None, str | None]:
    """The number of events, the head's seq and hash."""
    _, [(count, head_seq, head_hash)] = reader.query(HEAD_SQL)
    return count, head_seq, head_hash


LAST_VERIFICATION_SQL = """
SELECT seq, type, schema_version, occurred_at, actor, git_commit, payload FROM events
WHERE type IN ('reproduction.verified', 'reproduction.diverged') ORDER BY seq DESC LIMIT 1
"""


def last_verification(reader: Reader) -> VerdictEvent | None:
    """The newest CI verdict, if any."""
    rows = rows_as(reader, VerdictEvent, LAST_VERIFICATION_SQL)
    return rows[0] if rows else None


NEWEST_ANCHOR_SQL = """
SELECT seq, occurred_at, payload->>'$.tag' AS tag FROM events WHERE type = 'ledger.anchored' ORDER BY seq DESC LIMIT 1
"""


def newest_anchor(reader: Reader) -> AnchorEvent | None:
    """The newest `ledger.anchored`, if any."""
    rows = rows_as(reader, AnchorEvent, NEWEST_ANCHOR_SQL)
    return rows[0] if rows else None


TYPES_SQL = "SELECT DISTINCT type FROM events"


def event_types(reader: Reader) -> set[str]:
    """The types the ledger holds."""
    return {kind for (kind,) in reader.query(TYPES_SQL)[1]}


LOG_PAGE_COLUMNS = "seq, event_id, type, occurred_at, recorded_at, actor, subject, git_commit, payload, hash, authn"


def log_page(
    reader: Reader, before: int, limit: int, types: list[str] | None = None, since: datetime | None = None
) -> list[LogEntry]:
    """The newest `limit` events older than seq `before` (of `types`, occurred since the naive UTC `since`),
    newest first."""
    where, params = ["seq < $before"], {"before": before}
    if types:
        where.append("type IN (SELECT unnest($types::VARCHAR[]))")
        params["types"] = types
    if since is not None:
        where.append("occurred_at >= $since")
        params["since"] = since
    # Two steps: the seqs first (the filter reads two narrow columns), then those rows whole (their seq range
    # names the row groups to read): one query would read the payload of every row the filter keeps.
    _, found = reader.query(
        f"SELECT seq FROM stored_events WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT {int(limit)}", params
    )
    seqs = [seq for (seq,) in found]
    if not seqs:
        return []
    return rows_as(
        reader,
        LogEntry,
        f"SELECT {LOG_PAGE_COLUMNS} FROM stored_events WHERE seq BETWEEN $first AND $last "
        "AND seq IN (SELECT unnest($seqs::BIGINT[])) ORDER BY seq DESC",
        {"first": min(seqs), "last": max(seqs), "seqs": seqs},
    )


LOCK_COMMITS_SQL = (
    "SELECT payload->>'$.training_event_id', arg_min(payload->>'$.commit', seq) FROM events "
    "WHERE type = 'training.locked' GROUP BY 1"
)


def lock_commits(reader: Reader) -> dict[str, str]:
    """Each locked training's event id with its (first) lock commit."""
    _, rows = reader.query(LOCK_COMMITS_SQL)
    return dict(rows)


def actors_of(reader: Reader, seqs: list[int]) -> list[EventActor]:
    """Who recorded each of these events."""
    sql = "SELECT seq, actor, authn FROM events WHERE list_contains($seqs, seq)"
    return rows_as(reader, EventActor, sql, {"seqs": seqs})


def actor_of(reader: Reader, seq: int) -> EventActor | None:
    """Who recorded the event, or None for no such event."""
    rows = rows_as(reader, EventActor, "SELECT seq, actor, authn FROM events WHERE seq = $seq", {"seq": seq})
    return rows[0] if rows else None


LAST_SEQ_SQL = "SELECT coalesce(max(seq), 0) FROM events"


def last_seq(reader: Reader) -> int:
    """The head's seq (0: no event yet)."""
    _, rows = reader.query(LAST_SEQ_SQL)
    return rows[0][0]


def hashes(reader: Reader, seqs: list[int]) -> dict[int, str]:
    """The hash of each of these events that exists."""
    _, rows = reader.query("SELECT seq, hash FROM events WHERE seq IN (SELECT unnest(?))", [seqs])
    return dict(rows)


ALREADY_VERIFIED = """
SELECT count(*) FROM events
WHERE subject = 'commit:' || ? AND type IN ('reproduction.verified', 'reproduction.diverged')
"""


def verdicts_of_commit(reader: Reader, commit: str) -> int:
    """How many CI verdicts about the commit the ledger holds."""
    return reader.query(ALREADY_VERIFIED, [commit])[1][0][0]


def authn_of(reader: Reader, seq: int) -> str | None:
    """The event's `authn` (JSON text), or None: self-asserted, or no such event."""
    _, rows = reader.query("SELECT authn FROM events WHERE seq = ?", [seq])
    return rows[0][0] if rows else None
