"""Principals, roles, grant proposals, enrollment codes and access tokens, as the ledger's views have them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from govern.readmodel.reader import Reader
from govern.readmodel.rows import rows_as


@dataclass(frozen=True, slots=True)
class HeldRoleRow:
    """A role held at an instant: the grant, who confirmed it and who proposed it (with how each was
    authenticated, as JSON text); the `_shown` fields are the use case's, once it has the identities' strength."""

    principal: str
    role: str
    apps: list[str]
    granted_at: datetime
    granted_by: str
    reason: str | None
    grant_seq: int
    basis: str | None
    proposal_seq: int | None
    proposed_at: datetime | None
    proposed_by: str | None
    granted_authn: str | None
    proposed_authn: str | None
    granted_by_shown: str | None = None
    proposed_by_shown: str | None = None


@dataclass(frozen=True, slots=True)
class GrantRow:
    """A grant over time: when and by whom it ended (revoked, or granted again with other apps), its basis and
    proposal; the `_shown` fields as in `HeldRoleRow`."""

    grant_seq: int
    principal: str
    role: str
    apps: list[str]
    granted_at: datetime
    granted_by: str
    reason: str | None
    ended_at: datetime | None
    end_seq: int | None
    ended_by: str | None
    ended_how: str | None
    basis: str | None
    proposal_seq: int | None
    proposed_at: datetime | None
    proposed_by: str | None
    granted_authn: str | None
    proposed_authn: str | None
    granted_by_shown: str | None = None
    proposed_by_shown: str | None = None


@dataclass(frozen=True, slots=True)
class ProposalRow:
    """A proposed grant of approver or admin and what became of it (`state`, the deciding event); the `_shown`
    fields are the use case's."""

    proposal_seq: int
    proposed_at: datetime
    proposed_by: str
    proposed_authn: str | None
    principal: str
    role: str
    apps: list[str]
    reason: str | None
    break_glass: bool
    state: str
    decided_seq: int | None
    decided_at: datetime | None
    decided_by: str | None
    decided_authn: str | None
    decision_reason: str | None
    proposed_by_shown: str | None = None
    decided_by_shown: str | None = None


@dataclass(frozen=True, slots=True)
class StoredCodeRow:
    """An enrollment code as `enrollment_codes` has it, with its secret's digest: what redeeming it checks."""

    seq: int
    code_id: str
    principal: str
    secret_sha256: str
    issued_at: datetime
    issued_by: str
    issued_authn: str | None
    expires_at: datetime
    token_expires_at: datetime | None
    description: str | None
    redeemed_seq: int | None
    redeemed_at: datetime | None
    redeemed_by: str | None
    token_id: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_reason: str | None


@dataclass(frozen=True, slots=True)
class StoredTokenRow:
    """An access token as `access_tokens` has it, with its secret's digest."""

    seq: int
    token_id: str
    principal: str
    secret_sha256: str
    issued_at: datetime
    issued_by: str
    expires_at: datetime | None
    description: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_reason: str | None
    code_id: str | None
    issued_authn: str | None


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A token as listed, never its secret: who handed it over (`issuer`) and whether it was revoked."""

    token_id: str
    principal: str
    issued_at: datetime
    issued_by: str
    expires_at: datetime | None
    description: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    code_id: str | None
    issuer: str | None


@dataclass(frozen=True, slots=True)
class CodeRow:
    """An enrollment code as listed, never its secret: whether it was redeemed (for which token) or revoked."""

    code_id: str
    principal: str
    issued_at: datetime
    issued_by: str
    expires_at: datetime
    token_expires_at: datetime | None
    description: str | None
    redeemed_at: datetime | None
    redeemed_by: str | None
    redeemed_token: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class AuthTokenRow:
    """A token with what authenticating it needs: its principal, secret digest, expiry, revocation, the events it
    comes from (its issuance, the code it was redeemed with) and the principal's roles now (`roles`: role, apps,
    grant_seq, granted_authn each)."""

    token_id: str
    principal: str
    secret_sha256: str
    expires_at: datetime | None
    revoked_at: datetime | None
    issued_seq: int
    issued_authn: str | None
    issued_by: str
    code_seq: int | None
    code_authn: str | None
    roles: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class IdentityRow:
    """A git or CI identity linked to a principal."""

    principal: str
    identity: str
    linked_at: datetime
    linked_by: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class HandoverRow:
    """Who handed a token to its principal (followed through codes and self-made tokens), and how that hand was
    authenticated (JSON text)."""

    issuer: str | None
    issuer_authn: str | None
    principal: str


@dataclass(frozen=True, slots=True)
class SigningKeyRow:
    """A server signing key registered, who endorsed it (the key it replaced) and when it was retired, if it was."""

    seq: int
    fingerprint: str
    registered_at: datetime
    endorsed_by: str | None
    retired_seq: int | None


ROLES_AT_SQL = """
SELECT principal, role, apps, granted_at, granted_by, reason, grant_seq, basis, proposal_seq, proposed_at,
       proposed_by, granted_authn, proposed_authn
