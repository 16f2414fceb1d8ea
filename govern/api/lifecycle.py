"""Promotions, deprecations and deployments: decided against the ledger, then mirrored.

Each command checks the current state and appends its events in one ledger
transaction (`Ledger.transact`), so two people cannot both promote past the
same check. The ledger is the source of truth; the git tags (GTO grammar)
and MLflow aliases are written afterwards, and a failure there is reported
as a warning, never as a lost fact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from govern import access, gates, gto_tags
from govern.adapters import git as git_adapter
from govern.api.context import Project, text_argument
from govern.api.mirror import after_write
from govern.api.results import Outcome
from govern.config import check_environment
from govern.envelope import PendingEvent, RecordedEvent, format_timestamp, to_utc
from govern.errors import FourEyesViolation, GovernError, InvalidInput, NotFound, PolicyViolation, StateConflict
from govern.events import DeploymentEnded, DeploymentStarted, ModelDeprecated, ModelPromoted
from govern.readmodel import access as access_reads
from govern.readmodel.deployments import ServingRow, Slot, known_slots, slot, slot_list
from govern.readmodel.reader import Reader
from govern.readmodel.rows import naive_utc
from govern.readmodel.versions import (
    VersionFacts,
    deprecated_twins,
    serving_slots,
    stage_holder,
    standing_at,
    training_metrics,
    verdicts_of_version,
    version_facts,
)
from govern.timeparse import display, not_in_future

SLOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---------------------------------------------------------------- promote


def promote(
    project: Project,
    model: str,
    version: str,
    to_stage: str,
    reason: str,
    *,
    approver: str | None = None,
    force: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Move a version to a stage, in the configured order unless forced."""
    check_stage(project, to_stage)
    reason = text_argument(reason, "--reason")
    approver = text_argument(approver, "--approver") if approver is not None else project.actor.name
    look_for_locks(project)
    planned_tags: list[str] = []
    warnings: list[str] = []

    def decide(reader: Reader) -> list[PendingEvent]:
        from govern.api import duties

        rules = duties.policy(project, reader)
        if rules.needs_request(to_stage):
            why = (
                "team mode's default for the last stage"
                if project.config.require_approval is None
                else (f"{project.config.source}: `registry.require_approval`")
            )
            raise PolicyViolation(
                f"Promotions to {to_stage!r} here need an approved request ({why}): ask with `govern "
                f"request-promotion {model} {version} --to {to_stage} --reason ...` (POST /promotion-requests), and an "
                "approver who neither asked nor trained approves it"
            )
        if rules.team:
            duties.require_authenticated(project, rules, "a promotion")
            if approver != project.actor.name:
                raise PolicyViolation(
                    "In team mode the approver of a promotion is whoever the server authenticated: leave --approver out"
                )
            if force:
                raise PolicyViolation(
                    "In team mode --force is no way around the rules: an admin asks for the forced promotion "
                    "(govern request-promotion ... --force) and an approver who neither asked nor trained approves it"
                )
        facts, current = check_promotable(project, reader, model, version, to_stage, force)
        refuse_failed_gates(project, reader, facts, to_stage)
        if rules.team:
            duties.check_not_trainer(project, reader, rules, facts, approver, "promote it")
        elif rules.four_eyes:
            links = access_reads.identity_links(reader)
            for trainer in duties.trainers(project, reader, facts).names:  # a rerun of the same file's too
                if access.same_person(approver, trainer, links):
                    raise FourEyesViolation(
                        f"Four-eyes rule: {approver} trained version {version} of {model} and cannot approve its "
                        "promotion; another person must approve it (--approver NAME)"
                    )
        planned_tags[:] = plan_promotion_tags(project, facts, to_stage, warnings)
        return [
            PendingEvent(
                ModelPromoted(
                    model=model,
                    version=version,
                    from_stage=current,
                    to_stage=to_stage,
                    approver=approver,
                    reason=reason,
                    forced=force,
                    gto_tag=next((t for t in planned_tags if "#" in t), None),
                ),
                actor=project.actor,
                occurred_at=project.clock(),
                git_commit=facts.git_commit,
            )
        ]

    events = project.ledger.transact(decide)
    return finish_promotion(project, model, version, events, planned_tags, warnings, on_progress)


