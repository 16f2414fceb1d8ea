"""Model versions: what the ledger knows of one, its standing at an instant, its stages, history and verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from govern.errors import NotFound
from govern.readmodel.reader import Reader
from govern.readmodel.rows import naive_utc, rows_as


@dataclass(frozen=True)
class VersionFacts:
    model: str
    version: str
    registered_seq: int
    training_event_id: str
    training_actor: str | None
    git_commit: str | None  # where it was trained: code, params, data pointers (the input commit)
    deprecated_seq: int | None
    stage: str | None  # the stage of its latest promotion
    holds: tuple[str, ...]  # stages it currently holds
    lock_commit: str | None = None  # the commit whose dvc.lock rebuilds it (`training.locked`), once found


VERSION_SQL = """
WITH reg AS (
    SELECT * FROM model_versions WHERE model = $model AND version = $version ORDER BY seq DESC LIMIT 1
)
SELECT
    reg.seq,
    reg.training_event_id,
    t.actor,
    reg.git_commit,
    (SELECT min(seq) FROM deprecations d WHERE d.model = $model AND d.version = $version),
    (SELECT arg_max(to_stage, seq) FROM promotions p WHERE p.model = $model AND p.version = $version),
    (SELECT coalesce(list(stage ORDER BY stage), []) FROM stage_assignments s
        WHERE s.model = $model AND s.version = $version)
FROM reg
LEFT JOIN events AS t ON t.event_id = reg.training_event_id
"""


def version_facts(reader: Reader, model: str, version: str) -> VersionFacts:
    """What the ledger knows of one model version; `NotFound` names what exists instead."""
    _, rows = reader.query(VERSION_SQL, {"model": model, "version": version})
    if not rows:
        _, versions = reader.query(
            "SELECT DISTINCT version FROM model_versions WHERE model = ? ORDER BY try_cast(version AS INTEGER)",
            [model],
        )
        if versions:
            known = ", ".join(v for (v,) in versions)
            raise NotFound(f"Model {model!r} has no version {version!r}: its versions are {known}")
        _, models = reader.query("SELECT DISTINCT model FROM model_versions ORDER BY model")
        known = ", ".join(m for (m,) in models) or "none yet (run `govern repro`)"
        raise NotFound(f"Unknown model {model!r}: registered models are {known}")
    seq, training_id, actor, commit, deprecated, stage, holds = rows[0]
    locked = lock_commit(reader, model, version, training_id)
    return VersionFacts(model, version, seq, training_id, actor, commit, deprecated, stage, tuple(holds), locked)


@dataclass(frozen=True)
class StandingAt:
    """A version's standing at an instant: was it registered, and who held a stage (one holder per stage)."""

    registered_at: datetime
    holder: str | None  # the version holding the stage at the instant
    got_stage_at: datetime | None  # when this version last reached the stage, at any time


STANDING_SQL = """
SELECT
    (SELECT min(registered_at) FROM model_versions WHERE model = $model AND version = $version),
    (SELECT arg_max(p.version, p.seq) FROM promotions AS p
        WHERE p.model = $model AND p.to_stage = $stage AND p.promoted_at <= $at
          AND NOT EXISTS (SELECT 1 FROM deprecations AS d
                          WHERE d.model = p.model AND d.version = p.version AND d.deprecated_at <= $at)),
    (SELECT max(promoted_at) FROM promotions WHERE model = $model AND version = $version AND to_stage = $stage)
"""


def standing_at(reader: Reader, model: str, version: str, stage: str, at: datetime) -> StandingAt:
    """The rule of `stage_assignments` (the latest promotion to a stage of a version not deprecated), applied
    to the events up to `at`: a deployment dated in the past is judged by the history as it stood then."""
    _, [(registered_at, holder, got_at)] = reader.query(
        STANDING_SQL, {"model": model, "version": version, "stage": stage, "at": naive_utc(at)}
    )
    return StandingAt(registered_at, holder, got_at)


DEPRECATED_TWINS_SQL = """
SELECT mv.version, d.deprecated_at, d.reason
FROM model_versions AS mv JOIN deprecations AS d ON d.model = mv.model AND d.version = mv.version
WHERE mv.model = $model AND mv.version <> $version
  AND mv.sha256 = (SELECT arg_max(sha256, seq) FROM model_versions WHERE model = $model AND version = $version)
ORDER BY d.seq
"""


@dataclass(frozen=True, slots=True)
class DeprecatedTwinRow:
    """A deprecated version of the model whose file is byte for byte another version's."""

    version: str
    deprecated_at: datetime
    reason: str | None


def deprecated_twins(reader: Reader, model: str, version: str) -> list[DeprecatedTwinRow]:
    """Deprecated versions of the model whose file is byte for byte this version's."""
    return rows_as(reader, DeprecatedTwinRow, DEPRECATED_TWINS_SQL, {"model": model, "version": version})