FROM role_grants
WHERE granted_at <= $at AND (ended_at IS NULL OR ended_at > $at)
ORDER BY principal, role
"""

HELD_SQL = "SELECT role FROM role_grants WHERE principal = $principal AND ended_at IS NULL ORDER BY role"
ADMINS_SQL = "SELECT count(DISTINCT principal) FROM role_grants WHERE role = 'admin' AND ended_at IS NULL"
PROPOSAL_COLUMNS = """
SELECT proposal_seq, proposed_at, proposed_by, proposed_authn, principal, role, apps, reason, break_glass, state,
       decided_seq, decided_at, decided_by, decided_authn, decision_reason
FROM grant_proposals
"""
PROPOSAL_SQL = f"{PROPOSAL_COLUMNS} WHERE proposal_seq = $seq"
PROPOSALS_SQL = f"{PROPOSAL_COLUMNS} WHERE $state IS NULL OR state = $state ORDER BY proposal_seq DESC LIMIT $limit"
PENDING_PROPOSALS_SQL = f"{PROPOSAL_COLUMNS} WHERE principal = $p AND role = $r AND state = 'pending'"
STORED_CODE_SQL = """
SELECT seq, code_id, principal, secret_sha256, issued_at, issued_by, issued_authn, expires_at, token_expires_at,
       description, redeemed_seq, redeemed_at, redeemed_by, token_id, revoked_at, revoked_by, revocation_reason
FROM enrollment_codes WHERE code_id = $id
"""
STORED_TOKEN_SQL = """
SELECT seq, token_id, principal, secret_sha256, issued_at, issued_by, expires_at, description, revoked_at,
       revoked_by, revocation_reason, code_id, issued_authn
FROM access_tokens WHERE token_id = $id
"""
CODES_SQL = """
SELECT code_id, principal, issued_at, issued_by, expires_at, token_expires_at, description, redeemed_at,
       redeemed_by, token_id AS redeemed_token, revoked_at, revoked_by, seq
FROM enrollment_codes WHERE $principal IS NULL OR principal = $principal ORDER BY seq
"""

ACTIVE_GRANT_SQL = """
SELECT apps FROM role_grants WHERE principal = $principal AND role = $role AND ended_at IS NULL
"""

TOKENS_SQL = """
SELECT t.token_id, t.principal, t.issued_at, t.issued_by, t.expires_at, t.description, t.revoked_at, t.revoked_by,
       t.code_id, i.issuer
FROM access_tokens AS t LEFT JOIN token_issuers AS i USING (token_id)
WHERE $principal IS NULL OR t.principal = $principal ORDER BY t.seq
"""

# Every token with what authenticating it needs: its principal, secret digest, expiry, revocation and the
# principal's roles now. Small (one row per token ever issued), read whole into each process's snapshot.
TOKEN_TABLE_SQL = """
SELECT t.token_id, t.principal, t.secret_sha256, t.expires_at, t.revoked_at, t.seq AS issued_seq,
       t.issued_authn, t.issued_by, c.seq AS code_seq, c.issued_authn AS code_authn,
       (SELECT coalesce(list({'role': g.role, 'apps': g.apps, 'grant_seq': g.grant_seq,
                              'granted_authn': g.granted_authn} ORDER BY g.role), [])
        FROM role_grants AS g WHERE g.principal = t.principal AND g.ended_at IS NULL) AS roles
FROM access_tokens AS t
LEFT JOIN (SELECT seq, payload->>'$.code_id' AS code_id, authn AS issued_authn FROM events
           WHERE type = 'token.code_issued') AS c ON c.code_id = t.code_id
