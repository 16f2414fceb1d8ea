"""Checking who the ledger says acted: every server attestation's signature, every key's standing.

`audit verify` runs this after the chain: the chain proves no stored row changed; this proves every event that
claims authentication by `govern serve` carries a valid signature by a key the ledger trusts, and that nothing
self-asserted is dressed as authenticated. Trust in keys does not come from whoever can append: the first key
registered is trusted (or only the fingerprints pinned in `[tool.govern.server] trusted_keys`, when the project
pins any), and every later key must be endorsed by a trusted key that was not retired before it.

Pure but for the signature checks (`govern.signing`); the rows come from the store's system of record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from govern import attribution, signing
from govern.attribution import Authn

# Every row that could claim more than a plain self-asserted name: server claims, names in the server's form,
# anything not in the canonical self-asserted shape, and the key facts. Plain self-asserted events (the
# overwhelming majority of a solo ledger) are only counted. Works in DuckDB and PostgreSQL alike.
_PLAIN_SELF = (
    '(authn LIKE \'{"by":"self","via":%\' AND authn NOT LIKE \'%"by"%"by"%\' '
    "AND actor NOT LIKE '% (token %' AND actor NOT LIKE 'server:%')"
)
ROWS_SQL = f"""
SELECT seq, type, actor, authn, signature, hash,
       CASE WHEN type IN ('signing_key.registered', 'signing_key.retired') THEN payload END AS payload
FROM {{events}}
WHERE (authn IS NOT NULL AND NOT {_PLAIN_SELF})
   OR (authn IS NULL AND (actor LIKE '% (token %' OR actor LIKE 'server:%'))
   OR type IN ('signing_key.registered', 'signing_key.retired')
ORDER BY seq
"""
COUNTS_SQL = f"""
SELECT count(*) FILTER (WHERE authn IS NOT NULL AND {_PLAIN_SELF}) AS self_asserted,
       count(*) FILTER (WHERE authn IS NULL) AS unrecorded,
       min(seq) FILTER (WHERE authn IS NOT NULL) AS first_attributed
