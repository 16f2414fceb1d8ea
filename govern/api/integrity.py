"""Anchors: the ledger head recorded outside the ledger file, in git, and checked on every verify.

A hash chain inside one file cannot reveal a truncated tail, a file replaced
by an older copy, or a chain re-hashed from scratch after an edit. An anchor
is an annotated tag `govern-anchor/SEQ` whose message holds the seq and hash
of a `ledger.anchored` event; the anchor covers that event itself, so
deleting it is caught too. Tags travel with the repository (`git push
--tags`), out of reach of whoever can write the ledger file.
"""

from __future__ import annotations

import json
from pathlib import Path

from govern import attestations
from govern import config as config_module
from govern.adapters import git as git_adapter
from govern.api.anchors import TAG_PREFIX, anchors
from govern.api.context import Project
from govern.api.results import Anchor, AnchorState, IntegrityReport
from govern.envelope import PendingEvent, RecordedEvent
from govern.errors import GovernError, LedgerError
from govern.events import LedgerAnchored
from govern.readmodel import events as event_reads
from govern.readmodel.reader import Reader


def anchor(project: Project) -> RecordedEvent:
    """Append `ledger.anchored` and tag HEAD with the seq and hash of that very event."""
    root = _root_of(project)
    commit = git_adapter.state(root).commit

    def decide(reader: Reader) -> list[PendingEvent]:
        seq = event_reads.last_seq(reader) + 1
        tag = f"{TAG_PREFIX}{seq}"
        if git_adapter.tags(root, tag):
            raise GovernError(f"The tag {tag} exists already: this ledger and the repository's anchors disagree")
        return [
            PendingEvent(
                LedgerAnchored(tag=tag, seq=seq, commit=commit), actor=project.actor, occurred_at=project.clock()
            )
        ]

    [event] = project.ledger.transact(decide)
    message = json.dumps({"seq": event.seq, "hash": event.hash}, sort_keys=True)
    git_adapter.create_tag(root, f"{TAG_PREFIX}{event.seq}", commit, message, project.clock())
    return event


def _root_of(project: Project) -> Path:
    """The project's root; the ledger alone (GOVERN_LEDGER outside a repository) has none to tag."""
    return project.root if project.root is not None else config_module.find_root()


def verify(project: Project, repository: Path | None = None) -> IntegrityReport:
    """The chain, then every anchor of the repository (`repository`, else the project's).

    Without a repository the anchors cannot be checked: the report says so (`anchors_checked` false)
    instead of passing silently.
    """
    ledger = project.ledger
    chain = ledger.verify()
    root = config_module.find_root(repository) if repository is not None else project.root
    if root is None:
        pinned: tuple[str, ...] = ()
    elif root == project.root and project.config is not None:
        pinned = project.config.trusted_keys
    else:
        pinned = config_module.load(root).trusted_keys
    attested = attestations.check(ledger.query_stored, pinned) if chain.ok and chain.count else None
    if root is None:
        return IntegrityReport(chain, attestations=attested)
    found = anchors(root)
    try:
        problems = check_anchors(ledger, found)
    except LedgerError as error:  # a PostgreSQL ledger whose events no longer pull into the read model
        problems = [f"anchors not checked: {error}"]
    return IntegrityReport(chain, found, problems, root, attested)


def check_anchors(ledger: Reader, found: list[Anchor]) -> list[str]:
    if not found:
        return []
    stored = event_reads.hashes(ledger, [a.seq for a in found])
    last = event_reads.last_seq(ledger)
    problems = []
    for a in found:
        if a.seq < 0:
            problems.append(f"{a.tag}: the tag message is not an anchor (expected {{seq, hash}})")
        elif a.seq not in stored:
            problems.append(
                f"{a.tag}: the ledger has no seq {a.seq} (it ends at seq {last}): events were removed or the file "
                "was replaced by an older copy"
            )
        elif stored[a.seq] != a.hash:
            problems.append(f"{a.tag}: seq {a.seq} has a different hash than anchored: the ledger was rewritten")
    return problems


def anchor_state(project: Project) -> AnchorState:
    """The head and the anchors, checked against the ledger by seq and hash; fast at any ledger size."""
    ledger = project.ledger
    head = ledger.head() if ledger.exists() else None
    root = project.root
    found = anchors(root) if root is not None else []
    try:
        problems = check_anchors(ledger, found) if head is not None else []
    except LedgerError as error:
        problems = [f"anchors not checked: {error}"]
    return AnchorState(head[0] if head else None, head[1] if head else None, found, problems, root)
