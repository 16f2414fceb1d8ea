"""The request bodies of the controller's API: unknown fields refused, every string bounded."""

from typing import Any

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


# The answers of fixed shape. Each lists its fields in the order the answer has always had them. Where every value is
# a string or a number (`WhoAmI`, `NamedQuery`, `AnchorTag`) the route declares it as its `response_model`, sent
# through `JSONResponse` as before (pydantic's own JSON writer writes some numbers otherwise): the answer is checked
# and not changed. Where a value may be any JSON (`QueryAnswer`, `ReproductionRecorded`), the model only documents
# the answer (`responses`), as checking it would write a NaN as null where the answer has always refused it.


class WhoAmI(BaseModel):
    principal: str
    roles: dict[str, list[str]] = Field(description="Each role held, with the apps a consumer's is limited to")
    token_id: str | None


class QueryAnswer(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]] = Field(description="One object per row: column -> value")


class NamedQuery(BaseModel):
    name: str
    description: str


class AnchorTag(BaseModel):
    tag: str
    seq: int
    hash: str


class ReproductionRecorded(BaseModel):
    verdict: dict[str, Any]
    event: dict[str, Any]