FROM {{events}}
"""
SHOWN_PROBLEMS = 20


@dataclass
class Key:
    fingerprint: str
    public: str
    registered_seq: int
    trusted: bool
    why: str
    endorsed_by: str | None = None
    retired_seq: int | None = None
    signed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "registered_seq": self.registered_seq,
            "trusted": self.trusted,
            "why": self.why,
            "endorsed_by": self.endorsed_by,
            "retired_seq": self.retired_seq,
            "events_signed": self.signed,
        }


@dataclass
class AttestationReport:
    """What the attestations say: how many events are authenticated, self-asserted, or older than signing."""

    authenticated: int = 0
    self_asserted: int = 0
    unrecorded: int = 0  # no authn member: written before issue 25, or by a caller that recorded no provenance
    legacy_server_form: int = 0  # in the server's form but older than the first attested event
    keys: list[Key] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(text)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttestationReport:
        """A report a server answered with (`to_dict`'s form), to print it as a local command would."""
        keys = [
            Key(k["fingerprint"], "", k["registered_seq"], k["trusted"], k["why"], k.get("endorsed_by"),
                k.get("retired_seq"), k.get("events_signed", 0))
            for k in data.get("keys", [])
        ]  # fmt: skip
        return cls(
            data["authenticated"], data["self_asserted"], data["unrecorded"], data["legacy_server_form"], keys,
            list(data["problems"]), data["problem_count"],
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "authenticated": self.authenticated,
            "self_asserted": self.self_asserted,
            "unrecorded": self.unrecorded,
            "legacy_server_form": self.legacy_server_form,
            "keys": [key.to_dict() for key in self.keys],
            "problems": self.problems,
            "problem_count": self.problem_count,
        }


def check(query_stored: Callable[[str], list[tuple]], pinned: Sequence[str] = ()) -> AttestationReport:
    """Check every attestation of the rows `query_stored` returns (the system of record's own rows)."""
    [(self_asserted, unrecorded, first_attributed)] = query_stored(COUNTS_SQL)
    report, _ = check_rows(query_stored(ROWS_SQL), first_attributed, pinned)
    report.self_asserted += int(self_asserted or 0)
    report.unrecorded = int(unrecorded or 0)
    return report


CITED_SQL = """
SELECT seq, type, actor, authn, signature, hash,
       CASE WHEN type IN ('signing_key.registered', 'signing_key.retired') THEN payload END AS payload
FROM events
WHERE type IN ('signing_key.registered', 'signing_key.retired') OR seq IN (SELECT unnest($seqs))
ORDER BY seq
"""
FIRST_ATTRIBUTED_SQL = "SELECT min(seq) FROM events WHERE authn IS NOT NULL"


def check_events(reader: Any, seqs: Sequence[int], pinned: Sequence[str] = ()) -> dict[int, str | None]:
    """Each of these events' attestation, checked against the ledger's key register: seq -> None when it holds
    (an authenticated event with a valid signature by a trusted key, or an honest self-asserted one), else the
    problem. What rules (four-eyes) and reports rely on, at the cost of a few signature checks."""
    if not seqs:
        return {}
    _, [(first_attributed,)] = reader.query(FIRST_ATTRIBUTED_SQL)
    _, rows = reader.query(CITED_SQL, {"seqs": sorted(set(seqs))})
    _, verdicts = check_rows(rows, first_attributed, pinned)
    return {seq: verdicts.get(seq) for seq in seqs}


def check_rows(
    rows: Sequence[tuple], first_attributed: int | None, pinned: Sequence[str] = ()
) -> tuple[AttestationReport, dict[int, str | None]]:
    """The report over these rows (seq order: seq, type, actor, authn, signature, hash, key payload), and each
    row's own verdict (None: it holds)."""
    report = AttestationReport()
    verdicts: dict[int, str | None] = {}
    keys: dict[str, Key] = {}
    verifiers: dict[str, Any] = {}
    parsed: dict[str, Authn | None] = {}  # the same authn text recurs for every event of one token: parse it once
    consistent: dict[tuple[str, str], bool] = {}

    def problem(seq: int, text: str) -> None:
        verdicts[seq] = text
        report.problem(f"seq {seq}: {text}")

    for seq, kind, actor, authn_text, signature, chain_hash, payload in rows:
        verdicts[seq] = None
        if kind == "signing_key.registered":
            _register(report, keys, verifiers, seq, payload, pinned)
        if authn_text is None:
            if not attribution.server_form(actor):
                continue  # a name of unrecorded provenance: self-asserted at best, and shown so
            if first_attributed is not None and seq > first_attributed:
                problem(
                    seq,
                    f"{actor!r} is in the form of a server-authenticated principal, but the event carries no "
                    "attestation (written behind govern serve's back)",
                )
            else:
                report.legacy_server_form += 1
            continue
        if authn_text not in parsed:
            parsed[authn_text] = _parse(authn_text)
        authn = parsed[authn_text]
        if authn is None:
            problem(seq, "its authn member is not in govern's canonical form (written behind govern's back)")
            continue
        if authn.by == attribution.SELF:
            if attribution.server_form(actor):
                problem(seq, f"a self-asserted event names {actor!r}, the form of an authenticated one")
            else:
                report.self_asserted += 1
            continue
        if authn.by != attribution.SERVER:
            problem(seq, f"unknown authentication {authn.by!r}")
            continue
        if (actor, authn_text) not in consistent:
            consistent[(actor, authn_text)] = _consistent(actor, authn)
        if not consistent[(actor, authn_text)]:
            problem(seq, f"the actor {actor!r} is not the authenticated principal {authn.principal!r}")
            continue
        key = keys.get(authn.key or "")
        if key is None:
            problem(seq, f"signed with key {authn.key!r}, which the ledger never registered before it")
            continue
        if not key.trusted:
            problem(seq, f"signed with key {key.fingerprint}, which is not trusted ({key.why})")
            continue
        if key.retired_seq is not None and seq > key.retired_seq:
            problem(seq, f"signed with key {key.fingerprint}, retired at seq {key.retired_seq}")
            continue
        if not verifiers[key.fingerprint].verifies(signature, signing.attestation_message(chain_hash)):
            problem(
                seq,
                f"claims authentication by govern serve ({attribution.shown(actor, authn)}), but its signature is "
                "missing or not the server's",
            )
            continue
        key.signed += 1
        report.authenticated += 1
        if kind == "signing_key.retired" and payload:
            retired = keys.get(json.loads(payload).get("fingerprint", ""))
            if retired is not None and retired.retired_seq is None:
                retired.retired_seq = seq
    report.keys = list(keys.values())
    return report, verdicts


def _parse(text: str) -> Authn | None:
    """The authn member, if it is exactly what govern writes (canonical, known keys); None otherwise."""
    try:
        found = Authn.from_json(text)
        members = set(json.loads(text))
    except (ValueError, TypeError, AttributeError):
        return None
    if found is None or found.to_json() != text or members - {"by", "via", "principal", "key"}:
        return None
    return found


def _consistent(actor: str, authn: Authn) -> bool:
    if authn.via == "server":
        return bool(attribution.SERVER_ACTOR.match(actor)) and authn.principal is None
    return authn.principal is not None and attribution.principal_of(actor) == authn.principal


def _register(
    report: AttestationReport,
    keys: dict[str, Key],
    verifiers: dict[str, Any],
    seq: int,
    payload: str | None,
    pinned: Sequence[str],
) -> None:
    """A key enters the register at its own event (whose signature it must then verify, as proof it holds it)."""
    try:
        data = json.loads(payload or "{}")
        public, claimed = str(data["public_key"]), str(data["fingerprint"])
        verifier = signing.verifier(public)
    except (ValueError, KeyError, TypeError):
        report.problem(f"seq {seq}: a signing key registration without a usable Ed25519 public key")
        return
    if signing.fingerprint(public) != claimed:
        report.problem(f"seq {seq}: the registered key's fingerprint {claimed} is not its public key's")
        return
    if claimed in keys:
        report.problem(f"seq {seq}: key {claimed} is registered a second time")
        return
    endorser = keys.get(data.get("endorsed_by") or "")
    endorsed = (
        endorser is not None
        and endorser.trusted
        and endorser.retired_seq is None
        and verifiers[endorser.fingerprint].verifies(
            data.get("endorsement"), signing.endorsement_message(claimed, public)
        )
    )
    if pinned:
        trusted, why = (True, "pinned") if claimed in pinned else (endorsed, "endorsed" if endorsed else "not pinned")
    elif not keys:
        trusted, why = True, "the first key of this ledger (trusted on first use; pin it to be sure)"
    else:
        trusted, why = endorsed, "endorsed" if endorsed else "not endorsed by a trusted key"
    if endorsed and why == "endorsed":
        why = f"endorsed by {endorser.fingerprint}"  # type: ignore[union-attr]
    if not trusted:
        why += "; if it is the server's own, pin it in [tool.govern.server] trusted_keys"
    keys[claimed] = Key(claimed, public, seq, trusted, why, data.get("endorsed_by"))
    verifiers[claimed] = verifier
