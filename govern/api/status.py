"""`govern status`: the current state, derived from the ledger, on one screen and without SQL.

Each model's versions with the stages they hold and their deprecations, each app/env slot with the version
serving it and since when, the mirrors still pending, the last verification and the newest anchor. Read
from the ledger's views in a handful of queries on one connection; it never opens MLflow or DVC.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from govern.events import upcast
from govern.readmodel import deployments, events, mirrors, versions
from govern.readmodel.rows import shown_in
from govern.readmodel.versions import ModelVersionRow

if TYPE_CHECKING:
    from govern.api.context import Project
    from govern.readmodel.events import AnchorEvent, VerdictEvent
    from govern.storage.contract import Reader


def status(project: Project) -> dict[str, Any]:
    """The current state as plain data (what `govern status --json` prints)."""
    import json

    ledger = project.ledger
    count, head_seq, head_hash = 0, None, None
    models: list[dict[str, Any]] = []
    slots, trainings, registry = [], [], []
    verification: VerdictEvent | None = None
    anchor: AnchorEvent | None = None
    if ledger.exists():
        with ledger.reader() as reader:
            count, head_seq, head_hash = events.head(reader)
            models = model_versions(reader)
            _found_locks(project, reader, models)
            slots = shown_in(reader, deployments.slot_states(reader), {"actor": "seq"})
            trainings = mirrors.pending_trainings(reader)
            registry = mirrors.pending_registry(reader)
            verification = events.last_verification(reader)
            anchor = events.newest_anchor(reader)
    else:  # a new project has recorded nothing yet; a lost ledger (the repository holds anchors) is an error
        _refuse_lost_ledger(project)
    slots.sort(key=lambda s: _natural(f"{s.app}/{s.env}"))  # c2 before c10
    last_verification = None
    if verification is not None:
        payload = upcast(verification.type, verification.schema_version, json.loads(verification.payload))
        last_verification = {
            "seq": verification.seq,
            "type": verification.type,
            "match": payload["match"],
            "commit": verification.git_commit,
            "at": verification.occurred_at,
            "by": verification.actor,
        }
    return {
        "ledger": {
            "path": ledger.location,
            "backend": ledger.backend,
            "events": count,
            "head_seq": head_seq,
            "head_hash": head_hash,
        },
        "models": models,
        "deployments": [
            {
                "app": s.app,
                "env": s.env,
                "serving": s.type == "deployment.started",
                "model": s.model if s.type == "deployment.started" else None,
                "version": s.version if s.type == "deployment.started" else None,
                "since": s.at,
                "by": s.actor,
                "by_shown": s.actor_shown,
            }
            for s in slots
        ],
        "pending_mirrors": {
            "trainings": [{"event_id": t.event_id, "commit": t.git_commit} for t in trainings],
            "registry": [
                {"model": r.model, "through_seq": r.through_seq, "mirrored_through": r.mirrored_through}
                for r in registry
            ],
        },
        "last_verification": last_verification,
        "newest_anchor": (
            {
                "tag": anchor.tag,
                "seq": anchor.seq,
                "at": anchor.occurred_at,
                "events_since": head_seq - anchor.seq,
            }
            if anchor is not None
            else None
        ),
    }


def model_versions(reader: Reader) -> list[dict[str, Any]]:
    """Each model with its versions, oldest first: the stages each holds and its deprecation (what `status` shows,
    and the web's models page)."""
    models: dict[str, list[dict[str, Any]]] = {}
    rows = shown_in(reader, versions.registered_versions(reader), {"registered_by": "registered_seq"})
    for v in rows:
        models.setdefault(v.model, []).append(
            {
                "version": v.version,
                "registered_at": v.registered_at,
                "registered_by": v.registered_by,
                "registered_by_shown": v.registered_by_shown,
                "stages": list(v.stages),
                "deprecated_at": v.deprecated_at,
                "deprecation_reason": v.deprecation_reason,
                "lock_commit": v.lock_commit,  # None: not locked, no commit rebuilds it yet
            }
        )
    return [{"model": name, "versions": found} for name, found in models.items()]


def versions_of_training(reader: Reader, event_id: str) -> list[ModelVersionRow]:
    """The model versions a training registered (a finished training job's page links them)."""
    return versions.versions_of_training(reader, event_id)


def _found_locks(project: Project, reader: Reader, models: list[dict[str, Any]]) -> None:
    """For versions not locked yet: a lock commit this clone holds that no write has recorded yet (`lock_found`),
    so a lock committed a moment ago does not read as missing. Read-only; git is asked only when one is unlocked."""
    if project.root is None or all(v["lock_commit"] for m in models for v in m["versions"]):
        return
    from govern.api import locks
    from govern.errors import GovernError

    try:
        found = locks.unrecorded(project.root, reader)
    except GovernError:
        return
    for model in models:
        for version in model["versions"]:
            version["lock_found"] = None if version["lock_commit"] else found.get((model["model"], version["version"]))


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _refuse_lost_ledger(project: Project) -> None:
    from govern.api.anchors import refuse_writes_off_the_anchors

    if project.root is not None:  # the ledger alone (GOVERN_LEDGER outside a repository): no anchors to hold
        refuse_writes_off_the_anchors(project.root, project.ledger)
