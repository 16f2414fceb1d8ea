"""The request bodies of the controller's API (unknown fields refused, every string bounded) and its answers: what each
route's success body looks like, for the OpenAPI document."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class DeploymentRequest(Strict):
    model: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=50)
    app: str = Field(min_length=1, max_length=200)
    env: str = Field(default="production", min_length=1, max_length=200)
    at: str | None = Field(default=None, max_length=64, description="ISO 8601 with Z or an offset; default now")


class PromotionRequest(Strict):
    model: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=50)
    to_stage: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    force: bool = Field(default=False, description="Out of the stages' order: in team mode an admin's request")


class DirectPromotion(PromotionRequest):
    pass


class Decision(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class Deprecation(Strict):
    reason: str = Field(min_length=1, max_length=2000)
    force: bool = False


class TrainingRequest(Strict):
    commit: str = Field(min_length=1, max_length=200, description="A sha, branch or tag of the project's repository")
    targets: list[str] = Field(default_factory=list, max_length=50, description="Stages to reproduce (default all)")


class IdentityLink(Strict):
    identity: str = Field(min_length=3, max_length=300, description="A git identity, 'Name <email>'")
    reason: str = Field(default="", max_length=2000)


class SqlRequest(Strict):
    statement: str = Field(min_length=1, max_length=100_000, description="One SELECT, run in DuckDB's sandbox")
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=100)


class QueryRun(Strict):
    params: dict[str, str] = Field(default_factory=dict, max_length=100)


class VerdictUpload(Strict):
    type: str = Field(description="reproduction.verified or reproduction.diverged")
    payload: dict[str, Any]


class RetirementRequest(Strict):
    app: str = Field(min_length=1, max_length=200)
    env: str = Field(default="production", min_length=1, max_length=200)
    at: str | None = Field(default=None, max_length=64, description="ISO 8601 with Z or an offset; default now")


class GrantRequest(Strict):
    principal: str = Field(min_length=1, max_length=63)
    role: str = Field(min_length=1, max_length=20)
    apps: list[str] = Field(default_factory=list, max_length=100)
    reason: str = Field(default="", max_length=2000)


class ProposalDecision(Strict):
    reason: str = Field(default="", max_length=2000)


class ProposalDecline(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class CodeRedemption(Strict):
    code: str = Field(min_length=1, max_length=200, description="An enrollment code, gvc_...: spent by this call")


class TokenRequest(Strict):
    expires: str | None = Field(default=None, max_length=40)
    description: str = Field(default="", max_length=2000)


class PredictRows(Strict):
    rows: list[dict[str, Any]] = Field(min_length=1, description="One object per row: column -> value")


# The answers. Each model lists its fields in the order the answer has always had them, and no others (an answer
# with a field its model lacks does not conform: tests/test_server_schema.py). Timestamps are UTC, `...Z` strings.
# Where every value is a string or a number (`WhoAmI`, `NamedQuery`, `AnchorTag`) the route declares the model as its
# `response_model`, sent through `JSONResponse` as before (pydantic's own JSON writer writes some numbers otherwise):
# the answer is checked and not changed. Every other route only documents its answer (`answered_as`): it is sent as
# it always was, unchecked, so a long list (`/events`) costs no validation and a value that is any JSON (a query's
# rows, an event's payload) is written as it always was.


def answered_as(model: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """A route's `responses` entry documenting its success body as `model`, without checking it at run time."""
    return {status: {"model": model}}


class Answer(BaseModel):
    """Answers: exactly these fields (the document says so: `additionalProperties: false`)."""

    model_config = ConfigDict(extra="forbid")


class WhoAmI(Answer):
    """The principal a token authenticates."""

    principal: str
    roles: dict[str, list[str]] = Field(description="Each role held, with the apps a consumer's is limited to")
    token_id: str | None


