"""What the use cases answer (issue 27): every result the service interface (`api.service.Governance`) and the
delivery parts (cli, server, web, client) receive, in one leaf module, so a caller learns the shapes in one place
and the remote client rebuilds them without importing a use case.

A leaf: it imports the domain and `presentation` only (the use cases import it, never the other way round). One
JSON convention: a result's JSON form is `presentation.jsonable(result)`, its fields as an object, instants
through `timeparse.display`. A result whose wire shape differs from its fields (renamed keys, nested events,
computed values) keeps a `to_dict()` that spells its instants through `jsonable` too; the events inside go as
`RecordedEvent.to_dict()`, the event's own wire form (the chain's hashing spelling, see `envelope`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from govern.presentation import jsonable

if TYPE_CHECKING:
    from pathlib import Path

    from govern import access, signing
    from govern.attestations import AttestationReport
    from govern.envelope import PendingEvent, RecordedEvent
    from govern.pipeline import StageRun
    from govern.readmodel.jobs import JobRow
    from govern.readmodel.mirrors import Pending
    from govern.storage.contract import Verification


# ---------------------------------------------------------------- lifecycle and approvals


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


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class ReproOutcome:
    """What `repro` did: recorded a training, or found it already recorded."""

    status: str  # "recorded" or "up-to-date"
    stage_runs: list[StageRun]
    events: list[RecordedEvent] = field(default_factory=list)
    existing_seq: int | None = None
    mirror_error: str | None = None
    committed: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def training(self) -> RecordedEvent | None:
        from govern.events import TrainingCompleted  # the fact classes cost a read-only command's cold start

        return next((e for e in self.events if e.type == TrainingCompleted.type), None)

    @property
    def reused_versions(self) -> list[dict[str, str]]:
        """Model versions this training's files already were (the same bytes): not registered again."""
        training = self.training
        return list((training.payload.get("mlflow") or {}).get("reused_versions") or []) if training else []

    def to_dict(self) -> dict[str, Any]:
        training = self.training
        return {
            "status": self.status,
            "stages": [{"name": r.name, "status": r.status, "duration_s": r.duration_s} for r in self.stage_runs],
            "events": [
                {"seq": e.seq, "type": e.type, "subject": e.subject, "event_id": e.event_id} for e in self.events
            ],
            "training_seq": training.seq if training else self.existing_seq,
            "mlflow_run_id": (training.payload.get("mlflow") or {}).get("run_id") if training else None,
            "reused_versions": self.reused_versions,
            "mirror_error": self.mirror_error,
            "committed": self.committed,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Reported:
    """What `report_facts` wrote: the pending facts of one reproduction, for the server to record."""

    events: list[PendingEvent]
    stage_runs: list[StageRun]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "reported",
            "stages": [{"name": r.name, "status": r.status, "duration_s": r.duration_s} for r in self.stage_runs],
            "events": [{"type": e.fact.type, "event_id": e.event_id} for e in self.events],
        }


@dataclass(frozen=True)
class RecordedTraining:
    """What recording a report did: `recorded` (its events), `up-to-date` (the same training was recorded already:
    nothing appended) or `failed` (a `training.failed` recorded)."""

    status: str
    events: list[RecordedEvent]
    training_event_id: str | None
    collected: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GridAxis:
    file: str
    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class GridOutcome:
    grid_id: str
    trainings: list[RecordedEvent]
    selection: RecordedEvent
    registrations: list[RecordedEvent]
    winner: dict[str, Any]
    applied: bool
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid_id": self.grid_id,
            "trainings": [
                {"seq": t.seq, "event_id": t.event_id, "params": t.payload["grid"]["params"]} for t in self.trainings
            ],
            "selected_seq": self.selection.seq,
            "winner": self.winner,
            "registered": [{"model": r.payload["model"], "version": r.payload["version"]} for r in self.registrations],
            "applied_to_params": self.applied,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Job:
    """A job as recorded, with what its log says so far (stages reached, the last lines)."""

    row: JobRow
    lock_commit: str | None
    lock_note: str | None
    stages: list[dict[str, str]]
    log_tail: str

    @property
    def finished(self) -> bool:
        return self.row.state in ("succeeded", "failed", "cancelled")

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.row),
            "lock_commit": self.lock_commit,
            "lock_note": self.lock_note,
            "stages": self.stages,
            "log_tail": self.log_tail,
        }


