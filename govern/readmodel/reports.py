"""The report's questions: one model version's training, registrations, promotions and the grants behind them,
its production windows (from deployment_index, see below), its inferences, and the ledger's head."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from govern.readmodel.events import EventActor
from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    """A version of the model with its training's metrics (JSON text; None: no training found)."""

    version: str
    seq: int
    metrics: str | None


@dataclass(frozen=True, slots=True)
class TrainingOfVersion:
    """A version's latest registration with the training it names (both payloads as JSON text)."""

    seq: int
    event_id: str
    occurred_at: datetime
    actor: str
    git_commit: str | None
    payload: str
    registered_seq: int
    registered_at: datetime
    registered_by: str
    registration: str


@dataclass(frozen=True, slots=True)
class SnapshotEvent:
    """An event a training names as a dataset's snapshot, of any type (the caller checks it), payload as JSON text."""

    event_id: str
    seq: int
    type: str
    payload: str


@dataclass(frozen=True, slots=True)
class Promotion:
    """A promotion of the version, with the request it decided, if any (who asked and why, why it was approved)."""

    seq: int
    promoted_at: datetime
    actor: str
    approver: str | None
    from_stage: str | None
    to_stage: str
    reason: str | None
    forced: bool | None
    gto_tag: str | None
    request_seq: int | None
    requested_by: str | None
    request_reason: str | None
    approval_reason: str | None


@dataclass(frozen=True, slots=True)
class Deprecation:
    """A deprecation of the version: when, by whom, why."""

    seq: int
    deprecated_at: datetime
    actor: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class PromotionActors:
    """Who acted on a promotion (the actor, the approver) and how the server established the actor (`authn`)."""

    seq: int
    promoted_at: datetime
    actor: str
    approver: str | None
    authn: str | None


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    """Who handed a token over (and how they were established), through which enrollment code."""

    issuer: str | None
    issuer_authn: str | None
    code_id: str | None


@dataclass(frozen=True, slots=True)
class GrantHeld:
    """A grant of a role: who confirmed it, who proposed it (each with their `authn`), on what basis."""

    grant_seq: int
    granted_at: datetime
    granted_by: str
    granted_authn: str | None
    basis: str | None
    proposal_seq: int | None
    proposed_at: datetime | None
    proposed_by: str | None
    proposed_authn: str | None
    proposed_break_glass: bool | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class SlotSummary:
    """One app/env the version served: its windows, first start, last end (None while serving), closed time
    (seconds), and the key the timeline reads the slot by."""

    app: str
    env: str
    windows: int
    first_start: datetime
    last_end: datetime | None
    serving: bool
    closed_s: float
    last_start_seq: int
    slot_key: int


@dataclass(frozen=True, slots=True)
class Window:
    """A production window of the version: its start, its end (None while open), who opened and who closed it."""

    app: str
    env: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    deployed_by: str | None
    ended_by: str | None
    end_reason: str | None
    start_seq: int
    end_seq: int | None


@dataclass(frozen=True, slots=True)
class TimelineWindow:
    """A window of any version in a slot the version served (what the timeline draws)."""

    app: str
    env: str
    model: str
    version: str
    started_at: datetime
    ended_at: datetime | None
    start_seq: int


@dataclass(frozen=True, slots=True)
class InferenceMonth:
    """Inference batches and rows with the version in one app/env and month, and the seqs they span."""

    app: str
    env: str
    month: str
    batches: int
    rows: int
    first_seq: int
    last_seq: int


TRAINING_SQL = """
SELECT t.seq, t.event_id, t.occurred_at, t.actor, t.git_commit, t.payload, mv.seq AS registered_seq,
       mv.occurred_at AS registered_at, mv.actor AS registered_by, mv.payload AS registration
FROM (SELECT * FROM events WHERE type = 'model.registered' AND subject = $subject ORDER BY seq DESC LIMIT 1) AS mv
JOIN events AS t ON t.event_id = mv.payload->>'$.training_event_id'
"""

