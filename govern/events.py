"""The facts govern records, and the envelope every fact travels in.

Each fact is a frozen dataclass named as something that happened. A fact
knows its `type` (``noun.verb``), its payload `schema_version` and its
`subject`; the envelope adds position, time, actor and the hash chain.

The hashing contract lives here too, because every hash in every ledger
depends on it. Changing anything in `canonical_json` or `envelope_hash`
changes every hash ever written: do not.

canonical JSON
    UTF-8, keys sorted, separators ``,`` and ``:`` with no whitespace,
    non-ASCII characters written as themselves, NaN and infinities refused.
    For the values govern writes (strings, integers, finite floats, booleans,
    null, arrays, objects) this is RFC 8785 except for the spelling of float
    exponents (Python's ``1e-07`` where RFC 8785 writes ``1e-7``); since the
    payload is stored as the exact bytes that were hashed and never
    re-serialised, verification does not depend on that spelling.
hash
    ``sha256_hex(prev_hash + canonical_json(envelope without "hash"))``,
    where the envelope is the object with keys actor, event_id, git_commit,
    occurred_at, payload (the payload object itself), prev_hash,
    recorded_at, schema_version, seq, subject, type. Timestamps are UTC,
    ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The first event's prev_hash is
    `GENESIS_HASH`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

GENESIS_HASH = "0" * 64
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """Serialise `value` the one way the hash chain depends on."""
    return _CANONICAL.encode(value)  # json.dumps with these options, without building an encoder per call


_json_text: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


def format_timestamp(moment: datetime) -> str:
    """UTC, microsecond precision, `Z` suffix: the only spelling of time in hashes."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if moment.year < 1000:  # isoformat pads years to four digits; strftime's spelling is the contract
        return moment.strftime(TIMESTAMP_FORMAT)
    return moment.isoformat(timespec="microseconds") + "Z"  # the same text, several times faster


def to_utc(moment: datetime) -> datetime:
    """An aware datetime in UTC; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


def finite_or_none(value: Any) -> Any:
    """NaN and infinities have no JSON spelling; a metric that is one is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------- facts


@dataclass(frozen=True)
class Fact:
    """Base of every fact; subclasses set `type`, `schema_version` and `subject`."""

    type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @property
    def subject(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def to_payload(self) -> dict[str, Any]:
        """The fields as a dict; shallow, because json.dumps walks nested values itself (asdict deep-copies)."""
        return {name: getattr(self, name) for name in _field_names(type(self))}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Fact:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class DatasetSnapshotted(Fact):
    """A dataset was pulled from its source system, and this is its content."""

    type: ClassVar[str] = "dataset.snapshotted"

    path: str
    md5: str | None
    sha256: str | None
    size: int | None
    source: str
    extracted_at: str
    extracted_at_basis: str
    stage: str | None = None
    nfiles: int | None = None
    rows: int | None = None
    columns: list[str] | None = None

    @property
    def subject(self) -> str:
        return f"dataset:{self.path}"


@dataclass(frozen=True)
class TrainingCompleted(Fact):
    """The pipeline ran to the end at a commit, producing these outputs and metrics."""

    type: ClassVar[str] = "training.completed"

    git: dict[str, Any]
    dvc_lock_sha256: str
    targets: list[str]
    stages: list[dict[str, Any]]
    params: dict[str, Any]
    metrics: dict[str, Any]
    outputs: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    models: list[dict[str, Any]]
    environment: dict[str, Any]
    duration_s: float
    run_cache_hit: bool
    mlflow: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] | None = None

    @property
    def subject(self) -> str:
        return f"commit:{self.git['commit']}"


@dataclass(frozen=True)
class TrainingFailed(Fact):
    """A pipeline stage failed; nothing was registered."""

    type: ClassVar[str] = "training.failed"

    git: dict[str, Any]
    targets: list[str]
    stage: str
    error: str
    output_tail: str
    stages: list[dict[str, Any]]
    environment: dict[str, Any]
    duration_s: float
    grid: dict[str, Any] | None = None

    @property
    def subject(self) -> str:
        return f"commit:{self.git['commit']}"


@dataclass(frozen=True)
class ModelRegistered(Fact):
    """A model artifact of a training became a registered model version in MLflow."""

    type: ClassVar[str] = "model.registered"

    model: str
    version: str
    path: str
    md5: str | None
    sha256: str | None
    training_event_id: str
    mlflow_run_id: str
    tracking_uri: str
    source_uri: str
    desc: str | None = None
    labels: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return f"model:{self.model}@{self.version}"