"""

# The seq from which a team's ledger has had two admins: from then on, the operator's (self-asserted) hand no
# longer stands for one of them, and what makes an approver or an admin, or gives one a token, counts only where
# the server authenticated and signed it (`_honoured`). Revocations do not reopen the bootstrap.
BOOTSTRAP_CLOSED_SQL = """
WITH admins AS (SELECT principal, min(grant_seq) AS first_seq FROM role_grants WHERE role = 'admin' GROUP BY ALL)
SELECT (SELECT count(*) > 0 FROM events WHERE type = 'signing_key.registered'),
       (SELECT first_seq FROM admins ORDER BY first_seq LIMIT 1 OFFSET 1)
"""

# Whether the snapshot still holds: is the ledger the one read (the hash at the seq last seen), and did any event
# that could change a row (a grant, a revocation, a token issued or revoked) come since? Roles depend on no clock,
# and expiry is checked at each request.
ACCESS_TYPES = ("access.granted", "access.revoked", "token.issued", "token.revoked")
CHANGES_SQL = f"""
SELECT (SELECT hash FROM stored_events WHERE seq = $seen) AS seen_hash, max(seq) AS head, arg_max(hash, seq) AS hash,
       count(*) FILTER (WHERE type IN ({", ".join(f"'{kind}'" for kind in ACCESS_TYPES)})) AS changed
FROM stored_events WHERE seq > $seen
"""

GRANT_HISTORY_SQL = """
SELECT grant_seq, principal, role, apps, granted_at, granted_by, reason, ended_at, end_seq, ended_by, ended_how,
       basis, proposal_seq, proposed_at, proposed_by, granted_authn, proposed_authn
