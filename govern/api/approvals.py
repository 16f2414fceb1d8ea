"""Promotion requests: asked by one person, decided by another who neither asked nor trained the version.

`govern request-promotion` records `model.promotion_requested` after the same checks a promotion makes (the
version exists, is not deprecated, the stage is the next one) and with the gates' findings as evidence;
`govern approve` records `model.promotion_approved` and the promotion itself in one transaction, after checking
again (the state may have moved since the request) and enforcing the four-eyes rule by identity: the approver
is compared with the requester and the trainer through principals and the git identities linked to them
(`govern principals link`). Through the server the identities are authenticated principals; run locally they
are the git or CI identity, as every other local write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govern import access, queries
from govern.api.context import open_project, text_argument
from govern.api.lifecycle import (
    Outcome,
    check_promotable,
    check_stage,
    finish_promotion,
    identity_links,
    judge_gates,
    plan_promotion_tags,
    refuse_failed_gates,
)
from govern.errors import Forbidden, FourEyesViolation, InvalidInput, NotFound, StateConflict
from govern.events import (
    ModelPromoted,
    PendingEvent,
    PromotionApproved,
    PromotionRejected,
    PromotionRequested,
    RecordedEvent,
    utc_now,
)
from govern.ledger import Reader
from govern.storage import LedgerStore

STATES = ("pending", "approved", "rejected")

REQUESTS_SQL = """
SELECT request_seq, state, model, version, to_stage, requested_at, requested_by, reason, evidence,
       decided_at, decided_by, decision_reason, decision_seq
FROM promotion_requests
WHERE ($state IS NULL OR state = $state) AND ($model IS NULL OR model = $model)
  AND ($seq IS NULL OR request_seq = $seq)
ORDER BY request_seq
"""


@dataclass(frozen=True)
class Requested:
    event: RecordedEvent

    @property
    def request_id(self) -> int:
        return self.event.seq

    def to_dict(self) -> dict[str, Any]:
        return {"request": self.event.seq, "event": self.event.to_dict()}


def request_promotion(
    model: str, version: str, to_stage: str, reason: str, start: Path | None = None, actor: str | None = None
) -> Requested:
    """Ask for `version` to enter `to_stage`; an approver decides. One open request per version and stage."""
    project = open_project(start, actor)
    check_stage(project, to_stage)
    reason = text_argument(reason, "--reason")

    def decide(reader: Reader) -> list[PendingEvent]:
        facts, _ = check_promotable(project, reader, model, version, to_stage)
        open_ = _requests(reader, "pending", model)
        same = [r for r in open_ if r["version"] == version and r["to_stage"] == to_stage]
        if same:
            raise StateConflict(
                f"Request {same[0]['request_seq']} already asks for version {version} of {model} to enter "
                f"{to_stage!r} (by {same[0]['requested_by']}): an approver decides it with `govern approve "
                f"{same[0]['request_seq']}`"
            )
        findings = judge_gates(project, reader, facts, to_stage)
        fact = PromotionRequested(
            model=model,
            version=version,
            to_stage=to_stage,
            reason=reason,
            evidence={"gates": [finding.to_dict() for finding in findings], "trained_by": facts.training_actor},
        )
        return [PendingEvent(fact, actor=project.actor, occurred_at=utc_now(), git_commit=facts.git_commit)]

    return Requested(project.ledger.transact(decide)[0])


def approve(
    request: int | str,
    reason: str,
    start: Path | None = None,
    actor: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Approve a pending request: the promotion it asks for is recorded with the approval, then tagged and
    mirrored as `govern promote` does. Refused to the requester and to the trainer, and where a gate fails."""
    project = open_project(start, actor)
    seq = request_number(request)
    reason = text_argument(reason, "--reason")
    planned: list[str] = []
    warnings: list[str] = []
    found: dict[str, Any] = {}

    def decide(reader: Reader) -> list[PendingEvent]:
        pending = _pending(reader, seq)
        found.update(pending)
        model, version, to_stage = pending["model"], pending["version"], pending["to_stage"]
        check_stage(project, to_stage)
        facts, current = check_promotable(project, reader, model, version, to_stage)
        _refuse_same_person(project.actor, pending, facts.training_actor, identity_links(reader))
        findings = refuse_failed_gates(project, reader, facts, to_stage)
        planned[:] = plan_promotion_tags(project, facts, to_stage, warnings)
        now = utc_now()
        approval = PromotionApproved(
            request_seq=seq,
            model=model,
            version=version,
            to_stage=to_stage,
            reason=reason,
            gates=[finding.to_dict() for finding in findings],
        )
        promotion = ModelPromoted(
            model=model,
            version=version,
            from_stage=current,
            to_stage=to_stage,
            approver=project.actor,
            reason=pending["reason"],
            forced=False,
            gto_tag=next((t for t in planned if "#" in t), None),
            request_seq=seq,
        )
        return [
            PendingEvent(approval, actor=project.actor, occurred_at=now, git_commit=facts.git_commit),
            PendingEvent(promotion, actor=project.actor, occurred_at=now, git_commit=facts.git_commit),
        ]

    events = project.ledger.transact(decide)
    return finish_promotion(project, found["model"], found["version"], events, planned, warnings, on_progress)