def check_stage(project: Project, to_stage: str) -> None:
    if to_stage not in project.config.stages:
        raise InvalidInput(f"Unknown stage {to_stage!r}: the configured stages are {', '.join(project.config.stages)}")


def check_promotable(
    project: Project, reader: Reader, model: str, version: str, to_stage: str, force: bool = False
) -> tuple[VersionFacts, str | None]:
    """The version's facts and current stage, if it may move to `to_stage` now: not deprecated, not already
    there, the next stage in the configured order (unless forced). Raises the refusal otherwise."""
    stages = project.config.stages
    facts = version_facts(reader, model, version)
    _refuse_deprecated(facts, "promoted")
    twins = deprecated_twins(reader, model, version)
    if twins and not force:
        twin = twins[0]
        raise PolicyViolation(
            f"Version {version} of {model} is the same model file (sha256) as version {twin.version}, "
            f"deprecated at {display(twin.deprecated_at)} ({twin.reason}): promote another version, or "
            "pass --force (the event records it)"
        )
    if to_stage in facts.holds:
        raise StateConflict(f"Version {version} of {model} already holds stage {to_stage!r}")
    current = facts.stage
    position = stages.index(current) if current in stages else -1
    in_order = stages.index(to_stage) == position + 1 or (to_stage == current and to_stage not in facts.holds)
    if not in_order and not force:
        expected = stages[position + 1] if position + 1 < len(stages) else None
        where = f"is in {current!r}" if current else "has no stage yet"
        hint = f"promote it to {expected!r} first" if expected else "it has passed the last stage"
        raise PolicyViolation(
            f"Version {version} of {model} {where}; stages go {' -> '.join(stages)}: {hint}, "
            "or pass --force (the event records it)"
        )
    return facts, current


def judge_gates(project: Project, reader: Reader, facts: VersionFacts, to_stage: str) -> list[gates.Finding]:
    """The stage's declared gates against the version's training metrics and the latest CI verdict about a lock
    that holds its model file (`verdicts_of_version`)."""
    declared = project.config.gates.get(to_stage, ())
    if not declared:
        return []
    found = training_metrics(reader, facts.training_event_id)
    metrics = json.loads(found) if found else {}
    verdict = latest_verdict(project, reader, facts)
    findings = gates.judge(declared, metrics, verdict)
    if facts.lock_commit is None:
        findings.insert(0, gates.Finding(LOCKED_GATE, False, f"not locked: {locks_hint()}"))
    return findings


LOCKED_GATE = "dvc.lock committed"


def look_for_locks(project: Project) -> None:
    """Before a promotion is judged: record the lock commits this clone holds (`api.locks`), so a lock committed
    a moment ago counts without a `sync` first. Never refuses: a failure leaves the versions as they were."""
    import contextlib

    from govern.api import locks
    from govern.errors import GovernError

    with contextlib.suppress(GovernError):  # the gates then say "not locked", with the fix
        locks.find(project, "promotion")


def locks_hint() -> str:
    from govern.api.locks import NOT_LOCKED_HINT

    return NOT_LOCKED_HINT


def latest_verdict(project: Project, reader: Reader, facts: VersionFacts) -> str | None:
    """The latest CI verdict about the version's model file, whatever commit it ran at; in team mode the latest
    one a verifier's token authenticated (a local `ci verify` is self-asserted: anyone who can write the ledger
    could type its verdict)."""
    from govern import attestations
    from govern.api import duties

    rows = verdicts_of_version(reader, facts.model, facts.version)
    if not rows or not duties.team_mode(project, reader):
        return rows[0].verdict if rows else None
    claimed = [r for r in rows if r.authn and json.loads(r.authn).get("by") == "server"]
    checked = attestations.check_events(reader, [r.seq for r in claimed], project.config.trusted_keys)
    return next((r.verdict for r in claimed if checked.get(r.seq) is None), None)