class Event(Answer):
    """One event of the ledger, as recorded (`govern audit log --json`)."""

    seq: int
    event_id: str
    type: str
    schema_version: int
    occurred_at: str
    recorded_at: str
    actor: str
    subject: str
    git_commit: str | None
    payload: dict[str, Any] = Field(description="The fact, as the event's type and schema version define it")
    prev_hash: str
    hash: str
    authn: dict[str, Any] | None = Field(description="Who authenticated the actor, and how; null where unrecorded")
    signature: str | None = Field(description="The server's signature over `hash` (base64), for authenticated events")
    actor_shown: str = Field(description="The actor with the strength of its identity")


class Outcome(Answer):
    """What a lifecycle operation recorded (promote, approve, deprecate, deploy, retire)."""

    events: list[Event]
    tags: list[str] = Field(description="The git tags written for the events")
    warnings: list[str]


class QueryAnswer(Answer):
    """The columns and rows of a query over the ledger."""

    columns: list[str]
    rows: list[dict[str, Any]] = Field(description="One object per row: column -> value")


class NamedQuery(Answer):
    """A reviewed query under audit/queries/."""

    name: str
    description: str


class AnchorTag(Answer):
    """An anchor: a git tag naming the seq and hash of a ledger event."""

    tag: str
    seq: int
    hash: str


class LatestAnchor(Answer):
    """The newest anchor tag found."""

    tag: str
    seq: int


class SigningKey(Answer):
    """A signing key of the ledger and what it signed."""

    fingerprint: str
    registered_seq: int
    trusted: bool
    why: str
    endorsed_by: str | None
    retired_seq: int | None
    events_signed: int


class Attestations(Answer):
    """How many events are authenticated, self-asserted or unrecorded, and the keys that signed them."""

    ok: bool
    authenticated: int
    self_asserted: int
    unrecorded: int
    legacy_server_form: int
    keys: list[SigningKey]
    problems: list[str] = Field(description="The first problems found")
    problem_count: int


class Verification(Answer):
    """The chain's integrity: every hash and link recomputed, the anchors and the attestations checked."""

    ok: bool
    count: int
    head_hash: str | None
    bad_seq: int | None
    problem: str | None
    chain_ok: bool
    anchors: list[AnchorTag]
    anchors_checked: bool
    repository: str | None
    anchors_found: int
    latest_anchor: LatestAnchor | None
    anchor_problems: list[str]
    attestations: Attestations | None


class Window(Answer):
    """A production window: which version served an app/env, from when to when."""

    app: str
    env: str
    model: str
    version: str
    start: str
    end: str | None
    duration_s: float | None
    deployed_by: str
    deployed_by_shown: str | None
    ended_by: str | None
    ended_by_shown: str | None
    end_reason: str | None
    training_seq: int | None
    git_commit: str | None = Field(description="The commit whose dvc.lock rebuilds what served")
    trained_at_commit: str | None


class Production(Answer):
    """Which version served an app/env at a moment; nulls where nothing served."""

    app: str
    env: str
    at: str
    model: str | None
    version: str | None
    start: str | None
    end: str | None
    training_seq: int | None
    git_commit: str | None = Field(description="The commit whose dvc.lock rebuilds what served")
    trained_at_commit: str | None
    deployed_by: str | None
    start_seq: int | None


class Inference(Answer):
    """An inference record: a batch of rows scored by a version."""

    seq: int
    occurred_at: str
    actor: str
    model: str | None
    version: str | None
    app: str | None
    env: str | None
    rows: int | None
    input: str | None
    input_sha256: str | None
    output_sha256: str | None
    duration_s: float | None
    allowed_deprecated: bool


class Predicted(Answer):
    """Rows scored (JSON in, JSON out): the version that scored them and its predictions."""

    model: str
    version: str
    app: str | None
    env: str | None
    output: None = Field(description="Always null over HTTP: the predictions are in the answer")
    rows: int | None
    event_seq: int | None = Field(description="The inference record's seq")
    predictions: list[dict[str, Any]] = Field(description="One object per row: column -> value")


class StatusLedger(Answer):
    """Where the ledger is, and its head."""

    path: str
    backend: str
    events: int
    head_seq: int | None
    head_hash: str | None


