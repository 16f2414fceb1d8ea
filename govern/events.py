"""The facts govern records, and the envelope every fact travels in.

Each fact is a frozen dataclass named as something that happened. A fact
knows its `type` (``noun.verb``), its payload `schema_version` and its
`subject`; the envelope adds position, time, actor and the hash chain.

The envelope (PendingEvent, RecordedEvent) and the hashing contract live in
`govern.envelope`, which depends on this module (never the other way).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
    same_artifact_as: list[str] = field(default_factory=list)  # earlier versions of this model with this sha256

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
    request_seq: int | None = None  # the approved `model.promotion_requested` it carries out (issue 14)

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
    forced: bool = False
    serving: list[str] = field(default_factory=list)  # app/env slots it still served (only with --force)

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
    allowed_deprecated: bool = False  # the version was deprecated, and --allow-deprecated used it anyway

    @property
    def subject(self) -> str:
        return f"model:{self.model}@{self.version}"


@dataclass(frozen=True)
class ReproductionVerified(Fact):
    """A commit's pipeline was re-executed (CI) and matched its committed lock: bit for bit (`match: exact`),
    or with every output that differs in bytes judged equivalent by its declared rule (`match: equivalent`)."""

    type: ClassVar[str] = "reproduction.verified"
    schema_version: ClassVar[int] = 2

    commit: str
    match: str
    outputs: list[dict[str, Any]]
    differing_outputs: list[dict[str, Any]]
    metrics: dict[str, Any]
    metric_deltas: dict[str, Any]
    duration_s: float
    ci: dict[str, Any]
    environment: dict[str, Any] | None = None
    environment_differences: dict[str, Any] | None = None
    training_event_id: str | None = None
    strict: bool = False
    dvc_lock_sha256: str | None = None
    stale_inputs: list[dict[str, Any]] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        return f"commit:{self.commit}"


@dataclass(frozen=True)
class ReproductionDiverged(Fact):
    """A commit's pipeline was re-executed and a stage failed, its dvc.lock was stale (`stale_inputs`), a metric
    moved beyond its tolerance, or an output differs in a way its rule does not accept (with the evidence)."""

    type: ClassVar[str] = "reproduction.diverged"
    schema_version: ClassVar[int] = 2

    commit: str
    differing_outputs: list[dict[str, Any]]
    metric_deltas: dict[str, Any]
    duration_s: float
    ci: dict[str, Any]
    failed_stage: str | None = None
    error: str | None = None
    match: str = "diverged"
    outputs: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    environment_differences: dict[str, Any] | None = None
    training_event_id: str | None = None
    strict: bool = False
    dvc_lock_sha256: str | None = None
    stale_inputs: list[dict[str, Any]] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)

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
    reused_versions: list[dict[str, Any]] = field(default_factory=list)  # files registered already: not again

    @property
    def subject(self) -> str:
        return f"training:{self.training_event_id}"


@dataclass(frozen=True)
class TrainingLocked(Fact):
    """The training's lock commit was found: the commit whose `dvc.lock` (these exact bytes, `dvc_lock_sha256`)
    describes the training's outputs, so `git checkout COMMIT && dvc checkout` yields the versions' files. The
    training's own commit (its code, params and data pointers) is usually the one before (issue 26)."""

    type: ClassVar[str] = "training.locked"

    training_event_id: str
    commit: str
    dvc_lock_sha256: str
    versions: list[dict[str, Any]]  # {model, version} registered by, or reused by, the training
    outputs: list[dict[str, Any]]  # {path, md5} as the lock at `commit` states them
    found_by: str = ""  # `repro --commit`, `sync`, `ci verify`, `repro`

    @property
    def subject(self) -> str:
        return f"training:{self.training_event_id}"


@dataclass(frozen=True)
class RegistryMirrored(Fact):
    """MLflow's registry of a model reflects the ledger up to `through_seq`: its stage aliases, its deprecations."""

    type: ClassVar[str] = "registry.mirrored"

    model: str
    through_seq: int
    aliases: dict[str, str]
    deprecated_versions: list[str]
    tracking_uri: str

    @property
    def subject(self) -> str:
        return f"model:{self.model}"