@dataclass(frozen=True)
class ExperimentSelected(Fact):
    """A grid search ended and this training was chosen as the best of its candidates."""

    type: ClassVar[str] = "experiment.selected"

    grid_id: str
    metric: str
    direction: str
    winner_event_id: str
    winner_params: dict[str, Any]
    winner_value: float | None
    candidates: list[dict[str, Any]]
    mlflow_parent_run_id: str | None

    @property
    def subject(self) -> str:
        return f"grid:{self.grid_id}"


@dataclass(frozen=True)
class ModelPromoted(Fact):
    """A model version was moved to a stage, by someone, approved by someone, for a reason."""

    type: ClassVar[str] = "model.promoted"

    model: str
    version: str
    from_stage: str | None
    to_stage: str
    approver: str
    reason: str
    forced: bool
    gto_tag: str | None = None
    origin: str | None = None  # None: `govern promote`; "gto-tag": imported by `govern sync`

    @property
    def subject(self) -> str:
        return f"model:{self.model}@{self.version}"


@dataclass(frozen=True)
class ModelDeprecated(Fact):
    """A model version may no longer be promoted or deployed."""

    type: ClassVar[str] = "model.deprecated"

    model: str
    version: str
    reason: str
    gto_tag: str | None = None
    origin: str | None = None

    @property
    def subject(self) -> str:
        return f"model:{self.model}@{self.version}"


@dataclass(frozen=True)
class DeploymentStarted(Fact):
    """A model version began serving an application in an environment (occurred_at: when)."""

    type: ClassVar[str] = "deployment.started"

    app: str
    env: str
    model: str
    version: str

    @property
    def subject(self) -> str:
        return f"app:{self.app}/{self.env}"


@dataclass(frozen=True)
class DeploymentEnded(Fact):
    """A model version stopped serving an application (retired, or replaced by another)."""

    type: ClassVar[str] = "deployment.ended"

    app: str
    env: str
    model: str
    version: str
    reason: str  # "replaced" or "retired"
    started_event_id: str

    @property
    def subject(self) -> str:
        return f"app:{self.app}/{self.env}"


@dataclass(frozen=True)
class InferenceRecorded(Fact):
    """A batch of predictions was made with a model version; one event per batch."""

    type: ClassVar[str] = "inference.recorded"

    model: str
    version: str
    app: str | None
    env: str | None
    input_path: str
    input_sha256: str
    output_path: str
    output_sha256: str
    rows: int | None
    duration_s: float
    code_commit: str | None = None

    @property
    def subject(self) -> str:
        return f"model:{self.model}@{self.version}"


@dataclass(frozen=True)
class ReproductionVerified(Fact):
    """A commit's pipeline was re-executed (CI) and every output matched the committed lock."""

    type: ClassVar[str] = "reproduction.verified"

    commit: str
    outputs: list[dict[str, Any]]
    metrics: dict[str, Any]
    duration_s: float
    ci: dict[str, Any]

    @property
    def subject(self) -> str:
        return f"commit:{self.commit}"


@dataclass(frozen=True)
class ReproductionDiverged(Fact):
    """A commit's pipeline was re-executed and outputs or metrics differ from what was committed."""

    type: ClassVar[str] = "reproduction.diverged"

    commit: str
    differing_outputs: list[dict[str, Any]]
    metric_deltas: dict[str, Any]
    duration_s: float
    ci: dict[str, Any]
    failed_stage: str | None = None
    error: str | None = None

    @property
    def subject(self) -> str:
        return f"commit:{self.commit}"


@dataclass(frozen=True)
class LedgerAnchored(Fact):
    """The ledger head was recorded outside the file, as a git tag; the tag covers this very event."""

    type: ClassVar[str] = "ledger.anchored"

    tag: str
    seq: int
    commit: str

    @property
    def subject(self) -> str:
        return f"ledger:{self.tag}"


@dataclass(frozen=True)
class TrainingMirrored(Fact):
    """A training recorded while MLflow was unreachable was mirrored into MLflow later."""

    type: ClassVar[str] = "training.mirrored"

    training_event_id: str
    run_id: str
    experiment_id: str
    tracking_uri: str
    model_versions: list[dict[str, Any]]
    reused_run: bool

    @property
    def subject(self) -> str:
        return f"training:{self.training_event_id}"