SERVING_SQL = """
SELECT app || '/' || env FROM production_windows WHERE model = $model AND version = $version AND ended_at IS NULL
ORDER BY 1
"""


def serving_slots(reader: Reader, model: str, version: str) -> list[str]:
    """The app/env slots this version serves now (open windows)."""
    _, rows = reader.query(SERVING_SQL, {"model": model, "version": version})
    return [slot for (slot,) in rows]


def stage_holder(reader: Reader, model: str, stage: str) -> str | None:
    _, rows = reader.query("SELECT version FROM stage_assignments WHERE model = ? AND stage = ?", [model, stage])
    return rows[0][0] if rows else None


def stage_holders(reader: Reader, model: str) -> dict[str, str]:
    _, rows = reader.query("SELECT stage, version FROM stage_assignments WHERE model = ?", [model])
    return dict(rows)


HISTORY_SQL = """
SELECT seq FROM events
WHERE subject = 'model:' || $model || '@' || $version
   OR ($version IS NULL AND starts_with(subject, 'model:' || $model || '@'))
   OR (type IN ('deployment.started', 'deployment.ended')
       AND payload->>'$.model' = $model AND ($version IS NULL OR payload->>'$.version' = $version))
   OR (type = 'training.completed' AND event_id IN (
       SELECT training_event_id FROM model_versions WHERE model = $model AND ($version IS NULL OR version = $version)))
   OR (type = 'experiment.selected' AND payload->>'$.winner_event_id' IN (
       SELECT training_event_id FROM model_versions WHERE model = $model AND ($version IS NULL OR version = $version)))
   OR (type = 'training.locked' AND EXISTS (
       SELECT 1 FROM unnest(CAST(payload->'$.versions' AS JSON[])) AS t(v)
       WHERE v->>'$.model' = $model AND ($version IS NULL OR v->>'$.version' = $version)))
ORDER BY seq
"""


def history_seqs(reader: Reader, model: str, version: str | None = None) -> list[int]:
    """Seqs of every event about a model (or one version): trainings, registrations, promotions, deployments."""
    _, rows = reader.query(HISTORY_SQL, {"model": model, "version": version})
    return [seq for (seq,) in rows]


# The CI verdicts about one version's model file (issue 26): the reproductions of a lock that describes it,
# wherever that lock was committed. A lock describes it when it is the lock of a training that made the file (its
# registration's, or a later training of the same bytes), or when the verdict says the committed lock gave the
# version's path the version's md5. The training's commit is not the key: in the everyday workflow it has no lock
# or a stale one, and the commit that does hold the lock comes after it. Verdicts from before they recorded the
# lock's sha256 are matched by the training's commit. The prefix test lets DuckDB read payloads of verdicts only.
VERDICTS_OF_VERSIONS_SQL = """
WITH reg AS (
    SELECT model, version, arg_min(md5, seq) AS md5, arg_min(sha256, seq) AS sha256,
           arg_min(git_commit, seq) AS git_commit, arg_min(training_event_id, seq) AS training_event_id
    FROM model_versions WHERE model || '@' || version IN (SELECT unnest($keys)) GROUP BY ALL
),
trained AS (
    SELECT event_id, payload->>'$.dvc_lock_sha256' AS lock, CAST(payload->'$.models' AS VARCHAR) AS models
    FROM events WHERE type = 'training.completed'
),
locks AS (
    SELECT DISTINCT reg.model, reg.version, trained.lock FROM reg
    JOIN trained ON trained.event_id = reg.training_event_id OR contains(trained.models, reg.sha256)
),
verdicts AS (
    SELECT seq, type, schema_version, occurred_at, actor, authn, payload, git_commit, subject,
           payload->>'$.dvc_lock_sha256' AS lock, CAST(payload AS VARCHAR) AS text
    FROM events WHERE type ^@ 'reproduction.' AND type IN ('reproduction.verified', 'reproduction.diverged')
)
SELECT reg.model, reg.version, v.seq, v.type, v.schema_version, v.occurred_at, v.actor, v.authn, v.payload,
       v.git_commit, v.lock IN (SELECT lock FROM locks WHERE locks.model = reg.model AND locks.version = reg.version)
           AS same_lock,
       v.lock IS NULL AND v.subject = 'commit:' || reg.git_commit AS legacy
FROM reg JOIN verdicts AS v
  ON v.lock IN (SELECT lock FROM locks WHERE locks.model = reg.model AND locks.version = reg.version)
     OR contains(v.text, reg.md5)
     OR (v.lock IS NULL AND v.subject = 'commit:' || reg.git_commit)
ORDER BY v.seq DESC
"""


