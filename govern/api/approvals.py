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

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from govern import access, attribution
from govern.api import duties
from govern.api.context import Project, text_argument
from govern.api.lifecycle import (
    Outcome,
    check_promotable,
    check_stage,
    finish_promotion,
    judge_gates,
    look_for_locks,
    plan_promotion_tags,
    refuse_failed_gates,
)
from govern.api.results import Requested
from govern.attribution import Actor
from govern.envelope import PendingEvent, RecordedEvent
from govern.errors import Forbidden, FourEyesViolation, InvalidInput, NotFound, PolicyViolation, StateConflict
from govern.events import ModelPromoted, PromotionApproved, PromotionRejected, PromotionRequested
from govern.readmodel import access as access_reads
from govern.readmodel import approvals as approval_reads
from govern.readmodel.approvals import DecisionRow, PromotionRequestRow, QueuedRequestRow, VersionTrainingRow
from govern.readmodel.reader import Reader
from govern.readmodel.versions import (
    VersionFacts,
    training_authn,
    trainings_of_version,
    verdicts_of_version,
    verdicts_of_versions,
    version_facts,
)

STATES = ("pending", "approved", "rejected")


def request_promotion(
    project: Project,
    model: str,
    version: str,
    to_stage: str,
    reason: str,
    force: bool = False,
) -> Requested:
    """Ask for `version` to enter `to_stage`; an approver decides. One open request per version and stage.
    `force`: out of the stages' order (or past a deprecated twin); in team mode only an admin asks for that."""
    check_stage(project, to_stage)
    reason = text_argument(reason, "--reason")
    look_for_locks(project)

    def decide(reader: Reader) -> list[PendingEvent]:
        rules = duties.policy(project, reader)
        duties.require_authenticated(project, rules, "a promotion request")
        if force and rules.team and not _holds(reader, project.actor, "admin"):
            raise Forbidden(
                "A forced promotion is asked for by an admin and approved by an approver: "
                f"{_who(project.actor)} is no admin"
            )
        facts, _ = check_promotable(project, reader, model, version, to_stage, force)
        open_ = approval_reads.requests(reader, "pending", model)
        same = [r for r in open_ if r.version == version and r.to_stage == to_stage]
        if same:
            raise StateConflict(
                f"Request {same[0].request_seq} already asks for version {version} of {model} to enter "
                f"{to_stage!r} (by {same[0].requested_by}): an approver decides it with `govern approve "
                f"{same[0].request_seq}`"
            )
        findings = judge_gates(project, reader, facts, to_stage)
        fact = PromotionRequested(
            model=model,
            version=version,
            to_stage=to_stage,
            reason=reason,
            evidence={"gates": [finding.to_dict() for finding in findings], "trained_by": facts.training_actor},
            forced=force,
        )
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock(), git_commit=facts.git_commit)]

    return Requested(project.ledger.transact(decide)[0])


