"""The hash chain in SQL, shared by every backend: the twin of `envelope.chain_hash`, and the checks that
recompute it (the whole chain, or the events a report cites)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from govern.envelope import (
    GENESIS_HASH,
)
from govern.readmodel.migrations import PROJECTIONS
from govern.storage.contract import Reader, Verification

if TYPE_CHECKING:
    pass


COLUMNS = (
    "seq",
    "event_id",
    "type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "actor",
    "subject",
    "git_commit",
    "payload",
    "prev_hash",
    "hash",
    "authn",
    "signature",
)

# The SQL twin of events.chain_hash: prev_hash, then the same members in the same order, with DuckDB's
# to_json producing the same string escapes as Python's json. One concat() builds each row's text in one
# allocation (chained || makes an intermediate string per member: twice as slow on a large ledger).
HASHED_TEXT_SQL = """
    concat(
        prev_hash,
        '{"actor":', to_json(actor),
        CASE WHEN authn IS NULL THEN '' ELSE concat(',"authn":', authn) END,
        ',"event_id":', to_json(event_id),
        ',"git_commit":', coalesce(to_json(git_commit)::VARCHAR, 'null'),
        ',"occurred_at":"', strftime(occurred_at, '%Y-%m-%dT%H:%M:%S.%fZ'),
        '","payload":', payload,
        ',"prev_hash":', to_json(prev_hash),
        ',"recorded_at":"', strftime(recorded_at, '%Y-%m-%dT%H:%M:%S.%fZ'),
        '","schema_version":', schema_version::VARCHAR,
        ',"seq":', seq::VARCHAR,
        ',"subject":', to_json(subject),
        ',"type":', to_json(type),
        '}'
    )
"""

DIGEST_SQL = f"sha256({HASHED_TEXT_SQL})"


def chain_checks(digest_sql: str, table: str) -> tuple[str, str]:
    """The two verification queries, for a backend whose SQL computes a row's hex digest as `digest_sql`.

    The healthy case in one pass per check: a gap shows as count <> max(seq), a broken link in the join of each
    event with the one before it, an altered event as a recomputed hash that differs. Only when one of them fails
    does the second query run to name the first bad event. Both are plain SQL that DuckDB and PostgreSQL share.
    """
    quick = f"""
    SELECT
        (SELECT count(*) FROM {table}),
        (SELECT coalesce(min(seq), 1) FROM {table}),
        (SELECT coalesce(max(seq), 0) FROM {table}),
        (SELECT hash FROM {table} ORDER BY seq DESC LIMIT 1),
        (SELECT count(*) FROM {table} AS e LEFT JOIN {table} AS b ON b.seq = e.seq - 1
            WHERE e.prev_hash IS DISTINCT FROM coalesce(b.hash, CASE WHEN e.seq = 1 THEN '{GENESIS_HASH}' END)),
        (SELECT count(*) FROM {table} WHERE {digest_sql} <> hash)
    """
    full = f"""
    WITH chain AS (
        SELECT
            seq,
            hash,
            prev_hash,
            row_number() OVER (ORDER BY seq) AS position,
            lag(seq) OVER (ORDER BY seq) AS previous_seq,
            lag(hash, 1, '{GENESIS_HASH}') OVER (ORDER BY seq) AS expected_prev,
            {digest_sql} AS computed
        FROM {table}
    ),
    problems AS (
        SELECT
            seq,
            position,
            previous_seq,
            CASE
                WHEN seq <> position THEN 'gap'
                WHEN prev_hash <> expected_prev THEN 'link'
                WHEN computed <> hash THEN 'hash'
            END AS problem
        FROM chain
    )
    SELECT
        (SELECT count(*) FROM {table}),
        (SELECT hash FROM {table} ORDER BY seq DESC LIMIT 1),
        first_bad.seq, first_bad.position, first_bad.previous_seq, first_bad.problem
    FROM (SELECT 1) AS one
    LEFT JOIN (
        SELECT * FROM problems WHERE problem IS NOT NULL ORDER BY seq LIMIT 1
    ) AS first_bad ON true
    """
    return quick, full


QUICK_VERIFY_SQL, VERIFY_SQL = chain_checks(DIGEST_SQL, "stored_events")


CITED_SQL = f"""
WITH wanted AS (SELECT DISTINCT unnest($seqs)::BIGINT AS seq),
cited AS (
    SELECT seq, prev_hash, hash, {DIGEST_SQL} AS computed
    FROM stored_events WHERE seq IN (SELECT seq FROM wanted)
),
before AS (SELECT seq, hash FROM stored_events WHERE seq IN (SELECT seq - 1 FROM wanted))
SELECT
    w.seq,
    CASE
        WHEN c.seq IS NULL THEN 'missing'
        WHEN c.computed <> c.hash THEN 'hash'
        WHEN c.prev_hash IS DISTINCT FROM coalesce(b.hash, CASE WHEN w.seq = 1 THEN '{GENESIS_HASH}' END) THEN 'link'
    END AS problem