VERSIONS_SQL = """
SELECT mv.version, mv.seq, t.payload->'$.metrics' AS metrics
FROM model_versions AS mv LEFT JOIN events AS t ON t.event_id = mv.training_event_id
WHERE mv.model = $model
ORDER BY try_cast(mv.version AS INTEGER), mv.seq
"""

# A point lookup on events' unique index of event_id (a type filter here would make it a scan of every snapshot,
# 25 ms at a million events); the type is checked on the rows found.
SNAPSHOTS_SQL = """
SELECT event_id, seq, type, payload FROM events WHERE event_id = ANY($ids)
"""

# Each promotion with the request it decided, if any: who asked and why, and why the approver agreed (the four
# eyes of issue 26: the promotion's actor is the approver, the requester is on the request)
PROMOTIONS_SQL = """
SELECT p.seq, p.promoted_at, p.actor, p.approver, p.from_stage, p.to_stage, p.reason, p.forced, p.gto_tag,
       r.request_seq, r.requested_by, r.reason AS request_reason, r.decision_reason AS approval_reason
FROM promotions AS p
JOIN events AS e ON e.seq = p.seq
LEFT JOIN promotion_requests AS r ON r.request_seq = TRY_CAST(e.payload->>'$.request_seq' AS BIGINT)
WHERE p.model = $model AND p.version = $version ORDER BY p.seq
"""

# Who acted on each promotion, with how the server established it (the promotion's own `authn`)
ACTED_SQL = """
SELECT p.seq, p.promoted_at, p.actor, p.approver, e.authn
FROM promotions AS p JOIN events AS e ON e.seq = p.seq
WHERE p.model = $model AND p.version = $version ORDER BY p.seq
"""

# The grant of a role a principal held at an instant: who confirmed it, who proposed it, on what basis
GRANT_AT_SQL = """
SELECT grant_seq, granted_at, granted_by, granted_authn, basis, proposal_seq, proposed_at, proposed_by,
       proposed_authn, proposed_break_glass, reason
FROM role_grants
WHERE principal = $principal AND role = $role AND granted_at <= $at AND (ended_at IS NULL OR ended_at > $at)
ORDER BY grant_seq DESC LIMIT 1
"""

ISSUER_SQL = "SELECT issuer, issuer_authn, code_id FROM token_issuers WHERE token_id = $token_id"
ANY_GRANT_SQL = "SELECT 1 FROM events WHERE type = 'access.granted' LIMIT 1"

DEPRECATION_SQL = """
SELECT seq, deprecated_at, actor, reason FROM deprecations WHERE model = $model AND version = $version ORDER BY seq
"""

INFERENCE_SQL = """
SELECT coalesce(app, '(no app)') AS app, coalesce(env, '-') AS env,
       strftime(date_trunc('month', occurred_at), '%Y-%m') AS month,
       count(*) AS batches, sum(rows) AS rows, min(seq) AS first_seq, max(seq) AS last_seq
FROM inferences WHERE model = $model AND version = $version
GROUP BY ALL ORDER BY month, app, env
"""

# A version can serve thousands of windows: the report shows a summary per app/env of all of them, the
# latest WINDOWS_SHOWN in full, and a timeline of the TIMELINE_SLOTS slots it served most recently.
WINDOWS_SHOWN = 100
TIMELINE_SLOTS = 12
TIMELINE_WINDOWS = 40