@dataclass(frozen=True)
class RoleGranted(Fact):
    """A principal was given a role (a consumer, for named apps only), by an admin, for a reason. A privileged
    role (approver, admin) under the two-admin rule is granted by a second admin confirming a proposal: the actor
    is the confirmer, `proposal_seq` and `proposed_by` name the first."""

    type: ClassVar[str] = "access.granted"

    principal: str
    role: str
    apps: list[str] = field(default_factory=list)
    reason: str = ""
    proposal_seq: int | None = None  # the `access.grant_proposed` this grant confirms
    proposed_by: str | None = None  # that proposal's actor, as recorded there
    # How the grant was decided: "" (before the two-admin rule, or a role it does not cover), "bootstrap" (the
    # first admin, no admin existed), "two admins", or "break-glass" (an operator's local confirmation while
    # fewer than two admins held the role)
    basis: str = ""

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class RoleGrantProposed(Fact):
    """An admin proposed a privileged role (approver, admin) for a principal: it is held only once a second admin
    confirms it (`access.granted` naming this proposal). `break_glass`: proposed by an operator on the ledger's
    host, not through the server, while fewer than two admins held the role."""

    type: ClassVar[str] = "access.grant_proposed"

    principal: str
    role: str
    apps: list[str] = field(default_factory=list)
    reason: str = ""
    break_glass: bool = False

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class RoleGrantDeclined(Fact):
    """Another admin refused a proposed grant: it will not be held unless proposed again."""

    type: ClassVar[str] = "access.grant_declined"

    proposal_seq: int
    principal: str
    role: str
    reason: str = ""

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class RoleGrantWithdrawn(Fact):
    """The admin who proposed a grant took the proposal back before anyone confirmed it."""

    type: ClassVar[str] = "access.grant_withdrawn"

    proposal_seq: int
    principal: str
    role: str
    reason: str = ""

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class RoleRevoked(Fact):
    """A principal lost a role: from this instant it may no longer act in it."""

    type: ClassVar[str] = "access.revoked"

    principal: str
    role: str
    reason: str = ""

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class TokenIssued(Fact):
    """A bearer token for a principal: only the SHA-256 of its secret is recorded; the secret was shown once."""

    type: ClassVar[str] = "token.issued"

    principal: str
    token_id: str
    secret_sha256: str
    expires_at: str | None  # ISO 8601 UTC; None: never
    description: str = ""
    code_id: str | None = None  # the enrollment code the principal exchanged for it (its issuer issued the code)

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class EnrollmentCodeIssued(Fact):
    """An admin issued an enrollment code for another principal: single use, valid until `expires_at` (24 h), it
    is exchanged by that principal for a token of their own (`token.issued` naming it), which the admin never
    sees. Only the SHA-256 of its secret is recorded; the code was shown once."""

    type: ClassVar[str] = "token.code_issued"

    principal: str
    code_id: str
    secret_sha256: str
    expires_at: str  # ISO 8601 UTC: the code's own end
    token_expires_at: str | None  # the end of the token it is exchanged for; None: never
    description: str = ""

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class TokenRevoked(Fact):
    """A token may no longer be used, whatever its expiry."""

    type: ClassVar[str] = "token.revoked"

    principal: str
    token_id: str
    reason: str = ""

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class IdentityLinked(Fact):
    """A git or CI identity (`Name <email>`) is this principal's: work it did outside the server (a training run
    in a checkout) counts as the principal's when the four-eyes rule compares who trained and who approves."""

    type: ClassVar[str] = "access.identity_linked"

    principal: str
    identity: str
    reason: str = ""

    @property
    def subject(self) -> str:
        return f"principal:{self.principal}"


@dataclass(frozen=True)
class PromotionRequested(Fact):
    """Someone asked for a model version to be moved to a stage, for a reason; an approver decides."""

    type: ClassVar[str] = "model.promotion_requested"

    model: str
    version: str
    to_stage: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)  # the gates' findings when it was asked
    forced: bool = False  # out of the stages' order (or past a deprecated twin); in team mode an admin's request

    @property
    def subject(self) -> str:
        return f"model:{self.model}@{self.version}"


@dataclass(frozen=True)
class PromotionApproved(Fact):
    """An approver who neither asked nor trained approved a request; the promotion follows in the same write."""

    type: ClassVar[str] = "model.promotion_approved"

    request_seq: int
    model: str
    version: str
    to_stage: str
    reason: str
    gates: list[dict[str, Any]] = field(default_factory=list)  # each declared gate and what it found

    @property
    def subject(self) -> str:
        return f"model:{self.model}@{self.version}"


@dataclass(frozen=True)
class PromotionRejected(Fact):
    """An approver (or the requester, withdrawing it) refused a request: the version keeps its stage."""

    type: ClassVar[str] = "model.promotion_rejected"

    request_seq: int
    model: str
    version: str
    to_stage: str
    reason: str

    @property
    def subject(self) -> str:
        return f"model:{self.model}@{self.version}"


