"""What every backend checks of an event before it joins the chain: no secret in it, an attestation only
where a signer vouches for it, and the same event_id appended twice only if it is the same event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from govern import redaction
from govern.envelope import (
    PendingEvent,
    RecordedEvent,
    to_utc,
)
from govern.errors import (
    AttestationRefused,
    EventConflict,
)

if TYPE_CHECKING:
    from govern.signing import Signer


def refuse_secrets(event: PendingEvent, payload_json: str, also: dict[str, str] | None = None) -> None:
    """`SecretInEvent` when the event's payload, actor, subject or commit holds a secret this process was configured
    with (`redaction.remember`), or one of `also` (a ledger's own URL's): raised before anything is written."""
    redaction.refuse_secrets(
        event.fact.type,
        {"payload": payload_json, "actor": event.actor, "subject": event.fact.subject, "git commit": event.git_commit},
        also,
    )


def attestation_signer(pending: Sequence[PendingEvent]) -> Signer | None:
    """This process's signing key when any of `pending` claims the server's authentication; such a claim without
    the key is refused, so nothing but a govern server holding its key can write one."""
    if not any(event.authn is not None and event.authn.authenticated for event in pending):
        return None
    from govern import signing

    signer = signing.active()
    if signer is None:
        raise AttestationRefused(
            "An event that claims authentication by govern serve can be written only by the server holding its "
            "signing key; nothing was appended. Act through the server (GOVERN_URL and GOVERN_TOKEN)"
        )
    return signer


def authn_text(event: PendingEvent, signer: Signer | None) -> str | None:
    """The hashed `authn` member of an event: its authentication, with the signing key's fingerprint when the
    server signs it; a self-asserted name that reads like the server's is refused here too."""
    if event.authn is None:
        return None
    if event.authn.authenticated:
        assert signer is not None  # attestation_signer refused otherwise
        return event.authn.with_key(signer.fingerprint).to_json()
    from govern.attribution import check_self_asserted

    check_self_asserted(event.actor, event.authn.via)
    return event.authn.to_json()


def same_or_conflict(stored: RecordedEvent, event: PendingEvent, signer: Signer | None = None) -> RecordedEvent:
    same = (
        stored.type == event.fact.type
        and stored.schema_version == event.fact.schema_version
        and stored.subject == event.fact.subject
        and stored.actor == event.actor
        and stored.authn == authn_text(event, signer)
        and stored.git_commit == event.git_commit
        and stored.occurred_at == to_utc(event.occurred_at).replace(tzinfo=None)
        and stored.payload_json == event.payload_json
    )
    if not same:
        raise EventConflict(
            f"Event {event.event_id} is already in the ledger (seq {stored.seq}) with different content; "
            "an event id can be recorded once only"
        )
    return stored