# These read deployment_index (a table sorted by slot key), never the production_windows view: the view pairs
# every deployment of every slot by a window function (0.1-0.2 s at a million events, per query). A version's
# own deployment events suffice, because govern records one slot's windows in order: a start, then the end that
# names it, before the next start (`deploy` records the replaced window's end first). So per slot, a version's
# starts and ends alternate, and its windows are summed without pairing them: closed time = the ends' instants
# minus the starts' instants, less the open start, if any (integer microseconds: exact). The view stays the
# definition; tests/test_report.py holds these queries to it on a history of replacements and retirements.
SLOT_SUMMARY_SQL = """
SELECT app, env, windows, first_start, CASE WHEN serving THEN NULL ELSE last_end END AS last_end, serving,
       (ends_us - starts_us + CASE WHEN serving THEN last_start_us ELSE 0 END) / 1e6 AS closed_s,
       last_start_seq, slot_key
FROM (
    SELECT app, env, count(*) FILTER (type = 'deployment.started') AS windows,
           min(occurred_at) FILTER (type = 'deployment.started') AS first_start,
           max(occurred_at) FILTER (type = 'deployment.ended') AS last_end,
           count(*) FILTER (type = 'deployment.started') > count(*) FILTER (type = 'deployment.ended') AS serving,
           sum(epoch_us(occurred_at)) FILTER (type = 'deployment.ended') AS ends_us,
           sum(epoch_us(occurred_at)) FILTER (type = 'deployment.started') AS starts_us,
           max(epoch_us(occurred_at)) FILTER (type = 'deployment.started') AS last_start_us,
           max(seq) FILTER (type = 'deployment.started') AS last_start_seq, any_value(slot_key) AS slot_key
    FROM deployment_index WHERE model = $model AND version = $version
    GROUP BY app, env
)
WHERE windows > 0
ORDER BY last_start_seq DESC
"""

# The latest starts of the version, then the version's events from the earliest of them on: each start's end
# is among those. Two queries, as DuckDB prunes the second by a constant and not by a subquery's answer.
LATEST_START_SQL = f"""
SELECT min(seq) AS since FROM (
    SELECT seq FROM deployment_index
    WHERE model = $model AND version = $version AND type = 'deployment.started'
    ORDER BY seq DESC LIMIT {WINDOWS_SHOWN}
)
"""

LATEST_WINDOWS_SQL = """
WITH latest AS (
    SELECT *, lead(type) OVER slot AS next_type, lead(occurred_at) OVER slot AS next_at,
           lead(seq) OVER slot AS next_seq, lead(actor) OVER slot AS next_actor, lead(reason) OVER slot AS next_reason
    FROM deployment_index
    WHERE model = $model AND version = $version AND seq >= $since
    WINDOW slot AS (PARTITION BY app, env ORDER BY seq)
)
SELECT app, env, occurred_at AS started_at, CASE WHEN closed THEN next_at END AS ended_at,
       CASE WHEN closed THEN epoch(next_at - occurred_at) END AS duration_s, actor AS deployed_by,
       CASE WHEN closed THEN next_actor END AS ended_by, CASE WHEN closed THEN next_reason END AS end_reason,
       seq AS start_seq, CASE WHEN closed THEN next_seq END AS end_seq
FROM (SELECT *, next_type = 'deployment.ended' AS closed FROM latest)
WHERE type = 'deployment.started'
ORDER BY app, env, start_seq
"""

# The 12 slots' own rows only, by key (an integer, from the summary) and by name (a key alone could collide).
TIMELINE_SQL = f"""
SELECT app, env, model, version, started_at, ended_at, start_seq FROM (
    SELECT *, row_number() OVER (PARTITION BY app, env ORDER BY start_seq DESC) AS recency FROM (
        SELECT app, env, model, version, type, occurred_at AS started_at, seq AS start_seq,
               CASE WHEN lead(type) OVER slot = 'deployment.ended' THEN lead(occurred_at) OVER slot END AS ended_at
        FROM deployment_index
        WHERE slot_key IN (SELECT unnest($keys)) AND (app, env) IN (SELECT unnest($apps), unnest($envs))
        WINDOW slot AS (PARTITION BY app, env ORDER BY seq)
    )
    WHERE type = 'deployment.started'
)
WHERE recency <= {TIMELINE_WINDOWS}
ORDER BY app, env, start_seq
"""


ATTRIBUTION_SQL = "SELECT seq, actor, authn FROM events WHERE seq IN (SELECT unnest($seqs))"

HEAD_SQL = "SELECT count(*), (SELECT hash FROM events WHERE seq = (SELECT max(seq) FROM events)) FROM events"


def version_metrics(reader: Reader, model: str) -> list[VersionMetrics]:
    """The model's versions in order, each with its training's metrics."""
    return rows_as(reader, VersionMetrics, VERSIONS_SQL, {"model": model})