def committed_md5(payload: dict[str, Any], path: str) -> str | None:
    """The md5 the verified commit's lock gave `path`, as the verdict states it: an output that differs names it
    (`expected_md5`), one that matched has the reproduced md5, which equals it."""
    for item in payload.get("differing_outputs") or []:
        if item.get("path") == path:
            return item.get("expected_md5")
    for item in payload.get("outputs") or []:
        if item.get("path") == path:
            return item.get("md5")
    return None


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """A CI verdict (`reproduction.verified` or `.diverged`) about one version's model file, and why it is about
    it: the lock of a training that made the file (`same_lock`), or the training's commit (`legacy`, verdicts from
    before they recorded the lock's sha256); else the verdict gave the version's path its md5."""

    model: str
    version: str
    seq: int
    type: str
    schema_version: int
    occurred_at: datetime
    actor: str
    authn: str | None
    payload: dict[str, Any]  # parsed
    git_commit: str | None
    same_lock: bool | None
    legacy: bool | None

    @property
    def verdict(self) -> str:
        return "verified" if self.type == "reproduction.verified" else "diverged"


def verdicts_of_version(reader: Reader, model: str, version: str) -> list[VerdictRow]:
    """The CI verdicts (newest first) about a lock that holds this version's model file, each with its `payload`
    parsed. A verdict about a lock that gave the model's path other bytes is not about this version."""
    return verdicts_of_versions(reader, [(model, version)]).get((model, version), [])


def verdicts_of_versions(reader: Reader, versions: list[tuple[str, str]]) -> dict[tuple[str, str], list[VerdictRow]]:
    """`verdicts_of_version` for many versions in one query (the approver's queue)."""
    import json
    from dataclasses import replace

    if not versions:
        return {}
    keys = [f"{model}@{version}" for model, version in versions]
    _, files = reader.query(
        "SELECT model, version, arg_min(path, seq), arg_min(md5, seq) FROM model_versions "
        "WHERE model || '@' || version IN (SELECT unnest($keys)) GROUP BY ALL",
        {"keys": keys},
    )
    where = {(model, version): (path, md5) for model, version, path, md5 in files}
    found: dict[tuple[str, str], list[VerdictRow]] = {key: [] for key in where}
    for row in rows_as(reader, VerdictRow, VERDICTS_OF_VERSIONS_SQL, {"keys": keys}):
        if isinstance(row.payload, str):
            row = replace(row, payload=json.loads(row.payload))
        path, md5 = where[(row.model, row.version)]
        if row.same_lock or row.legacy or (md5 and committed_md5(row.payload, path) == md5):
            found[(row.model, row.version)].append(row)
    return found


LOCK_OF_VERSION_SQL = """
SELECT e.payload->>'$.commit' AS commit FROM events AS e
WHERE e.type = 'training.locked'
  AND (e.payload->>'$.training_event_id' = $training
       OR EXISTS (SELECT 1 FROM unnest(CAST(e.payload->'$.versions' AS JSON[])) AS t(v)
                  WHERE v->>'$.model' = $model AND v->>'$.version' = $version))
ORDER BY e.seq LIMIT 1
"""


def lock_commit(reader: Reader, model: str, version: str, training_event_id: str | None) -> str | None:
    """The commit that rebuilds this version (its training's, or a later training's of the same file), if found."""
    _, rows = reader.query(LOCK_OF_VERSION_SQL, {"training": training_event_id, "model": model, "version": version})
    return rows[0][0] if rows else None


MODELS_SQL = "SELECT DISTINCT model FROM model_versions ORDER BY model"


def registered_models(reader: Reader) -> list[str]:
    """The registered models' names, sorted."""
    _, rows = reader.query(MODELS_SQL)
    return [m for (m,) in rows]


# Each version's latest registration with the stages it holds, its deprecation and its lock commit (what
# `govern status` lists, and what a lineage report can be asked of).
REGISTERED_VERSIONS_SQL = """
SELECT
    mv.model,
    mv.version,
    mv.registered_at,
    mv.actor AS registered_by,
    mv.seq AS registered_seq,
    (SELECT coalesce(list(s.stage ORDER BY s.stage), []) FROM stage_assignments AS s
        WHERE s.model = mv.model AND s.version = mv.version) AS stages,
    d.deprecated_at,
    d.reason AS deprecation_reason,
    l.commit AS lock_commit
FROM (SELECT * FROM model_versions QUALIFY row_number() OVER (PARTITION BY model, version ORDER BY seq DESC) = 1)
    AS mv
LEFT JOIN (SELECT model, version, min(deprecated_at) AS deprecated_at, arg_min(reason, seq) AS reason
           FROM deprecations GROUP BY ALL) AS d ON d.model = mv.model AND d.version = mv.version
LEFT JOIN (SELECT v->>'$.model' AS model, v->>'$.version' AS version, arg_min(e.payload->>'$.commit', e.seq) AS commit
           FROM events AS e, unnest(CAST(e.payload->'$.versions' AS JSON[])) AS t(v)
           WHERE e.type = 'training.locked' GROUP BY ALL) AS l ON l.model = mv.model AND l.version = mv.version
ORDER BY mv.model, try_cast(mv.version AS INTEGER), mv.version
"""


