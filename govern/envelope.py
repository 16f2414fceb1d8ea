"""The envelope every fact travels in, and the hashing contract every ledger depends on.

Kept apart from the facts so that reading the ledger (audit queries, verify)
does not build the fact classes it never needs. Changing anything in
`canonical_json`, `format_timestamp` or `chain_hash` changes every hash ever
written: do not.

canonical JSON
    UTF-8, keys sorted, separators ``,`` and ``:`` with no whitespace,
    non-ASCII characters written as themselves, NaN and infinities refused.
    For the values govern writes (strings, integers, finite floats, booleans,
    null, arrays, objects) this is RFC 8785 except for the spelling of float
    exponents (Python's ``1e-07`` where RFC 8785 writes ``1e-7``); since the
    payload is stored as the exact bytes that were hashed and never
    re-serialised, verification does not depend on that spelling.
hash
    ``sha256_hex(prev_hash + canonical_json(envelope without "hash"))``,
    where the envelope is the object with keys actor, authn (only when the event
    has one), event_id, git_commit, occurred_at, payload (the payload object
    itself), prev_hash, recorded_at, schema_version, seq, subject, type.
    Timestamps are UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The first event's
    prev_hash is `GENESIS_HASH`.
authn
    How the actor was established (`govern.attribution.Authn`), stored as its
    canonical JSON text and embedded verbatim like the payload. Events written
    before issue 25 have none, and their envelope has no `authn` member: their
    hashes are unchanged. The server's Ed25519 signature over an event's hash is
    stored beside it (`signature`), outside the hashed envelope, since it signs it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from govern import redaction
from govern.canonical import canonical_json

if TYPE_CHECKING:
    from govern.attribution import Actor, Authn
    from govern.events import Fact

GENESIS_HASH = "0" * 64
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


_json_text: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
_AUTHN_MEMBER = '"authn":%s,'


def format_timestamp(moment: datetime) -> str:
    """UTC, microsecond precision, `Z` suffix: the only spelling of time in hashes."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if moment.year < 1000:  # isoformat pads years to four digits; strftime's spelling is the contract
        return moment.strftime(TIMESTAMP_FORMAT)
    return moment.isoformat(timespec="microseconds") + "Z"  # the same text, several times faster


def parse_timestamp(text: str) -> datetime:
    """`format_timestamp`'s text back as an aware UTC instant: years before 1000 are written unpadded there
    (`1-01-01T...`), which `datetime.fromisoformat` alone refuses."""
    year, _, rest = text.partition("-")
    return to_utc(datetime.fromisoformat(f"{int(year):04d}-{rest}"))


def to_utc(moment: datetime) -> datetime:
    """An aware datetime in UTC; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    import uuid  # imported on first use: read-only commands never make ids

    return str(uuid.uuid4())


def finite_or_none(value: Any) -> Any:
    """NaN and infinities have no JSON spelling; a metric that is one is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class PendingEvent:
    """A fact on its way into the ledger: everything but position and chain.

    `actor` may be an `attribution.Actor` (what the use cases pass): its name goes to `actor`, how it was
    established to `authn`. A bare string with no `authn` is a fact of unrecorded provenance (tests, old callers).
    """

    fact: Fact
    actor: str | Actor
    occurred_at: datetime
    git_commit: str | None = None
    event_id: str = field(default_factory=new_event_id)
    authn: Authn | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.actor, str):
            object.__setattr__(self, "authn", self.actor.authn)
            object.__setattr__(self, "actor", self.actor.name)

    @property
    def payload_json(self) -> str:
        """The payload as it is hashed and stored, without the secrets `govern.redaction` recognises: the one
        place every event passes on its way in, so no use case can forget it. A payload holding none (nearly all)
        is serialised once and searched once."""
        payload = self.fact.to_payload()
        text = canonical_json(payload)
        if redaction.might_hold_secrets(text):
            text = canonical_json(redaction.redact_value(payload))
        return text