def newest_version_metrics(reader: Reader, model: str, newest: int) -> list[VersionMetrics]:
    """`version_metrics` of the model's `newest` newest versions, newest first."""
    sql = f"SELECT * FROM ({VERSIONS_SQL}) ORDER BY try_cast(version AS INTEGER) DESC, seq DESC LIMIT $newest"
    return rows_as(reader, VersionMetrics, sql, {"model": model, "newest": newest})


def training_of_version(reader: Reader, model: str, version: str) -> TrainingOfVersion:
    """The version's latest registration with the training it names (the version is known to exist)."""
    return rows_as(reader, TrainingOfVersion, TRAINING_SQL, {"subject": f"model:{model}@{version}"})[0]


def attributions(reader: Reader, seqs: list[int]) -> list[EventActor]:
    """Who recorded each of these events."""
    return rows_as(reader, EventActor, ATTRIBUTION_SQL, {"seqs": seqs})


def snapshots(reader: Reader, ids: list[str]) -> list[SnapshotEvent]:
    """The events with these ids (any type: the caller checks it)."""
    return rows_as(reader, SnapshotEvent, SNAPSHOTS_SQL, {"ids": ids})


def promotions(reader: Reader, model: str, version: str) -> list[Promotion]:
    """The version's promotions, oldest first."""
    return rows_as(reader, Promotion, PROMOTIONS_SQL, {"model": model, "version": version})


def deprecations(reader: Reader, model: str, version: str) -> list[Deprecation]:
    """The version's deprecations, oldest first."""
    return rows_as(reader, Deprecation, DEPRECATION_SQL, {"model": model, "version": version})


def acted(reader: Reader, model: str, version: str) -> list[PromotionActors]:
    """Who acted on each of the version's promotions, oldest first."""
    return rows_as(reader, PromotionActors, ACTED_SQL, {"model": model, "version": version})


def any_grant(reader: Reader) -> bool:
    """Was any role ever granted?"""
    return bool(reader.query(ANY_GRANT_SQL)[1])


def token_issuer(reader: Reader, token_id: str | None) -> TokenIssuer | None:
    """Who handed this token over, or None for no such token."""
    rows = rows_as(reader, TokenIssuer, ISSUER_SQL, {"token_id": token_id})
    return rows[0] if rows else None


def grant_at(reader: Reader, principal: str, role: str, at: datetime) -> GrantHeld | None:
    """The grant of the role the principal held at `at`, or None."""
    rows = rows_as(reader, GrantHeld, GRANT_AT_SQL, {"principal": principal, "role": role, "at": at})
    return rows[0] if rows else None


def slot_summary(reader: Reader, model: str, version: str) -> list[SlotSummary]:
    """Each app/env the version served, the one it started in last first."""
    return rows_as(reader, SlotSummary, SLOT_SUMMARY_SQL, {"model": model, "version": version})


def latest_start(reader: Reader, model: str, version: str) -> int | None:
    _, [(since,)] = reader.query(LATEST_START_SQL, {"model": model, "version": version})
    return since


def latest_windows(reader: Reader, model: str, version: str, since: int) -> list[Window]:
    """The version's windows started from seq `since` on, by app, env and start."""
    return rows_as(reader, Window, LATEST_WINDOWS_SQL, {"model": model, "version": version, "since": since})


def timeline(reader: Reader, lanes: list[SlotSummary]) -> list[TimelineWindow]:
    """The newest windows of each lane (a slot the version served) of any model."""
    return rows_as(
        reader,
        TimelineWindow,
        TIMELINE_SQL,
        {"keys": [s.slot_key for s in lanes], "apps": [s.app for s in lanes], "envs": [s.env for s in lanes]},
    )


def inference_by_month(reader: Reader, model: str, version: str) -> list[InferenceMonth]:
    """Inference with the version per month, app and env."""
    return rows_as(reader, InferenceMonth, INFERENCE_SQL, {"model": model, "version": version})


def head(reader: Reader) -> tuple[int, str | None]:
    """The number of events and the head's hash."""
    # Two lookups DuckDB answers from the table's statistics and one row (max_by(hash, seq) reads every hash).
    _, [(count, head_hash)] = reader.query(HEAD_SQL)
    return count, head_hash