@dataclass(frozen=True, slots=True)
class RegisteredVersionRow:
    """A version as its latest registration has it, with the stages it holds, its deprecation and lock commit."""

    model: str
    version: str
    registered_at: datetime
    registered_by: str
    registered_seq: int
    stages: list[str]
    deprecated_at: datetime | None
    deprecation_reason: str | None
    lock_commit: str | None  # None: not locked, no commit rebuilds it yet
    registered_by_shown: str | None = None  # filled by `rows.shown_in`


def registered_versions(reader: Reader) -> list[RegisteredVersionRow]:
    """Every registered version, by model and version."""
    return rows_as(reader, RegisteredVersionRow, REGISTERED_VERSIONS_SQL)


TRAINING_VERSIONS_SQL = """
SELECT model, version FROM model_versions WHERE training_event_id = $event_id ORDER BY seq
"""


@dataclass(frozen=True, slots=True)
class ModelVersionRow:
    """A model version by name: what a training registered."""

    model: str
    version: str


def versions_of_training(reader: Reader, event_id: str) -> list[ModelVersionRow]:
    """The model versions a training registered, in order."""
    return rows_as(reader, ModelVersionRow, TRAINING_VERSIONS_SQL, {"event_id": event_id})


# Every training that produced this version's bytes: the one that registered it, and any other whose models
# carry the same sha256 (run again, restored from a cache, trained elsewhere).
TRAININGS_SQL = """
WITH version AS (
    SELECT arg_max(sha256, seq) AS sha256, arg_max(training_event_id, seq) AS training_event_id
    FROM model_versions WHERE model = $model AND version = $version
)
SELECT t.seq, t.actor, t.authn
FROM events AS t, version AS v
WHERE t.type = 'training.completed'
  AND (t.event_id = v.training_event_id
       OR (v.sha256 IS NOT NULL AND list_contains(
              json_extract_string(t.payload, '$.models[*].sha256'), v.sha256)))
ORDER BY t.seq
"""


@dataclass(frozen=True, slots=True)
class VersionTrainingRow:
    """A training that produced a version's bytes: its event, who ran it and how sure that is."""

    seq: int
    actor: str
    authn: str | None


def trainings_of_version(reader: Reader, model: str, version: str) -> list[VersionTrainingRow]:
    """Every training that produced the version's bytes, in order."""
    return rows_as(reader, VersionTrainingRow, TRAININGS_SQL, {"model": model, "version": version})


def training_authn(reader: Reader, event_id: str) -> str | None:
    """The `authn` of the event with this id (None: no such event, or none recorded)."""
    _, rows = reader.query("SELECT authn FROM events WHERE event_id = ?", [event_id])
    return rows[0][0] if rows else None


def training_metrics(reader: Reader, event_id: str) -> str | None:
    """The metrics (JSON text) the training with this event id recorded, if any."""
    _, rows = reader.query("SELECT payload->'$.metrics' FROM events WHERE event_id = ?", [event_id])
    return rows[0][0] if rows and rows[0][0] else None


KNOWN_TAGS = "SELECT payload->>'$.gto_tag' FROM events WHERE payload->>'$.gto_tag' IS NOT NULL"
# The version a GTO tag at a commit names: one locked there (the commit that rebuilds it, issue 26), else one
# trained there (tags written before lock commits were recorded).
VERSION_AT_COMMIT = """
SELECT version FROM (
    SELECT v->>'$.version' AS version, 0 AS rank, e.seq FROM events AS e,
           unnest(CAST(e.payload->'$.versions' AS JSON[])) AS t(v)
    WHERE e.type = 'training.locked' AND e.payload->>'$.commit' = $2 AND v->>'$.model' = $1
    UNION ALL
    SELECT version, 1 AS rank, seq FROM model_versions WHERE model = $1 AND git_commit = $2
) ORDER BY rank, seq DESC LIMIT 1
"""


def known_gto_tags(reader: Reader) -> set[str]:
    """The GTO tags the ledger's events name."""
    return {name for (name,) in reader.query(KNOWN_TAGS)[1]}


def version_at_commit(reader: Reader, model: str, commit: str) -> str | None:
    """The version of the model a GTO tag at `commit` names (VERSION_AT_COMMIT), if any."""
    _, rows = reader.query(VERSION_AT_COMMIT, [model, commit])
    return rows[0][0] if rows else None