def refuse_failed_gates(project: Project, reader: Reader, facts: VersionFacts, to_stage: str) -> list[gates.Finding]:
    findings = judge_gates(project, reader, facts, to_stage)
    if not all(finding.passed for finding in findings):
        raise PolicyViolation(
            f"Version {facts.version} of {facts.model} does not pass the gates of {to_stage!r} "
            f"({project.config.source}: `registry.gates`): {gates.failures(findings)}"
        )
    return findings


def finish_promotion(
    project: Project,
    model: str,
    version: str,
    events: list[RecordedEvent],
    planned_tags: list[str],
    warnings: list[str],
    on_progress: Callable[[str], None] | None,
) -> Outcome:
    """After a promotion is recorded: its GTO tags, then the mirrors (MLflow aliases)."""
    facts = version_facts(project.ledger, model, version)
    tags = create_tags(project, model, facts.lock_commit, planned_tags, events[-1].occurred_at, warnings)
    return Outcome(events, warnings + after_write(project, on_progress), tags)


def _refuse_deprecated(facts: VersionFacts, action: str) -> None:
    if facts.deprecated_seq is not None:
        raise PolicyViolation(
            f"Version {facts.version} of {facts.model} is deprecated (seq {facts.deprecated_seq}) "
            f"and cannot be {action}: use another version"
        )


# ---------------------------------------------------------------- deprecate