FACT_TYPES: dict[str, type[Fact]] = {
    cls.type: cls
    for cls in (
        DatasetSnapshotted,
        TrainingCompleted,
        TrainingFailed,
        ModelRegistered,
        ExperimentSelected,
        ModelPromoted,
        ModelDeprecated,
        DeploymentStarted,
        DeploymentEnded,
        InferenceRecorded,
        ReproductionVerified,
        ReproductionDiverged,
        LedgerAnchored,
        TrainingMirrored,
    )
}

# (type, from_version) -> function turning a payload of that version into the next one.
# Stored bytes never change; old payloads are upcast each time they are read.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def upcast(event_type: str, schema_version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored payload up to the current schema of its type."""
    current = FACT_TYPES[event_type].schema_version if event_type in FACT_TYPES else schema_version
    while schema_version < current:
        payload = UPCASTERS[(event_type, schema_version)](payload)
        schema_version += 1
    return payload


# ---------------------------------------------------------------- envelope


@dataclass(frozen=True)
class PendingEvent:
    """A fact on its way into the ledger: everything but position and chain."""

    fact: Fact
    actor: str
    occurred_at: datetime
    git_commit: str | None = None
    event_id: str = field(default_factory=new_event_id)

    @property
    def payload_json(self) -> str:
        return canonical_json(self.fact.to_payload())


@dataclass(frozen=True)
class RecordedEvent:
    """One row of the ledger, as stored."""

    seq: int
    event_id: str
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    subject: str
    git_commit: str | None
    payload_json: str
    prev_hash: str
    hash: str

    @property
    def payload(self) -> dict[str, Any]:
        """The payload upcast to the current schema of its type."""
        return upcast(self.type, self.schema_version, json.loads(self.payload_json))

    def fact(self) -> Fact:
        return FACT_TYPES[self.type].from_payload(self.payload)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as printed by `--json`."""
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "type": self.type,
            "schema_version": self.schema_version,
            "occurred_at": format_timestamp(self.occurred_at),
            "recorded_at": format_timestamp(self.recorded_at),
            "actor": self.actor,
            "subject": self.subject,
            "git_commit": self.git_commit,
            "payload": json.loads(self.payload_json),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def envelope_hash(
    *,
    seq: int,
    event_id: str,
    type: str,
    schema_version: int,
    occurred_at: datetime,
    recorded_at: datetime,
    actor: str,
    subject: str,
    git_commit: str | None,
    payload_json: str,
    prev_hash: str,
) -> str:
    """The chain hash of one event (see the module docstring for the contract).

    The payload is embedded as the stored text, not re-serialised, exactly as
    the ledger's SQL verification does it.
    """
    return chain_hash(
        prev_hash,
        seq=seq,
        event_id=event_id,
        type=type,
        schema_version=schema_version,
        occurred_text=format_timestamp(occurred_at),
        recorded_text=format_timestamp(recorded_at),
        actor=actor,
        subject=subject,
        git_commit=git_commit,
        payload_json=payload_json,
    )


def chain_hash(
    prev_hash: str,
    *,
    seq: int,
    event_id: str,
    type: str,
    schema_version: int,
    occurred_text: str,
    recorded_text: str,
    actor: str,
    subject: str,
    git_commit: str | None,
    payload_json: str,
) -> str:
    """`envelope_hash` with the timestamps already formatted: the ledger's bulk append formats each once."""
    # canonical_json member by member, spelled out: json.dumps(str, ensure_ascii=False) is exactly
    # encode_basestring, and an int is its str(); bulk appends hash hundreds of thousands of these.
    envelope = (
        f'{{"actor":{_json_text(actor)},"event_id":{_json_text(event_id)},'
        f'"git_commit":{"null" if git_commit is None else _json_text(git_commit)},'
        f'"occurred_at":"{occurred_text}","payload":{payload_json},'
        f'"prev_hash":{_json_text(prev_hash)},"recorded_at":"{recorded_text}",'
        f'"schema_version":{int(schema_version)},"seq":{int(seq)},'
        f'"subject":{_json_text(subject)},"type":{_json_text(type)}}}'
    )
    return hashlib.sha256((prev_hash + envelope).encode("utf-8")).hexdigest()