def approve(
    project: Project,
    request: int | str,
    reason: str,
    on_progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Approve a pending request: the promotion it asks for is recorded with the approval, then tagged and
    mirrored as `govern promote` does. Refused to the requester and to the trainer, and where a gate fails."""
    seq = request_number(request)
    reason = text_argument(reason, "--reason")
    look_for_locks(project)
    planned: list[str] = []
    warnings: list[str] = []
    found: list[PromotionRequestRow] = []

    def decide(reader: Reader) -> list[PendingEvent]:
        pending = _pending(reader, seq)
        found[:] = [pending]
        model, version, to_stage = pending.model, pending.version, pending.to_stage
        check_stage(project, to_stage)
        rules = duties.policy(project, reader)
        duties.require_authenticated(project, rules, "an approval")
        forced = bool(pending.forced)
        facts, current = check_promotable(project, reader, model, version, to_stage, forced)
        trainers = duties.trainers(project, reader, facts).names
        _refuse_same_person(project.actor.name, pending, trainers, access_reads.identity_links(reader))
        if rules.team:
            duties.check_not_trainer(
                project, reader, rules, facts, project.actor.name, "approve its promotion", pending.requested_by
            )
            duties.request_attested(project, reader, pending)
            trained = duties.trainers(project, reader, facts)
            duties.check_token_issuer(reader, project.actor, [pending.requested_by, *trained.names], "approve it")
            duties.check_same_hands(reader, project.actor, [pending.request_seq, *trained.seqs], "approve it")
        findings = refuse_failed_gates(project, reader, facts, to_stage)
        planned[:] = plan_promotion_tags(project, facts, to_stage, warnings)
        now = project.clock()
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
            approver=project.actor.name,
            reason=pending.reason,
            forced=forced,
            gto_tag=next((t for t in planned if "#" in t), None),
            request_seq=seq,
        )
        return [
            PendingEvent(approval, actor=project.actor, occurred_at=now, git_commit=facts.git_commit),
            PendingEvent(promotion, actor=project.actor, occurred_at=now, git_commit=facts.git_commit),
        ]

    events = project.ledger.transact(decide)
    return finish_promotion(project, found[0].model, found[0].version, events, planned, warnings, on_progress)


def reject(
    project: Project,
    request: int | str,
    reason: str,
    requester_only: bool = False,
) -> RecordedEvent:
    """Close a pending request without promoting: an approver refuses it, or its requester withdraws it
    (`requester_only`: the server's scientists may close their own requests, no one else's)."""
    seq = request_number(request)
    reason = text_argument(reason, "--reason")

    def decide(reader: Reader) -> list[PendingEvent]:
        pending = _pending(reader, seq)
        duties.require_authenticated(project, duties.policy(project, reader), "closing a request")
        links = access_reads.identity_links(reader)
        if requester_only and not access.same_person(project.actor, pending.requested_by, links):
            raise Forbidden(
                f"{_who(project.actor)} may withdraw their own requests only; request {seq} was asked by "
                f"{_who(pending.requested_by)}: an approver may reject it"
            )
        fact = PromotionRejected(
            request_seq=seq,
            model=pending.model,
            version=pending.version,
            to_stage=pending.to_stage,
            reason=reason,
        )
        return [PendingEvent(fact, actor=project.actor, occurred_at=project.clock())]

    return project.ledger.transact(decide)[0]


def requests(project: Project, state: str | None = "pending", model: str | None = None) -> list[dict[str, Any]]:
    """Promotion requests (pending ones by default, "all" or None for all), oldest first, each with its evidence
    and decision."""
    ledger = project.ledger
    state = None if state == "all" else state
    if state is not None and state not in STATES:
        raise InvalidInput(f"Unknown request state {state!r}: use one of {', '.join(STATES)}, or all")
    if not ledger.exists():
        return []
    return [_answer(row) for row in approval_reads.requests(ledger, state, model)]


def _answer(row: PromotionRequestRow | QueuedRequestRow | DecisionRow, **extra: Any) -> dict[str, Any]:
    """A request row as answered: its evidence parsed, then `extra`, then each actor shown with the strength of
    its identity (`*_shown`) in place of the authentication records it is shown from."""
    answer = asdict(row)
    if "evidence" in answer:
        answer["evidence"] = json.loads(answer["evidence"]) if answer["evidence"] else {}
    answer.update(extra)
    _shown(answer)
    return answer


def _shown(row: dict[str, Any]) -> None:
    """Each actor of a request row with the strength of its identity, beside the plain name (`*_shown`)."""
    for name, authn in (("requested_by", "requested_authn"), ("decided_by", "decided_authn"),
                        ("trained_by", "trained_authn")):  # fmt: skip
        if row.get(name) is not None:
            row[f"{name}_shown"] = attribution.shown(row[name], row.get(authn))
        row.pop(authn, None)


def _pending(reader: Reader, seq: int) -> PromotionRequestRow:
    rows = approval_reads.requests(reader, None, None, seq)
    if not rows:
        raise NotFound(f"No promotion request {seq}: `govern requests` lists the pending ones with their numbers")
    row = rows[0]
    if row.state != "pending":
        raise StateConflict(
            f"Request {seq} was {row.state} already, by {row.decided_by} (seq {row.decision_seq}): "
            "ask again with `govern request-promotion` if it should be reconsidered"
        )
    return row


def _refuse_same_person(
    approver: str, request: PromotionRequestRow, trainers: Sequence[str | None], links: Any
) -> None:
    """Neither the requester nor anyone who trained the version's model file (a rerun of it too) approves."""
    what = f"version {request.version} of {request.model}"
    if access.same_person(approver, request.requested_by, links):
        raise FourEyesViolation(
            f"Four-eyes rule: {_who(approver)} asked for request {request.request_seq} and cannot approve it; "
            "another approver must approve it"
        )
    for trainer in trainers:
        if access.same_person(approver, trainer, links):
            raise FourEyesViolation(
                f"Four-eyes rule: {_who(approver)} trained {what} (as {trainer}) and cannot approve its promotion; "
                "another approver must approve it"
            )


def _holds(reader: Reader, actor: Actor, role: str) -> bool:
    """Does the authenticated principal behind `actor` hold `role` now (as the ledger says, in this transaction)?"""
    principal = actor.authn.principal if actor.authenticated else None
    if principal is None:
        return False
    return access_reads.holds_role(reader, principal, role)


def _who(actor: object) -> str:
    found = access.TOKEN_ACTOR.match(str(actor))
    return found.group(1) if found else str(actor)


def request_number(request: int | str) -> int:
    text = str(request).strip().removeprefix("#")
    if not text.isdigit() or int(text) < 1 or int(text) > 2**62:
        raise InvalidInput(f"{request!r} is not a request number: `govern requests` lists them")
    return int(text)


# ---------------------------------------------------------------- the approver's view: the queue and its evidence

QUEUE_SHOWN = 50  # pending requests shown at once, oldest first: the queue is worked from its head


def queue(project: Project, limit: int = QUEUE_SHOWN) -> dict[str, Any]:
    """The approver's queue: the oldest `limit` pending requests, each with the evidence recorded with it (the
    gates' findings when it was asked, the trainer), the latest reproduction verdict about its model file and
    the version holding the stage now; how many are pending in all; the latest decisions. A handful of queries,
    whatever the ledger's size."""
    ledger = project.ledger
    if not ledger.exists():
        return {"pending": [], "total": 0, "decided": []}
    with ledger.reader() as reader:
        queued = approval_reads.queue(reader, limit)
        total = approval_reads.pending_count(reader)
        decided = approval_reads.decided(reader, 10)
        verdicts = verdicts_of_versions(reader, list({(r.model, r.version) for r in queued}))
    pending = []
    for row in queued:
        latest = (verdicts.get((row.model, row.version)) or [None])[0]
        pending.append(
            _answer(
                row,
                verdict=latest.verdict if latest else None,
                verdict_match=latest.payload.get("match") if latest else None,
                verdict_seq=latest.seq if latest else None,
                verdict_at=latest.occurred_at if latest else None,
            )
        )
    return {"pending": pending, "total": total, "decided": [_answer(row) for row in decided]}


def evidence(project: Project, request: int | str, four_eyes: bool = False) -> dict[str, Any]:
    """Everything an approver weighs for one request, from the ledger: the request and its decision, the
    version's metrics against the stage's declared gates (as judged when it was asked, and now), the reproduction
    verdicts about its model file (wherever its lock was committed), and what changed in data, code and
    parameters since the version that holds the stage (held it, for a decided request). With `four_eyes`, whether
    the four-eyes rule bars the project's actor (the viewer)."""
    from govern import gates

    seq = request_number(request)
    cfg = project.config
    ledger = project.ledger
    if not ledger.exists():
        raise NotFound(f"No promotion request {seq}: the ledger is empty")
    with ledger.reader() as reader:
        found_request = approval_reads.request(reader, seq)
        if found_request is None:
            raise NotFound(f"No promotion request {seq}: `govern requests` lists the pending ones with their numbers")
        row = _answer(found_request)
        model, version, stage = found_request.model, found_request.version, found_request.to_stage
        facts = version_facts(reader, model, version)
        decision_seq = found_request.decision_seq
        before = decision_seq if decision_seq is not None else 2**62
        holder = approval_reads.holder_before(reader, model, stage, before)
        wanted = [v for v in (version, holder) if v is not None]
        trained = {r.version: r for r in approval_reads.trainings_of_versions(reader, model, wanted)}
        payloads = {v: json.loads(r.payload) for v, r in trained.items()}
        verdicts = [
            {
                "seq": r.seq,
                "type": r.type,
                "occurred_at": r.occurred_at,
                "actor": r.actor,
                "authn": r.authn,
                "match": r.payload.get("match"),
            }
            for r in verdicts_of_version(reader, model, version)[:5]
        ]
        promoted_seq = None
        if found_request.state == "approved" and decision_seq is not None:
            promoted_seq = approval_reads.promotion_of_request(reader, model, version, stage, decision_seq - 1)
        barred = _four_eyes(project, reader, found_request, facts) if four_eyes else None
        authn = training_authn(reader, facts.training_event_id)
        trained_shown = attribution.shown(facts.training_actor, authn) if facts.training_actor else None
        every_training = trainings_of_version(reader, model, version)
        # the same model file trained again (a rerun, another commit): each trainer counts for four-eyes
        trainers_shown = list(dict.fromkeys(attribution.shown(t.actor, t.authn) for t in every_training))
    for verdict in verdicts:
        verdict["verdict"] = _verdict_name(verdict["type"])
        verdict["actor_shown"] = attribution.shown(verdict["actor"], verdict.pop("authn"))
    mine = payloads.get(version, {})
    theirs = payloads.get(holder, {}) if holder is not None else None
    metrics = mine.get("metrics") or {}
    latest = verdicts[0]["verdict"] if verdicts else None
    declared = cfg.gates.get(stage, ())
    now = gates.judge(declared, metrics, latest)
    asked = {finding.get("gate"): finding for finding in row["evidence"].get("gates", [])}
    thresholds = [
        {
            "gate": gate.text,
            "metric": gate.metric,
            "comparison": gate.comparison,
            "threshold": gate.threshold,
            "value": metrics.get(gate.metric) if gate.metric else latest,
            "holder_value": (theirs.get("metrics") or {}).get(gate.metric) if theirs and gate.metric else None,
            "passed": finding.passed,
            "seen": finding.seen,
            "at_request": asked.get(gate.text),
        }
        for gate, finding in zip(declared, now, strict=True)
    ]
    undeclared = [finding for text, finding in asked.items() if text not in {gate.text for gate in declared}]
    return {
        "request": row,
        "trained_by": facts.training_actor,
        "trained_by_shown": trained_shown,
        "trainers_shown": trainers_shown or ([trained_shown] if trained_shown else []),
        "git_commit": facts.git_commit,
        "lock_commit": facts.lock_commit,
        "deprecated_seq": facts.deprecated_seq,
        "holds": list(facts.holds),
        "stage_gates": [gate.text for gate in declared],
        "gates_now": thresholds,
        "gates_no_longer_declared": undeclared,
        "gates_pass": all(f.passed for f in now),
        "metrics": _metric_rows(metrics, (theirs or {}).get("metrics") or {}),
        "verdicts": verdicts,
        "holder": holder,
        "changes": _changes(mine, theirs, trained.get(version), trained.get(holder) if holder else None),
        "promoted_seq": promoted_seq,
        "four_eyes": barred,
    }


def _verdict_name(kind: str | None) -> str | None:
    if kind is None:
        return None
    return "verified" if kind == "reproduction.verified" else "diverged"


def _four_eyes(project: Project, reader: Reader, request: PromotionRequestRow, facts: VersionFacts) -> str | None:
    """The rules' message for the project's actor, if they would refuse their approval (the approval checks
    again)."""
    try:
        trainers = duties.trainers(project, reader, facts).names
        _refuse_same_person(project.actor.name, request, trainers, access_reads.identity_links(reader))
        rules = duties.policy(project, reader)
        duties.require_authenticated(project, rules, "an approval")
        if rules.team:
            duties.check_not_trainer(
                project, reader, rules, facts, project.actor.name, "approve its promotion", request.requested_by
            )
            duties.request_attested(project, reader, request)
            trained = duties.trainers(project, reader, facts)
            duties.check_token_issuer(reader, project.actor, [request.requested_by, *trained.names], "approve it")
            duties.check_same_hands(reader, project.actor, [request.request_seq, *trained.seqs], "approve it")
    except (FourEyesViolation, PolicyViolation) as violation:
        return str(violation)
    return None


def _metric_rows(mine: dict[str, Any], theirs: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(set(mine) | set(theirs)):
        value, before = mine.get(name), theirs.get(name)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (value, before))
        rows.append(
            {"metric": name, "value": value, "holder_value": before, "delta": value - before if numeric else None}
        )
    return rows


def _flat(params: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(params, dict):
        return {prefix: params} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in params.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _code_files(training: dict[str, Any]) -> dict[str, str | None]:
    """The pipeline's code and configuration files (stage dependencies that are no dataset or output), by md5."""
    data = {o["path"] for o in training.get("outputs", [])} | {d["path"] for d in training.get("datasets", [])}
    files: dict[str, str | None] = {}
    for stage in training.get("stages", []):
        for dep in stage.get("deps", []):
            path = dep.get("path")
            if path and path not in data and not any(path.startswith(p.rstrip("/") + "/") for p in data):
                files[path] = dep.get("md5")
    return files


def _compared(mine: dict[str, Any], theirs: dict[str, Any], same: Callable[[Any, Any], bool]) -> list[dict]:
    """Added, removed and changed entries of two mappings (path or name -> what was recorded)."""
    changed = []
    for key in sorted(set(mine) | set(theirs)):
        if key not in theirs:
            changed.append({"name": key, "change": "added", "before": None, "after": mine[key]})
        elif key not in mine:
            changed.append({"name": key, "change": "removed", "before": theirs[key], "after": None})
        elif not same(mine[key], theirs[key]):
            changed.append({"name": key, "change": "changed", "before": theirs[key], "after": mine[key]})
    return changed


def _changes(
    mine: dict[str, Any],
    theirs: dict[str, Any] | None,
    row: VersionTrainingRow | None,
    holder_row: VersionTrainingRow | None,
) -> dict[str, Any] | None:
    """What changed in data, code and parameters from the holder's training to this version's (None: no holder)."""
    if theirs is None:
        return None

    def datasets(training: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {
            d["path"]: {key: d.get(key) for key in ("md5", "sha256", "rows", "extracted_at", "role")}
            for d in training.get("datasets", [])
            if d.get("path")
        }

    def same_data(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return (a.get("sha256") or a.get("md5")) == (b.get("sha256") or b.get("md5"))

    mine_git, theirs_git = mine.get("git", {}), theirs.get("git", {})
    return {
        "commit_before": (holder_row.git_commit if holder_row else None) or theirs_git.get("commit"),
        "commit_after": (row.git_commit if row else None) or mine_git.get("commit"),
        "same_lock": bool(mine.get("dvc_lock_sha256")) and mine.get("dvc_lock_sha256") == theirs.get("dvc_lock_sha256"),
        "data": _compared(datasets(mine), datasets(theirs), same_data),
        "code": _compared(_code_files(mine), _code_files(theirs), lambda a, b: a == b),
        "params": _compared(_flat(mine.get("params") or {}), _flat(theirs.get("params") or {}), lambda a, b: a == b),
    }