FROM role_grants WHERE $principal IS NULL OR principal = $principal
ORDER BY grant_seq DESC LIMIT $limit
"""

SERVER_KEY_SQL = "SELECT count(*) > 0 FROM events WHERE type = 'signing_key.registered'"


def changes_since(reader: Reader, seen: int) -> tuple[str | None, int | None, str | None, int]:
    """(the hash at seq `seen`, the head's seq and hash, how many access events came after `seen`)."""
    [(seen_hash, head, head_hash, changed)] = reader.query(CHANGES_SQL, {"seen": seen})[1]
    return seen_hash, head, head_hash, changed


def token_table(reader: Reader) -> list[AuthTokenRow]:
    """Every token with what authenticating it needs (TOKEN_TABLE_SQL)."""
    return rows_as(reader, AuthTokenRow, TOKEN_TABLE_SQL)


def bootstrap_closed(reader: Reader) -> tuple[bool, int | None]:
    """(has a server registered its key, the seq from which two admins exist, if they do)."""
    _, [(signed, closed)] = reader.query(BOOTSTRAP_CLOSED_SQL)
    return signed, closed


def server_key_registered(reader: Reader) -> bool:
    """Has a server registered its signing key?"""
    _, [(signed,)] = reader.query(SERVER_KEY_SQL)
    return bool(signed)


def held_roles(reader: Reader, principal: str) -> list[str]:
    """The roles the principal holds now, sorted."""
    return [role for (role,) in reader.query(HELD_SQL, {"principal": principal})[1]]


def admin_count(reader: Reader) -> int:
    """How many principals hold the admin role now."""
    return int(reader.query(ADMINS_SQL)[1][0][0])


def active_grant_apps(reader: Reader, principal: str, role: str) -> list[str] | None:
    """The apps of the principal's active grant of the role (empty: all), or None where it holds no such grant."""
    _, rows = reader.query(ACTIVE_GRANT_SQL, {"principal": principal, "role": role})
    return list(rows[0][0]) if rows else None


def holds_role(reader: Reader, principal: str, role: str) -> bool:
    """Does the principal hold `role` now?"""
    _, rows = reader.query(
        "SELECT 1 FROM role_grants WHERE principal = $p AND role = $r AND ended_at IS NULL", {"p": principal, "r": role}
    )
    return bool(rows)


def holds_any_role(reader: Reader, principal: str) -> bool:
    """Does the principal hold any role now?"""
    _, rows = reader.query("SELECT 1 FROM role_grants WHERE principal = $p AND ended_at IS NULL", {"p": principal})
    return bool(rows)


def ever_granted(reader: Reader, principal: str) -> bool:
    """Was the principal ever granted a role (is it a known principal)?"""
    _, known = reader.query("SELECT 1 FROM role_grants WHERE principal = $p LIMIT 1", {"p": principal})
    return bool(known)


def pending_proposals_of(reader: Reader, principal: str, role: str) -> list[ProposalRow]:
    """The pending proposals of the role for the principal."""
    return rows_as(reader, ProposalRow, PENDING_PROPOSALS_SQL, {"p": principal, "r": role})


def proposal(reader: Reader, seq: int) -> ProposalRow | None:
    rows = rows_as(reader, ProposalRow, PROPOSAL_SQL, {"seq": seq})
    return rows[0] if rows else None


def proposals(reader: Reader, state: str | None, limit: int) -> list[ProposalRow]:
    """Grant proposals in `state` (None: all), newest first."""
    return rows_as(reader, ProposalRow, PROPOSALS_SQL, {"state": state, "limit": limit})


def enrollment_code(reader: Reader, code_id: str) -> StoredCodeRow | None:
    """The enrollment code's row (with its secret's digest), if it exists."""
    rows = rows_as(reader, StoredCodeRow, STORED_CODE_SQL, {"id": code_id})
    return rows[0] if rows else None


def access_token(reader: Reader, token_id: str) -> StoredTokenRow | None:
    """The access token's row (with its secret's digest), if it exists."""
    rows = rows_as(reader, StoredTokenRow, STORED_TOKEN_SQL, {"id": token_id})
    return rows[0] if rows else None


def owner_of_identity(reader: Reader, identity: str) -> str | None:
    """The principal a git identity is linked to (case-insensitive), if any."""
    _, linked = reader.query(
        "SELECT principal FROM principal_identities WHERE lower(identity) = lower($identity)", {"identity": identity}
    )
    return linked[0][0] if linked else None


def identities(reader: Reader) -> list[IdentityRow]:
    """Every git identity linked to a principal, oldest first."""
    return rows_as(
        reader,
        IdentityRow,
        "SELECT principal, identity, linked_at, linked_by, reason FROM principal_identities ORDER BY seq",
    )


def roles_at(reader: Reader, at: datetime) -> list[HeldRoleRow]:
    """Who held which role at the naive UTC instant `at`."""
    return rows_as(reader, HeldRoleRow, ROLES_AT_SQL, {"at": at})


def tokens(reader: Reader, principal: str | None) -> list[TokenRow]:
    """Every token ever issued (of a principal), never its secret, with who handed it over."""
    return rows_as(reader, TokenRow, TOKENS_SQL, {"principal": principal})


def codes(reader: Reader, principal: str | None) -> list[CodeRow]:
    """Every enrollment code (of a principal), never its secret."""
    return rows_as(reader, CodeRow, CODES_SQL, {"principal": principal})


def grant_history(reader: Reader, principal: str | None, limit: int) -> list[GrantRow]:
    """Role grants over time, newest first, at most `limit`."""
    return rows_as(reader, GrantRow, GRANT_HISTORY_SQL, {"principal": principal, "limit": limit})


# Who handed a token to its principal: the admin who issued the enrollment code it was exchanged for, followed
# through the tokens a principal made for itself with it (ledger.m013, `token_issuers`).
ISSUER_SQL = "SELECT issuer FROM token_issuers WHERE token_id = $token_id"


def token_issuer(reader: Reader, token_id: str) -> str | None:
    """Who handed the token over, or None (no such token, or no issuer recorded)."""
    _, rows = reader.query(ISSUER_SQL, {"token_id": token_id})
    return rows[0][0] if rows else None


def token_handover(reader: Reader, token_id: str) -> HandoverRow | None:
    """The token's issuer, how the issuer was authenticated, and its principal (None: no such token)."""
    rows = rows_as(
        reader,
        HandoverRow,
        "SELECT issuer, issuer_authn, principal FROM token_issuers WHERE token_id = $t",
        {"t": token_id},
    )
    return rows[0] if rows else None


def identity_links(reader: Reader) -> dict[str, list[str]]:
    """principal -> the git or CI identities linked to it, oldest first."""
    _, rows = reader.query("SELECT principal, list(identity ORDER BY seq) FROM principal_identities GROUP BY 1")
    return {principal: list(identities) for principal, identities in rows}


KEYS_SQL = """
SELECT r.seq, r.payload->>'$.fingerprint' AS fingerprint, r.occurred_at AS registered_at,
       r.payload->>'$.endorsed_by' AS endorsed_by,
       (SELECT min(t.seq) FROM events AS t
        WHERE t.type = 'signing_key.retired' AND t.payload->>'$.fingerprint' = r.payload->>'$.fingerprint')
           AS retired_seq
FROM events AS r WHERE r.type = 'signing_key.registered' ORDER BY r.seq
"""


def registered_keys(reader: Reader) -> list[SigningKeyRow]:
    """Every server signing key registered, oldest first."""
    return rows_as(reader, SigningKeyRow, KEYS_SQL)
