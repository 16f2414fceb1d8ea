"""The use cases as one interface (`Governance`): what the CLI asks, whether the project is here
(`api.local.LocalGovernance`, the use cases on this machine's project) or behind a `govern serve`
(`client.HttpGovernance`, the REST API). Both are checked against this protocol by a type checker and by
`tests/test_service_contract.py`, which runs each operation both ways and compares the answers.

Methods take what a person types (names, numbers, instants) and return the use cases' result types; who acts
and which project is the implementation's business: the local one's project (git's or CI's identity), the
server's authenticated principal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from govern.api.results import IntegrityReport, Issued, Outcome, Prediction, QueryResult, ReproOutcome, Requested
    from govern.envelope import RecordedEvent

Progress = Callable[[str], None] | None


class Governance(Protocol):
    # ---------------------------------------------------------------- lifecycle
    def promote(
        self, model: str, version: str, to_stage: str, reason: str, *, approver: str | None = None,
        force: bool = False, on_progress: Progress = None,
    ) -> Outcome: ...  # fmt: skip

    def deprecate(
        self, model: str, version: str, reason: str, *, force: bool = False, on_progress: Progress = None
    ) -> Outcome: ...

    def deploy(
        self, model: str, version: str, *, app: str, env: str = "production", at: datetime | None = None
    ) -> Outcome: ...

    def retire(self, *, app: str, env: str = "production", at: datetime | None = None) -> Outcome: ...

    def predict(
        self, input_path: Path, output_path: Path, *, model: str | None = None, version: str | None = None,
        app: str | None = None, env: str = "production", record: bool = False, allow_deprecated: bool = False,
    ) -> Prediction: ...  # fmt: skip

    # ---------------------------------------------------------------- training
    def repro(
        self, stages: Sequence[str], *, allow_dirty: bool = False, commit_lock: bool = False,
        on_progress: Any = None,
    ) -> ReproOutcome: ...  # fmt: skip

    # ---------------------------------------------------------------- approvals
    def request_promotion(
        self, model: str, version: str, to_stage: str, reason: str, force: bool = False
    ) -> Requested: ...

    def approve(self, request: str, reason: str, on_progress: Progress = None) -> Outcome: ...

    def reject(self, request: str, reason: str) -> RecordedEvent: ...

    def requests(self, state: str | None = "pending", model: str | None = None) -> list[dict[str, Any]]: ...

    # ---------------------------------------------------------------- audit
    def audit_log(
        self, types: Sequence[str] = (), since: datetime | None = None, limit: int | None = None
    ) -> list[RecordedEvent]: ...

    def production_answer(self, app: str, env: str, at: datetime) -> dict[str, Any]: ...

    def window_records(self, app: str | None = None, model: str | None = None) -> list[dict[str, Any]]: ...

    def history(self, model: str, version: str | None = None) -> list[RecordedEvent]: ...

    def sql(self, statement: str, params: Mapping[str, Any] | None = None) -> QueryResult: ...

    def named_queries(self) -> dict[str, str]: ...

    def run_named(self, name: str, params: Mapping[str, str]) -> QueryResult: ...

    def gather(self, model: str, version: str, verify_chain: bool = False) -> dict[str, Any]: ...

    def verify(self, repository: Path | None = None) -> IntegrityReport: ...

    def anchor(self) -> RecordedEvent: ...

    def status(self) -> dict[str, Any]: ...

    # ---------------------------------------------------------------- access
    def grant(self, principal: str, role: str, apps: Sequence[str] = (), reason: str = "") -> RecordedEvent: ...

    def revoke(self, principal: str, role: str, reason: str = "") -> RecordedEvent: ...

    def link_identity(self, principal: str, identity: str, reason: str = "") -> RecordedEvent: ...

    def identities(self) -> list[dict[str, Any]]: ...

    def roles_at(self, at: datetime | None = None) -> list[dict[str, Any]]: ...

    def tokens(self, principal: str | None = None) -> list[dict[str, Any]]: ...

    def issue_token(self, principal: str, expires: str | None = None, description: str = "") -> Issued: ...

    def redeem(self, code: str) -> Issued: ...

    def revoke_token(self, token_id: str, reason: str = "") -> RecordedEvent: ...

    def confirm_grant(self, proposal: str, reason: str = "") -> RecordedEvent: ...

    def decline_grant(self, proposal: str, reason: str) -> RecordedEvent: ...

    def withdraw_grant(self, proposal: str, reason: str = "") -> RecordedEvent: ...

    def proposals(self, state: str | None = "pending") -> list[dict[str, Any]]: ...

    def grant_history(self, principal: str | None = None, limit: int = 200) -> list[dict[str, Any]]: ...
