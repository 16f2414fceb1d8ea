"""Results of training (see `govern.api.results`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govern.envelope import PendingEvent, RecordedEvent
    from govern.pipeline import StageRun
    from govern.readmodel.jobs import JobRow


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