def reject(
    request: int | str,
    reason: str,
    start: Path | None = None,
    actor: str | None = None,
    requester_only: bool = False,
) -> RecordedEvent:
    """Close a pending request without promoting: an approver refuses it, or its requester withdraws it
    (`requester_only`: the server's scientists may close their own requests, no one else's)."""
    project = open_project(start, actor)
    seq = request_number(request)
    reason = text_argument(reason, "--reason")

    def decide(reader: Reader) -> list[PendingEvent]:
        pending = _pending(reader, seq)
        if requester_only and not access.same_person(project.actor, pending["requested_by"], identity_links(reader)):
            raise Forbidden(
                f"{_who(project.actor)} may withdraw their own requests only; request {seq} was asked by "
                f"{_who(pending['requested_by'])}: an approver may reject it"
            )
        fact = PromotionRejected(
            request_seq=seq,
            model=pending["model"],
            version=pending["version"],
            to_stage=pending["to_stage"],
            reason=reason,
        )
        return [PendingEvent(fact, actor=project.actor, occurred_at=utc_now())]

    return project.ledger.transact(decide)[0]


def requests(ledger: LedgerStore, state: str | None = "pending", model: str | None = None) -> list[dict[str, Any]]:
    """Promotion requests (pending ones by default), oldest first, each with its evidence and decision."""
    if state is not None and state not in STATES:
        raise InvalidInput(f"Unknown request state {state!r}: use one of {', '.join(STATES)}, or all")
    if not ledger.exists():
        return []
    return _requests(ledger, state, model)


def _requests(reader: Reader, state: str | None, model: str | None, seq: int | None = None) -> list[dict[str, Any]]:
    import json

    rows = queries.rows_as_dicts(reader, REQUESTS_SQL, {"state": state, "model": model, "seq": seq})
    for row in rows:
        row["evidence"] = json.loads(row["evidence"]) if row["evidence"] else {}
    return rows


def _pending(reader: Reader, seq: int) -> dict[str, Any]:
    rows = _requests(reader, None, None, seq)
    if not rows:
        raise NotFound(f"No promotion request {seq}: `govern requests` lists the pending ones with their numbers")
    row = rows[0]
    if row["state"] != "pending":
        raise StateConflict(
            f"Request {seq} was {row['state']} already, by {row['decided_by']} (seq {row['decision_seq']}): "
            "ask again with `govern request-promotion` if it should be reconsidered"
        )
    return row


def _refuse_same_person(approver: str, request: dict[str, Any], trainer: str | None, links: Any) -> None:
    what = f"version {request['version']} of {request['model']}"
    if access.same_person(approver, request["requested_by"], links):
        raise FourEyesViolation(
            f"Four-eyes rule: {_who(approver)} asked for request {request['request_seq']} and cannot approve it; "
            "another approver must"
        )
    if access.same_person(approver, trainer, links):
        raise FourEyesViolation(
            f"Four-eyes rule: {_who(approver)} trained {what} (as {trainer}) and cannot approve its promotion; "
            "another approver must"
        )


def _who(actor: str) -> str:
    found = access.TOKEN_ACTOR.match(actor)
    return found.group(1) if found else actor


def request_number(request: int | str) -> int:
    text = str(request).strip().removeprefix("#")
    if not text.isdigit() or int(text) < 1 or int(text) > 2**62:
        raise InvalidInput(f"{request!r} is not a request number: `govern requests` lists them")
    return int(text)
