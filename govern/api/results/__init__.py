"""What the use cases answer (issue 27): every result the service interface (`api.service.Governance`) and the
delivery parts (cli, server, web, client) receive, in one leaf package, so a caller learns the shapes in one place
and the remote client rebuilds them without importing a use case.

A leaf: it imports the domain and `presentation` only (the use cases import it, never the other way round). One
JSON convention: a result's JSON form is `presentation.jsonable(result)`, its fields as an object, instants
through `timeparse.display`. A result whose wire shape differs from its fields (renamed keys, nested events,
computed values) keeps a `to_dict()` that spells its instants through `jsonable` too; the events inside go as
`RecordedEvent.to_dict()`, the event's own wire form (the chain's hashing spelling, see `envelope`).

Loaded by name, on first use: defining a dataclass costs about a millisecond (the generated methods are
compiled), so importing all of them on every command slowed each cold start that touched one by tens of
milliseconds; `from govern.api.results import Outcome` loads the submodule that defines `Outcome` only.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Outcome": "lifecycle",
    "Requested": "lifecycle",
    "Prediction": "lifecycle",
    "Answered": "lifecycle",
    "ReproOutcome": "training",
    "Reported": "training",
    "RecordedTraining": "training",
    "GridAxis": "training",
    "GridOutcome": "training",
    "Job": "training",
    "Ran": "training",
    "Verdict": "training",
    "REPORTED": "training",
    "MirrorOutcome": "mirrors",
    "RegistryOutcome": "mirrors",
    "SyncOutcome": "mirrors",
    "Copied": "audit",
    "QueryResult": "audit",
    "Anchor": "audit",
    "IntegrityReport": "audit",
    "AnchorState": "audit",
    "Issued": "access",
    "KeyState": "access",
    "InitResult": "access",
    "TeamLedger": "access",
    "ServerHook": "access",
}

__all__ = [
    "Anchor",
    "AnchorState",
    "Answered",
    "Copied",
    "GridAxis",
    "GridOutcome",
    "InitResult",
    "IntegrityReport",
    "Issued",
    "Job",
    "KeyState",
    "MirrorOutcome",
    "Outcome",
    "Prediction",
    "QueryResult",
    "REPORTED",
    "Ran",
    "RecordedTraining",
    "RegistryOutcome",
    "Reported",
    "ReproOutcome",
    "Requested",
    "ServerHook",
    "SyncOutcome",
    "TeamLedger",
    "Verdict",
]

if TYPE_CHECKING:
    from govern.api.results.access import InitResult, Issued, KeyState, ServerHook, TeamLedger
    from govern.api.results.audit import Anchor, AnchorState, Copied, IntegrityReport, QueryResult
    from govern.api.results.lifecycle import Answered, Outcome, Prediction, Requested
    from govern.api.results.mirrors import MirrorOutcome, RegistryOutcome, SyncOutcome
    from govern.api.results.training import (
        REPORTED,
        GridAxis,
        GridOutcome,
        Job,
        Ran,
        RecordedTraining,
        Reported,
        ReproOutcome,
        Verdict,
    )


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    found = getattr(import_module(f"{__name__}.{where}"), name)
    globals()[name] = found
    return found