FROM wanted AS w
LEFT JOIN cited AS c ON c.seq = w.seq
LEFT JOIN before AS b ON b.seq = w.seq - 1
ORDER BY w.seq
"""


def check_events(reader: Reader, seqs: Sequence[int]) -> list[str]:
    """Recompute the hash of each of these events and its link to the one before: what a report cites.

    Cheap at any ledger size (point lookups by seq); the whole chain is `Ledger.verify`'s job.
    """
    if not seqs:
        return []
    _, rows = reader.query(CITED_SQL, {"seqs": sorted(set(seqs))})
    reasons = {
        "missing": "is not in the ledger (events were removed)",
        "hash": "stored hash does not match its content (event altered)",
        "link": "prev_hash does not match the hash of the event before it (row deleted, inserted or reordered)",
    }
    return [f"seq {seq}: {reasons[problem]}" for seq, problem in rows if problem]


def verify_chain_in(
    reader: Reader, checks: tuple[str, str] = (QUICK_VERIFY_SQL, VERIFY_SQL), projections: bool = True
) -> Verification:
    """Recompute every hash and link, vectorised, and compare each projection with its events."""
    quick, full = checks
    _, [(count, first, last, head_hash, bad_links, bad_hashes)] = reader.query(quick)
    bad_seq = position = previous_seq = problem = None
    if count != last or first != 1 or bad_links or bad_hashes:
        _, [(count, head_hash, bad_seq, position, previous_seq, problem)] = reader.query(full)
    drifted = (
        [table for table, projection in PROJECTIONS.items() if _drifted(reader, table, projection.select)]
        if projections
        else []
    )
    if bad_seq is None and drifted:
        return Verification(
            ok=False,
            count=count,
            head_hash=head_hash,
            problem=(
                f"the {', '.join(drifted)} table disagrees with the events it derives from (edited behind govern)"
            ),
        )
    if bad_seq is None:
        return Verification(ok=True, count=count, head_hash=head_hash)
    if problem == "gap":
        after = f"after seq {previous_seq}" if previous_seq is not None else "at the start"
        reason = f"seq {position} is missing: seq {bad_seq} follows {after}"
    elif problem == "link":
        reason = (
            f"seq {bad_seq}: prev_hash does not match the hash of the event before it "
            "(row deleted, inserted or reordered)"
        )
    else:
        reason = f"seq {bad_seq}: stored hash does not match its content (event altered)"
    return Verification(ok=False, count=count, head_hash=head_hash, bad_seq=bad_seq, problem=reason)


def _drifted(reader: Reader, table: str, select: str) -> bool:
    """Does a projection table differ, row for row, from what its events say? (Joined on seq, its key.)"""
    names, _ = reader.query(f"SELECT * FROM {table} LIMIT 0")
    mine = ", ".join(f"p.{name}" for name in names)
    theirs = ", ".join(f"e.{name}" for name in names)
    _, [(differing,)] = reader.query(
        f"SELECT count(*) FROM {table} AS p FULL JOIN ({select}) AS e ON p.seq = e.seq "
        f"WHERE ({mine}) IS DISTINCT FROM ({theirs})"
    )
    return differing > 0