class VersionState(Answer):
    """A model version: who registered it, the stages it holds, its deprecation, the commit that locked it."""

    version: str
    registered_at: str
    registered_by: str
    registered_by_shown: str | None
    stages: list[str]
    deprecated_at: str | None
    deprecation_reason: str | None
    lock_commit: str | None = Field(description="Null: not locked, no commit rebuilds it yet")
    lock_found: str | None = Field(
        default=None, description="Only where a version is unlocked: a lock commit this clone holds, not yet recorded"
    )


class ModelVersions(Answer):
    """A model and its versions, oldest first."""

    model: str
    versions: list[VersionState]


class Slot(Answer):
    """An app/env and the version serving it (or none), since when and by whom."""

    app: str
    env: str
    serving: bool
    model: str | None
    version: str | None
    since: str
    by: str
    by_shown: str | None


class PendingTraining(Answer):
    """A training not mirrored to MLflow yet."""

    event_id: str
    commit: str | None


class PendingRegistry(Answer):
    """A model whose registry events are not all mirrored yet."""

    model: str
    through_seq: int
    mirrored_through: int


class PendingMirrors(Answer):
    """What waits for the MLflow mirror."""

    trainings: list[PendingTraining]
    registry: list[PendingRegistry]


class LastVerification(Answer):
    """The newest reproduction verdict."""

    seq: int
    type: str
    match: str
    commit: str | None
    at: str
    by: str


class NewestAnchor(Answer):
    """The newest anchor, and how many events were recorded after it."""

    tag: str
    seq: int
    at: str
    events_since: int


class Status(Answer):
    """The project's state: the ledger, each model's versions, what serves where, what waits for a mirror."""

    ledger: StatusLedger
    models: list[ModelVersions]
    deployments: list[Slot]
    pending_mirrors: PendingMirrors
    last_verification: LastVerification | None
    newest_anchor: NewestAnchor | None


class Requested(Answer):
    """A promotion request recorded: its number (the event's seq) and the event."""

    request: int
    event: Event


class PromotionRequestState(Answer):
    """A promotion request and its decision, if any."""

    request_seq: int
    state: str = Field(description="pending, approved or rejected")
    model: str
    version: str
    to_stage: str
    requested_at: str
    requested_by: str
    reason: str
    evidence: dict[str, Any] | None
    decided_at: str | None
    decided_by: str | None
    decision_reason: str | None
    decision_seq: int | None
    forced: bool
    requested_by_shown: str | None
    decided_by_shown: str | None


class JobRow(Answer):
    """A training job the server runs."""

    job_id: str
    state: str = Field(description="queued, running, succeeded, failed or cancelled")
    commit: str
    targets: list[str]
    requested_at: str
    requested_by: str
    started_at: str | None
    host: str | None
    pid: int | None
    attempts: int
    finished_at: str | None
    finished_by: str | None
    training_event_id: str | None
    error: str | None
    seq: int


class JobStage(Answer):
    """A stage of a job's pipeline and how far its log says it got."""

    stage: str
    status: str


class Job(JobRow):
    """A training job with its lock and what its log says so far."""

    lock_commit: str | None
    lock_note: str | None
    stages: list[JobStage]
    log_tail: str = Field(description="The last lines of the job's log")


class Snapshot(Answer):
    """A dataset snapshot the ledger records."""

    path: str
    md5: str
    event_id: str
    extracted_at: str


class KnownSnapshots(Answer):
    """The dataset snapshots the ledger records, the latest per path and md5."""

    snapshots: list[Snapshot]


class TrainingRecorded(Answer):
    """A training reported from a scientist's machine, as recorded."""

    status: str
    events: list[Event]
    training_event_id: str | None
    training_seq: int | None
    warnings: list[str]


class Verdict(Answer):
    """A verifier's verdict about a training's reproduction, as recorded."""

    commit: str
    verdict: str = Field(description="verified or diverged")
    match: str
    strict: bool
    passed: bool
    event_seq: int | None
    recorded: bool
    not_recorded: str | None
    training_seq: int | None
    dvc_lock_sha256: str | None
    outputs: list[dict[str, Any]] | None
    differing_outputs: list[Any] | None
    stale_inputs: list[Any] | None
    metrics: dict[str, Any] | None
    metric_deltas: dict[str, Any] | None
    tolerances: dict[str, Any] | None
    failed_stage: str | None
    error: str | None
    duration_s: float | None
    environment_differences: dict[str, Any] | None
    notes: list[str]


