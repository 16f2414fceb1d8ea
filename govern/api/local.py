"""`LocalGovernance`: the `Governance` interface on this machine's project, each method one use case.

The project is built once per instance (`api.context.open_project`, given as `opener`), for reading or for
writing as the method needs. Each method imports its use case's module when called: the CLI's cold start
(`govern --help`, a read) must not pay for DuckDB, MLflow or DVC it does not use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govern.api.context import Project
    from govern.api.results import IntegrityReport, Issued, Outcome, Prediction, QueryResult, Requested
    from govern.api.service import Progress
    from govern.envelope import RecordedEvent


class LocalGovernance:
    def __init__(self, opener: Callable[..., Project]) -> None:
        self._opener = opener
        self._projects: dict[bool, Project] = {}

    def project(self, *, writing: bool = True) -> Project:
        """The project, opened once for reading and once for writing at most (a writing one serves reads too)."""
        if writing not in self._projects:
            if not writing and True in self._projects:
                return self._projects[True]
            self._projects[writing] = self._opener(writing=writing)
        return self._projects[writing]

    # ---------------------------------------------------------------- lifecycle
    def promote(
        self, model: str, version: str, to_stage: str, reason: str, *, approver: str | None = None,
        force: bool = False, on_progress: Progress = None,
    ) -> Outcome:  # fmt: skip
        from govern.api import lifecycle

        return lifecycle.promote(
            self.project(), model, version, to_stage, reason, approver=approver, force=force, on_progress=on_progress
        )

    def deprecate(
        self, model: str, version: str, reason: str, *, force: bool = False, on_progress: Progress = None
    ) -> Outcome:
        from govern.api import lifecycle

        return lifecycle.deprecate(self.project(), model, version, reason, force=force, on_progress=on_progress)

    def deploy(
        self, model: str, version: str, *, app: str, env: str = "production", at: datetime | None = None
    ) -> Outcome:
        from govern.api import lifecycle

        return lifecycle.deploy(self.project(), model, version, app=app, env=env, at=at)

    def retire(self, *, app: str, env: str = "production", at: datetime | None = None) -> Outcome:
        from govern.api import lifecycle

        return lifecycle.retire(self.project(), app=app, env=env, at=at)

    def predict(
        self, input_path: Path, output_path: Path, *, model: str | None = None, version: str | None = None,
        app: str | None = None, env: str = "production", record: bool = False, allow_deprecated: bool = False,
    ) -> Prediction:  # fmt: skip
        from govern.api import predict

        return predict.predict(
            self.project(writing=record), input_path, output_path, model=model, version=version, app=app, env=env,
            record=record, allow_deprecated=allow_deprecated,
        )  # fmt: skip

    # ---------------------------------------------------------------- training
    def repro(
        self, stages: Sequence[str], *, allow_dirty: bool = False, commit_lock: bool = False,
        on_progress: Any = None,
    ) -> Any:  # fmt: skip
        from govern.api import repro

        return repro.repro(self.project(), stages, allow_dirty=allow_dirty, commit=commit_lock, on_progress=on_progress)

    # ---------------------------------------------------------------- approvals
    def request_promotion(self, model: str, version: str, to_stage: str, reason: str, force: bool = False) -> Requested:
        from govern.api import approvals

        return approvals.request_promotion(self.project(), model, version, to_stage, reason, force=force)

    def approve(self, request: str, reason: str, on_progress: Progress = None) -> Outcome:
        from govern.api import approvals

        return approvals.approve(self.project(), request, reason, on_progress=on_progress)

    def reject(self, request: str, reason: str) -> RecordedEvent:
        from govern.api import approvals

        return approvals.reject(self.project(), request, reason)

    def requests(self, state: str | None = "pending", model: str | None = None) -> list[dict[str, Any]]:
        from govern.api import approvals

        return approvals.requests(self.project(writing=False), state, model)

    # ---------------------------------------------------------------- audit
    def audit_log(
        self, types: Sequence[str] = (), since: datetime | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        from govern.api import audit

        return audit.audit_log(self.project(writing=False), types=types, since=since, limit=limit)

    def production_answer(self, app: str, env: str, at: datetime) -> dict[str, Any]:
        from govern.api import audit

        return audit.production_answer(self.project(writing=False), app, env, at)

    def window_records(self, app: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        from govern.api import audit

        return audit.window_records(self.project(writing=False), app, model)

    def history(self, model: str, version: str | None = None) -> list[RecordedEvent]:
        from govern.api import audit

        return audit.history(self.project(writing=False), model, version)

    def sql(self, statement: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        from govern.api import audit

        return audit.sql(self.project(writing=False), statement, params)

    def named_queries(self) -> dict[str, str]:
        from govern.api import audit

        return audit.named_queries(self.project(writing=False))

    def run_named(self, name: str, params: Mapping[str, str]) -> QueryResult:
        from govern.api import audit

        return audit.run_named(self.project(writing=False), name, params)

    def gather(self, model: str, version: str, verify_chain: bool = False) -> dict[str, Any]:
        from govern.api import report

        return report.gather(self.project(writing=False), model, version, verify_chain=verify_chain)

    def verify(self, repository: Path | None = None) -> IntegrityReport:
        from govern.api import integrity

        return integrity.verify(self.project(writing=False), repository)

    def anchor(self) -> RecordedEvent:
        from govern.api import integrity

        return integrity.anchor(self.project())

    def status(self) -> dict[str, Any]:
        from govern.api import status

        return status.status(self.project(writing=False))

    # ---------------------------------------------------------------- access
    def grant(self, principal: str, role: str, apps: Sequence[str] = (), reason: str = "") -> RecordedEvent:
        from govern.api import access

        return access.grant(self.project(), principal, role, apps, reason)

    def revoke(self, principal: str, role: str, reason: str = "") -> RecordedEvent:
        from govern.api import access

        return access.revoke(self.project(), principal, role, reason)

    def link_identity(self, principal: str, identity: str, reason: str = "") -> RecordedEvent:
        from govern.api import access

        return access.link_identity(self.project(), principal, identity, reason)

    def identities(self) -> list[dict[str, Any]]:
        from govern.api import access

        return access.identities(self.project(writing=False))

    def roles_at(self, at: datetime | None = None) -> list[dict[str, Any]]:
        from govern.api import access

        return access.roles_at(self.project(writing=False), at)

    def tokens(self, principal: str | None = None) -> list[dict[str, Any]]:
        from govern.api import access

        return access.tokens(self.project(writing=False), principal)

    def issue_token(self, principal: str, expires: str | None = None, description: str = "") -> Issued:
        from govern.api import access

        return access.issue_token(self.project(), principal, expires, description)

    def redeem(self, code: str) -> Issued:
        from govern.api import access

        return access.redeem(self.project(), code)

    def revoke_token(self, token_id: str, reason: str = "") -> RecordedEvent:
        from govern.api import access

        return access.revoke_token(self.project(), token_id, reason)

    def confirm_grant(self, proposal: str, reason: str = "") -> RecordedEvent:
        from govern.api import access

        return access.confirm_grant(self.project(), proposal, reason)

    def decline_grant(self, proposal: str, reason: str) -> RecordedEvent:
        from govern.api import access

        return access.decline_grant(self.project(), proposal, reason)

    def withdraw_grant(self, proposal: str, reason: str = "") -> RecordedEvent:
        from govern.api import access

        return access.withdraw_grant(self.project(), proposal, reason)

    def proposals(self, state: str | None = "pending") -> list[dict[str, Any]]:
        from govern.api import access

        return access.proposals(self.project(writing=False), state)

    def grant_history(self, principal: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        from govern.api import access

        return access.grant_history(self.project(writing=False), principal, limit)
