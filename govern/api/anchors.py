"""The repository's anchors: `govern-anchor/*` tags, each holding a ledger seq and its hash, so that a ledger lost,
truncated or swapped is caught against git (which every clone holds), and writes never fork the anchored chain."""

from __future__ import annotations

import json
from pathlib import Path

from govern.adapters import git as git_adapter
from govern.api.results import Anchor
from govern.errors import LedgerCorrupt, LedgerMissing
from govern.storage import LedgerStore

TAG_PREFIX = "govern-anchor/"


def anchors(root: Path) -> list[Anchor]:
    """Every anchor tag in the repository, oldest first; malformed ones are reported as such."""
    found = []
    for tag in git_adapter.tags(root, f"{TAG_PREFIX}*"):
        try:
            data = json.loads(tag.message)
            found.append(Anchor(tag.name, int(data["seq"]), str(data["hash"])))
        except (ValueError, KeyError, TypeError):
            found.append(Anchor(tag.name, -1, ""))
    return sorted(found, key=lambda a: a.seq)


def refuse_writes_off_the_anchors(root: Path, ledger: LedgerStore) -> None:
    """Writes go only to the ledger the repository's anchors were made from: a missing ledger is lost, not new,
    and one that ends before the newest anchor, or holds another event there, is an older copy, truncated or
    another chain. Appending to it would fork the anchored history."""
    found = [a for a in anchors(root) if a.seq > 0]
    if not found:
        return
    latest = found[-1]
    if not ledger.exists():
        raise LedgerMissing(
            f"The ledger {ledger.location} is missing, but this repository holds anchors up to seq {latest.seq} "
            f"({latest.tag}): restore the ledger from its backup (`govern audit backup` makes one) or point "
            "GOVERN_LEDGER at it; a new ledger here would start a second, unanchored chain"
        )
    held = ledger.read(seqs=[latest.seq])
    if not held or held[0].hash != latest.hash:
        head = ledger.head()
        what = f"ends at seq {head[0] if head else 0}" if not held else f"holds another event at seq {latest.seq}"
        raise LedgerCorrupt(
            f"The ledger {ledger.location} {what}, but this repository's newest anchor is seq {latest.seq} "
            f"({latest.tag}): it is an older copy, truncated, or another chain, and nothing was written. Restore "
            "the newest backup or point GOVERN_LEDGER at the anchored ledger; `govern audit verify` names the gap"
        )