@dataclass(frozen=True)
class RecordedEvent:
    """One row of the ledger, as stored."""

    seq: int
    event_id: str
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    subject: str
    git_commit: str | None
    payload_json: str
    prev_hash: str
    hash: str
    authn: str | None = None  # canonical JSON text, hashed; None for events recorded before issue 25
    signature: str | None = None  # the server's signature over `hash` (base64), for authenticated events

    @property
    def payload(self) -> dict[str, Any]:
        """The payload upcast to the current schema of its type."""
        from govern.events import upcast

        return upcast(self.type, self.schema_version, json.loads(self.payload_json))

    def fact(self) -> Fact:
        from govern.events import FACT_TYPES

        return FACT_TYPES[self.type].from_payload(self.payload)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordedEvent:
        """The event a server answered with (`to_dict`'s form): for printing it as a local command would."""
        return cls(
            seq=int(data["seq"]),
            event_id=str(data["event_id"]),
            type=str(data["type"]),
            schema_version=int(data["schema_version"]),
            occurred_at=parse_timestamp(data["occurred_at"]),
            recorded_at=parse_timestamp(data["recorded_at"]),
            actor=str(data["actor"]),
            subject=str(data["subject"]),
            git_commit=data.get("git_commit"),
            payload_json=canonical_json(data["payload"]),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
            authn=canonical_json(data["authn"]) if data.get("authn") else None,
            signature=data.get("signature"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The event's wire form, as printed by `--json` and sent by the server. Its instants stay in the hashing
        spelling (`format_timestamp`, not `timeparse.display` as every other JSON answer): without `hash`,
        `signature`, `actor_shown` and a null `authn`, this object is the envelope the chain hashes, so an auditor
        recomputes each hash from `audit log --json` as it is; the two spellings differ only before the year 1000."""
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "type": self.type,
            "schema_version": self.schema_version,
            "occurred_at": format_timestamp(self.occurred_at),
            "recorded_at": format_timestamp(self.recorded_at),
            "actor": self.actor,
            "subject": self.subject,
            "git_commit": self.git_commit,
            "payload": json.loads(self.payload_json),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "authn": json.loads(self.authn) if self.authn else None,
            "signature": self.signature,
            "actor_shown": self.actor_shown,
        }

    @property
    def actor_shown(self) -> str:
        """The actor with the strength of its identity (`abe (authenticated, token ...)`)."""
        from govern.attribution import shown

        return shown(self.actor, self.authn)


def envelope_hash(
    *,
    seq: int,
    event_id: str,
    type: str,
    schema_version: int,
    occurred_at: datetime,
    recorded_at: datetime,
    actor: str,
    subject: str,
    git_commit: str | None,
    payload_json: str,
    prev_hash: str,
    authn: str | None = None,
) -> str:
    """The chain hash of one event (see the module docstring for the contract).

    The payload is embedded as the stored text, not re-serialised, exactly as
    the ledger's SQL verification does it.
    """
    return chain_hash(
        prev_hash,
        seq=seq,
        event_id=event_id,
        type=type,
        schema_version=schema_version,
        occurred_text=format_timestamp(occurred_at),
        recorded_text=format_timestamp(recorded_at),
        actor=actor,
        subject=subject,
        git_commit=git_commit,
        payload_json=payload_json,
        authn=authn,
    )


def chain_hash(
    prev_hash: str,
    *,
    seq: int,
    event_id: str,
    type: str,
    schema_version: int,
    occurred_text: str,
    recorded_text: str,
    actor: str,
    subject: str,
    git_commit: str | None,
    payload_json: str,
    authn: str | None = None,
) -> str:
    """`envelope_hash` with the timestamps already formatted: the ledger's bulk append formats each once."""
    # canonical_json member by member, spelled out: json.dumps(str, ensure_ascii=False) is exactly
    # encode_basestring, and an int is its str(); bulk appends hash hundreds of thousands of these.
    envelope = (
        f'{{"actor":{_json_text(actor)},{"" if authn is None else _AUTHN_MEMBER % authn}'
        f'"event_id":{_json_text(event_id)},'
        f'"git_commit":{"null" if git_commit is None else _json_text(git_commit)},'
        f'"occurred_at":"{occurred_text}","payload":{payload_json},'
        f'"prev_hash":{_json_text(prev_hash)},"recorded_at":"{recorded_text}",'
        f'"schema_version":{int(schema_version)},"seq":{int(seq)},'
        f'"subject":{_json_text(subject)},"type":{_json_text(type)}}}'
    )
    return hashlib.sha256((prev_hash + envelope).encode("utf-8")).hexdigest()