@dataclass(frozen=True)
class Ran:
    """How a job's run ended: its outcome, the training it recorded or why not, and its lock commit or why none."""

    outcome: str
    training: str | None = None
    error: str | None = None
    lock_commit: str | None = None
    lock_note: str | None = None


# What a verdict's JSON carries of its fact's payload, in this order.
REPORTED = (
    "dvc_lock_sha256",
    "outputs",
    "differing_outputs",
    "stale_inputs",
    "metrics",
    "metric_deltas",
    "tolerances",
    "failed_stage",
    "error",
    "duration_s",
    "environment_differences",
)


@dataclass(frozen=True)
class Verdict:
    """A recorded verification: the event is the verdict; the rest says how to read it."""

    event: RecordedEvent
    training_seq: int | None = None
    notes: tuple[str, ...] = ()
    not_recorded: str | None = None  # why the verdict was printed and recorded nowhere (no ledger here)

    @property
    def recorded(self) -> bool:
        return self.not_recorded is None

    @property
    def facts(self) -> dict[str, Any]:
        return self.event.payload

    @property
    def commit(self) -> str:
        return str(self.facts["commit"])

    @property
    def match(self) -> str:
        return str(self.facts["match"])

    @property
    def strict(self) -> bool:
        return bool(self.facts.get("strict"))

    @property
    def differing(self) -> list[dict[str, Any]]:
        return list(self.facts["differing_outputs"])

    @property
    def verified(self) -> bool:
        from govern.equivalence import DIVERGED  # the rules' module costs a cold start that never judges

        return self.match != DIVERGED

    @property
    def passed(self) -> bool:
        """What the exit code says: diverged fails, and so does equivalent under --strict."""
        from govern.equivalence import EQUIVALENT

        return self.verified and not (self.strict and self.match == EQUIVALENT)

    def to_dict(self) -> dict[str, Any]:
        facts = self.facts
        return {
            "commit": self.commit,
            "verdict": "verified" if self.verified else "diverged",
            "match": self.match,
            "strict": self.strict,
            "passed": self.passed,
            "event_seq": self.event.seq if self.recorded else None,
            "recorded": self.recorded,
            "not_recorded": self.not_recorded,
            "training_seq": self.training_seq,
            **{key: facts.get(key) for key in REPORTED},
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------- mirrors and sync


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


# ---------------------------------------------------------------- audit and integrity


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


# ---------------------------------------------------------------- access, keys, projects, hooks


@dataclass(frozen=True)
class Issued:
    """A token just issued (its bearer value in `token.bearer`), or an enrollment code (its value in `code.code`),
    here and nowhere else. Their JSON forms differ on purpose: a code is never mistaken for a token."""

    token: access.IssuedToken | None
    event: RecordedEvent
    code: access.IssuedCode | None = None

    @property
    def is_code(self) -> bool:
        return self.code is not None

    def to_dict(self) -> dict[str, Any]:
        if self.code is not None:
            return {
                "kind": "enrollment code",
                "code_id": self.code.code_id,
                "principal": self.code.principal,
                "code": self.code.code,
                "expires_at": jsonable(self.code.expires_at),
                "token_expires_at": jsonable(self.code.token_expires_at),
                "seq": self.event.seq,
            }
        assert self.token is not None
        return {
            "kind": "token",
            "token_id": self.token.token_id,
            "principal": self.token.principal,
            "token": self.token.bearer,
            "expires_at": jsonable(self.token.expires_at),
            "seq": self.event.seq,
        }


@dataclass(frozen=True)
class KeyState:
    signer: signing.Signer
    registered: RecordedEvent | None  # the registration this start recorded, if any
    created: bool


@dataclass(frozen=True)
class InitResult:
    root: Path
    config_file: str
    changed: list[str] = field(default_factory=list)
    dvc_initialized: bool = False

    @property
    def already_initialized(self) -> bool:
        return not self.changed and not self.dvc_initialized

    @property
    def to_commit(self) -> list[str]:
        """What `govern init` wrote that git should hold before the first training (`dvc init` staged .dvc)."""
        paths = [path.split("/")[0] if path.startswith("audit/") else path for path in self.changed]
        if self.dvc_initialized:
            paths += [".dvc", ".dvcignore"]
        return list(dict.fromkeys(paths))


@dataclass(frozen=True)
class TeamLedger:
    location: str
    schema_version: int
    grants: list[str]
    writer_url: str  # what the project's configuration should name: the writer role, no password


@dataclass(frozen=True)
class ServerHook:
    hook: Path
    ledger: Path | str
    log: Path