class ReproductionRecorded(Answer):
    """A verdict recorded, and its event."""

    verdict: Verdict
    event: Event


class _Granted(Answer):
    """What every grant of a role says: to whom, which role, who granted and proposed it, and why."""

    principal: str
    role: str
    apps: list[str] = Field(description="The apps a consumer's role is limited to")
    granted_at: str
    granted_by: str
    reason: str
    grant_seq: int
    basis: str | None
    proposal_seq: int | None
    proposed_at: str | None
    proposed_by: str | None
    granted_by_shown: str
    proposed_by_shown: str | None


class Grant(_Granted):
    """A role held by a principal: who granted (confirmed) it and who proposed it."""


class GrantRecord(_Granted):
    """A grant of a role over time: when and how it ended, who proposed and who confirmed it."""

    ended_at: str | None
    end_seq: int | None
    ended_by: str | None
    ended_how: str | None


class GrantProposal(Answer):
    """A proposal of a grant, for a second admin to confirm, and its decision."""

    proposal_seq: int
    proposed_at: str
    proposed_by: str
    proposed_authn: str | None = Field(description="How the proposer was authenticated, as JSON text")
    principal: str
    role: str
    apps: list[str]
    reason: str
    break_glass: bool
    state: str = Field(description="pending, confirmed, declined or withdrawn")
    decided_seq: int | None
    decided_at: str | None
    decided_by: str | None
    decided_authn: str | None = Field(description="How the decider was authenticated, as JSON text")
    decision_reason: str | None
    proposed_by_shown: str
    decided_by_shown: str | None


class Identity(Answer):
    """A git identity linked to a principal."""

    principal: str
    identity: str
    linked_at: str
    linked_by: str
    reason: str


class TokenState(Answer):
    """A token (never its secret): whether it is active, expired or revoked, and who handed it over."""

    token_id: str
    principal: str
    issued_at: str
    issued_by: str
    expires_at: str | None
    description: str
    revoked_at: str | None
    revoked_by: str | None
    code_id: str | None
    issuer: str | None
    state: str = Field(description="active, expired or revoked")
    kind: Literal["token"]


class CodeState(Answer):
    """An enrollment code (never its secret): waiting, redeemed, expired or revoked."""

    token_id: str = Field(description="The code's id")
    principal: str
    issued_at: str
    issued_by: str
    expires_at: str
    description: str
    revoked_at: str | None
    revoked_by: str | None
    code_id: str
    issuer: str
    state: str = Field(description="waiting, redeemed, expired or revoked")
    kind: Literal["enrollment code"]
    redeemed_at: str | None
    redeemed_token: str | None
    token_expires_at: str | None


TokenOrCode = Annotated[TokenState | CodeState, Field(discriminator="kind")]


class IssuedToken(Answer):
    """A token issued: its secret (shown once) and its event."""

    kind: Literal["token"]
    token_id: str
    principal: str
    token: str = Field(description="The bearer token, gvn_...: shown this once")
    expires_at: str | None
    seq: int
    event: Event


class IssuedCode(Answer):
    """An enrollment code issued for a principal to redeem (shown once), and its event."""

    kind: Literal["enrollment code"]
    code_id: str
    principal: str
    code: str = Field(description="The enrollment code, gvc_...: shown this once")
    expires_at: str
    token_expires_at: str | None
    seq: int
    event: Event


Issued = Annotated[IssuedToken | IssuedCode, Field(discriminator="kind")]


class LineageHeader(Answer):
    """What the lineage report is about, and when it was made."""

    model: str
    version: str
    generated_at: str
    govern: str = Field(description="govern's version")


class LineageReport(Answer):
    """A version's lineage report (format=json): each section as the HTML and Markdown reports show it."""

    report: LineageHeader
    identity: Any
    code: Any
    data: Any
    pipeline: Any
    training: Any
    validation: Any
    approvals: Any
    production: Any
    reproductions: Any
    inference: Any
    integrity: Any
