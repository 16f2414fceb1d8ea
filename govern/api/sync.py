"""`govern sync`: import promotions made with GTO itself (annotated git tags) into the ledger.

`MODEL#STAGE#N` becomes `model.promoted`, `MODEL@vX.Y.Z!` becomes
`model.deprecated` (MLflow version X, as govern maps versions). The tagger
is the actor and approver, the tag message the reason, the tagger date the
time. Each event's id is derived from the tag's name and object id, so
running sync again adds nothing; tags govern wrote itself are already in the
ledger and are left alone. Registration tags are not imported: versions come
from trainings.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from govern import attribution
from govern import config as config_module
from govern.adapters import git as git_adapter
from govern.api import locks
from govern.api.context import Project
from govern.api.results import SyncOutcome
from govern.envelope import PendingEvent, to_utc
from govern.errors import InvalidInput, NotFound
from govern.events import ModelDeprecated, ModelPromoted
from govern.readmodel.reader import Reader
from govern.readmodel.versions import known_gto_tags, version_at_commit, version_facts
from govern.storage import open_store

NAMESPACE = uuid.UUID("6f1d8a52-3f0e-4c47-9a43-5b2f0c1e7d10")
ASSIGN = re.compile(r"^(?P<model>.+?)#(?P<stage>[^#!]+)#(?P<n>\d+)$")
DEREGISTER = re.compile(r"^(?P<model>.+?)@v(?P<major>\d+)\.0\.0!(#\d+)?$")
REGISTER = re.compile(r"^(?P<model>.+?)@v(?P<major>\d+)\.0\.0$")


def at_repository(repository: Path, ledger: Path | str | None = None) -> Project:
    """The project of a repository named by path (`govern sync --repo`, the server hook's bare repository, which
    has no work tree for `open_project` to find): its configuration (a bare one's: the defaults and the
    environment's), its ledger (`ledger`, else the configured one), the CI or git identity."""
    cfg = config_module.load(repository)
    return Project(repository, cfg, open_store(ledger or cfg.ledger, lock_timeout=cfg.lock_timeout))


def sync(project: Project, mirror: bool = True) -> SyncOutcome:
    """Import the project's GTO tags (its repository's, `at_repository`); with `mirror`, MLflow's aliases follow
    the imported promotions (as they follow `govern promote`: see `registry_mirror`). The server hook leaves them
    pending."""
    repo, ledger = project.root, project.ledger
    locked = locks.find(project, "sync")
    tags = [t for t in git_adapter.tags(repo, "*") if t.tagged_at is not None and ("#" in t.name or "@" in t.name)]
    tags.sort(key=lambda t: (t.tagged_at, t.name))
    registered = {(m["model"], t.commit): m["major"] for t in tags if (m := REGISTER.match(t.name)) is not None}
    skipped: list[str] = []

    def decide(reader: Reader) -> list[PendingEvent]:
        known = known_gto_tags(reader)
        stages: dict[tuple[str, str], str | None] = {}
        events = []
        for tag in tags:
            assign, deregister = ASSIGN.match(tag.name), DEREGISTER.match(tag.name)
            if tag.name in known or not (assign or deregister):
                continue
            model = (assign or deregister)["model"]
            version = deregister["major"] if deregister else registered.get((model, tag.commit))
            if version is None:
                version = version_at_commit(reader, model, tag.commit)
            if version is None:
                skipped.append(f"{tag.name}: no registered version of {model} at commit {tag.commit[:12]}")
                continue
            try:
                facts = version_facts(reader, model, version)
            except NotFound as error:
                skipped.append(f"{tag.name}: {error}")
                continue
            try:
                actor = attribution.self_asserted(tag.tagger or "unknown", "git tag tagger")
            except InvalidInput as error:
                skipped.append(f"{tag.name}: {error}")
                continue
            event_id = str(uuid.uuid5(NAMESPACE, f"{tag.name}@{tag.object_id}"))
            reason = tag.message or f"GTO tag {tag.name}"
            if deregister:
                fact: ModelPromoted | ModelDeprecated = ModelDeprecated(
                    model=model, version=version, reason=reason, gto_tag=tag.name, origin="gto-tag"
                )
            else:
                key = (model, version)
                fact = ModelPromoted(
                    model=model,
                    version=version,
                    from_stage=stages.get(key, facts.stage),
                    to_stage=assign["stage"],
                    approver=actor.name,
                    reason=reason,
                    forced=False,
                    gto_tag=tag.name,
                    origin="gto-tag",
                )
                stages[key] = assign["stage"]
            events.append(
                PendingEvent(
                    fact, actor=actor, occurred_at=to_utc(tag.tagged_at), git_commit=tag.commit, event_id=event_id
                )
            )
        return events

    events = locked + ledger.transact(decide)
    warnings = []
    if mirror and len(events) > len(locked):
        from govern.api import registry_mirror

        warnings = registry_mirror.request(project)
    return SyncOutcome(events, skipped, warnings)