def deprecate(
    project: Project,
    model: str,
    version: str,
    reason: str,
    *,
    force: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Mark a version unusable: it can no longer be promoted or deployed (nor used for predictions)."""
    reason = text_argument(reason, "--reason")
    planned: list[str] = []
    warnings: list[str] = []

    def decide(reader: Reader) -> list[PendingEvent]:
        from govern.api import duties

        duties.require_authenticated(project, duties.policy(project, reader), "a deprecation")
        facts = version_facts(reader, model, version)
        if facts.deprecated_seq is not None:
            raise InvalidInput(f"Version {version} of {model} is already deprecated (seq {facts.deprecated_seq})")
        serving = serving_slots(reader, model, version)
        if serving and not force:
            raise PolicyViolation(
                f"Version {version} of {model} serves {', '.join(serving)}: deploy another version there (or "
                "`govern retire`) first, or pass --force to deprecate it while it serves (the event records it)"
            )
        if serving:
            warnings.append(f"version {version} still serves {', '.join(serving)}; predictions with it are refused")
        planned[:] = _plan_deprecation_tags(project, facts, warnings)
        return [
            PendingEvent(
                ModelDeprecated(
                    model=model,
                    version=version,
                    reason=reason,
                    gto_tag=planned[0] if planned else None,
                    forced=force,
                    serving=serving,
                ),
                actor=project.actor,
                occurred_at=project.clock(),
                git_commit=facts.git_commit,
            )
        ]

    events = project.ledger.transact(decide)
    facts = version_facts(project.ledger, model, version)
    registered = git_adapter.tags(project.root, gto_tags.registration(model, version)) if planned else []
    at = registered[0].commit if registered else facts.lock_commit  # GTO deregisters where it registered
    tags = create_tags(project, model, at, planned, events[0].occurred_at, warnings)
    return Outcome(events, warnings + after_write(project, on_progress), tags)


# ---------------------------------------------------------------- deploy / retire


def deploy(
    project: Project,
    model: str,
    version: str,
    *,
    app: str,
    env: str = "production",
    at: datetime | None = None,
) -> Outcome:
    """Record that a version starts serving app/env at `at`; a version already there is replaced."""
    _check_slot_names(app, env)
    check_environment(project.config, env)
    at = _check_moment(at)
    required = project.config.env_stages.get(env)

    def decide(reader: Reader) -> list[PendingEvent]:
        facts = version_facts(reader, model, version)
        _refuse_deprecated(facts, "deployed")
        current = slot(reader, app, env)
        moment = _moment_in(current, at, project.clock)
        _check_standing(reader, facts, env, required, moment)
        events = []
        if current.serving is not None:
            serving = current.serving
            if serving.model == model and serving.version == version:
                raise StateConflict(f"Version {version} of {model} already serves {app}/{env}")
            events.append(_ended(project, serving, "replaced", moment))
        events.append(
            PendingEvent(
                DeploymentStarted(app=app, env=env, model=model, version=version),
                actor=project.actor,
                occurred_at=moment,
                git_commit=facts.git_commit,
            )
        )
        return events

    return Outcome(project.ledger.transact(decide), after_write(project))


def retire(
    project: Project,
    *,
    app: str,
    env: str = "production",
    at: datetime | None = None,
) -> Outcome:
    """Record that app/env stops being served by its model at `at`."""
    _check_slot_names(app, env)
    check_environment(project.config, env)
    at = _check_moment(at)

    def decide(reader: Reader) -> list[PendingEvent]:
        current = slot(reader, app, env)
        if current.serving is None:
            if current.latest_at is not None:
                raise NotFound(
                    f"Nothing is deployed to {app}/{env} now: it was retired at {display(current.latest_at)}"
                )
            slots = slot_list(known_slots(reader), f"{app}/{env}")
            raise NotFound(f"Nothing was ever deployed to {app}/{env}: deployments are recorded for {slots}")
        return [_ended(project, current.serving, "retired", _moment_in(current, at, project.clock))]

    return Outcome(project.ledger.transact(decide), after_write(project))


def _check_standing(reader: Reader, facts: VersionFacts, env: str, required: str | None, moment: datetime) -> None:
    """A deployment dated T needs the version registered before T and holding the required stage at T."""
    model, version = facts.model, facts.version
    standing = standing_at(reader, model, version, required or "", moment)
    when = display(moment)
    if naive_utc(moment) < standing.registered_at:
        raise PolicyViolation(
            f"Version {version} of {model} was registered at {display(standing.registered_at)}, after {when}: "
            "a version cannot serve before it exists; check --at"
        )
    if required is None or standing.holder == version:
        return
    if standing.got_stage_at is None:
        holder = stage_holder(reader, model, required)
        held = f"held by version {holder}" if holder else "held by no version"
        raise PolicyViolation(
            f"Environment {env!r} needs stage {required!r}, which version {version} of {model} does not hold "
            f"({held}): run `govern promote {model} {version} --to {required} --reason ...` first"
        )
    if required not in facts.holds:
        holder = stage_holder(reader, model, required)
        raise PolicyViolation(
            f"Environment {env!r} needs stage {required!r}, which version {version} of {model} no longer holds "
            f"(version {holder or 'none'} does): promote it back first"
        )
    raise PolicyViolation(
        f"Environment {env!r} needs stage {required!r}, which version {version} of {model} did not hold at {when}: "
        f"it got {required!r} at {display(standing.got_stage_at)}; give an --at after that"
    )


def _ended(project: Project, serving: ServingRow, reason: str, moment: datetime) -> PendingEvent:
    return PendingEvent(
        DeploymentEnded(
            app=serving.app,
            env=serving.env,
            model=serving.model,
            version=serving.version,
            reason=reason,
            started_event_id=serving.start_event_id,
        ),
        actor=project.actor,
        occurred_at=moment,
    )


def _check_slot_names(app: str, env: str) -> None:
    for option, value in (("--app", app), ("--env", env)):
        if not SLOT_NAME.match(value or ""):
            raise InvalidInput(
                f"{option} {value!r} is not a valid name: "
                "use letters, digits, '.', '_' and '-', starting with a letter or digit"
            )


def _check_moment(at: datetime | None) -> datetime | None:
    return None if at is None else not_in_future(at, "--at", "record deployments when they happen")


def _moment_in(current: Slot, at: datetime | None, clock: Callable[[], datetime]) -> datetime:
    """When a deployment event happens, decided under the ledger's lock.

    An explicit `--at` may not precede the slot's latest event. Without one it is now, read here rather than
    before the lock, so that a writer which waited for another is dated after it; and never before the slot's
    latest event, which another machine whose clock runs a little ahead may have dated later than this one's now.
    """
    latest = current.latest_at
    if at is None:
        now = clock()
        return latest.replace(tzinfo=UTC) if latest is not None and naive_utc(now) < latest else now
    if latest is not None and naive_utc(at) < latest:
        raise StateConflict(
            f"--at {format_timestamp(at)} is earlier than the latest recorded event of {current.app}/{current.env} "
            f"({format_timestamp(latest)}): history is appended, not rewritten"
        )
    return at


# ---------------------------------------------------------------- GTO tags and mirrors


def plan_promotion_tags(project: Project, facts: VersionFacts, stage: str, warnings: list[str]) -> list[str]:
    """The GTO tags a promotion needs, or none (with a warning) where GTO cannot represent it."""
    if not project.config.gto_tags:
        return []
    blocker = _gto_blocker(project, facts, stage)
    if blocker:
        warnings.append(f"no GTO tag written: {blocker}")
        return []
    existing = [tag.name for tag in git_adapter.tags(project.root, f"{facts.model}[@#]*")]
    planned = []
    registration = gto_tags.registration(facts.model, facts.version)
    if registration not in existing:
        planned.append(registration)
    planned.append(gto_tags.assignment(facts.model, stage, gto_tags.next_counter(facts.model, existing)))
    return planned


def _plan_deprecation_tags(project: Project, facts: VersionFacts, warnings: list[str]) -> list[str]:
    if not project.config.gto_tags:
        return []
    registration = gto_tags.registration(facts.model, facts.version)
    if registration not in {tag.name for tag in git_adapter.tags(project.root, registration)}:
        return []  # GTO never saw this version; there is nothing to deregister
    return [gto_tags.deregistration(facts.model, facts.version)]


def _gto_blocker(project: Project, facts: VersionFacts, stage: str) -> str | None:
    if not gto_tags.representable(facts.model, stage):
        return f"GTO does not accept the name {facts.model!r} or stage {stage!r}"
    if not facts.lock_commit:
        return (
            f"version {facts.version} of {facts.model} is not locked: no commit holds the dvc.lock of its training "
            "yet, and a tag on the training's commit would name another model's bytes; "
            f"{locks_hint()}; promotions after that are tagged"
        )
    at_commit = [t.name for t in git_adapter.tags(project.root, f"{facts.model}@v*") if t.commit == facts.lock_commit]
    others = [
        t
        for t in gto_tags.version_tags_on(facts.model, at_commit)
        if t != gto_tags.registration(facts.model, facts.version)
    ]
    if others:
        return (
            f"commit {facts.lock_commit[:12]} already carries {others[0]}, and GTO allows one version of an artifact "
            "per commit"
        )
    return None


def create_tags(
    project: Project, model: str, commit: str | None, names: list[str], at: datetime, warnings: list[str]
) -> list[str]:
    """Create annotated tags whose times strictly increase per artifact, so GTO orders them as govern does."""
    if not names or commit is None:
        return []
    latest = max((t.tagged_at for t in git_adapter.tags(project.root, f"{model}[@#]*") if t.tagged_at), default=None)
    moment = to_utc(at).replace(microsecond=0)
    created = []
    for name in names:
        if latest is not None and moment <= latest:
            moment = latest + timedelta(seconds=1)
        try:
            git_adapter.create_tag(project.root, name, commit, f"govern: {name}", moment)
        except GovernError as error:
            warnings.append(f"GTO tag not written: {error}")
            break
        created.append(name)
        latest = moment
    return created