@dataclass(frozen=True)
class TrainingJobRequested(Fact):
    """Someone asked the controller to reproduce and record the pipeline at a commit (`POST /trainings`)."""

    type: ClassVar[str] = "job.requested"

    job_id: str
    commit: str
    targets: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return f"job:{self.job_id}"


@dataclass(frozen=True)
class TrainingJobStarted(Fact):
    """A controller process took the job and started running it (again, after a restart: `attempt` > 1)."""

    type: ClassVar[str] = "job.started"

    job_id: str
    host: str
    pid: int
    attempt: int = 1

    @property
    def subject(self) -> str:
        return f"job:{self.job_id}"


@dataclass(frozen=True)
class TrainingJobFinished(Fact):
    """A job ended: `succeeded` (its training recorded), `failed` (why), or `cancelled` (by whom: the actor)."""

    type: ClassVar[str] = "job.finished"

    job_id: str
    outcome: str
    training_event_id: str | None = None
    error: str | None = None
    log_tail: str = ""
    lock_commit: str | None = None  # the commit holding the job's dvc.lock, on `jobs.lock_branch` (issue 26)
    lock_note: str | None = None  # why there is none: the versions stay "not locked"

    @property
    def subject(self) -> str:
        return f"job:{self.job_id}"


@dataclass(frozen=True)
class SigningKeyRegistered(Fact):
    """The controller's public key, from this event on: the events it signs are authenticated by it. Signed by
    the key itself (it holds the private half); a key after the first is endorsed by one already trusted."""

    type: ClassVar[str] = "signing_key.registered"

    fingerprint: str
    public_key: str  # base64 of the 32 raw bytes of an Ed25519 public key
    algorithm: str = "ed25519"
    host: str = ""
    endorsed_by: str | None = None  # the fingerprint of the key that endorses this one (a rotation)
    endorsement: str | None = None  # its signature over this key's fingerprint and public key
    reason: str = ""

    @property
    def subject(self) -> str:
        return f"signing-key:{self.fingerprint}"


@dataclass(frozen=True)
class SigningKeyRetired(Fact):
    """A key signs nothing from this event on (it was rotated, or its file may have been exposed)."""

    type: ClassVar[str] = "signing_key.retired"

    fingerprint: str
    reason: str = ""
    successor: str | None = None

    @property
    def subject(self) -> str:
        return f"signing-key:{self.fingerprint}"


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
        TrainingLocked,
        RegistryMirrored,
        RoleGranted,
        RoleGrantProposed,
        RoleGrantDeclined,
        RoleGrantWithdrawn,
        RoleRevoked,
        TokenIssued,
        EnrollmentCodeIssued,
        TokenRevoked,
        IdentityLinked,
        PromotionRequested,
        PromotionApproved,
        PromotionRejected,
        TrainingJobRequested,
        TrainingJobStarted,
        TrainingJobFinished,
        SigningKeyRegistered,
        SigningKeyRetired,
    )
}


def _verified_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 (before the three outcomes): every non-metric output matched its md5 and every metric its
    tolerance, so it reads as `exact`; it recorded no evidence, environment or training link."""
    return {
        "match": "exact",
        "differing_outputs": [],
        "metric_deltas": {},
        "environment": None,
        "environment_differences": None,
        "training_event_id": None,
        "strict": False,
        "dvc_lock_sha256": None,
        "stale_inputs": [],
        "tolerances": {},
        **payload,
    }


def _diverged_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 judged every output by its md5 alone (each differing one reads as failing the `exact` rule) and
    listed only the metrics beyond their tolerance."""
    return {
        "match": "diverged",
        "outputs": [],
        "metrics": {},
        "environment": None,
        "environment_differences": None,
        "training_event_id": None,
        "strict": False,
        "dvc_lock_sha256": None,
        "stale_inputs": [],
        "tolerances": {},
        **payload,
        "differing_outputs": [
            {"rule": "exact", "equivalent": False, "evidence": {"summary": "bytes differ"}, **output}
            for output in payload.get("differing_outputs") or []
        ],
        "metric_deltas": {
            name: {**delta, "within": False} for name, delta in (payload.get("metric_deltas") or {}).items()
        },
    }


# (type, from_version) -> function turning a payload of that version into the next one.
# Stored bytes never change; old payloads are upcast each time they are read.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("reproduction.verified", 1): _verified_v1,
    ("reproduction.diverged", 1): _diverged_v1,
}


def upcast(event_type: str, schema_version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored payload up to the current schema of its type."""
    current = FACT_TYPES[event_type].schema_version if event_type in FACT_TYPES else schema_version
    while schema_version < current:
        payload = UPCASTERS[(event_type, schema_version)](payload)
        schema_version += 1
    return payload
